"""Frames decoded from a stored video stream: display order, the order asked, and a stream shorter than it says."""

from __future__ import annotations

import io

import numpy as np
import pytest
from pydicom.uid import MPEG4HP41

from dicom_core.model.errors import NotAcceptableError
from dicom_core.wado.pixel_decoding import read_instance
from dicom_core.wado.video_streams import decode_video_frames, is_video_stream
from tests.factories import make_video_dataset, to_bytes


def _bar_column(frame: np.ndarray) -> int:
    """Where the white bar of `h264_stream`'s pictures starts."""
    return int(np.argmax(frame[..., 0].mean(axis=0) > 200))


def test_frames_are_numbered_in_display_order_and_returned_in_the_order_asked() -> None:
    dataset = read_instance(io.BytesIO(to_bytes(make_video_dataset(frames=6))))
    frames = list(decode_video_frames(dataset, MPEG4HP41, [5, 2, 5]))
    assert [_bar_column(frame) for frame in frames] == [32, 8, 32]  # the bar moves 8 pixels a frame
    assert frames[0].shape == (48, 64, 3) and frames[0].dtype == np.uint8


def test_a_frame_beyond_the_stream_is_not_acceptable() -> None:
    dataset = read_instance(io.BytesIO(to_bytes(make_video_dataset(frames=4))))
    with pytest.raises(NotAcceptableError, match="fewer frames"):
        list(decode_video_frames(dataset, MPEG4HP41, [6]))


def test_video_transfer_syntaxes_are_recognised_padded_or_not() -> None:
    assert is_video_stream(f"{MPEG4HP41}\x00") and not is_video_stream("1.2.840.10008.1.2.1")
