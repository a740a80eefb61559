"""Instances stored as MPEG video (PS3.5 §8.2.5-8.2.11): their transfer syntaxes, their elementary stream, and PyAV.

Their Pixel Data fragments hold one compressed stream, not a frame each: a frame is had only by decoding the
stream up to it. PyAV (FFmpeg's libraries, in its wheels) decodes; it is an optional install (docs/deploy.md).
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator, Sequence
from types import ModuleType

import numpy as np
import pydicom.uid
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments

from dicom_core.model.errors import NotAcceptableError

H264_STREAMS = frozenset({pydicom.uid.MPEG4HP41, pydicom.uid.MPEG4HP41F, pydicom.uid.MPEG4HP41BD,
                          pydicom.uid.MPEG4HP41BDF, pydicom.uid.MPEG4HP422D, pydicom.uid.MPEG4HP422DF,
                          pydicom.uid.MPEG4HP423D, pydicom.uid.MPEG4HP423DF, pydicom.uid.MPEG4HP42STEREO,
                          pydicom.uid.MPEG4HP42STEREOF})
HEVC_STREAMS = frozenset({pydicom.uid.HEVCMP51, pydicom.uid.HEVCM10P51})
MPEG2_STREAMS = frozenset({pydicom.uid.MPEG2MPML, pydicom.uid.MPEG2MPMLF, pydicom.uid.MPEG2MPHL,
                           pydicom.uid.MPEG2MPHLF})
VIDEO_STREAMS = H264_STREAMS | HEVC_STREAMS | MPEG2_STREAMS
DEPLOY_SECTION = "docs/deploy.md, 'Rendered video'"
# FFmpeg's demuxer of each stream; None lets FFmpeg tell an MPEG-2 elementary stream from a program stream.
_FORMATS: dict[str, str | None] = {
    **dict.fromkeys(H264_STREAMS, "h264"), **dict.fromkeys(HEVC_STREAMS, "hevc"), **dict.fromkeys(MPEG2_STREAMS)
}


def is_video_stream(transfer_syntax: str) -> bool:
    """Tell whether pixel data in ``transfer_syntax`` is one MPEG video stream."""
    return transfer_syntax.strip().rstrip("\x00") in VIDEO_STREAMS


def stream_format(transfer_syntax: str) -> str | None:
    """The FFmpeg demuxer of a video transfer syntax's stream (None: FFmpeg's probe decides)."""
    return _FORMATS[transfer_syntax.strip().rstrip("\x00")]


def pyav(wanted: str) -> ModuleType:
    """PyAV, imported when ``wanted`` (e.g. "Rendering as video/mp4") needs it; a 406 where it is not installed."""
    try:
        import av  # FFmpeg's libraries load only when a video is asked for
    except ImportError:
        raise NotAcceptableError(f"{wanted} needs PyAV, which this deployment does not install "
                                 f"({DEPLOY_SECTION}).") from None
    return av


def elementary_stream(dataset: Dataset) -> bytes:
    """The video stream of the dataset's Pixel Data: its fragments joined (the first item is the offset table)."""
    return b"".join(itertools.islice(generate_fragments(dataset.PixelData), 1, None))


def decode_video_frames(dataset: Dataset, transfer_syntax: str, frames: Sequence[int]) -> Iterator[np.ndarray]:
    """The 1-based ``frames`` (display order) of the video as RGB 8-bit arrays, in the order asked.

    The stream is decoded once, up to the last frame asked and no further; only the frames asked are kept.
    """
    av = pyav("Decoding frames of a video stream")
    wanted = set(frames)
    last = max(frames)
    kept: dict[int, np.ndarray] = {}
    try:
        with av.open(io.BytesIO(elementary_stream(dataset)), mode="r", format=stream_format(transfer_syntax)) \
                as container:
            video = container.streams.video[0]
            video.thread_type = "AUTO"  # frame and slice threads: decoding is what a frame of a video costs
            for number, frame in enumerate(container.decode(video), start=1):
                if number in wanted:
                    kept[number] = frame.to_ndarray(format="rgb24")
                if number >= last:
                    break
    except (av.FFmpegError, IndexError) as exc:  # not a stream FFmpeg reads, or one without video
        raise NotAcceptableError(f"The instance's video stream cannot be decoded: {exc}") from exc
    missing = sorted(wanted - kept.keys())
    if missing:
        raise NotAcceptableError(f"The video stream holds fewer frames than its Number of Frames says: "
                                 f"frame {missing[0]} cannot be decoded.")
    return (kept[frame] for frame in frames)
