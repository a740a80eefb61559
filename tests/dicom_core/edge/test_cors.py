"""CORS decisions: allowed origins, preflight headers and the headers of actual responses."""

from __future__ import annotations

from dicom_core.edge import cors
from dicom_core.edge.cors import CorsPolicy
from dicom_core.settings import Settings

VIEWER = "https://viewer.example.org"


def test_no_origins_configured_means_cors_is_off() -> None:
    policy = CorsPolicy.from_origins([])
    assert not policy.enabled
    assert not policy.allows(VIEWER)
    assert cors.response_headers(policy, VIEWER) == {}


def test_a_listed_origin_is_allowed_case_insensitively_and_without_trailing_slash() -> None:
    policy = CorsPolicy.from_origins([" https://Viewer.Example.org/ "])
    assert policy.allows(VIEWER)
    assert policy.allows("HTTPS://VIEWER.EXAMPLE.ORG")


def test_an_unlisted_origin_is_not_allowed() -> None:
    policy = CorsPolicy.from_origins([VIEWER])
    assert not policy.allows("https://evil.example.com")
    assert not policy.allows("https://viewer.example.org:8443")
    assert not policy.allows(None)
    assert cors.response_headers(policy, "https://evil.example.com") == {}
    assert cors.preflight_headers(policy, "https://evil.example.com", "authorization") == {}


def test_a_star_allows_any_origin_and_echoes_it() -> None:
    policy = CorsPolicy.from_origins(["*"])
    headers = cors.response_headers(policy, "http://localhost:3000")
    assert headers["Access-Control-Allow-Origin"] == "http://localhost:3000"


def test_a_request_without_origin_gets_no_cors_headers() -> None:
    policy = CorsPolicy.from_origins(["*"])
    assert cors.response_headers(policy, None) == {}
    assert cors.preflight_headers(policy, None, None) == {}


def test_actual_response_exposes_the_headers_clients_read() -> None:
    headers = cors.response_headers(CorsPolicy.from_origins([VIEWER]), VIEWER)
    assert headers["Access-Control-Allow-Origin"] == VIEWER
    exposed = {name.strip() for name in headers["Access-Control-Expose-Headers"].split(",")}
    assert {"Content-Type", "ETag", "Warning", "Content-Location", "Location", "X-Request-Id"} <= exposed


def test_preflight_allows_the_dicomweb_methods_and_a_max_age() -> None:
    headers = cors.preflight_headers(CorsPolicy.from_origins([VIEWER]), VIEWER, None)
    assert headers["Access-Control-Allow-Origin"] == VIEWER
    methods = {name.strip() for name in headers["Access-Control-Allow-Methods"].split(",")}
    assert methods == {"GET", "POST", "PUT", "DELETE", "OPTIONS"}
    assert int(headers["Access-Control-Max-Age"]) > 0


def test_preflight_echoes_the_requested_headers_that_are_allowed() -> None:
    headers = cors.preflight_headers(CorsPolicy.from_origins([VIEWER]), VIEWER, "accept, Authorization,x-unknown")
    assert headers["Access-Control-Allow-Headers"] == "Accept, Authorization"


def test_preflight_without_requested_headers_lists_accept_authorization_and_content_type() -> None:
    headers = cors.preflight_headers(CorsPolicy.from_origins([VIEWER]), VIEWER, None)
    allowed = {name.strip() for name in headers["Access-Control-Allow-Headers"].split(",")}
    assert {"Accept", "Authorization", "Content-Type"} <= allowed


def test_preflight_asking_only_for_unknown_headers_allows_none() -> None:
    headers = cors.preflight_headers(CorsPolicy.from_origins([VIEWER]), VIEWER, "x-unknown")
    assert "Access-Control-Allow-Headers" not in headers


def test_origins_setting_is_a_comma_separated_list() -> None:
    settings = Settings.from_environment({"DICOMWEB_CORS_ALLOWED_ORIGINS": f"{VIEWER}, http://localhost:3000,,"})
    assert settings.cors_allowed_origins == (VIEWER, "http://localhost:3000")
    assert Settings.from_environment({}).cors_allowed_origins == ()
