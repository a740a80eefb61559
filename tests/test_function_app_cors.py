"""CORS end to end: preflights and actual responses of a server with DICOMWEB_CORS_ALLOWED_ORIGINS, over loopback."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import httpx
import pytest
from pydicom.uid import generate_uid

from tests.factories import make_instance, multipart_body

VIEWER = "https://viewer.example.org"
OTHER_VIEWER = "http://localhost:3000"
STRANGER = "https://evil.example.com"
STORE_TYPE = 'multipart/related; type="application/dicom"; boundary=test-boundary'
OHIF_FRAMES = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'

ServeWithEnv = Callable[[dict[str, str]], contextlib.AbstractContextManager[str]]


@pytest.fixture(scope="module")
def cors_server(serve_with_env: ServeWithEnv) -> Iterator[str]:
    """A server allowing two browser origins."""
    with serve_with_env({"DICOMWEB_CORS_ALLOWED_ORIGINS": f"{VIEWER},{OTHER_VIEWER}"}) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def stored_instance(cors_server: str) -> str:
    """The URL of an instance stored through the CORS server."""
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    body = multipart_body([make_instance(study=study, series=series, sop=sop)])
    response = httpx.post(f"{cors_server}/v2/studies", content=body, headers={"Content-Type": STORE_TYPE}, timeout=60)
    assert response.status_code == 200, response.text
    return f"{cors_server}/v2/studies/{study}/series/{series}/instances/{sop}"


def preflight(url: str, origin: str, method: str = "GET", headers: str = "accept,authorization") -> httpx.Response:
    return httpx.options(url, headers={"Origin": origin, "Access-Control-Request-Method": method,
                                       "Access-Control-Request-Headers": headers}, timeout=30)


def header_names(value: str) -> set[str]:
    return {name.strip().lower() for name in value.split(",")}


def test_preflight_from_an_allowed_origin_allows_ohifs_frame_request(stored_instance: str) -> None:
    response = preflight(f"{stored_instance}/frames/1", VIEWER)
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == VIEWER
    assert {"get", "post", "put", "delete", "options"} <= header_names(response.headers["access-control-allow-methods"])
    assert header_names(response.headers["access-control-allow-headers"]) == {"accept", "authorization"}
    assert int(response.headers["access-control-max-age"]) > 0


def test_preflight_for_a_store_allows_content_type(cors_server: str) -> None:
    response = preflight(f"{cors_server}/v2/studies", OTHER_VIEWER, "POST", "content-type, accept, authorization")
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == OTHER_VIEWER
    assert header_names(response.headers["access-control-allow-headers"]) == {"content-type", "accept", "authorization"}


def test_preflight_from_another_origin_gets_no_cors_headers(cors_server: str) -> None:
    response = preflight(f"{cors_server}/v2/studies", STRANGER)
    assert response.status_code == 204
    assert not [name for name in response.headers if name.startswith("access-control-")]


def test_actual_response_carries_allow_origin_exposed_headers_and_vary(stored_instance: str) -> None:
    response = httpx.get(f"{stored_instance}/frames/1", headers={"Origin": VIEWER, "Accept": OHIF_FRAMES}, timeout=30)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == VIEWER
    exposed = header_names(response.headers["access-control-expose-headers"])
    assert {"content-type", "etag", "warning", "content-location", "location", "x-request-id"} <= exposed
    assert "origin" in header_names(response.headers["vary"])


def test_vary_keeps_accept_encoding_of_metadata(stored_instance: str) -> None:
    response = httpx.get(f"{stored_instance}/metadata", headers={"Origin": VIEWER}, timeout=30)
    assert response.status_code == 200
    assert header_names(response.headers["vary"]) == {"accept-encoding", "origin"}


def test_error_response_carries_cors_headers(cors_server: str) -> None:
    response = httpx.get(f"{cors_server}/v2/studies/not-a-uid", headers={"Origin": VIEWER}, timeout=30)
    assert response.status_code == 400
    assert response.headers["access-control-allow-origin"] == VIEWER
    assert "x-request-id" in header_names(response.headers["access-control-expose-headers"])


def test_actual_response_to_a_disallowed_origin_has_no_cors_headers(cors_server: str) -> None:
    response = httpx.get(f"{cors_server}/v2/studies", headers={"Origin": STRANGER}, timeout=30)
    assert response.status_code in (200, 204)
    assert not [name for name in response.headers if name.startswith("access-control-")]


def test_without_the_setting_no_response_has_cors_headers(server: str) -> None:
    preflighted = preflight(f"{server}/v2/studies", VIEWER)
    searched = httpx.get(f"{server}/v2/studies", headers={"Origin": VIEWER}, timeout=30)
    assert preflighted.status_code == 204
    for response in (preflighted, searched):
        assert not [name for name in response.headers if name.startswith("access-control-")]


def test_preflight_route_leaves_405_and_404_alone(cors_server: str) -> None:
    assert httpx.patch(f"{cors_server}/v2/studies", headers={"Origin": VIEWER}, timeout=30).status_code == 405
    assert httpx.get(f"{cors_server}/v2/nothing-here", headers={"Origin": VIEWER}, timeout=30).status_code == 404
