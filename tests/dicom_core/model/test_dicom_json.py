"""The DICOM JSON model of stored metadata (PS3.18 Annex F): empty values inside multi-valued attributes."""

from __future__ import annotations

import io

import pydicom
import pytest

from dicom_core.model.dicom_json import metadata_json
from tests.factories import make_dataset, to_bytes


def _metadata(**attributes: str) -> dict:
    """The DICOM JSON of a stored file with these attributes, and the elements reported invalid."""
    dataset = pydicom.dcmread(io.BytesIO(to_bytes(make_dataset(**attributes))))
    invalid: list[object] = []
    result = metadata_json(dataset, lambda tag, vr, reason: invalid.append(tag))
    assert invalid == []
    return result


@pytest.mark.parametrize(
    ("keyword", "key", "stored", "values"),
    [
        ("TransducerData", "00185010", "50.80.103.002\\\\", ["50.80.103.002", None, None]),
        ("ImageType", "00080008", "ORIGINAL\\\\PRIMARY", ["ORIGINAL", None, "PRIMARY"]),
        ("ReferencedFrameNumber", "00081160", "1\\\\3", [1, None, 3]),
        ("PixelSpacing", "00280030", "\\0.5", [None, 0.5]),
        ("OtherPatientNames", "00101001", "Doe^Jane\\\\Roe^Rich", [{"Alphabetic": "Doe^Jane"}, None,
                                                                   {"Alphabetic": "Roe^Rich"}]),
    ],
)
def test_an_empty_value_inside_a_multi_valued_attribute_is_null(
    keyword: str, key: str, stored: str, values: list[object]
) -> None:
    """PS3.18 F.2.5: empty values of a multi-valued attribute are null array elements (strings, numbers, names)."""
    assert _metadata(**{keyword: stored})[key]["Value"] == values


def test_an_empty_attribute_has_no_value() -> None:
    """PS3.18 F.2.5: an attribute present without a value has no "Value"."""
    assert _metadata(AccessionNumber="")["00080050"] == {"vr": "SH"}


def test_values_without_empty_ones_are_unchanged() -> None:
    """PS3.18 F.2.3: IS and DS are JSON numbers, other strings JSON strings."""
    result = _metadata(ImageType="ORIGINAL\\PRIMARY", PixelSpacing="0.5\\0.25")
    assert (result["00080008"]["Value"], result["00280030"]["Value"]) == (["ORIGINAL", "PRIMARY"], [0.5, 0.25])
