"""Frames of a stored MPEG video over HTTP: decoded from the stream and answered as Explicit VR Little Endian RGB."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from dicom_core.wire.media_types import parse_media_type
from tests.conftest import serve_app
from tests.factories import h264_stream, make_video_dataset, to_bytes

OCTET_STREAM_AS_STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
FRAMES, WIDTH, HEIGHT = 6, 64, 48


def _stored(server: str, ds: Dataset) -> str:
    response = httpx.post(f"{server}/v2/studies", content=to_bytes(ds),
                          headers={"Content-Type": "application/dicom", "Accept": "application/dicom+json"}, timeout=60)
    assert response.status_code == 200, response.text
    return f"/v2/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def _get(server: str, path: str, accept: str) -> httpx.Response:
    return httpx.get(server + path, headers={"Accept": accept}, timeout=60)


def _parts(response: httpx.Response) -> list[tuple[str, bytes]]:
    """(Content-Type, body) of each part of a multipart/related answer."""
    media = parse_media_type(response.headers["content-type"])
    assert media.type == "multipart/related", response.headers["content-type"]
    parts = []
    for piece in response.content.split(b"--" + media.params["boundary"].encode())[1:-1]:
        head, _, body = piece.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in head.decode().split("\r\n"))}
        parts.append((headers["content-type"], body.removesuffix(b"\r\n")))
    return parts


def _decoded(codec: str) -> list[bytes]:
    """Every frame of the test stream as FFmpeg decodes it, RGB 8-bit by pixel."""
    stream = h264_stream(FRAMES, WIDTH, HEIGHT, codec)
    with av.open(io.BytesIO(stream), format="h264" if codec == "h264" else None) as container:
        return [frame.to_ndarray(format="rgb24").tobytes() for frame in container.decode(video=0)]


@pytest.fixture(scope="module", params=["h264", "mpeg2video"])
def video(request: pytest.FixtureRequest, server: str) -> tuple[str, str]:
    """(instance path, codec) of a stored H.264 or MPEG-2 video of FRAMES frames."""
    return _stored(server, make_video_dataset(FRAMES, WIDTH, HEIGHT, codec=request.param)), request.param


def test_video_frames_as_stored_are_decoded_rgb_in_explicit_vr_little_endian(
    server: str, video: tuple[str, str],
) -> None:
    path, codec = video
    response = _get(server, path + "/frames/5,2", OCTET_STREAM_AS_STORED)
    assert response.status_code == 200, response.text
    expected = _decoded(codec)
    assert _parts(response) == [
        (f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}", expected[4]),
        (f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}", expected[1]),
    ]
    assert len(expected[4]) == WIDTH * HEIGHT * 3


def test_video_frame_in_explicit_vr_little_endian_single_part(server: str, video: tuple[str, str]) -> None:
    path, codec = video
    response = _get(server, path + "/frames/6", f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}")
    assert response.status_code == 200, response.text
    assert response.content == _decoded(codec)[5]


def test_video_frame_beyond_the_number_of_frames_is_404(server: str, video: tuple[str, str]) -> None:
    assert _get(server, video[0] + f"/frames/{FRAMES + 1}", OCTET_STREAM_AS_STORED).status_code == 404


def test_video_frames_as_jpeg_2000_are_406(server: str, video: tuple[str, str]) -> None:
    assert _get(server, video[0] + "/frames/1", 'multipart/related; type="image/jp2"').status_code == 406


def test_video_frame_renders_as_an_image(server: str, video: tuple[str, str]) -> None:
    response = _get(server, video[0] + "/frames/3/rendered", "image/png")
    assert response.status_code == 200, response.text
    assert Image.open(io.BytesIO(response.content)).size == (WIDTH, HEIGHT)


@pytest.fixture(scope="module")
def server_without_pyav(storage_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server whose `import av` fails, as in a deployment that does not install PyAV."""
    shadow = tmp_path_factory.mktemp("no-pyav")
    (shadow / "av.py").write_text('raise ImportError("PyAV is not installed here")\n')
    env = {**storage_env, "PYTHONPATH": str(shadow)}
    with serve_app(env, Path(tmp_path_factory.mktemp("server-without-pyav"))) as base_url:
        yield base_url


def test_video_frames_without_pyav_are_406_naming_the_docs(server_without_pyav: str) -> None:
    path = _stored(server_without_pyav, make_video_dataset(3, WIDTH, HEIGHT))
    response = _get(server_without_pyav, path + "/frames/1", OCTET_STREAM_AS_STORED)
    assert response.status_code == 406
    assert "PyAV" in response.text and "docs/deploy.md, 'Rendered video'" in response.text
