"""OHIF shows what needs more than frames: an encapsulated PDF, an ultrasound cine and a segmentation over CT.

One walk (module fixture `walk`) stores a synthetic study of four series (CT, PDF, RGB ultrasound cine, SEG of
the CT), opens it in the viewer by its Study Instance UID and shows each series in turn. The PDF comes from its
BulkDataURI (never the whole instance), the cine's frames are scrolled through, the SEG is loaded over the CT
and listed in the segmentation panel. Screenshots and the network record are kept in
test-artifacts/viewer-documents/.
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

from tests.factories import multipart_body
from tests.viewer.browser_record import BrowserRecord, SeenResponse
from tests.viewer.image_statistics import RegionStatistics, central_region_statistics
from tests.viewer.server_log import LoggedServer
from tests.viewer.synthetic_study import SEGMENT_LABEL, SyntheticStudy, build_document_study

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "viewer-documents"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
WINDOW = {"width": 1400, "height": 900}
LOAD_TIMEOUT_MS = 120_000
DRAW_TIMEOUT_SECONDS = 90.0
BOUNDARY = "viewer-documents-boundary"
VIEWPORT = '[data-cy="viewport-pane"]'
SEGMENTATION_PANEL_BUTTON = '[data-cy="panelSegmentation-btn"]'
PDF_OBJECT = 'object[type="application/pdf"]'
CT, PDF, CINE, SEG, VIDEO = "CT phantom", "PDF report", "Ultrasound cine", "Segmentation", "Video"


@dataclass(repr=False)
class DocumentsWalk:
    """What the walk through the viewer saw."""

    study: SyntheticStudy
    record: BrowserRecord
    pdf_object_data: str = ""
    pdf_blob_head: str = ""  # the first bytes of what the PDF viewport was given
    cine_frames: list[RegionStatistics] = field(default_factory=list)  # the viewport at frame 1 and after scrolling
    ct_before_segmentation: RegionStatistics | None = None
    ct_with_segmentation: RegionStatistics | None = None
    segmentation_panel: str = ""
    video: RegionStatistics | None = None


@pytest.fixture(scope="module")
def walk(chromium: Path, viewer: str, viewer_server: LoggedServer, viewer_origin: str) -> Iterator[DocumentsWalk]:
    """Store the study, open it and show each of its series."""
    study = build_document_study("Documents^Dora", "VIEWER-DOC")
    _store(viewer_server.base_url, study.files)
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    record = BrowserRecord(origins=(viewer_origin, viewer_server.base_url))
    result = DocumentsWalk(study, record)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS, viewport=WINDOW)
        page = context.new_page()
        record.attach(context, page)
        try:
            _walk_through(page, result)
        except Exception as error:
            failures = [f"{failure.method} {failure.url}: {failure.failure}" for failure in record.failures]
            pytest.fail("\n".join([f"the walk through the viewer stopped: {error}", *failures,
                                   *record.console[-20:], f"screenshots: {ARTIFACTS}"]), pytrace=False)
        finally:
            page.screenshot(path=ARTIFACTS / "last-page.png")
            document = {"responses": [asdict(r) for r in record.responses],
                        "failures": [asdict(f) for f in record.failures], "console": record.console}
            (ARTIFACTS / "network.json").write_text(json.dumps(document, indent=1))
            context.close()
    yield result


def _walk_through(page: Page, result: DocumentsWalk) -> None:
    page.goto(f"{result.record.origins[0]}/viewer?StudyInstanceUIDs={result.study.study_uid}", timeout=LOAD_TIMEOUT_MS)
    result.ct_before_segmentation = _drawn(page)
    result.record.wait_until_quiet(page, DRAW_TIMEOUT_SECONDS)
    page.screenshot(path=ARTIFACTS / "ct.png")

    _show_series(page, PDF)
    pdf = page.locator(PDF_OBJECT).first
    pdf.wait_for(state="attached", timeout=LOAD_TIMEOUT_MS)
    deadline = time.monotonic() + DRAW_TIMEOUT_SECONDS
    while not (pdf.get_attribute("data") or "") and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    result.pdf_object_data = pdf.get_attribute("data") or ""
    result.pdf_blob_head = page.evaluate(
        "async url => { const b = await (await fetch(url)).arrayBuffer();"
        " return String.fromCharCode(...new Uint8Array(b.slice(0, 8))); }", result.pdf_object_data)
    result.record.wait_until_quiet(page, DRAW_TIMEOUT_SECONDS)
    page.screenshot(path=ARTIFACTS / "pdf.png")

    _show_series(page, CINE)
    first = _drawn(page, others=[result.ct_before_segmentation])
    viewport = page.locator(VIEWPORT).first
    viewport.hover()
    for _ in range(5):  # the mouse wheel steps through the frames of a stack
        page.mouse.wheel(0, 120)
        page.wait_for_timeout(200)
    result.record.wait_until_quiet(page, DRAW_TIMEOUT_SECONDS)
    result.cine_frames = [first, _drawn(page, others=[first])]
    page.screenshot(path=ARTIFACTS / "cine.png")

    _show_series(page, VIDEO)  # cornerstone's video viewport draws an off-page <video> into its canvas
    result.video = _drawn(page, others=[result.cine_frames[-1]])
    result.record.wait_until_quiet(page, DRAW_TIMEOUT_SECONDS)
    page.screenshot(path=ARTIFACTS / "video.png")

    _show_series(page, SEG)
    yes = page.get_by_role("button", name="Yes")
    try:
        yes.wait_for(timeout=15_000)  # OHIF asks before it loads a SEG over its CT
        yes.click()
    except Exception:  # noqa: BLE001 - no prompt: the SEG loads at once
        pass
    result.record.wait_until_quiet(page, DRAW_TIMEOUT_SECONDS)
    page.locator(SEGMENTATION_PANEL_BUTTON).first.click(timeout=LOAD_TIMEOUT_MS)  # the right panel opens
    panel = page.get_by_text(SEGMENT_LABEL).first
    panel.wait_for(timeout=LOAD_TIMEOUT_MS)
    result.record.wait_until_quiet(page, DRAW_TIMEOUT_SECONDS)
    result.ct_with_segmentation = central_region_statistics(page.locator(VIEWPORT).first.screenshot())
    result.segmentation_panel = " ".join(page.locator("body").inner_text().split())
    page.screenshot(path=ARTIFACTS / "segmentation.png")


def _show_series(page: Page, description: str) -> None:
    # Image series are thumbnails, the PDF and the SEG list items; each shows its series description.
    # The study browser is the page's first element naming it (the viewport's overlay comes later).
    page.get_by_text(description, exact=True).first.dblclick(timeout=LOAD_TIMEOUT_MS)


def _drawn(page: Page, others: list[RegionStatistics | None] | None = None) -> RegionStatistics:
    """Poll the first viewport until it shows an image unlike ``others``; return the last look."""
    viewport = page.locator(VIEWPORT).first
    viewport.wait_for(timeout=LOAD_TIMEOUT_MS)
    deadline = time.monotonic() + DRAW_TIMEOUT_SECONDS
    while True:
        statistics = central_region_statistics(viewport.screenshot())
        new_image = all(other is None or statistics.differs_from(other) for other in others or [])
        if (statistics.drawn and new_image) or time.monotonic() > deadline:
            return statistics
        page.wait_for_timeout(250)


def _store(base_url: str, files: list[bytes]) -> None:
    response = httpx.post(f"{base_url}/v2/studies", content=multipart_body(files, BOUNDARY), timeout=120,
                          headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
                                   "Accept": "application/dicom+json"})
    assert response.status_code == 200, response.text


def _server_responses(walk: DocumentsWalk) -> list[SeenResponse]:
    return walk.record.responses_from(walk.record.origins[1])


def _series_uid(walk: DocumentsWalk, description: str) -> str:
    return next(series.series_uid for series in walk.study.series if series.description == description)


# --- The PDF ------------------------------------------------------------------------------------------------

def test_pdf_viewport_is_given_the_document(walk: DocumentsWalk) -> None:
    assert walk.pdf_object_data.startswith("blob:") and walk.pdf_blob_head.startswith("%PDF-1.4")


def test_pdf_comes_from_its_bulk_data_uri(walk: DocumentsWalk) -> None:
    series = f"/series/{_series_uid(walk, PDF)}/instances/"
    reads = [r for r in _server_responses(walk) if series in r.path and "/bulkdata/" in r.path]
    assert reads and all(r.status == 200 for r in reads), reads


# --- The cine -----------------------------------------------------------------------------------------------

def test_cine_shows_its_first_frame(walk: DocumentsWalk) -> None:
    assert walk.cine_frames and walk.cine_frames[0].drawn, walk.cine_frames and walk.cine_frames[0].describe()


def test_scrolling_the_cine_shows_another_frame(walk: DocumentsWalk) -> None:
    first, later = walk.cine_frames
    assert later.drawn and later.differs_from(first)


def test_cine_frames_are_read_one_by_one(walk: DocumentsWalk) -> None:
    series = f"/series/{_series_uid(walk, CINE)}/instances/"
    frames = {r.path.rsplit("/", 1)[-1] for r in _server_responses(walk) if series in r.path and "/frames/" in r.path}
    assert len(frames) >= 2


# --- The video ----------------------------------------------------------------------------------------------

def test_video_is_drawn(walk: DocumentsWalk) -> None:
    assert walk.video is not None and walk.video.drawn, walk.video and walk.video.describe()


def test_video_comes_from_the_rendered_resource(walk: DocumentsWalk) -> None:
    series = f"/series/{_series_uid(walk, VIDEO)}/instances/"
    reads = [r for r in _server_responses(walk) if series in r.path and r.path.endswith("/rendered")]
    assert reads and all(r.status == 200 for r in reads), reads


def test_video_frames_the_viewer_asks_for_are_answered(walk: DocumentsWalk) -> None:
    # OHIF also asks for single frames of the video as stored: they are decoded from its stream (PyAV).
    assert _video_frame_responses(walk) and all(r.status == 200 for r in _video_frame_responses(walk))


def _video_frame_responses(walk: DocumentsWalk) -> list[SeenResponse]:
    series = f"/series/{_series_uid(walk, VIDEO)}/instances/"
    return [r for r in _server_responses(walk) if series in r.path and "/frames/" in r.path]


# --- The segmentation ---------------------------------------------------------------------------------------

def test_segmentation_panel_lists_the_segment(walk: DocumentsWalk) -> None:
    assert SEGMENT_LABEL in walk.segmentation_panel


def test_segmentation_is_drawn_over_the_ct(walk: DocumentsWalk) -> None:
    assert walk.ct_before_segmentation is not None and walk.ct_with_segmentation is not None
    assert walk.ct_with_segmentation.drawn
    assert walk.ct_with_segmentation.differs_from(walk.ct_before_segmentation)


# --- Nothing failed, nothing read whole ---------------------------------------------------------------------

def test_no_request_failed(walk: DocumentsWalk) -> None:
    assert walk.record.failures == []


def test_no_response_was_an_error(walk: DocumentsWalk) -> None:
    errors = [(r.status, r.method, r.url) for r in walk.record.responses if r.status >= 400]
    assert errors == []


def test_no_instance_but_the_segmentation_was_retrieved_whole(walk: DocumentsWalk) -> None:
    # OHIF 3.13's SEG loader parses the whole SEG object (dcmjs); it reads no binary attribute of any other.
    whole = {r.path.split("/")[-3] for r in _server_responses(walk) if r.path.split("/")[-2] in ("instances", "series")}
    assert whole <= {_series_uid(walk, SEG)}
