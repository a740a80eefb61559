"""Thumbnails end to end: real HTTP over loopback to the local host, real Azurite behind it."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from azure.storage.blob import ContainerClient
from PIL import Image
from pydicom import Dataset
from pydicom.uid import generate_uid

from tests.conftest import Azurite
from tests.factories import make_dataset, multipart_body, to_bytes

STORE_TYPE = 'multipart/related; type="application/dicom"; boundary=test-boundary'
METADATA_CONTAINER = "dicomweb-metadata"


def _store(server: str, *datasets: Dataset, method: str = "POST") -> None:
    response = httpx.request(method, f"{server}/v2/studies", content=multipart_body([to_bytes(d) for d in datasets]),
                             headers={"Content-Type": STORE_TYPE, "Accept": "application/dicom+json"}, timeout=60)
    assert response.status_code in (200, 202), response.text


def _get(server: str, path: str, accept: str | None = None) -> httpx.Response:
    return httpx.get(server + path, headers={"Accept": accept} if accept else {}, timeout=60)


def _image(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def _instance_path(ds: Dataset, version: int = 2) -> str:
    return f"/v{version}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def _frames(values: list[int], rows: int = 4, columns: int = 4, **attributes: object) -> Dataset:
    """A multi-frame dataset whose frame k is all ``values[k - 1]``, shown through a threshold window at 150."""
    ds = make_dataset(rows=rows, columns=columns, frames=len(values), WindowCenter=150, WindowWidth=1, **attributes)
    ds.PixelData = np.repeat(np.array(values, dtype="<u2"), rows * columns).tobytes()
    return ds


def _is_white(image: Image.Image) -> bool:
    return float(np.asarray(image.convert("L")).mean()) > 128


@pytest.fixture(scope="module")
def metadata_blobs(azurite: Azurite) -> ContainerClient:
    return ContainerClient.from_connection_string(azurite.connection_string, METADATA_CONTAINER)


def _thumbnail_names(container: ContainerClient, ds: Dataset) -> list[str]:
    prefix = f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}/"
    return [blob.name for blob in container.list_blobs(name_starts_with=prefix) if ".thumbnail." in blob.name]


@pytest.mark.parametrize("version", [1, 2])
def test_instance_thumbnail_is_a_jpeg_that_fits_in_128(server: str, version: int) -> None:
    ds = make_dataset(rows=10, columns=20)
    _store(server, ds)
    response = _get(server, _instance_path(ds, version) + "/thumbnail")
    assert response.headers["content-type"] == "image/jpeg"
    image = _image(response)
    assert (image.format, image.size) == ("JPEG", (128, 64))


@pytest.mark.parametrize(("accept", "image_format"), [
    ("image/png", "PNG"), ("image/gif", "GIF"), ("image/jpeg", "JPEG"), ("*/*", "JPEG"), ("image/*", "JPEG"),
    ("image/webp, image/gif;q=0.5", "GIF"),
])
def test_thumbnail_format_follows_accept(server: str, accept: str, image_format: str) -> None:
    ds = make_dataset(rows=16, columns=16)
    _store(server, ds)
    response = _get(server, _instance_path(ds) + "/thumbnail", accept)
    assert response.headers["content-type"] == f"image/{image_format.lower()}"
    assert (_image(response).format, _image(response).size) == (image_format, (128, 128))


@pytest.mark.parametrize(("viewport", "size"), [("64,64", (64, 32)), ("30,100", (30, 15)), ("400,400", (400, 200))])
def test_thumbnail_viewport_is_its_size(server: str, viewport: str, size: tuple[int, int]) -> None:
    ds = make_dataset(rows=10, columns=20)
    _store(server, ds)
    assert _image(_get(server, _instance_path(ds) + f"/thumbnail?viewport={viewport}", "image/png")).size == size


def test_series_thumbnail_shows_the_middle_instance(server: str) -> None:
    study, series = generate_uid(), generate_uid()
    # InstanceNumber orders them, not their UIDs; only the middle one (number 2) is 40 wide.
    datasets = [make_dataset(study=study, series=series, rows=10, columns=40 if number == 2 else 20,
                             InstanceNumber=number) for number in (3, 1, 2)]
    _store(server, *datasets)
    assert _image(_get(server, f"/v2/studies/{study}/series/{series}/thumbnail", "image/png")).size == (128, 32)


def test_study_thumbnail_shows_the_middle_series_middle_instance(server: str) -> None:
    study = generate_uid()
    datasets = []
    for series_number in (1, 2, 3):
        series = generate_uid()
        datasets += [make_dataset(study=study, series=series, rows=10, columns=40 if (series_number, number) == (2, 2)
                                  else 20, InstanceNumber=number, SeriesNumber=series_number) for number in (1, 2, 3)]
    _store(server, *datasets)
    assert _image(_get(server, f"/v1/studies/{study}/thumbnail", "image/png")).size == (128, 32)


def test_study_thumbnail_skips_a_middle_series_without_images(server: str) -> None:
    study = generate_uid()
    no_pixels = make_dataset(study=study, SeriesNumber=2, Rows=None, Columns=None, PixelData=None,
                             SamplesPerPixel=None, PhotometricInterpretation=None, BitsAllocated=None,
                             BitsStored=None, HighBit=None, PixelRepresentation=None)
    images = [make_dataset(study=study, SeriesNumber=number, rows=10, columns=20) for number in (1, 3)]
    _store(server, no_pixels, *images)
    assert _image(_get(server, f"/v2/studies/{study}/thumbnail", "image/png")).size == (128, 64)


def test_multi_frame_thumbnail_shows_the_middle_frame(server: str) -> None:
    ds = _frames([100, 200, 100])
    _store(server, ds)
    assert _is_white(_image(_get(server, _instance_path(ds) + "/thumbnail", "image/png")))


@pytest.mark.parametrize(("frame", "white"), [(1, False), (2, True), (3, False)])
def test_frame_thumbnail_shows_that_frame(server: str, frame: int, white: bool) -> None:
    ds = _frames([100, 200, 100])
    _store(server, ds)
    image = _image(_get(server, _instance_path(ds) + f"/frames/{frame}/thumbnail", "image/png"))
    assert (image.size, _is_white(image)) == ((128, 128), white)


def test_second_request_is_answered_from_the_cached_blob(server: str, metadata_blobs: ContainerClient) -> None:
    ds = make_dataset(rows=10, columns=20)
    _store(server, ds)
    assert _thumbnail_names(metadata_blobs, ds) == []
    first = _get(server, _instance_path(ds) + "/thumbnail", "image/png")
    [name] = _thumbnail_names(metadata_blobs, ds)
    assert metadata_blobs.download_blob(name).readall() == first.content
    # Bytes the renderer would never make: the second answer can only come from the blob.
    marker = io.BytesIO()
    Image.new("L", (7, 3)).save(marker, format="PNG")
    metadata_blobs.upload_blob(name, marker.getvalue(), overwrite=True)
    assert _get(server, _instance_path(ds) + "/thumbnail", "image/png").content == marker.getvalue()


def test_each_size_and_format_is_a_blob_of_its_own(server: str, metadata_blobs: ContainerClient) -> None:
    ds = make_dataset(rows=10, columns=20)
    _store(server, ds)
    for query, accept in (("", "image/png"), ("?viewport=64,64", "image/png"), ("", "image/gif")):
        _image(_get(server, _instance_path(ds) + "/thumbnail" + query, accept))
    assert len(_thumbnail_names(metadata_blobs, ds)) == 3


def test_replaced_instance_gets_a_new_thumbnail(server: str) -> None:
    ds = make_dataset(rows=10, columns=20)
    _store(server, ds)
    assert _image(_get(server, _instance_path(ds) + "/thumbnail", "image/png")).size == (128, 64)
    replacement = make_dataset(study=ds.StudyInstanceUID, series=ds.SeriesInstanceUID, sop=ds.SOPInstanceUID,
                               rows=20, columns=10)
    _store(server, replacement, method="PUT")
    assert _image(_get(server, _instance_path(ds) + "/thumbnail", "image/png")).size == (64, 128)
    assert _image(_get(server, f"/v2/studies/{ds.StudyInstanceUID}/thumbnail", "image/png")).size == (64, 128)


@pytest.mark.parametrize(("suffix", "accept", "status", "message"), [
    ("/thumbnail", "image/jp2", 406, "image/jpeg or image/png or image/gif"),
    ("/thumbnail?viewport=0,10", "image/png", 400, "vw and vh"),
    ("/thumbnail?viewport=10", "image/png", 400, "must be vw,vh"),
    ("/thumbnail?viewport=10,10,0,0,2,2", "image/png", 400, "its size alone"),
    ("/frames/2/thumbnail", "image/png", 404, "has 1 frame"),
    ("/frames/0/thumbnail", "image/png", 400, "1-based"),
    ("/frames/1,2/thumbnail", "image/png", 400, "one frame"),
])
def test_thumbnail_refuses(server: str, suffix: str, accept: str, status: int, message: str) -> None:
    ds = make_dataset()
    _store(server, ds)
    response = _get(server, _instance_path(ds) + suffix, accept)
    assert (response.status_code, message in response.text) == (status, True), response.text


@pytest.mark.parametrize("path", [
    "/v2/studies/{unknown}/thumbnail",
    "/v2/studies/{study}/series/{unknown}/thumbnail",
    "/v2/studies/{study}/series/{series}/instances/{unknown}/thumbnail",
    "/v2/studies/{study}/series/{series}/instances/{unknown}/frames/1/thumbnail",
])
def test_thumbnail_of_what_is_not_stored_is_404(server: str, path: str) -> None:
    ds = make_dataset()
    _store(server, ds)
    url = path.format(unknown=generate_uid(), study=ds.StudyInstanceUID, series=ds.SeriesInstanceUID)
    assert _get(server, url, "image/jpeg").status_code == 404


def test_thumbnail_of_an_instance_without_pixels_is_406(server: str) -> None:
    ds = make_dataset(Rows=None, Columns=None, PixelData=None)
    _store(server, ds)
    assert _get(server, _instance_path(ds) + "/thumbnail", "image/jpeg").status_code == 406


def test_study_thumbnail_follows_a_store_that_changes_the_middle_series(server: str) -> None:
    study = generate_uid()
    _store(server, make_dataset(study=study, SeriesNumber=5, rows=10, columns=20))
    for _ in range(2):  # the second answer comes from the blob this process remembers for the study
        assert _image(_get(server, f"/v2/studies/{study}/thumbnail", "image/png")).size == (128, 64)
    _store(server, make_dataset(study=study, SeriesNumber=1, rows=20, columns=10))  # now the middle series
    assert _image(_get(server, f"/v2/studies/{study}/thumbnail", "image/png")).size == (64, 128)


def test_study_thumbnail_of_a_deleted_study_is_404(server: str) -> None:
    ds = make_dataset(rows=10, columns=20)
    _store(server, ds)
    path = f"/v2/studies/{ds.StudyInstanceUID}"
    assert _get(server, f"{path}/thumbnail", "image/png").status_code == 200
    assert _get(server, f"{path}/thumbnail", "image/png").status_code == 200
    assert httpx.delete(server + path).status_code == 204
    assert _get(server, f"{path}/thumbnail", "image/png").status_code == 404
