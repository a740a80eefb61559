"""Reading values out of DICOM JSON datasets (PS3.18 §F) by attribute keyword."""

from __future__ import annotations

from typing import Any

from pydicom.tag import Tag

JsonDataset = dict[str, Any]


def json_key(keyword: str) -> str:
    """Return the DICOM JSON key (8 upper-case hex digits) of an attribute keyword, e.g. 0020000D."""
    return f"{Tag(keyword):08X}"


def json_values(dataset: JsonDataset, keyword: str) -> list[Any]:
    """Return the attribute's values (an empty list when absent or empty)."""
    element = dataset.get(json_key(keyword)) if isinstance(dataset, dict) else None
    values = element.get("Value") if isinstance(element, dict) else None
    return list(values) if isinstance(values, list) else []


def first_value(dataset: JsonDataset, keyword: str) -> Any:
    """Return the attribute's first value, or None."""
    values = json_values(dataset, keyword)
    return values[0] if values else None


def display_value(dataset: JsonDataset, keyword: str) -> str:
    """Return the attribute as text: person names by their alphabetic form, several values joined by a backslash."""
    texts = []
    for value in json_values(dataset, keyword):
        if isinstance(value, dict):
            value = value.get("Alphabetic", "")
        texts.append("" if value is None else str(value))
    return "\\".join(texts)
