"""GET /health/check end to end, and the request id every response carries."""

from __future__ import annotations

import httpx

from dicom_core.edge.request_log import REQUEST_ID_HEADER


def test_health_check_is_healthy_against_azurite_with_azure_shape(server: str) -> None:
    response = httpx.get(f"{server}/health/check", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["overallStatus"] == "Healthy"
    assert [d["name"] for d in body["details"]] == [
        "DicomBlobHealthCheck", "MetadataHealthCheck", "TableStorageHealthCheck"]
    assert all(d["status"] == "Healthy" and d["description"] for d in body["details"])


def test_health_check_is_unversioned(server: str) -> None:
    assert httpx.get(f"{server}/v2/health/check", timeout=30).status_code == 404


def test_every_response_carries_a_request_id_even_an_error(server: str) -> None:
    response = httpx.post(f"{server}/v2/studies", content=b"", headers={"Content-Type": "text/plain"}, timeout=30)
    assert response.status_code == 415
    assert len(response.headers[REQUEST_ID_HEADER]) == 32


def test_a_callers_request_id_is_echoed(server: str) -> None:
    response = httpx.get(f"{server}/health/check", headers={"X-Request-Id": "ops-check-1"}, timeout=30)
    assert response.headers[REQUEST_ID_HEADER] == "ops-check-1"
