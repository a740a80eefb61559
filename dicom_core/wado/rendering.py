"""Rendering one frame as a consumer image (JPEG, PNG or GIF) the way WADO-RS /rendered and /thumbnail return it.

The rendered parameters (`rendering_parameters.py`) apply in the order of PS3.18 §8.3.5.1: the window (grey
images only) maps stored values to display values, the viewport's region is cut out and scaled to fit, the
quality applies to JPEG.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from typing import BinaryIO, cast

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi

from dicom_core.model.errors import BadRequestError, NotAcceptableError
from dicom_core.wado.pixel_decoding import DecodedFrame, check_frames, decode_frames, read_instance
from dicom_core.wado.rendering_parameters import DEFAULTS, RenderingParameters, Viewport, Window

JPEG = "image/jpeg"
PNG = "image/png"
GIF = "image/gif"
RENDERED_MEDIA_TYPES = (JPEG, PNG)  # as Azure's /rendered
IMAGE_MEDIA_TYPES = (JPEG, PNG, GIF)
_PILLOW_FORMATS = {JPEG: "JPEG", PNG: "PNG", GIF: "GIF"}

_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
_PALETTE = "PALETTE COLOR"
# Where stored values become display values: the Modality LUT (rescale) and the VOI LUT (window) modules,
# at the top level or, in enhanced multi-frame objects, in the shared and per-frame functional groups.
_MODALITY_KEYWORDS = ("RescaleSlope", "RescaleIntercept", "ModalityLUTSequence")
_VOI_KEYWORDS = ("WindowCenter", "WindowWidth", "VOILUTFunction", "VOILUTSequence")
_FRAME_GROUP_SEQUENCES = ("PixelValueTransformationSequence", "FrameVOILUTSequence")


def render_frame(
    source: BinaryIO, frame: int, media_type: str, parameters: RenderingParameters = DEFAULTS
) -> bytes:
    """Return the 1-based ``frame`` of the Part-10 file in ``source`` rendered as ``media_type`` (JPEG, PNG, GIF)."""
    image_format = _PILLOW_FORMATS.get(media_type.strip().lower())
    if image_format is None:
        raise NotAcceptableError(
            f"Instances cannot be rendered as '{media_type}'; possible are {', '.join(IMAGE_MEDIA_TYPES)}."
        )
    dataset = read_instance(source)
    if "PixelData" not in dataset:
        raise NotAcceptableError("The instance has no pixel data to render.")
    check_frames(dataset, [frame])
    decoded = next(decode_frames(dataset, [frame]))
    output = io.BytesIO()
    options = {"quality": parameters.quality} if image_format == "JPEG" else {}
    image = frame_image(dataset, frame, decoded, parameters)
    try:
        image.save(output, format=image_format, **options)
    except (ValueError, OSError) as exc:  # an image too large for the format
        raise NotAcceptableError(f"Frame {frame} cannot be rendered: {exc}") from exc
    return output.getvalue()


def frame_image(dataset: Dataset, frame: int, decoded: DecodedFrame, parameters: RenderingParameters) -> Image.Image:
    """The decoded 1-based ``frame`` as the image to show: display values, window and viewport applied."""
    try:
        image = Image.fromarray(display_pixels(dataset, frame, decoded, parameters.window))
        return image if parameters.viewport is None else fit_to_viewport(image, parameters.viewport)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, NotImplementedError, OSError) as exc:
        # LUT attributes that don't add up
        raise NotAcceptableError(f"Frame {frame} cannot be rendered: {exc}") from exc


def fit_to_viewport(image: Image.Image, viewport: Viewport) -> Image.Image:
    """Cut out the viewport's region (flipped where its extent is negative) and scale it to fit, aspect kept."""
    columns, rows = image.size
    x0, y0, x1, y1, flip_x, flip_y = 0.0, 0.0, float(columns), float(rows), False, False
    if (region := viewport.region) is not None:
        x0, y0 = region.x, region.y
        x1 = float(columns) if region.width == math.inf else x0 + abs(region.width)
        y1 = float(rows) if region.height == math.inf else y0 + abs(region.height)
        flip_x, flip_y = region.width < 0, region.height < 0
        if x1 > columns or y1 > rows or x0 >= x1 or y0 >= y1:
            raise BadRequestError(f"The viewport's region {x0:g},{y0:g} to {x1:g},{y1:g} is not inside the "
                                  f"image of {columns}x{rows} pixels.")
    fitted = image.resize(viewport.fitted(x1 - x0, y1 - y0), Image.Resampling.LANCZOS, box=(x0, y0, x1, y1))
    if flip_x:
        fitted = fitted.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if flip_y:
        fitted = fitted.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return fitted


