"""Reading a stored Part-10 file and decoding its frames to pixel arrays (pydicom's decoders, PyAV for video)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import get_nr_frames
from pydicom.uid import UID, JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSNearLossless

from dicom_core.model.errors import NotAcceptableError
from dicom_core.wado.decoders import plugin_option
from dicom_core.wado.transfer_syntaxes import can_decode, described, normalized
from dicom_core.wado.video_streams import decode_video_frames, is_video_stream

# Decoding these loses nothing more, but the pixels were lossy-compressed once: PS3.3 C.7.6.1.1.5 says so forever.
_LOSSY_METHODS = {JPEGBaseline8Bit: "ISO_10918_1", JPEGExtended12Bit: "ISO_10918_1", JPEGLSNearLossless: "ISO_14495_1"}


@dataclass(frozen=True)
class DecodedFrame:
    """One decoded frame, shaped (rows, columns[, samples]), and the Image Pixel values describing it."""

    pixels: np.ndarray
    properties: dict[str, str | int]  # pydicom's names: rows, bits_stored, photometric_interpretation, ...

    @property
    def photometric_interpretation(self) -> str:
        """The frame's Photometric Interpretation after decoding (YCbCr is converted to RGB)."""
        return str(self.properties["photometric_interpretation"])


def read_instance(source: BinaryIO) -> Dataset:
    """Parse the whole Part-10 file in ``source`` (read from its start); NotAcceptableError if unreadable."""
    source.seek(0)
    try:
        # force: files stored without preamble (pydicom's own in-memory files) still have File Meta Information.
        dataset = pydicom.dcmread(source, force=True)
        dataset.file_meta.TransferSyntaxUID  # noqa: B018 - a file without it is not one we can answer from
    except Exception as exc:  # pydicom raises many exception types for malformed input
        raise NotAcceptableError(f"The stored instance cannot be read as DICOM: {exc}") from exc
    return dataset


def transfer_syntax(dataset: Dataset) -> UID:
    """Return the dataset's Transfer Syntax UID, without padding."""
    return UID(normalized(str(dataset.file_meta.TransferSyntaxUID)))


def number_of_frames(dataset: Dataset) -> int:
    """Return the number of frames of the dataset's Pixel Data (0 when it has none)."""
    if "PixelData" not in dataset:
        return 0
    try:
        return int(get_nr_frames(dataset, warn=False))
    except (TypeError, ValueError) as exc:
        raise NotAcceptableError(f"The instance's Number of Frames is not a number: {exc}") from exc


def check_frames(dataset: Dataset, frames: Sequence[int]) -> None:
    """Raise IndexError for the first 1-based frame number the dataset does not have."""
    available = number_of_frames(dataset)
    for frame in frames:
        if not 1 <= frame <= available:
            raise IndexError(f"The instance has {available} frame(s); frame {frame} does not exist.")


def decode_frames(dataset: Dataset, frames: Sequence[int]) -> Iterator[DecodedFrame]:
    """Decode the 1-based ``frames`` in order, YCbCr converted to RGB; NotAcceptableError if impossible."""
    syntax = transfer_syntax(dataset)
    if is_video_stream(syntax):
        yield from _video_frames(dataset, syntax, frames)
        return
    if not can_decode(syntax):
        raise NotAcceptableError(f"Pixel data stored as {described(syntax)} cannot be decoded.")
    try:
        arrays = get_decoder(syntax).iter_array(dataset, indices=[frame - 1 for frame in frames], as_rgb=True,
                                                **plugin_option(syntax))
        for pixels, properties in arrays:
            yield DecodedFrame(pixels, properties)
    except Exception as exc:  # decoders raise ValueError, RuntimeError, OSError, ... on data they cannot handle
        raise NotAcceptableError(f"The pixel data cannot be decoded: {exc}") from exc


def keep_lossy_history(dataset: Dataset, stored: UID) -> None:
    """Mark decoded pixels of a lossy transfer syntax as lossy-compressed once, unless the dataset says so already."""
    method = _LOSSY_METHODS.get(stored)
    if method and "LossyImageCompression" not in dataset:
        dataset.LossyImageCompression = "01"
        dataset.LossyImageCompressionMethod = method


def _video_frames(dataset: Dataset, syntax: UID, frames: Sequence[int]) -> Iterator[DecodedFrame]:
    """Frames of a video stream as decoded video is described (PS3.5 §8.2.5): RGB, 8 bits, colour-by-pixel."""
    for pixels in decode_video_frames(dataset, syntax, frames):
        rows, columns = pixels.shape[:2]
        yield DecodedFrame(pixels, {
            "rows": rows, "columns": columns, "samples_per_pixel": 3, "number_of_frames": 1,
            "bits_allocated": 8, "bits_stored": 8, "pixel_representation": 0,
            "photometric_interpretation": "RGB", "planar_configuration": 0,
        })
