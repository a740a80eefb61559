"""Retries of transient failures and the bearer token, against a scripted HTTP transport (no network)."""

from __future__ import annotations

import httpx
import pytest

from dicomweb_cli.cli import build_parser
from dicomweb_cli.transport import Endpoint, TransientError, open_client, send_with_retries

FAST = Endpoint(url="http://dicom.test/v2", retries=3, backoff_seconds=0.001)


def scripted_client(statuses: list[int | Exception], seen: list[httpx.Request]) -> httpx.AsyncClient:
    answers = iter(statuses)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer, headers={"Retry-After": "0"} if answer == 429 else None)

    return httpx.AsyncClient(transport=httpx.MockTransport(handle))


async def test_transient_statuses_and_network_errors_are_retried_until_success() -> None:
    seen: list[httpx.Request] = []
    async with scripted_client([503, httpx.ConnectError("refused"), 429, 200], seen) as client:
        response = await send_with_retries(client, lambda: client.build_request("GET", FAST.url), FAST)
    assert response.status_code == 200
    assert len(seen) == 4


async def test_a_client_error_is_returned_at_once() -> None:
    seen: list[httpx.Request] = []
    async with scripted_client([409, 200], seen) as client:
        response = await send_with_retries(client, lambda: client.build_request("POST", FAST.url), FAST)
    assert response.status_code == 409
    assert len(seen) == 1


async def test_retries_run_out_with_a_transient_error_naming_the_last_cause() -> None:
    seen: list[httpx.Request] = []
    async with scripted_client([503, 503, 503, 502], seen) as client:
        with pytest.raises(TransientError, match="after 4 attempts: HTTP 502"):
            await send_with_retries(client, lambda: client.build_request("GET", FAST.url), FAST)
    assert len(seen) == 4


async def test_each_retry_sends_a_freshly_built_request() -> None:
    seen: list[httpx.Request] = []
    built = 0

    def build() -> httpx.Request:
        nonlocal built
        built += 1
        return client.build_request("POST", FAST.url, content=b"body")

    async with scripted_client([500, 200], seen) as client:
        await send_with_retries(client, build, FAST)
    assert built == 2 and [r.content for r in seen] == [b"body", b"body"]


async def test_the_bearer_token_goes_on_every_request() -> None:
    async with open_client(Endpoint(url=FAST.url, token="secret-token")) as client:
        assert client.headers["Authorization"] == "Bearer secret-token"


async def test_without_a_token_no_authorization_header_is_sent() -> None:
    async with open_client(Endpoint(url=FAST.url)) as client:
        assert "Authorization" not in client.headers


def test_the_token_and_url_come_from_the_environment_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DICOMWEB_TOKEN", "from-env")
    monkeypatch.setenv("DICOMWEB_URL", "https://env.example/v2")
    assert build_parser().parse_args(["search", "studies"]).token == "from-env"
    assert build_parser().parse_args(["search", "studies"]).url == "https://env.example/v2"
    assert build_parser().parse_args(["--token", "given", "search", "studies"]).token == "given"
