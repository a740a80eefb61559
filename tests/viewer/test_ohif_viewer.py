"""The OHIF Viewer in headless Chromium against the local server: a stored study is found by name, opened and drawn.

One walk through the viewer (module fixture `walk`) stores a study, uploads two files through the viewer's
Upload dialog, finds the study in the study list by the patient's name, opens it and shows each of its series;
the tests check what that walk recorded. Screenshots and the network record are kept in test-artifacts/viewer/.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.factories import multipart_body
from tests.viewer.browser_record import BrowserRecord, SeenResponse
from tests.viewer.image_statistics import RegionStatistics, central_region_statistics
from tests.viewer.server_log import LoggedServer, access_log_requests, app_requests, log_size
from tests.viewer.synthetic_study import SyntheticStudy, build_study

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "viewer"
# The flags that keep Chromium off the network on a machine without internet (and quick to start).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
WINDOW = {"width": 1400, "height": 900}
PATIENT_NAME, PATIENT_ID, SHOWN_NAME = "Viewer^Vera", "VIEWER-1", "Viewer, Vera"
DECOY_NAME, DECOY_ID, SHOWN_DECOY = "Decoy^Daniel", "VIEWER-2", "Decoy, Daniel"
UPLOADED_NAME, UPLOADED_ID = "Upload^Ursula", "VIEWER-3"
NAME_FILTER = "vera"
# Generous: OHIF's first load compiles several MB of JavaScript on a busy 2-core machine.
LOAD_TIMEOUT_MS = 120_000
DRAW_TIMEOUT_SECONDS = 90.0
BOUNDARY = "viewer-test-boundary"
# Playwright locators of OHIF 3.13's study list and viewer.
FILTER_ROW_INPUTS = '[data-filter-row="true"] input'  # the first one filters on the patient's name
VIEWPORT = '[data-cy="viewport-pane"]'
VIEWPORT_OVERLAY = '[data-cy="viewport-overlay-top-left"]'
THUMBNAIL = '[data-cy="study-browser-thumbnail"][data-series="{number}"]'
UPLOAD_INPUT = 'input[type="file"]'


@dataclass(repr=False)
class ViewerWalk:
    """What the walk through the viewer saw."""

    study: SyntheticStudy
    record: BrowserRecord
    log: Path
    log_start: int  # the server log's length before the browser started
    uploaded_study_uid: str = ""
    upload_message: str = ""
    listed_before_filter: bool = False
    listed_after_filter: dict[str, bool] = field(default_factory=dict)
    viewports: dict[str, RegionStatistics] = field(default_factory=dict)  # series description -> central region


@pytest.fixture(scope="module")
def walk(chromium: Path, viewer: str, viewer_server: LoggedServer, viewer_origin: str) -> Iterator[ViewerWalk]:
    """Store the study and a decoy, upload a third, find the patient, open the study and show each series."""
    study = build_study(PATIENT_NAME, PATIENT_ID)
    decoy = build_study(DECOY_NAME, DECOY_ID)
    _store(viewer_server.base_url, [*study.files, decoy.series[0].files[0]])
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    record = BrowserRecord(origins=(viewer_origin, viewer_server.base_url))
    result = ViewerWalk(study, record, viewer_server.log, log_size(viewer_server.log))
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS, viewport=WINDOW)
        page = context.new_page()
        record.attach(context, page)
        try:
            _walk_through(page, result)
        except Exception as error:
            # A walk that stops (a timeout) is usually explained by what the page saw: say it.
            pytest.fail(_stopped_walk(error, record), pytrace=False)
        finally:
            page.screenshot(path=ARTIFACTS / "last-page.png")
            _save_record(record)
            context.close()
    yield result


def _walk_through(page: Page, result: ViewerWalk) -> None:
    page.goto(result.record.origins[0] + "/", timeout=LOAD_TIMEOUT_MS)
    result.listed_before_filter = _appears(page, SHOWN_DECOY) and _appears(page, SHOWN_NAME)
    page.screenshot(path=ARTIFACTS / "study-list.png")

    _upload(page, result)
    # Wait for the server's answer to the name search: under load the list can be filtered and clicked while the
    # search is still in flight, and leaving the page then cancels it.
    with page.expect_response(lambda response: "PatientName=" in response.url, timeout=LOAD_TIMEOUT_MS):
        page.locator(FILTER_ROW_INPUTS).first.fill(NAME_FILTER)
    page.get_by_text(SHOWN_DECOY).wait_for(state="detached", timeout=LOAD_TIMEOUT_MS)
    # The list may be empty for a moment while the new search is answered.
    result.listed_after_filter = {SHOWN_NAME: _appears(page, SHOWN_NAME),
                                  SHOWN_DECOY: page.get_by_text(SHOWN_DECOY).count() > 0}
    page.screenshot(path=ARTIFACTS / "study-list-filtered.png")

    page.get_by_text(SHOWN_NAME).click()
    page.get_by_role("button", name="Basic Viewer").click()
    for position, series in enumerate(result.study.series):
        if position:  # the first series is what the study opens with
            page.locator(THUMBNAIL.format(number=position + 1)).dblclick(timeout=LOAD_TIMEOUT_MS)
        result.viewports[series.description] = _wait_until_drawn(page, series.description,
                                                                 list(result.viewports.values()))
        result.record.wait_until_quiet(page, DRAW_TIMEOUT_SECONDS)
        page.screenshot(path=ARTIFACTS / f"series-{position + 1}.png")


def _appears(page: Page, text: str) -> bool:
    """Wait for ``text`` to be shown; tell whether it was."""
    try:
        page.get_by_text(text).wait_for(timeout=LOAD_TIMEOUT_MS)
    except PlaywrightTimeoutError:
        return False
    return True


def _upload(page: Page, result: ViewerWalk) -> None:
    """Upload two files of a third patient through the study list's Upload dialog (STOW-RS from the browser)."""
    uploaded = build_study(UPLOADED_NAME, UPLOADED_ID)
    result.uploaded_study_uid = uploaded.study_uid
    files = [{"name": f"{series.description}.dcm", "mimeType": "application/dicom", "buffer": series.files[0]}
             for series in uploaded.series[1:]]
    page.get_by_role("button", name="Upload").click()
    page.locator(UPLOAD_INPUT).first.set_input_files(files)
    page.get_by_text("Completed!", exact=True).wait_for(timeout=LOAD_TIMEOUT_MS)  # while busy: "0 of 2 files ..."
    message = page.get_by_text("files completed")
    result.upload_message = " ".join(message.locator("xpath=..").inner_text().split())  # "2" is an element of its own
    page.get_by_role("button", name="Close").first.click()  # the dialog's corner icon or its Close button
    page.get_by_role("dialog").wait_for(state="detached", timeout=LOAD_TIMEOUT_MS)


