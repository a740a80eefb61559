"""Rendered frames decode with Pillow to the right size, mode and display values."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut
from pydicom.sequence import Sequence

from dicom_core.model.errors import BadRequestError, NotAcceptableError
from dicom_core.wado.rendering import GIF, IMAGE_MEDIA_TYPES, JPEG, PNG, render_frame
from dicom_core.wado.rendering_parameters import DEFAULTS, RenderingParameters, Viewport, Window, WindowFunction
from tests.factories import make_dataset, to_bytes


def _file(name: str) -> io.BufferedReader:
    return open(get_testdata_file(name), "rb")


def _render_file(name: str, frame: int = 1, media_type: str = PNG,
                 parameters: RenderingParameters = DEFAULTS) -> Image.Image:
    with _file(name) as source:
        return Image.open(io.BytesIO(render_frame(source, frame, media_type, parameters)))


def _render(ds: Dataset, frame: int = 1, parameters: RenderingParameters = DEFAULTS) -> np.ndarray:
    """Render a generated dataset as PNG (lossless) and return its pixels."""
    return np.asarray(Image.open(io.BytesIO(render_frame(io.BytesIO(to_bytes(ds)), frame, PNG, parameters))))


def _grey(values: list[int], **attributes: object) -> Dataset:
    """A one-row 16-bit MONOCHROME2 dataset holding ``values`` (signed when PixelRepresentation=1)."""
    ds = make_dataset(rows=1, columns=len(values), **attributes)
    dtype = "<i2" if ds.PixelRepresentation == 1 else "<u2"
    ds.PixelData = np.array(values, dtype=dtype).tobytes()
    return ds


@pytest.mark.parametrize(("media_type", "image_format"), [(JPEG, "JPEG"), (PNG, "PNG")])
def test_monochrome_frame_renders_as_grey_image_of_its_size(media_type: str, image_format: str) -> None:
    image = _render_file("CT_small.dcm", media_type=media_type)
    assert (image.format, image.size, image.mode) == (image_format, (128, 128), "L")


@pytest.mark.parametrize("name", ["SC_rgb_rle.dcm", "ExplVR_BigEnd.dcm", "SC_rgb_jpeg_gdcm.dcm"])
def test_rgb_frame_renders_its_own_pixels(name: str) -> None:
    image = _render_file(name)
    assert image.mode == "RGB"
    assert np.array_equal(np.asarray(image), dcmread(get_testdata_file(name)).pixel_array)


@pytest.mark.parametrize("name", ["examples_ybr_color.dcm", "SC_rgb_dcmtk_+eb+cy+np.dcm",
                                  "SC_ybr_full_422_uncompressed.dcm",
                                  "examples_jpeg2k.dcm"])
def test_ycbcr_frame_renders_as_rgb(name: str) -> None:
    image = _render_file(name)
    expected = dcmread(get_testdata_file(name)).pixel_array  # pydicom converts YCbCr to RGB
    expected = expected[0] if expected.ndim == 4 else expected
    assert image.mode == "RGB"
    assert np.array_equal(np.asarray(image), expected)


def test_palette_colour_frame_renders_through_its_palette() -> None:
    ds = dcmread(get_testdata_file("examples_palette.dcm"))
    rgb = apply_color_lut(ds.pixel_array, ds)
    expected = (rgb >> 8).astype(np.uint8) if rgb.max() > 255 else rgb.astype(np.uint8)
    image = _render_file("examples_palette.dcm")
    assert image.mode == "RGB"
    assert np.array_equal(np.asarray(image), expected)


def test_sixteen_bit_rgb_keeps_its_most_significant_bits() -> None:
    expected = (dcmread(get_testdata_file("SC_rgb_rle_16bit.dcm")).pixel_array >> 8).astype(np.uint8)
    assert np.array_equal(np.asarray(_render_file("SC_rgb_rle_16bit.dcm")), expected)


def test_big_endian_frame_renders_like_its_little_endian_twin() -> None:
    assert np.array_equal(np.asarray(_render_file("MR_small_bigendian.dcm")), np.asarray(_render_file("MR_small.dcm")))


def test_requested_frame_is_rendered() -> None:
    first, second = (np.asarray(_render_file("SC_rgb_rle_2frame.dcm", frame)) for frame in (1, 2))
    expected = dcmread(get_testdata_file("SC_rgb_rle_2frame.dcm")).pixel_array
    assert np.array_equal(first, expected[0]) and np.array_equal(second, expected[1])


def test_without_window_the_frame_spans_min_to_max() -> None:
    assert _render(_grey([100, 150, 200])).tolist() == [[0, 128, 255]]


def test_signed_pixels_span_min_to_max() -> None:
    ds = _grey([-1000, 0, 1000], PixelRepresentation=1, BitsStored=16)
    assert _render(ds).tolist() == [[0, 128, 255]]


def test_first_window_maps_below_to_black_and_above_to_white() -> None:
    ds = _grey([0, 49, 100, 151, 400], WindowCenter=[100, 2000], WindowWidth=[101, 10])
    # PS3.3 C.11.2.1.2.1: ((100 - 99.5) / 100 + 0.5) * 255 = 128.8
    assert _render(ds).tolist() == [[0, 0, 129, 255, 255]]


def test_rescale_is_applied_before_the_window() -> None:
    ds = _grey([0, 1024, 2048], RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=0, WindowWidth=401)
    assert _render(ds).tolist() == [[0, 128, 255]]


def test_sigmoid_window_function_is_applied() -> None:
    ds = _grey([0, 100, 200], WindowCenter=100, WindowWidth=50, VOILUTFunction="SIGMOID")
    assert _render(ds).tolist() == [[0, 128, 255]]


def test_voi_lut_sequence_is_applied_in_preference_to_the_window() -> None:
    lut = Dataset()
    lut.LUTDescriptor = [4, 0, 8]
    lut.LUTData = np.array([0, 255, 100, 0], dtype="<u2").tobytes()  # OW, as a LUT of more than one entry is
    ds = _grey([0, 1, 2, 3], WindowCenter=1, WindowWidth=1, VOILUTSequence=Sequence([lut]))
    assert _render(ds).tolist() == [[0, 255, 100, 0]]


def test_monochrome1_is_inverted() -> None:
    plain = _render(_grey([100, 150, 200]))
    inverted = _render(_grey([100, 150, 200], PhotometricInterpretation="MONOCHROME1"))
    assert (plain.astype(int) + inverted).tolist() == [[255, 255, 255]]


def test_per_frame_functional_group_window_is_applied_to_its_frame() -> None:
    ds = make_dataset(rows=1, columns=3, frames=2)
    ds.PixelData = np.array([0, 100, 200] * 2, dtype="<u2").tobytes()
    groups = []
    for center in (1000, 100):
        window = Dataset()
        window.WindowCenter, window.WindowWidth = center, 101
        group = Dataset()
        group.FrameVOILUTSequence = Sequence([window])
        groups.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(groups)
    assert _render(ds, 1).tolist() == [[0, 0, 0]]
    assert _render(ds, 2).tolist() == [[0, 129, 255]]


def test_one_bit_frame_renders_black_and_white() -> None:
    image = np.asarray(_render_file("liver_1frame.dcm"))
    assert set(np.unique(image).tolist()) == {0, 255}


def test_lower_jpeg_quality_gives_a_smaller_image() -> None:
    with _file("CT_small.dcm") as source:
        best = render_frame(source, 1, JPEG, RenderingParameters(quality=100))
        rough = render_frame(source, 1, JPEG, RenderingParameters(quality=10))
    assert len(rough) < len(best)


@pytest.mark.parametrize("frame", [0, 2])
def test_frame_beyond_the_instance_raises_index_error(frame: int) -> None:
    with _file("CT_small.dcm") as source, pytest.raises(IndexError):
        render_frame(source, frame, JPEG)


@pytest.mark.parametrize("media_type", ["image/jp2", "*/*", "image/webp"])
def test_other_media_types_are_not_acceptable(media_type: str) -> None:
    with _file("CT_small.dcm") as source, pytest.raises(NotAcceptableError) as raised:
        render_frame(source, 1, media_type)
    assert all(possible in raised.value.message for possible in IMAGE_MEDIA_TYPES)


def test_gif_is_rendered() -> None:
    image = _render_file("CT_small.dcm", media_type=GIF)
    assert (image.format, image.size) == ("GIF", (128, 128))


def test_instance_without_pixel_data_is_not_acceptable() -> None:
    with _file("rtplan.dcm") as source, pytest.raises(NotAcceptableError, match="no pixel data"):
        render_frame(source, 1, JPEG)


def test_pixel_data_that_cannot_be_decoded_is_not_acceptable() -> None:
    with _file("JPEG-lossy.dcm") as source, pytest.raises(NotAcceptableError, match="cannot be decoded"):
        render_frame(source, 1, JPEG)


# --- the rendered parameters: window, viewport ---------------------------------------------------------------

def test_window_parameter_replaces_the_instances_own_window() -> None:
    ds = _grey([0, 100, 200], WindowCenter=1000, WindowWidth=10)
    assert _render(ds, parameters=RenderingParameters(window=Window(100, 101))).tolist() == [[0, 129, 255]]


def test_window_parameter_replaces_the_voi_lut() -> None:
    lut = Dataset()
    lut.LUTDescriptor = [4, 0, 8]
    lut.LUTData = np.array([0, 255, 100, 0], dtype="<u2").tobytes()
    ds = _grey([0, 1, 2, 3], VOILUTSequence=Sequence([lut]))
    assert _render(ds, parameters=RenderingParameters(window=Window(1.5, 2))).tolist() == [[0, 128, 255, 255]]


@pytest.mark.parametrize(("function", "expected"), [
    (WindowFunction.LINEAR, [[0, 129, 255]]),  # (x - 99.5) / 99 + 0.5
    (WindowFunction.LINEAR_EXACT, [[0, 128, 255]]),  # (x - 100) / 100 + 0.5
    (WindowFunction.SIGMOID, [[30, 128, 225]]),  # 1 / (1 + exp(-4 (x - 100) / 100))
])
def test_window_parameter_function_is_applied(function: WindowFunction, expected: list[list[int]]) -> None:
    ds = _grey([50, 100, 150])
    assert _render(ds, parameters=RenderingParameters(window=Window(100, 100, function))).tolist() == expected


def test_window_parameter_leaves_colour_images_alone() -> None:
    windowed = _render_file("SC_rgb_rle.dcm", parameters=RenderingParameters(window=Window(10, 20)))
    assert np.array_equal(np.asarray(windowed), np.asarray(_render_file("SC_rgb_rle.dcm")))


def test_window_parameter_on_monochrome1_is_inverted_after() -> None:
    ds = _grey([0, 100, 200], PhotometricInterpretation="MONOCHROME1")
    assert _render(ds, parameters=RenderingParameters(window=Window(100, 101))).tolist() == [[255, 126, 0]]


@pytest.mark.parametrize(("viewport", "size"), [
    (Viewport(40, 40), (40, 20)),  # scaled up, aspect kept
    (Viewport(10, 2), (4, 2)),  # scaled down to the tighter side
    (Viewport(20, 10), (20, 10)),
])
def test_viewport_fits_the_image_keeping_its_aspect(viewport: Viewport, size: tuple[int, int]) -> None:
    rendered = _render(make_dataset(rows=10, columns=20), parameters=RenderingParameters(viewport=viewport))
    assert (rendered.shape[1], rendered.shape[0]) == size


# A 4x4 image of 0..15 spans min to max: value v is shown as 17 v.
@pytest.mark.parametrize(("text", "expected"), [
    ("2,2,0,0,2,2", [[0, 17], [68, 85]]),  # the top-left quadrant
    ("2,2,2,2,,", [[170, 187], [238, 255]]),  # from 2,2 to the image's edges
    ("2,2,0,0,-2,2", [[17, 0], [85, 68]]),  # a negative width flips left and right
    ("2,2,0,0,2,-2", [[68, 85], [0, 17]]),  # a negative height flips top and bottom
])
def test_viewport_region_is_cut_out(text: str, expected: list[list[int]]) -> None:
    parameters = RenderingParameters.from_query({"viewport": text})
    assert _render(make_dataset(rows=4, columns=4), parameters=parameters).tolist() == expected


@pytest.mark.parametrize("text", ["2,2,3,0,2,2", "2,2,0,0,5,4", "2,2,4,0,,"])
def test_viewport_region_outside_the_image_is_a_bad_request(text: str) -> None:
    with pytest.raises(BadRequestError, match="not inside the image"):
        _render(make_dataset(rows=4, columns=4), parameters=RenderingParameters.from_query({"viewport": text}))


def test_lower_quality_parameter_gives_a_smaller_jpeg_only() -> None:
    sizes = {}
    for media_type in (JPEG, PNG):
        with _file("CT_small.dcm") as source:
            sizes[media_type] = [len(render_frame(source, 1, media_type, RenderingParameters(quality=q)))
                                 for q in (10, 100)]
    assert sizes[JPEG][0] < sizes[JPEG][1] and sizes[PNG][0] == sizes[PNG][1]
