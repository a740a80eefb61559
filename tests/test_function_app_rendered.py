"""The rendered parameters end to end (viewport, window, quality): real HTTP over loopback, real Azurite behind it."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image
from pydicom import Dataset

from tests.factories import h264_stream, make_dataset, make_video_dataset, to_bytes


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


# --- Multi-frame instances rendered whole: animated GIF and MP4 video ---------------------------------------

def _moving_bar(frames: int, rows: int = 12, columns: int = 24, **attributes: object) -> Dataset:
    """A grey multi-frame instance whose frames differ (a bar of 400 moving right on 0), windowed 0..1000."""
    ds = make_dataset(rows=rows, columns=columns, frames=frames, WindowCenter=500, WindowWidth=1000, **attributes)
    pixels = np.zeros((frames, rows, columns), dtype="<u2")
    for number in range(frames):
        pixels[number, :, number * 2: number * 2 + 2] = 400
    ds.PixelData = pixels.tobytes()
    return ds


def _get_rendered(server: str, path: str, accept: str) -> httpx.Response:
    return httpx.get(server + path, headers={"Accept": accept}, timeout=60)


def _mp4_frames(content: bytes) -> list[tuple[int, int]]:
    import av  # noqa: PLC0415

    with av.open(io.BytesIO(content)) as container:
        return [(frame.width, frame.height) for frame in container.decode(video=0)]


@pytest.mark.parametrize(("timing", "milliseconds"), [
    ({"FrameTime": 40}, 40), ({"CineRate": 20}, 50), ({"RecommendedDisplayFrameRate": 5}, 200), ({}, 100),
])
def test_multi_frame_instance_renders_as_an_animated_gif_of_every_frame(
    server: str, timing: dict[str, int], milliseconds: int,
) -> None:
    path = _stored(server, _moving_bar(5, **timing))
    response = _get_rendered(server, path + "/rendered", "image/gif")
    assert response.status_code == 200 and response.headers["content-type"] == "image/gif"
    image = Image.open(io.BytesIO(response.content))
    assert (image.n_frames, image.size, image.info["duration"]) == (5, (24, 12), milliseconds)


def test_animated_gif_keeps_viewport_and_window(server: str) -> None:
    path = _stored(server, _moving_bar(4))
    response = _get_rendered(server, path + "/rendered?viewport=12,12,0,0,12,12&window=300,2", "image/gif")
    image = Image.open(io.BytesIO(response.content))
    assert (image.n_frames, image.size) == (4, (12, 12))
    assert np.asarray(image.convert("L")).max() == 255  # the bar at 400 is above the window; its own shows it grey


def test_single_frame_instance_renders_as_a_still_gif(server: str) -> None:
    path = _stored(server, make_dataset(rows=10, columns=20))
    image = Image.open(io.BytesIO(_get_rendered(server, path + "/rendered", "image/gif").content))
    assert (image.format, image.n_frames, image.size) == ("GIF", 1, (20, 10))


def test_frame_renders_as_a_still_gif(server: str) -> None:
    path = _stored(server, _moving_bar(3))
    image = Image.open(io.BytesIO(_get_rendered(server, path + "/frames/2/rendered", "image/gif").content))
    assert (image.n_frames, image.size) == (1, (24, 12))


def test_multi_frame_instance_renders_as_mp4_video(server: str) -> None:
    path = _stored(server, _moving_bar(5, rows=12, columns=25, FrameTime=40))
    response = _get_rendered(server, path + "/rendered?viewport=50,24", "video/mp4")
    assert response.status_code == 200 and response.headers["content-type"] == "video/mp4"
    assert response.content[4:8] == b"ftyp"
    assert _mp4_frames(response.content) == [(50, 24)] * 5


def test_frame_is_not_rendered_as_video(server: str) -> None:
    path = _stored(server, _moving_bar(3))
    response = _get_rendered(server, path + "/frames/1/rendered", "video/mp4")
    assert response.status_code == 406 and "image/gif" in response.text


def test_stored_h264_video_renders_as_its_own_stream_in_mp4(server: str) -> None:
    ds = make_video_dataset(frames=6, width=64, height=48)
    path = _stored(server, ds)
    response = _get_rendered(server, path + "/rendered", "video/mp4")
    assert response.status_code == 200 and response.headers["content-type"] == "video/mp4"
    assert _mp4_frames(response.content) == [(64, 48)] * 6
    # The stream's own coded slices, not re-encoded: MP4 keeps NAL units with a length before each, not start codes.
    largest_unit = max(h264_stream(frames=6, width=64, height=48).split(b"\x00\x00\x01"), key=len).rstrip(b"\x00")
    assert largest_unit in response.content


@pytest.mark.parametrize(("query", "accept", "message"), [
    ("", "image/gif", "rendered as video/mp4 only"),
    ("?viewport=32,32", "video/mp4", "sent as it is"),
])
def test_stored_h264_video_is_406_where_it_cannot_be_sent_as_is(
    server: str, query: str, accept: str, message: str,
) -> None:
    path = _stored(server, make_video_dataset(frames=6))
    response = _get_rendered(server, path + "/rendered" + query, accept)
    assert response.status_code == 406 and message in response.text


@pytest.mark.parametrize("accept", ["*/*", "video/*", ""])
def test_stored_h264_video_is_rendered_as_mp4_by_default(server: str, accept: str) -> None:
    path = _stored(server, make_video_dataset(frames=4))
    response = httpx.get(server + path + "/rendered", headers={"Accept": accept} if accept else {}, timeout=60)
    assert response.status_code == 200 and response.headers["content-type"] == "video/mp4"


def test_multi_frame_image_is_still_jpeg_by_default(server: str) -> None:
    path = _stored(server, _moving_bar(3))
    assert _get_rendered(server, path + "/rendered", "*/*").headers["content-type"] == "image/jpeg"