def _wait_until_drawn(page: Page, description: str, others: list[RegionStatistics]) -> RegionStatistics:
    """Poll the viewport until it names ``description`` and shows an image unlike ``others``; return the last look."""
    viewport, overlay = page.locator(VIEWPORT).first, page.locator(VIEWPORT_OVERLAY).first
    viewport.wait_for(timeout=LOAD_TIMEOUT_MS)
    deadline = time.monotonic() + DRAW_TIMEOUT_SECONDS
    while True:
        statistics = central_region_statistics(viewport.screenshot())
        shows_series = description in (overlay.inner_text() if overlay.count() else "")
        new_image = all(statistics.differs_from(other) for other in others)
        if (shows_series and statistics.drawn and new_image) or time.monotonic() > deadline:
            return statistics
        page.wait_for_timeout(250)


def _stopped_walk(error: Exception, record: BrowserRecord) -> str:
    failures = [f"{failure.method} {failure.url}: {failure.failure}" for failure in record.failures]
    lines = [f"the walk through the viewer stopped: {error}", "failed requests:", *failures,
             "console (last 20):", *record.console[-20:], f"screenshots and network record: {ARTIFACTS}"]
    return "\n".join(lines)


def _store(base_url: str, files: list[bytes]) -> None:
    response = httpx.post(f"{base_url}/v2/studies", content=multipart_body(files, BOUNDARY), timeout=120,
                          headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
                                   "Accept": "application/dicom+json"})
    assert response.status_code == 200, response.text


