"""The signing keys of an OpenID Connect issuer: read from its discovery document's `jwks_uri`, cached, refreshed.

The keys are kept for `max_age_seconds`; a token naming a key id that is not in the cache makes one refresh
(key rotation), at most once every `min_refresh_seconds`, so tokens with made-up key ids cannot make the
service hammer the identity provider.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jwt

from dicom_core.model.errors import ServiceUnavailableError

LOGGER = logging.getLogger(__name__)
DISCOVERY_PATH = "/.well-known/openid-configuration"
FETCH_TIMEOUT_SECONDS = 10
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

FetchJson = Callable[[str], Awaitable[Any]]


@dataclass(frozen=True)
class SigningKeys:
    """The issuer named by the discovery document and its RSA signing keys by key id."""

    issuer: str
    keys: dict[str, jwt.PyJWK]


def discovery_url(authority: str) -> str:
    """The OpenID discovery document of ``authority`` (https, or http on loopback for tests)."""
    parts = urlsplit(authority)
    if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS):
        raise ValueError(f"The authentication authority must be an https URL, not {authority!r}")
    return authority.rstrip("/") + DISCOVERY_PATH


async def fetch_json(url: str) -> Any:
    """GET ``url`` and parse its JSON body."""
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
        response.raise_for_status()
        return json.loads(await response.read())


class JwksCache:
    """The signing keys of one authority, fetched on first use and kept until they age or a new key id appears."""

    def __init__(self, authority: str, *, fetch: FetchJson = fetch_json, min_refresh_seconds: float = 300,
                 max_age_seconds: float = 86400, clock: Callable[[], float] = time.monotonic) -> None:
        self._discovery_url = discovery_url(authority)
        self._fetch = fetch
        self._min_refresh_seconds = min_refresh_seconds
        self._max_age_seconds = max_age_seconds
        self._clock = clock
        self._current: SigningKeys | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def issuer(self) -> str:
        """The issuer of the authority's discovery document."""
        return (await self._signing_keys(refresh=False)).issuer

    async def key(self, key_id: str) -> jwt.PyJWK | None:
        """The signing key with ``key_id``, refreshing the cache once if it is unknown; None if it stays unknown."""
        current = await self._signing_keys(refresh=False)
        if key_id in current.keys:
            return current.keys[key_id]
        return (await self._signing_keys(refresh=True)).keys.get(key_id)

    async def _signing_keys(self, *, refresh: bool) -> SigningKeys:
        async with self._lock:
            current, age = self._current, self._clock() - self._fetched_at
            wanted = age >= self._max_age_seconds or (refresh and age >= self._min_refresh_seconds)
            if current is not None and not wanted:
                return current
            try:
                current = await self._download()
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError, KeyError, TypeError) as exc:
                if current is None:
                    raise ServiceUnavailableError(
                        "The identity provider's signing keys could not be read; try again later.") from exc
                LOGGER.warning("Refreshing the signing keys from %s failed; keeping the cached ones: %s",
                               self._discovery_url, exc)
            self._current, self._fetched_at = current, self._clock()
            return current

    async def _download(self) -> SigningKeys:
        configuration = await self._fetch(self._discovery_url)
        issuer, jwks_uri = str(configuration["issuer"]), str(configuration["jwks_uri"])
        document = await self._fetch(jwks_uri)
        return SigningKeys(issuer=issuer, keys=_rsa_signing_keys(document["keys"]))


def _rsa_signing_keys(entries: list[dict[str, Any]]) -> dict[str, jwt.PyJWK]:
    """The RSA signature keys of a JWKS with a key id; encryption keys and other key types are left out."""
    keys = {}
    for entry in entries:
        if entry.get("kty") != "RSA" or entry.get("use", "sig") != "sig" or not entry.get("kid"):
            continue
        keys[str(entry["kid"])] = jwt.PyJWK(entry, algorithm="RS256")
    return keys
