"""The rendered query parameters of PS3.18 §8.3.5.1: `quality`, `viewport` and `window`, checked into values.

`quality=1..100` is the JPEG quality (default 100, as Azure). `viewport=vw,vh[,sx,sy,sw,sh]` scales the image
(or the region `sx,sy,sw,sh` of it, in image pixels; a negative `sw` or `sh` flips it) to fit in `vw`×`vh`,
its aspect ratio kept. `window=center,width[,function]` replaces the instance's own VOI LUT and windows;
`function` is LINEAR (default), LINEAR_EXACT or SIGMOID (PS3.3 C.11.2.1.3). Bad values are a 400.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass

from dicom_core.model.errors import BadRequestError

MIN_QUALITY, MAX_QUALITY = 1, 100
DEFAULT_QUALITY = 100
MAX_VIEWPORT = 4096  # pixels either way: a larger image would hold too much memory while it is encoded
_REGION_DEFAULTS = (0.0, 0.0, math.inf, math.inf)  # an empty sx, sy is 0; an empty sw, sh reaches the image's edge


class WindowFunction(enum.StrEnum):
    """The VOI LUT functions a `window` parameter may name."""

    LINEAR = "LINEAR"
    LINEAR_EXACT = "LINEAR_EXACT"
    SIGMOID = "SIGMOID"


@dataclass(frozen=True)
class Region:
    """A region of the source image in its pixels: top-left corner and extent (negative extent flips)."""

    x: float
    y: float
    width: float
    height: float

    def __post_init__(self) -> None:
        if self.x < 0 or self.y < 0 or self.width == 0 or self.height == 0:
            raise BadRequestError("The viewport's region needs sx, sy of 0 or more and sw, sh other than 0.")


@dataclass(frozen=True)
class Viewport:
    """The size the rendered image must fit in, and the region of the source image shown (None: all of it)."""

    width: int
    height: int
    region: Region | None = None

    def __post_init__(self) -> None:
        if not (1 <= self.width <= MAX_VIEWPORT and 1 <= self.height <= MAX_VIEWPORT):
            raise BadRequestError(f"The viewport's vw and vh must be whole numbers from 1 to {MAX_VIEWPORT}.")

    def fitted(self, columns: float, rows: float) -> tuple[int, int]:
        """The (width, height) of an image of ``columns``×``rows`` scaled to fit, its aspect ratio kept."""
        scale = min(self.width / columns, self.height / rows)
        return max(1, min(self.width, round(columns * scale))), max(1, min(self.height, round(rows * scale)))


@dataclass(frozen=True)
class Window:
    """A window that maps grey values to display values in place of the instance's own."""

    center: float
    width: float
    function: WindowFunction = WindowFunction.LINEAR

    def __post_init__(self) -> None:
        least = 1.0 if self.function is WindowFunction.LINEAR else 0.0
        if not (math.isfinite(self.center) and math.isfinite(self.width)) or self.width < least or self.width <= 0:
            raise BadRequestError(f"The window width of a {self.function} window must be "
                                  f"{'1 or more' if least else 'more than 0'}.")


@dataclass(frozen=True)
class RenderingParameters:
    """How a frame is rendered: JPEG quality, the viewport it fits in, and the window of grey images."""

    quality: int = DEFAULT_QUALITY
    viewport: Viewport | None = None
    window: Window | None = None

    def __post_init__(self) -> None:
        if not MIN_QUALITY <= self.quality <= MAX_QUALITY:
            raise BadRequestError(f"The quality must be a whole number from {MIN_QUALITY} to {MAX_QUALITY}.")

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> RenderingParameters:
        """The parameters of a rendered request's query string; absent ones take their defaults."""
        quality = query.get("quality")
        return cls(quality=DEFAULT_QUALITY if quality is None else _whole(quality, "quality"),
                   viewport=parse_viewport(query.get("viewport")), window=parse_window(query.get("window")))


DEFAULTS = RenderingParameters()


def parse_viewport(text: str | None) -> Viewport | None:
    """Parse `vw,vh[,sx,sy,sw,sh]` (None when absent); an empty sx or sy is 0, an empty sw or sh the image's."""
    if text is None:
        return None
    items = _items(text, "viewport", "vw,vh", "vw,vh,sx,sy,sw,sh")
    width, height = _whole(items[0], "viewport's vw"), _whole(items[1], "viewport's vh")
    if len(items) == 2:
        return Viewport(width, height)
    x, y, sw, sh = (_decimal(item, f"viewport's {name}") if item else default
                    for item, name, default in zip(items[2:], ("sx", "sy", "sw", "sh"), _REGION_DEFAULTS, strict=True))
    return Viewport(width, height, Region(x, y, sw, sh))


def parse_window(text: str | None) -> Window | None:
    """Parse `center,width[,function]` (None when absent); the function's name is case-insensitive."""
    if text is None:
        return None
    items = _items(text, "window", "center,width", "center,width,function")
    center, width = _decimal(items[0], "window's center"), _decimal(items[1], "window's width")
    if len(items) == 2:
        return Window(center, width)
    name = items[2].upper().replace("-", "_")
    if name not in WindowFunction.__members__:
        raise BadRequestError(f"The window function '{items[2]}' must be one of "
                              f"{', '.join(function.value for function in WindowFunction)}.")
    return Window(center, width, WindowFunction(name))


def _items(text: str, parameter: str, *forms: str) -> list[str]:
    """The comma-separated items of a parameter, as many as one of its ``forms`` has."""
    items = [item.strip() for item in text.split(",")]
    if len(items) not in {form.count(",") + 1 for form in forms}:
        raise BadRequestError(f"The {parameter} '{text}' must be {' or '.join(forms)}.")
    return items


def _whole(text: str, what: str) -> int:
    if not (text.isascii() and text.strip().isdigit()):
        raise BadRequestError(f"The {what} '{text}' is not a whole number.")
    return int(text)


def _decimal(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadRequestError(f"The {what} '{text}' is not a decimal number.") from None
    if not math.isfinite(value):
        raise BadRequestError(f"The {what} '{text}' is not a finite number.")
    return value
