"""PS3.18 bulkdata and pixeldata resources of a study, series and instance, and media types of bulk data answers."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import MPEG4HP41, generate_uid

from dicom_core.wire.media_types import parse_media_type
from tests.factories import make_binary_dataset, multipart_body, to_bytes

STORE_TYPE = 'multipart/related; type="application/dicom"; boundary=test-boundary'
DICOM_JSON = "application/dicom+json"
PIXEL_DATA, OVERLAY_DATA, DOCUMENT = "7FE00010", "60003000", "00420011"
VIDEO_STREAM = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 16


@pytest.fixture(scope="module")
def study(server: str) -> list[Dataset]:
    """Two instances of one series and a video in a second series, all in one study."""
    uid, series = generate_uid(), generate_uid()
    first, second = make_binary_dataset(study=uid, series=series), make_binary_dataset(study=uid, series=series)
    video = make_binary_dataset(study=uid)
    video.file_meta.TransferSyntaxUID = MPEG4HP41
    video.NumberOfFrames = 25
    video.PixelData = encapsulate([VIDEO_STREAM])
    video["PixelData"].VR = "OB"
    response = httpx.post(f"{server}/v2/studies", content=multipart_body([to_bytes(d) for d in (first, second, video)]),
                          headers={"Content-Type": STORE_TYPE, "Accept": DICOM_JSON}, timeout=60)
    assert response.status_code == 200, response.text
    return [first, second, video]


def _parts(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    media = parse_media_type(response.headers["content-type"])
    assert media.type == "multipart/related", response.headers["content-type"]
    pieces = response.content.split(b"--" + media.params["boundary"].encode())
    assert pieces[0] == b"" and pieces[-1] == b"--\r\n"
    parts = []
    for piece in pieces[1:-1]:
        head, _, body = piece.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        parts.append(({k.lower(): v for k, v in headers.items()}, body.removesuffix(b"\r\n")))
    return parts


def _path(ds: Dataset, level: str) -> str:
    study = f"/v2/studies/{ds.StudyInstanceUID}"
    series = f"{study}/series/{ds.SeriesInstanceUID}"
    return {"study": study, "series": series, "instance": f"{series}/instances/{ds.SOPInstanceUID}"}[level]


def _metadata(server: str, ds: Dataset) -> dict[str, Any]:
    response = httpx.get(f"{server}{_path(ds, 'instance')}/metadata", headers={"Accept": DICOM_JSON})
    assert response.status_code == 200, response.text
    return response.json()[0]  # type: ignore[no-any-return]


def _bulk_values(ds: Dataset) -> list[bytes]:
    values = [ds.PixelData if "PixelData" in ds else b"", ds[0x60003000].value, ds.EncapsulatedDocument,
              ds.WaveformSequence[0].WaveformData]
    return values if ds.file_meta.TransferSyntaxUID != MPEG4HP41 else [VIDEO_STREAM, *values[1:]]


@pytest.mark.parametrize(("level", "count"), [("study", 3), ("series", 2), ("instance", 1)])
def test_bulkdata_of_a_scope_answers_every_value_at_its_uri(
    server: str, study: list[Dataset], level: str, count: int,
) -> None:
    response = httpx.get(f"{server}{_path(study[0], level)}/bulkdata", timeout=60)
    assert response.status_code == 200, response.text
    parts = _parts(response)
    expected = {value for ds in study[:count] for value in _bulk_values(ds)}
    assert {body for _, body in parts} == expected
    assert len(parts) == 4 * count
    for headers, body in parts:  # each part's Content-Location answers the same bytes
        assert httpx.get(headers["content-location"], headers={"Accept": "*/*"}).content == body


def test_pixeldata_of_a_study_answers_each_instances_pixel_data(server: str, study: list[Dataset]) -> None:
    response = httpx.get(f"{server}{_path(study[0], 'study')}/pixeldata", timeout=60)
    assert response.status_code == 200, response.text
    parts = _parts(response)
    assert sorted(body for _, body in parts) == sorted([study[0].PixelData, study[1].PixelData, VIDEO_STREAM])
    types = {body: headers["content-type"] for headers, body in parts}
    assert types[VIDEO_STREAM] == "video/mp4"
    assert types[study[0].PixelData] == "application/octet-stream"


@pytest.mark.parametrize("level", ["series", "instance"])
def test_pixeldata_of_a_series_or_instance(server: str, study: list[Dataset], level: str) -> None:
    response = httpx.get(f"{server}{_path(study[2], level)}/pixeldata", timeout=60)
    assert [body for _, body in _parts(response)] == [VIDEO_STREAM]


def test_an_unknown_study_has_no_bulk_data(server: str) -> None:
    assert httpx.get(f"{server}/v2/studies/{generate_uid()}/bulkdata").status_code == 404


def test_a_scope_in_an_unservable_type_answers_406(server: str, study: list[Dataset]) -> None:
    response = httpx.get(f"{server}{_path(study[0], 'study')}/bulkdata", headers={"Accept": "application/dicom"})
    assert response.status_code == 406


def test_dicomweb_client_retrieves_the_bulk_data_of_a_series(server: str, study: list[Dataset]) -> None:
    client = DICOMwebClient(f"{server}/v2")
    values = client.retrieve_bulkdata(f"{server}{_path(study[0], 'series')}/bulkdata")
    assert sorted(values) == sorted(_bulk_values(study[0]) + _bulk_values(study[1]))


def test_an_encapsulated_pdf_answers_as_application_pdf(server: str, study: list[Dataset]) -> None:
    uri = _metadata(server, study[0])[DOCUMENT]["BulkDataURI"]
    response = httpx.get(uri)
    assert response.headers["content-type"] == "application/pdf"
    assert response.content == study[0].EncapsulatedDocument
    parts = httpx.get(uri, headers={"Accept": 'multipart/related; type="application/pdf"'})
    assert _parts(parts)[0][0]["content-type"] == "application/pdf"
    assert httpx.get(uri, headers={"Accept": "text/html"}).status_code == 406


def test_video_pixel_data_answers_its_stream_as_video_mp4_with_ranges(server: str, study: list[Dataset]) -> None:
    uri = _metadata(server, study[2])[PIXEL_DATA]["BulkDataURI"]
    whole = httpx.get(uri, headers={"Accept": "video/mp4"})
    assert (whole.headers["content-type"], whole.content) == ("video/mp4", VIDEO_STREAM)
    scrub = httpx.get(uri, headers={"Accept": "video/*", "Range": "bytes=1000-1999"})
    assert scrub.status_code == 206
    assert scrub.content == VIDEO_STREAM[1000:2000]
    assert httpx.get(uri, headers={"Range": f"bytes={len(VIDEO_STREAM)}-"}).status_code == 416


@pytest.fixture(scope="module")
def split_video(server: str) -> Dataset:
    """A video instance whose stream is split over three fragments."""
    video = make_binary_dataset()
    video.file_meta.TransferSyntaxUID = MPEG4HP41
    video.NumberOfFrames = 25
    video.PixelData = encapsulate([VIDEO_STREAM], fragments_per_frame=3)
    video["PixelData"].VR = "OB"
    response = httpx.post(f"{server}/v2/studies", content=multipart_body([to_bytes(video)]),
                          headers={"Content-Type": STORE_TYPE, "Accept": DICOM_JSON}, timeout=60)
    assert response.status_code == 200, response.text
    return video


def test_a_video_stream_split_over_fragments_answers_as_one_video_mp4(server: str, split_video: Dataset) -> None:
    uri = _metadata(server, split_video)[PIXEL_DATA]["BulkDataURI"]
    whole = httpx.get(uri, headers={"Accept": "video/mp4"})
    assert (whole.status_code, whole.headers["content-type"], whole.content) == (200, "video/mp4", VIDEO_STREAM)
    parts = _parts(httpx.get(uri, headers={"Accept": 'multipart/related; type="video/mp4"'}))
    assert [(headers["content-type"], body) for headers, body in parts] == [("video/mp4", VIDEO_STREAM)]


def test_a_range_across_fragments_of_a_split_stream(server: str, split_video: Dataset) -> None:
    uri = _metadata(server, split_video)[PIXEL_DATA]["BulkDataURI"]
    scrub = httpx.get(uri, headers={"Range": "bytes=1000-3999"})  # the fragments are about 1,370 bytes each
    assert (scrub.status_code, scrub.content) == (206, VIDEO_STREAM[1000:4000])
    assert scrub.headers["content-range"] == f"bytes 1000-3999/{len(VIDEO_STREAM)}"


def test_pixeldata_of_a_split_stream_is_the_stream(server: str, split_video: Dataset) -> None:
    response = httpx.get(f"{server}{_path(split_video, 'instance')}/pixeldata", timeout=60)
    assert [body for _, body in _parts(response)] == [VIDEO_STREAM]


def test_other_values_answer_as_octet_stream(server: str, study: list[Dataset]) -> None:
    uri = _metadata(server, study[0])[OVERLAY_DATA]["BulkDataURI"]
    response = httpx.get(uri, headers={"Accept": "*/*"})
    assert response.headers["content-type"] == "application/octet-stream"
    assert httpx.get(uri, headers={"Accept": "application/pdf"}).status_code == 406


def test_a_scope_answers_only_the_values_of_the_types_accept_allows(server: str, study: list[Dataset]) -> None:
    response = httpx.get(f"{server}{_path(study[0], 'series')}/bulkdata",
                         headers={"Accept": 'multipart/related; type="application/pdf"'})
    assert response.status_code == 200, response.text
    parts = _parts(response)
    assert sorted(body for _, body in parts) == sorted([study[0].EncapsulatedDocument, study[1].EncapsulatedDocument])
    assert {headers["content-type"] for headers, _ in parts} == {"application/pdf"}
