"""`GET /operations/{id}` over HTTP: 202 while running, 200 when done (v1 says completed), 404 unknown."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest


@pytest.mark.parametrize("operation", [uuid.uuid4().hex, str(uuid.uuid4()), "not-a-guid"])
def test_an_unknown_operation_is_404(isolated_server: str, operation: str) -> None:
    assert httpx.get(f"{isolated_server}/v2/operations/{operation}", timeout=30).status_code == 404


def test_an_operation_is_202_while_it_runs_then_200_with_azures_shape(isolated_server: str) -> None:
    added = httpx.post(f"{isolated_server}/v2/extendedquerytags", json=[{"path": "StudyID", "level": "Study"}],
                       timeout=30)
    assert added.status_code == 202, added.text
    href = added.json()["href"]
    running = httpx.get(href, timeout=30)
    assert running.status_code == 202 and running.headers["location"] == href
    assert running.json()["status"] in ("notStarted", "running")
    deadline = time.monotonic() + 120
    while (done := httpx.get(href, timeout=30)).status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(1)
    body = done.json()
    assert done.status_code == 200
    assert set(body) >= {"operationId", "type", "createdTime", "lastUpdatedTime", "status", "percentComplete",
                         "resources"}
    assert (body["operationId"], body["type"], body["status"], body["percentComplete"]) == (
        added.json()["id"], "reindex", "succeeded", 100)
    assert body["resources"] == [f"{isolated_server}/v2/extendedquerytags/00200010"]
    v1 = httpx.get(href.replace("/v2/", "/v1/"), timeout=30).json()
    assert v1["status"] == "completed"
