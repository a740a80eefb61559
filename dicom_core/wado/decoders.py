"""Which installed decoder plugin pydicom uses for a transfer syntax: the fastest one, not pydicom's first."""

from __future__ import annotations

from typing import Any

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
