"""A multi-frame instance rendered whole: an animated GIF or an MP4 (H.264) video of all its frames.

Frames are shown for the instance's Frame Time, else at its Cine Rate or Recommended Display Frame Rate.
An instance stored with an MPEG-4 AVC/H.264 or HEVC/H.265 transfer syntax holds an elementary stream (Annex B
byte stream) in its Pixel Data fragments, not an MP4 file (PS3.5 §8.2.7, §8.2.8, §8.2.11): as `video/mp4` that
stream is put into an MP4 container as it is, never re-encoded. PyAV (FFmpeg's libraries, in its wheels)
encodes and muxes.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from fractions import Fraction
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset

from dicom_core.model.errors import NotAcceptableError
from dicom_core.wado.pixel_decoding import decode_frames, number_of_frames, read_instance, transfer_syntax
from dicom_core.wado.rendering import GIF, frame_image
from dicom_core.wado.rendering_parameters import DEFAULTS, RenderingParameters
from dicom_core.wado.video_streams import (
    H264_STREAMS,
    HEVC_STREAMS,
    elementary_stream,
    pyav,
    stream_format,
)

if TYPE_CHECKING:
    from av.packet import Packet
    from av.video.stream import VideoStream

MP4 = "video/mp4"
VIDEO_MEDIA_TYPES = (GIF, MP4)
DEFAULT_FRAME_MILLISECONDS = 100.0  # 10 frames a second when the instance says nothing
STORED_STREAMS = H264_STREAMS | HEVC_STREAMS  # instances whose rendered video is their own stream
_MP4_TICKS = 90_000  # the MP4 track's time base, 1/90,000 s as MPEG streams count


def render_video(source: BinaryIO, media_type: str, parameters: RenderingParameters = DEFAULTS) -> bytes:
    """Return every frame of the Part-10 file in ``source`` as an animated GIF or an MP4 video (``media_type``)."""
    dataset = read_instance(source)
    if "PixelData" not in dataset:
        raise NotAcceptableError("The instance has no pixel data to render.")
    syntax = transfer_syntax(dataset)
    if syntax in STORED_STREAMS:
        if media_type != MP4:
            raise NotAcceptableError(f"The instance is a video stream: it is rendered as {MP4} only.")
        if parameters != DEFAULTS:
            raise NotAcceptableError("A stored video stream is sent as it is: viewport, window and quality "
                                     "cannot be applied to it; ask without them.")
        return _stream_in_mp4(dataset, stream_format(syntax))
    frames = range(1, number_of_frames(dataset) + 1)
    images = (frame_image(dataset, number, decoded, parameters)
              for number, decoded in zip(frames, decode_frames(dataset, frames), strict=True))
    if media_type == GIF:
        return _animated_gif(list(images), frame_milliseconds(dataset))
    if media_type == MP4:
        return _h264_in_mp4(images, frame_milliseconds(dataset))
    raise NotAcceptableError(f"Instances are rendered whole as {' or '.join(VIDEO_MEDIA_TYPES)}, not '{media_type}'.")


def frame_milliseconds(dataset: Dataset) -> float:
    """How long each frame shows: Frame Time, else 1000 / (Cine Rate or Recommended Display Frame Rate)."""
    frame_time = _positive(dataset.get("FrameTime"))
    if frame_time is not None:
        return frame_time
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        rate = _positive(dataset.get(keyword))
        if rate is not None:
            return 1000.0 / rate
    return DEFAULT_FRAME_MILLISECONDS


def _positive(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]  # DS, IS or absent
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _animated_gif(images: list[Image.Image], milliseconds: float) -> bytes:
    output = io.BytesIO()
    # GIF counts delays in hundredths of a second; loop=0 repeats for ever, as a cine loop does. Pillow writes
    # identical consecutive frames as one, shown for their times added.
    images[0].save(output, format="GIF", save_all=True, append_images=images[1:], duration=round(milliseconds),
                   loop=0, optimize=False)
    return output.getvalue()


def _h264_in_mp4(images: Iterable[Image.Image], milliseconds: float) -> bytes:
    av = pyav(f"Rendering as {MP4}")
    output = io.BytesIO()
    with av.open(output, mode="w", format="mp4") as container:
        stream = container.add_stream("h264", rate=_frame_rate(milliseconds))
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast"}  # libx264: a quarter of the default preset's time
        for number, image in enumerate(images):
            if number == 0:  # 4:2:0 needs even sizes: an odd last row or column is left out
                stream.width, stream.height = max(2, image.width & ~1), max(2, image.height & ~1)
            pixels = np.asarray(image.convert("RGB").crop((0, 0, stream.width, stream.height)))
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return output.getvalue()


def _stream_in_mp4(dataset: Dataset, demuxer: str | None) -> bytes:
    av = pyav(f"Rendering as {MP4}")
    elementary = elementary_stream(dataset)
    ticks = max(1, round(frame_milliseconds(dataset) * _MP4_TICKS / 1000))
    output = io.BytesIO()
    try:
        with av.open(io.BytesIO(elementary), mode="r", format=demuxer) as source, \
                av.open(output, mode="w", format="mp4") as container:
            video = source.streams.video[0]
            packets = [packet for packet in source.demux(video) if packet.size]
            shown = _display_positions(video, packets)
            # Decoding may run ahead of display (B-frames): decode times start early enough to precede them.
            lead = max((number - position for number, position in enumerate(shown)), default=0)
            track = container.add_stream_from_template(video)
            track.time_base = Fraction(1, _MP4_TICKS)
            for number, packet in enumerate(packets):
                packet.stream, packet.time_base, packet.duration = track, track.time_base, ticks
                packet.pts, packet.dts = shown[number] * ticks, (number - lead) * ticks
                container.mux(packet)
    except (av.FFmpegError, IndexError, KeyError) as exc:  # not a stream FFmpeg reads, or one without video
        raise NotAcceptableError(f"The instance's video stream cannot be put into an MP4 file: {exc}") from exc
    return output.getvalue()


def _display_positions(video: VideoStream, packets: list[Packet]) -> list[int]:
    """Where each packet (in stream order) is shown: a raw stream has no timestamps, so its decoder tells."""
    decoder = video.codec_context
    order: list[int] = []
    for number, packet in enumerate(packets):
        packet.pts = number  # a decoded frame carries the timestamp of the packet it came from
        order.extend(int(frame.pts) for frame in decoder.decode(packet) if frame.pts is not None)
    order.extend(int(frame.pts) for frame in decoder.decode(None) if frame.pts is not None)
    positions = {number: position for position, number in enumerate(order)}
    return [positions[number] for number in range(len(packets))]


def _frame_rate(milliseconds: float) -> Fraction:
    return Fraction(1000.0 / milliseconds).limit_denominator(1001)
