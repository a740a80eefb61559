"""The rendered query parameters parse into values; bad ones are a 400 that says what is wrong."""

from __future__ import annotations

import math

import pytest

from dicom_core.model.errors import BadRequestError
from dicom_core.wado.rendering_parameters import (
    DEFAULTS,
    Region,
    RenderingParameters,
    Viewport,
    Window,
    WindowFunction,
)


def test_no_parameters_are_the_defaults() -> None:
    assert RenderingParameters.from_query({}) == DEFAULTS == RenderingParameters(100, None, None)


@pytest.mark.parametrize(("text", "quality"), [("1", 1), ("100", 100), ("55", 55), (" 7 ", 7)])
def test_quality_parses(text: str, quality: int) -> None:
    assert RenderingParameters.from_query({"quality": text}).quality == quality


@pytest.mark.parametrize("text", ["0", "101", "-5", "high", "", "5.5"])
def test_bad_quality_is_400(text: str) -> None:
    with pytest.raises(BadRequestError, match="quality"):
        RenderingParameters.from_query({"quality": text})


@pytest.mark.parametrize(("text", "viewport"), [
    ("128,64", Viewport(128, 64)),
    ("10,20,1,2,3,4", Viewport(10, 20, Region(1, 2, 3, 4))),
    ("10,20,1.5,0,-3.5,4", Viewport(10, 20, Region(1.5, 0, -3.5, 4))),
    ("10,20,,,,", Viewport(10, 20, Region(0, 0, math.inf, math.inf))),
])
def test_viewport_parses(text: str, viewport: Viewport) -> None:
    assert RenderingParameters.from_query({"viewport": text}).viewport == viewport


@pytest.mark.parametrize(("text", "message"), [
    ("128", "must be vw,vh"),
    ("1,2,3", "must be vw,vh"),
    ("0,10", "from 1 to 4096"),
    ("10,4097", "from 1 to 4096"),
    ("a,10", "vw 'a' is not a whole number"),
    ("10,-1", "vh '-1' is not a whole number"),
    ("10,10,x,0,1,1", "sx 'x' is not a decimal number"),
    ("10,10,0,0,nan,1", "sw 'nan' is not a finite number"),
    ("10,10,-1,0,1,1", "sx, sy of 0 or more"),
    ("10,10,0,0,0,1", "sw, sh other than 0"),
])
def test_bad_viewport_is_400(text: str, message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        RenderingParameters.from_query({"viewport": text})


@pytest.mark.parametrize(("text", "window"), [
    ("40,400", Window(40, 400, WindowFunction.LINEAR)),
    ("-600.5,1500,LINEAR_EXACT", Window(-600.5, 1500, WindowFunction.LINEAR_EXACT)),
    ("40,400,linear-exact", Window(40, 400, WindowFunction.LINEAR_EXACT)),
    ("40,0.5,sigmoid", Window(40, 0.5, WindowFunction.SIGMOID)),
])
def test_window_parses(text: str, window: Window) -> None:
    assert RenderingParameters.from_query({"window": text}).window == window


@pytest.mark.parametrize(("text", "message"), [
    ("40", "must be center,width"),
    ("40,400,LINEAR,1", "must be center,width"),
    ("c,400", "center 'c' is not a decimal number"),
    ("40,inf", "width 'inf' is not a finite number"),
    ("40,0.5", "LINEAR window must be 1 or more"),
    ("40,0,SIGMOID", "SIGMOID window must be more than 0"),
    ("40,400,CUBIC", "'CUBIC' must be one of LINEAR, LINEAR_EXACT, SIGMOID"),
])
def test_bad_window_is_400(text: str, message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        RenderingParameters.from_query({"window": text})


@pytest.mark.parametrize(("viewport", "columns", "rows", "size"), [
    (Viewport(128, 128), 512, 256, (128, 64)),
    (Viewport(128, 128), 16, 32, (64, 128)),
    (Viewport(100, 10), 3, 1000, (1, 10)),  # never less than a pixel
])
def test_viewport_fits_keeping_the_aspect(viewport: Viewport, columns: int, rows: int, size: tuple[int, int]) -> None:
    assert viewport.fitted(columns, rows) == size
