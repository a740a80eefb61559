"""A stand-in for Microsoft Entra ID in tests: signing keys, a discovery document and JWKS on loopback, and tokens.

Tokens are signed with those keys (valid ones), or are wrong in one way each (expired, other audience, ...).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

AUDIENCE = "api://dicomweb-test"
READER = "DicomWeb.Reader"
WRITER = "DicomWeb.Writer"
TENANT_PATH = "/tenant-under-test/v2.0"
DISCOVERY = "/.well-known/openid-configuration"
KEYS_PATH = "/discovery/v2.0/keys"


@dataclass
class SigningKey:
    """An RSA key pair and its key id."""

    kid: str
    private: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(public_exponent=65537,
                                                                                        key_size=2048))

    def jwk(self) -> dict[str, Any]:
        """The public key as a JWK, as Entra publishes it."""
        numbers = self.private.public_key().public_numbers()
        return {"kty": "RSA", "use": "sig", "kid": self.kid, "n": _b64(numbers.n), "e": _b64(numbers.e)}

    def public_pem(self) -> bytes:
        """The public key in PEM (what an HS256 key-confusion attack signs with)."""
        return self.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)


class IdentityProvider:
    """Serves a discovery document and a JWKS whose keys can change, and counts the JWKS downloads."""

    def __init__(self) -> None:
        self.keys = [SigningKey("key-1")]
        self.jwks_downloads = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.authority = self.base_url + TENANT_PATH
        self.issuer = self.authority  # as Entra's v2.0 discovery document says

    def token(self, *, roles: list[str] | None = None, key: SigningKey | None = None, **claims: Any) -> str:
        """An RS256 token of this issuer for AUDIENCE, valid for an hour; ``claims`` override or add claims."""
        now = int(time.time())
        payload = {"iss": self.issuer, "aud": AUDIENCE, "sub": "test-subject", "oid": "test-object-id",
                   "iat": now, "nbf": now, "exp": now + 3600, "roles": roles if roles is not None else [READER]}
        payload.update(claims)
        payload = {name: value for name, value in payload.items() if value is not None}
        signer = key or self.keys[0]
        return jwt.encode(payload, signer.private, algorithm="RS256", headers={"kid": signer.kid})

    @contextlib.contextmanager
    def serving(self) -> Iterator[IdentityProvider]:
        """Serve the documents on loopback while the block runs."""
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join(timeout=10)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server spelling)
                if self.path == TENANT_PATH + DISCOVERY:
                    document: dict[str, Any] = {"issuer": provider.issuer, "jwks_uri": provider.base_url + KEYS_PATH}
                elif self.path == KEYS_PATH:
                    provider.jwks_downloads += 1
                    document = {"keys": [key.jwk() for key in provider.keys]}
                else:
                    self.send_error(404)
                    return
                body = json.dumps(document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the http.server signature)
                """Keep the test output quiet."""

        return Handler


def unsigned_token(claims: dict[str, Any]) -> str:
    """A token with `alg: none` and no signature."""
    header = {"alg": "none", "typ": "JWT", "kid": "key-1"}
    return f"{_b64_json(header)}.{_b64_json(claims)}."


def hs256_token(claims: dict[str, Any], secret: bytes) -> str:
    """A token MACed with HS256 under ``secret`` (e.g. the RSA public key: the key-confusion attack)."""
    header = {"alg": "HS256", "typ": "JWT", "kid": "key-1"}
    signing_input = f"{_b64_json(header)}.{_b64_json(claims)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64_bytes(signature)}"


def _b64(number: int) -> str:
    return _b64_bytes(number.to_bytes((number.bit_length() + 7) // 8, "big"))


def _b64_json(value: dict[str, Any]) -> str:
    return _b64_bytes(json.dumps(value).encode())


def _b64_bytes(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
