"""The rendered parameters end to end (viewport, window, quality): real HTTP over loopback, real Azurite behind it."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image
from pydicom import Dataset

from tests.factories import make_dataset, to_bytes


def _stored(server: str, ds: Dataset) -> str:
    response = httpx.post(f"{server}/v2/studies", content=to_bytes(ds),
                          headers={"Content-Type": "application/dicom", "Accept": "application/dicom+json"}, timeout=60)
    assert response.status_code == 200, response.text
    return f"/v2/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def _rendered(server: str, path: str, accept: str = "image/png") -> np.ndarray:
    response = httpx.get(server + path, headers={"Accept": accept}, timeout=60)
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)))


def _grey(values: list[int], **attributes: object) -> Dataset:
    ds = make_dataset(rows=1, columns=len(values), **attributes)
    ds.PixelData = np.array(values, dtype="<u2").tobytes()
    return ds


@pytest.mark.parametrize(("query", "size"), [
    ("", (20, 10)), ("?viewport=40,40", (40, 20)), ("?viewport=10,10", (10, 5)),
    ("?viewport=20,10,0,0,10,10", (10, 10)),
])
def test_viewport_sizes_the_rendered_image(server: str, query: str, size: tuple[int, int]) -> None:
    path = _stored(server, make_dataset(rows=10, columns=20))
    rendered = _rendered(server, path + "/rendered" + query)
    assert (rendered.shape[1], rendered.shape[0]) == size


def test_viewport_region_is_cut_out_and_flipped(server: str) -> None:
    path = _stored(server, make_dataset(rows=4, columns=4))  # 0..15, shown as 17 v
    assert _rendered(server, path + "/rendered?viewport=2,2,2,0,2,2").tolist() == [[34, 51], [102, 119]]
    assert _rendered(server, path + "/rendered?viewport=2,2,2,0,-2,2").tolist() == [[51, 34], [119, 102]]


def test_viewport_of_a_frame(server: str) -> None:
    path = _stored(server, make_dataset(rows=10, columns=20, frames=3))
    assert _rendered(server, path + "/frames/3/rendered?viewport=8,8").shape == (4, 8)


@pytest.mark.parametrize(("window", "expected"), [
    ("", [[0, 0, 0]]),  # the instance's own window, center 1000 width 1000, puts all three below its middle
    ("?window=100,101", [[0, 129, 255]]),
    ("?window=100,101,linear", [[0, 129, 255]]),
    ("?window=100,200,LINEAR_EXACT", [[0, 128, 255]]),
    ("?window=100,50,SIGMOID", [[0, 128, 255]]),
])
def test_window_sets_the_display_values(server: str, window: str, expected: list[list[int]]) -> None:
    path = _stored(server, _grey([0, 100, 200], WindowCenter=1000, WindowWidth=1000))
    assert _rendered(server, path + "/rendered" + window).tolist() == expected


def test_quality_makes_a_smaller_jpeg(server: str) -> None:
    path = _stored(server, make_dataset(rows=64, columns=64))
    sizes = [len(httpx.get(server + path + f"/rendered?quality={q}", headers={"Accept": "image/jpeg"}).content)
             for q in (5, 100)]
    assert sizes[0] < sizes[1]


@pytest.mark.parametrize(("query", "message"), [
    ("quality=0", "quality must be a whole number from 1 to 100"),
    ("quality=high", "quality 'high' is not a whole number"),
    ("viewport=10", "must be vw,vh or vw,vh,sx,sy,sw,sh"),
    ("viewport=0,10", "vw and vh must be whole numbers from 1 to 4096"),
    ("viewport=10,10,0,0,30,5", "not inside the image"),
    ("window=40", "must be center,width or center,width,function"),
    ("window=40,400,cubic", "must be one of LINEAR, LINEAR_EXACT, SIGMOID"),
    ("window=40,0", "width of a LINEAR window must be 1 or more"),
])
def test_bad_parameters_are_400_saying_why(server: str, query: str, message: str) -> None:
    path = _stored(server, make_dataset(rows=10, columns=20))
    response = httpx.get(f"{server}{path}/rendered?{query}", headers={"Accept": "image/png"}, timeout=60)
    assert response.status_code == 400
    assert message in response.text
