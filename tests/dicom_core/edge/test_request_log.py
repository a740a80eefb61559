"""Request ids and the one JSON log line per request."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import pytest

from dicom_core.edge.request_log import REQUEST_ID_HEADER, current_request_id, log_requests, request_id_for


@dataclass
class FakeUrl:
    path: str


@dataclass
class FakeRequest:
    method: str
    url: FakeUrl
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeResponse:
    status_code: int
    headers: dict[str, str] = field(default_factory=dict)


def test_a_well_formed_caller_request_id_is_kept() -> None:
    assert request_id_for({"x-request-id": "client-42.a:b"}) == "client-42.a:b"


def test_azure_client_request_id_is_kept_when_there_is_no_x_request_id() -> None:
    assert request_id_for({"x-ms-client-request-id": "0f8fad5b-d9cb-469f-a165-70867728950e"}) == (
        "0f8fad5b-d9cb-469f-a165-70867728950e")


@pytest.mark.parametrize("value", ["", "has space", "new\nline", "x" * 129, "quote\"d"])
def test_a_malformed_caller_request_id_is_replaced_by_a_new_one(value: str) -> None:
    generated = request_id_for({"x-request-id": value})
    assert generated != value and len(generated) == 32 and int(generated, 16) >= 0


def test_two_requests_without_an_id_get_different_ids() -> None:
    assert request_id_for({}) != request_id_for({})


async def test_the_response_carries_the_request_id_and_one_json_line_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(req: FakeRequest) -> FakeResponse:
        return FakeResponse(202)

    caplog.set_level(logging.INFO, logger="dicomweb.request")
    response = await log_requests(handler)(
        FakeRequest("POST", FakeUrl("/v2/studies"), {"x-request-id": "abc123"}))
    assert response.headers[REQUEST_ID_HEADER] == "abc123"
    lines = [r for r in caplog.records if r.name == "dicomweb.request"]
    assert len(lines) == 1
    logged = json.loads(lines[0].getMessage())
    assert {k: v for k, v in logged.items() if k != "duration_ms"} == {
        "event": "request", "request_id": "abc123", "method": "POST", "path": "/v2/studies", "status": 202}
    assert logged["duration_ms"] >= 0


async def test_records_logged_while_serving_carry_the_request_id(caplog: pytest.LogCaptureFixture) -> None:
    async def handler(req: FakeRequest) -> FakeResponse:
        logging.getLogger("dicom_core.somewhere").warning("inside")
        return FakeResponse(200)

    caplog.set_level(logging.INFO)
    await log_requests(handler)(FakeRequest("GET", FakeUrl("/health/check"), {"x-request-id": "req-7"}))
    inside = next(r for r in caplog.records if r.getMessage() == "inside")
    assert inside.request_id == "req-7"
    assert current_request_id.get() == ""


async def test_a_handler_that_raises_is_logged_as_a_500_at_error_level(caplog: pytest.LogCaptureFixture) -> None:
    async def handler(req: FakeRequest) -> FakeResponse:
        raise RuntimeError("boom")

    caplog.set_level(logging.INFO, logger="dicomweb.request")
    with pytest.raises(RuntimeError):
        await log_requests(handler)(FakeRequest("GET", FakeUrl("/v2/studies"), {}))
    (line,) = [r for r in caplog.records if r.name == "dicomweb.request"]
    assert line.levelno == logging.ERROR
    assert json.loads(line.getMessage())["status"] == 500


async def test_the_query_string_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    @dataclass
    class UrlWithQuery:
        path: str
        query: str

    async def handler(req: FakeRequest) -> FakeResponse:
        return FakeResponse(200)

    caplog.set_level(logging.INFO, logger="dicomweb.request")
    request = FakeRequest("GET", UrlWithQuery("/v2/studies", "PatientName=Doe^Jane"), {})  # type: ignore[arg-type]
    await log_requests(handler)(request)
    assert "Doe" not in caplog.text
