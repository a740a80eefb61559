"""Multi-frame instances rendered whole: GIF and MP4 frame counts, sizes and timing; stored video streams in MP4."""

from __future__ import annotations

import io
import sys

import av
import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import HEVCMP51

from dicom_core.model.errors import NotAcceptableError
from dicom_core.wado.rendered_video import MP4, frame_milliseconds, render_video
from dicom_core.wado.rendering import GIF
from tests.factories import make_dataset, make_video_dataset, to_bytes


def _bars(frames: int, rows: int = 10, columns: int = 21, **attributes: object) -> Dataset:
    ds = make_dataset(rows=rows, columns=columns, frames=frames, **attributes)
    pixels = np.zeros((frames, rows, columns), dtype="<u2")
    for number in range(frames):
        pixels[number, :, number * 3: number * 3 + 3] = 1000
    ds.PixelData = pixels.tobytes()
    return ds


def _render(ds: Dataset, media_type: str) -> bytes:
    return render_video(io.BytesIO(to_bytes(ds)), media_type)


def _decoded(mp4: bytes) -> list[tuple[int, int]]:
    with av.open(io.BytesIO(mp4)) as container:
        return [(frame.width, frame.height) for frame in container.decode(video=0)]


@pytest.mark.parametrize(("attributes", "milliseconds"), [
    ({"FrameTime": "33.3", "CineRate": 10}, 33.3),  # Frame Time wins
    ({"CineRate": 25, "RecommendedDisplayFrameRate": 5}, 40.0),
    ({"RecommendedDisplayFrameRate": 4}, 250.0),
    ({"FrameTime": "0", "CineRate": 20}, 50.0),  # a zero Frame Time says nothing
    ({}, 100.0),
])
def test_frame_time_comes_from_the_instance(attributes: dict[str, object], milliseconds: float) -> None:
    assert frame_milliseconds(make_dataset(**attributes)) == pytest.approx(milliseconds)


def test_gif_has_every_frame_looping() -> None:
    image = Image.open(io.BytesIO(_render(_bars(6, FrameTime=50), GIF)))
    assert (image.n_frames, image.size, image.info["duration"], image.info["loop"]) == (6, (21, 10), 50, 0)


def test_mp4_of_an_odd_sized_image_leaves_out_the_last_column() -> None:
    assert _decoded(_render(_bars(4, rows=10, columns=21), MP4)) == [(20, 10)] * 4


def test_mp4_plays_at_the_instance_frame_rate() -> None:
    with av.open(io.BytesIO(_render(_bars(4, FrameTime=40), MP4))) as container:
        assert container.streams.video[0].average_rate == 25


def test_stored_h264_stream_keeps_display_order() -> None:
    with av.open(io.BytesIO(render_video(io.BytesIO(to_bytes(make_video_dataset(frames=8))), MP4))) as container:
        timestamps = [frame.pts for frame in container.decode(video=0)]
    assert timestamps == sorted(timestamps) and len(timestamps) == 8


def test_stored_hevc_stream_is_put_in_mp4() -> None:
    output = io.BytesIO()
    with av.open(output, mode="w", format="hevc") as container:
        stream = container.add_stream("hevc", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for number in range(5):
            pixels = np.full((48, 64, 3), number * 40, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode(None))
    ds = make_video_dataset(frames=5)
    ds.file_meta.TransferSyntaxUID = HEVCMP51
    ds.PixelData = encapsulate([output.getvalue()], has_bot=True)
    with av.open(io.BytesIO(render_video(io.BytesIO(to_bytes(ds)), MP4))) as container:
        assert container.streams.video[0].codec_context.name == "hevc"
        assert len(list(container.decode(video=0))) == 5


def test_mpeg2_video_is_decoded_and_rendered_as_h264_mp4_or_gif() -> None:
    data = to_bytes(make_video_dataset(frames=3, codec="mpeg2video"))
    with av.open(io.BytesIO(render_video(io.BytesIO(data), MP4))) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.video[0].frames == 3
    assert Image.open(io.BytesIO(render_video(io.BytesIO(data), GIF))).n_frames == 3


def test_a_stream_ffmpeg_cannot_read_is_not_acceptable() -> None:
    ds = make_video_dataset(frames=3)
    ds.PixelData = encapsulate([b"\x00\x00\x00\x01not video at all"], has_bot=True)
    with pytest.raises(NotAcceptableError, match="cannot be put into an MP4 file"):
        render_video(io.BytesIO(to_bytes(ds)), MP4)


def test_instance_without_pixel_data_is_not_acceptable() -> None:
    ds = make_dataset(frames=2)
    del ds.PixelData
    with pytest.raises(NotAcceptableError, match="no pixel data"):
        render_video(io.BytesIO(to_bytes(ds)), GIF)


def test_video_without_pyav_installed_is_406_naming_the_docs(monkeypatch: pytest.MonkeyPatch) -> None:
    data = to_bytes(make_video_dataset(frames=2))
    monkeypatch.setitem(sys.modules, "av", None)  # what `import av` meets where PyAV is not installed
    with pytest.raises(NotAcceptableError, match="deploy.md"):
        render_video(io.BytesIO(data), MP4)
