"""Values as Explicit VR Little Endian holds them: pixel arrays as bytes, big endian binary values swapped."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.valuerep import VR

# Bytes per swapped unit of each binary VR whose value a big endian file stores in big endian order.
_SWAP_WIDTHS: dict[str, int] = {VR.OW: 2, VR.OL: 4, VR.OF: 4, VR.OD: 8, VR.OV: 8}


def little_endian_bytes(pixels: np.ndarray) -> bytes:
    """The array's values as contiguous little endian bytes."""
    return np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<")).tobytes()


def prepare_explicit_little_endian(dataset: Dataset, *, from_big_endian: bool, pixel_data: bool) -> None:
    """Parse every element so each has its VR; from a big endian file, byte-swap the binary values too."""
    bits_allocated = int(dataset.get("BitsAllocated") or 8)
    for element in dataset.iterall():  # iterating converts raw elements: a file's own VRs can be missing or wrong
        width = _SWAP_WIDTHS.get(element.VR) if from_big_endian else None
        if width is None or not isinstance(element.value, (bytes, bytearray)) or not element.value:
            continue
        if element.keyword == "PixelData":
            if not pixel_data:
                continue
            # Big endian OW pixel data is swapped per pixel when pixels are wider than a word.
            width = max(width, bits_allocated // 8)
        value = bytes(element.value)
        whole = len(value) // width * width
        swapped = np.frombuffer(value[:whole], dtype=f">u{width}").astype(f"<u{width}").tobytes()
        element.value = swapped + value[whole:]
