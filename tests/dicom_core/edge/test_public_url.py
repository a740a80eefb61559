"""The public base URL of a request: the configured one, else the request's own with forwarded headers applied."""

from __future__ import annotations

import pytest

from dicom_core.edge.public_url import public_base_url

WORKER = "http://127.0.0.1:5555/"


def test_the_configured_base_url_wins_over_forwarded_headers() -> None:
    headers = {"x-forwarded-host": "other.example", "x-forwarded-proto": "http"}
    assert public_base_url("https://dicom.example.org/archive/", WORKER, headers) == "https://dicom.example.org/archive"


def test_without_forwarded_headers_it_is_the_request_url() -> None:
    assert public_base_url("", WORKER, {}) == "http://127.0.0.1:5555"


def test_forwarded_host_proto_and_prefix_replace_the_workers_address() -> None:
    headers = {"x-forwarded-host": "func-x.azurewebsites.net", "x-forwarded-proto": "https",
               "x-forwarded-prefix": "/dicomweb/"}
    assert public_base_url("", WORKER, headers) == "https://func-x.azurewebsites.net/dicomweb"


def test_the_first_of_several_forwarded_values_is_the_client_facing_one() -> None:
    headers = {"x-forwarded-host": "public.example:8443, internal.proxy", "x-forwarded-proto": "https, http"}
    assert public_base_url("", WORKER, headers) == "https://public.example:8443"


def test_a_bracketed_ipv6_forwarded_host_is_kept() -> None:
    assert public_base_url("", WORKER, {"x-forwarded-host": "[2001:db8::1]:8080"}) == "http://[2001:db8::1]:8080"


@pytest.mark.parametrize("host", ["evil.example/path", "user@evil.example", "evil.example?x=1", "a b", "",
                                  "-bad.example", "evil.example:port"])
def test_a_forwarded_host_that_is_not_a_host_is_ignored(host: str) -> None:
    assert public_base_url("", WORKER, {"x-forwarded-host": host}) == "http://127.0.0.1:5555"


@pytest.mark.parametrize("proto", ["javascript", "ftp", "https://x"])
def test_a_forwarded_proto_other_than_http_or_https_is_ignored(proto: str) -> None:
    assert public_base_url("", WORKER, {"x-forwarded-proto": proto}) == "http://127.0.0.1:5555"


@pytest.mark.parametrize("prefix", ["dicomweb", "//evil.example", "/a b", "/a?b", "/a#b"])
def test_a_forwarded_prefix_that_is_not_a_path_is_ignored(prefix: str) -> None:
    assert public_base_url("", WORKER, {"x-forwarded-prefix": prefix}) == "http://127.0.0.1:5555"


def test_the_request_path_base_stays_after_the_prefix() -> None:
    headers = {"x-forwarded-prefix": "/proxy"}
    assert public_base_url("", "http://127.0.0.1:5555/api/", headers) == "http://127.0.0.1:5555/proxy/api"