def display_pixels(dataset: Dataset, frame: int, decoded: DecodedFrame, window: Window | None = None) -> np.ndarray:
    """Map a decoded frame to 8-bit display values: (rows, columns) grey or (rows, columns, 3) RGB.

    A ``window`` replaces the grey image's own VOI LUT and windows; colour images have none.
    """
    photometric = decoded.photometric_interpretation
    if photometric in _MONOCHROME:
        grey = _grey_levels(dataset, frame, decoded.pixels, window)
        return 255 - grey if photometric == "MONOCHROME1" else grey
    if photometric == _PALETTE:
        rgb = apply_color_lut(decoded.pixels, dataset)[..., :3]  # drop a palette's alpha channel
        # 16-bit palette entries span 0..65535; some writers put 8-bit values in them all the same.
        return _shift_to_8_bits(rgb, 16 if rgb.dtype.itemsize > 1 and int(rgb.max()) > 255 else 8)
    if decoded.pixels.ndim == 3 and decoded.pixels.shape[-1] == 3:  # RGB; the decoder converted any YCbCr
        return _shift_to_8_bits(decoded.pixels, int(decoded.properties["bits_stored"]))
    raise NotAcceptableError(f"Pixel data with Photometric Interpretation '{photometric}' cannot be rendered.")


def _grey_levels(dataset: Dataset, frame: int, pixels: np.ndarray, window: Window | None) -> np.ndarray:
    """Apply the Modality LUT, then ``window``, the VOI LUT or the first window, else the min-max, to 0..255."""
    luts = _frame_luts(dataset, frame)
    values = apply_modality_lut(pixels, luts)
    if window is not None:
        return _unit_to_8_bits(_apply_window(values, window.center, window.width, window.function))
    lut = luts.get("VOILUTSequence")
    if lut and lut[0].get("LUTDescriptor") and lut[0].get("LUTData") is not None:
        return _through_voi_lut(values, luts)
    own = _first_window(luts)
    if own is not None:
        return _unit_to_8_bits(_apply_window(values, *own, str(luts.get("VOILUTFunction") or "LINEAR")))
    low, high = float(np.min(values)), float(np.max(values))
    spread = (values.astype(np.float64) - low) / (high - low) if high > low else np.zeros(values.shape)
    return _unit_to_8_bits(spread)


def _frame_luts(dataset: Dataset, frame: int) -> Dataset:
    """Collect the frame's LUT attributes: top level, overridden by shared, then by per-frame functional groups."""
    luts = Dataset()
    luts.file_meta = dataset.file_meta  # pydicom reads OW LUT Data with the file's byte order
    for keyword in _MODALITY_KEYWORDS + _VOI_KEYWORDS:
        if keyword in dataset:
            luts[keyword] = dataset[keyword]
    for group in _functional_groups(dataset, frame):
        for sequence in _FRAME_GROUP_SEQUENCES:
            items = group.get(sequence)
            if not items:
                continue
            for keyword in _MODALITY_KEYWORDS + _VOI_KEYWORDS:
                if keyword in items[0]:
                    luts[keyword] = items[0][keyword]
    return luts


def _functional_groups(dataset: Dataset, frame: int) -> Iterator[Dataset]:
    shared = dataset.get("SharedFunctionalGroupsSequence")
    if shared:
        yield shared[0]
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    if per_frame and frame <= len(per_frame):
        yield per_frame[frame - 1]


def _first_window(luts: Dataset) -> tuple[float, float] | None:
    """Return the first (center, width) pair, or None when absent or not usable."""
    center, width = luts.get("WindowCenter"), luts.get("WindowWidth")
    if center in (None, "") or width in (None, ""):
        return None
    # Several values are alternative windows (PS3.3 C.11.2.1.2); the first is the default one.
    first_center = float(center[0] if isinstance(center, MultiValue) else center)
    first_width = float(width[0] if isinstance(width, MultiValue) else width)
    return (first_center, first_width) if first_width > 0 else None


def _apply_window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """Map values to 0..1 through a window (PS3.3 C.11.2.1.2 and C.11.2.1.3)."""
    x = values.astype(np.float64)
    if function.strip().upper() == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    if function.strip().upper() == "LINEAR_EXACT":
        return np.clip((x - center) / width + 0.5, 0.0, 1.0)
    if width <= 1:  # LINEAR with width 1 is a threshold at center - 0.5
        return (x > center - 0.5).astype(np.float64)
    return np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _through_voi_lut(values: np.ndarray, luts: Dataset) -> np.ndarray:
    """Apply the first VOI LUT; its output range (from its own entries) becomes 0..255."""
    descriptor = cast(list[int], luts.VOILUTSequence[0].LUTDescriptor)
    entries, first = descriptor[0] or 2**16, descriptor[1]
    # pydicom indexes the LUT with the values; the modality rescale may have made them fractional.
    mapped = apply_voi(np.rint(values).astype(np.int64), luts).astype(np.float64)
    table = apply_voi(np.arange(first, first + entries, dtype=np.int64), luts)
    low, high = float(table.min()), float(table.max())
    return _unit_to_8_bits((mapped - low) / (high - low) if high > low else np.zeros(mapped.shape))


def _unit_to_8_bits(unit: np.ndarray) -> np.ndarray:
    return cast(np.ndarray, np.rint(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8))


def _shift_to_8_bits(pixels: np.ndarray, bits_stored: int) -> np.ndarray:
    if bits_stored <= 8:
        return cast(np.ndarray, np.clip(pixels, 0, 255).astype(np.uint8))
    return cast(np.ndarray, np.clip(pixels >> (bits_stored - 8), 0, 255).astype(np.uint8))