def _save_record(record: BrowserRecord) -> None:
    document = {"responses": [asdict(response) for response in record.responses],
                "failures": [asdict(failure) for failure in record.failures],
                "external": record.external, "console": record.console}
    (ARTIFACTS / "network.json").write_text(json.dumps(document, indent=1))


def _server_responses(walk: ViewerWalk) -> list[SeenResponse]:
    return walk.record.responses_from(walk.record.origins[1])


# --- Finding the study --------------------------------------------------------------------------------------

def test_study_list_shows_the_stored_patients(walk: ViewerWalk) -> None:
    assert walk.listed_before_filter


def test_typing_the_patient_name_filters_the_study_list(walk: ViewerWalk) -> None:
    assert walk.listed_after_filter == {SHOWN_NAME: True, SHOWN_DECOY: False}


def test_name_filter_is_a_server_side_search(walk: ViewerWalk) -> None:
    searches = [r for r in _server_responses(walk) if r.path == "/v2/studies" and "PatientName=" in r.url]
    assert searches and all(r.status == 200 for r in searches)


def test_upload_dialog_reports_the_files_stored(walk: ViewerWalk) -> None:
    assert walk.upload_message.startswith("2 files completed.")  # then its Close button


def test_files_uploaded_from_the_viewer_are_stored(walk: ViewerWalk, viewer_server: LoggedServer) -> None:
    response = httpx.get(f"{viewer_server.base_url}/v2/studies/{walk.uploaded_study_uid}/instances", timeout=30)
    assert response.status_code == 200 and len(response.json()) == 2


# --- Seeing it ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("description", ["CT phantom", "Multi-frame checkerboard", "JPEG 2000 rings"])
def test_each_series_draws_an_image_in_the_viewport(walk: ViewerWalk, description: str) -> None:
    statistics = walk.viewports.get(description)
    assert statistics is not None and statistics.drawn, statistics and statistics.describe()


def test_each_series_draws_a_different_image(walk: ViewerWalk) -> None:
    ct, multiframe, jpeg2000 = (walk.viewports[series.description] for series in walk.study.series)
    assert multiframe.differs_from(ct) and jpeg2000.differs_from(ct) and jpeg2000.differs_from(multiframe)


def test_viewer_reads_series_metadata_and_frames_of_every_series(walk: ViewerWalk) -> None:
    paths = {r.path for r in _server_responses(walk) if r.status == 200}
    study = f"/v2/studies/{walk.study.study_uid}"
    for series in walk.study.series:
        assert f"{study}/series/{series.series_uid}/metadata" in paths
        assert any(path.startswith(f"{study}/series/{series.series_uid}/instances/") and "/frames/" in path
                   for path in paths), series.description


# --- Nothing failed -----------------------------------------------------------------------------------------

def test_no_request_failed_or_was_blocked(walk: ViewerWalk) -> None:
    assert walk.record.failures == []


def test_no_response_to_the_viewer_was_an_error(walk: ViewerWalk) -> None:
    errors = [(r.status, r.method, r.url) for r in walk.record.responses if r.status >= 400]
    assert errors == []


def test_console_reports_no_cors_error(walk: ViewerWalk) -> None:
    cors_messages = [m for m in walk.record.console if "cors" in m.lower() or "access-control" in m.lower()]
    assert cors_messages == []


def test_every_server_response_the_viewer_got_is_in_the_server_log(walk: ViewerWalk) -> None:
    logged = {entry.request_id: entry.status for entry in app_requests(walk.log, walk.log_start)}
    seen = {r.request_id: r.status for r in _server_responses(walk)}
    assert seen and "" not in seen
    assert {request_id: logged.get(request_id) for request_id in seen} == seen


def test_server_logged_no_error_while_the_viewer_was_open(walk: ViewerWalk) -> None:
    logged = access_log_requests(walk.log, walk.log_start) + app_requests(walk.log, walk.log_start)
    assert logged and [entry for entry in logged if entry.status >= 400] == []


def test_viewer_requests_nothing_outside_the_viewer_and_the_server(walk: ViewerWalk) -> None:
    assert walk.record.external == []
