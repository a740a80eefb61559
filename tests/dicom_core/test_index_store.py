"""Study-partition rows: keys and bounded properties."""

from __future__ import annotations

import json

from dicom_core.index_store import MAX_ATTRIBUTES_CHARS, attributes_property, instance_row_key, series_row_key
from dicom_core.levels import Level


def test_instance_keys_of_a_series_share_a_prefix_apart_from_series_rows() -> None:
    assert instance_row_key("1.2", "3").startswith("instance|1.2|")
    assert instance_row_key("1.2", "3") < series_row_key("1.2") < "study"


def test_oversized_attributes_drop_the_largest_element() -> None:
    metadata = {
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
        "00081030": {"vr": "LO", "Value": ["x" * (MAX_ATTRIBUTES_CHARS + 10)]},
    }
    kept = json.loads(attributes_property(metadata, Level.STUDY))
    assert list(kept) == ["00100010"]
