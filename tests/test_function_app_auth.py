"""Authentication end to end: a server in mode entra over loopback, its tokens checked against a JWKS the test serves;
and the auth levels the FunctionApp registers in mode function."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from pydicom.uid import generate_uid

from tests.factories import make_instance, multipart_body
from tests.identity_provider import AUDIENCE, READER, WRITER, IdentityProvider, SigningKey, unsigned_token

REPO_ROOT = Path(__file__).resolve().parent.parent
VIEWER = "https://viewer.example.org"
STORE_TYPE = 'multipart/related; type="application/dicom"; boundary=test-boundary'

ServeWithEnv = Callable[[dict[str, str]], contextlib.AbstractContextManager[str]]


@pytest.fixture(scope="module")
def provider() -> Iterator[IdentityProvider]:
    with IdentityProvider().serving() as serving:
        yield serving


@pytest.fixture(scope="module")
def entra_server(serve_with_env: ServeWithEnv, provider: IdentityProvider) -> Iterator[str]:
    """A server in mode entra (with CORS for VIEWER), storing into containers and tables of its own."""
    suffix = uuid.uuid4().hex[:10]
    env = {"DICOMWEB_AUTH_MODE": "entra", "DICOMWEB_AUTH_AUTHORITY": provider.authority,
           "DICOMWEB_AUTH_AUDIENCE": AUDIENCE, "DICOMWEB_CORS_ALLOWED_ORIGINS": VIEWER,
           "DICOMWEB_BLOB_CONTAINER": f"auth-{suffix}", "DICOMWEB_METADATA_CONTAINER": f"auth-meta-{suffix}",
           "DICOMWEB_TABLE_PREFIX": f"auth{suffix}"}
    with serve_with_env(env) as base_url:
        yield base_url


def authorized(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


def store(base_url: str, headers: dict[str, str]) -> httpx.Response:
    body = multipart_body([make_instance(study=generate_uid())])
    return httpx.post(f"{base_url}/v2/studies", content=body, headers={"Content-Type": STORE_TYPE, **headers},
                      timeout=60)


def test_no_token_is_401_with_a_bearer_challenge(entra_server: str) -> None:
    response = httpx.get(f"{entra_server}/v2/studies", timeout=30)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer ")


def test_reader_token_may_search(entra_server: str, provider: IdentityProvider) -> None:
    response = httpx.get(f"{entra_server}/v2/studies", headers=authorized(provider.token(roles=[READER])), timeout=30)
    assert response.status_code in (200, 204)


def test_writer_token_may_store(entra_server: str, provider: IdentityProvider) -> None:
    response = store(entra_server, authorized(provider.token(roles=[WRITER])))
    assert response.status_code == 200, response.text


def test_reader_token_on_a_write_route_is_403(entra_server: str, provider: IdentityProvider) -> None:
    response = store(entra_server, authorized(provider.token(roles=[READER])))
    assert response.status_code == 403
    assert WRITER in response.text


def test_writer_token_on_a_read_route_is_403(entra_server: str, provider: IdentityProvider) -> None:
    response = httpx.get(f"{entra_server}/v2/studies", headers=authorized(provider.token(roles=[WRITER])), timeout=30)
    assert response.status_code == 403


def test_expired_token_is_401_invalid_token(entra_server: str, provider: IdentityProvider) -> None:
    now = int(time.time())
    token = provider.token(iat=now - 7200, nbf=now - 7200, exp=now - 3600)
    response = httpx.get(f"{entra_server}/v2/studies", headers=authorized(token), timeout=30)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


@pytest.mark.parametrize("wrong", ["audience", "issuer", "signature"])
def test_token_wrong_in_one_claim_or_its_signature_is_401(
    entra_server: str, provider: IdentityProvider, wrong: str
) -> None:
    token = {
        "audience": lambda: provider.token(aud="api://someone-else"),
        "issuer": lambda: provider.token(iss="https://login.example.com/other/v2.0"),
        "signature": lambda: provider.token(key=SigningKey(provider.keys[0].kid)),
    }[wrong]()
    response = httpx.get(f"{entra_server}/v2/studies", headers=authorized(token), timeout=30)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_alg_none_token_is_401(entra_server: str, provider: IdentityProvider) -> None:
    token = unsigned_token({"iss": provider.issuer, "aud": AUDIENCE, "exp": int(time.time()) + 600,
                            "roles": [READER, WRITER]})
    assert httpx.get(f"{entra_server}/v2/studies", headers=authorized(token), timeout=30).status_code == 401


def test_malformed_authorization_header_is_401(entra_server: str) -> None:
    response = httpx.get(f"{entra_server}/v2/studies", headers={"Authorization": "Basic dXNlcjpwYXNz"}, timeout=30)
    assert response.status_code == 401
    assert 'error="invalid_request"' in response.headers["www-authenticate"]


def test_health_check_and_openapi_document_need_no_token(entra_server: str) -> None:
    assert httpx.get(f"{entra_server}/health/check", timeout=30).status_code == 200
    assert httpx.get(f"{entra_server}/v2/api.yaml", timeout=30).status_code == 200


def test_preflight_needs_no_token(entra_server: str) -> None:
    response = httpx.options(f"{entra_server}/v2/studies", timeout=30, headers={
        "Origin": VIEWER, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"})
    assert response.status_code == 204
    assert response.headers["access-control-allow-headers"] == "Authorization"


def test_401_carries_cors_headers_so_a_browser_can_read_it(entra_server: str) -> None:
    response = httpx.get(f"{entra_server}/v2/studies", headers={"Origin": VIEWER}, timeout=30)
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == VIEWER
    assert "www-authenticate" in response.headers["access-control-expose-headers"].lower()


# --- mode function: the Functions host checks keys; which routes stay anonymous -----------------------------------

_AUTH_LEVELS = """
import json
from function_app import app
print(json.dumps({f.get_function_name(): str(f.get_trigger().auth_level.value) for f in app.get_functions()
                  if f.get_trigger() is not None and hasattr(f.get_trigger(), "auth_level")}))
"""


def import_function_app(mode: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "DICOMWEB_AUTH_MODE": mode}
    return subprocess.run([sys.executable, "-c", _AUTH_LEVELS], cwd=REPO_ROOT, env=environment, capture_output=True,
                          text=True, timeout=120, check=False)


def test_mode_function_makes_data_routes_need_a_function_key() -> None:
    completed = import_function_app("function")
    assert completed.returncode == 0, completed.stderr
    levels = json.loads(completed.stdout.strip().splitlines()[-1])
    anonymous = {"health_check", "openapi_document", "cors_preflight"}
    assert {name for name, level in levels.items() if level.lower() == "anonymous"} == anonymous
    assert levels["retrieve_study"].lower() == "function"
    assert levels["store_instances"].lower() == "function"


def test_an_unknown_mode_stops_the_app_from_starting() -> None:
    completed = import_function_app("disabled")
    assert completed.returncode != 0
    assert "DICOMWEB_AUTH_MODE" in completed.stderr
