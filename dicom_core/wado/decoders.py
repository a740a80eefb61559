"""Which installed decoder plugin pydicom uses for a transfer syntax (the fastest one, not pydicom's first), and
grey RLE Lossless frames decoded by pylibjpeg-rle without pydicom's per-frame work."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import UID, JPEGLSLossless, JPEGLSNearLossless, RLELossless

# pydicom tries its decoders in a fixed order: its own RLE decoder (numpy, about 14× slower than pylibjpeg-rle
# on 8 frames of 512², measured) and libjpeg's JPEG-LS (about 6× slower than CharLS's pyjpegls) come first.
_FASTEST_DECODERS: dict[UID, tuple[str, ...]] = {
    RLELossless: ("pylibjpeg",),
    JPEGLSLossless: ("pyjpegls", "pylibjpeg"),
    JPEGLSNearLossless: ("pyjpegls", "pylibjpeg"),
}


def decoding_plugin(syntax: UID) -> str | None:
    """The fastest installed decoder plugin for ``syntax`` (measured by `make bench`), or None for pydicom's choice."""
    available = get_decoder(syntax).available_plugins
    return next((plugin for plugin in _FASTEST_DECODERS.get(syntax, ()) if plugin in available), None)


def plugin_option(syntax: UID) -> dict[str, Any]:
    """The keyword arguments of pydicom's decoding functions that choose `decoding_plugin`'s plugin."""
    plugin = decoding_plugin(syntax)
    return {"decoding_plugin": plugin} if plugin else {}


# Bits Allocated of grey RLE Lossless data that pylibjpeg-rle decodes to native bytes directly.
RLE_NATIVE_BITS = (8, 16, 32)


def rle_frames(dataset: Dataset, number_of_frames: int) -> Iterator[bytearray] | None:
    """Each frame of grey 8/16/32-bit RLE Lossless pixel data as native little endian bytes; None for other data.

    The bytes are the decoded values as stored (bits above Bits Stored untouched): pydicom's iter_array, which
    also masks or sign-extends them into arrays, took twice as long for 8 frames of 512² (measured).
    """
    bits = int(dataset.get("BitsAllocated") or 0)
    if int(dataset.get("SamplesPerPixel") or 1) != 1 or bits not in RLE_NATIVE_BITS:
        return None
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    offsets = (dataset.ExtendedOffsetTable, dataset.ExtendedOffsetTableLengths) \
        if "ExtendedOffsetTable" in dataset else None
    fragments = generate_frames(dataset.PixelData, number_of_frames=number_of_frames, extended_offsets=offsets)
    return (rle_frame(frame, rows, columns, bits) for frame in fragments)


def rle_frame(data: bytes, rows: int, columns: int, bits_allocated: int) -> bytearray:
    """One grey RLE Lossless frame (its fragments joined) as native little endian bytes, values as stored."""
    from rle.utils import decode_pixel_data  # on first use: the app's start does without it

    return cast(bytearray, decode_pixel_data(data, version=2, rows=rows, columns=columns,
                                             bits_allocated=bits_allocated))
