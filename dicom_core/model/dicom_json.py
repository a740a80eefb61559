"""The DICOM JSON model (PS3.18 §F) of stored metadata: bulk data left out, invalid values dropped."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydicom import config
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.valuerep import PersonName, validate_value

from dicom_core.model.bulk_data import BulkReferences, items_base
from dicom_core.model.text import trim

# Binary VRs: left out of metadata as Azure's DICOM service does, or inline / by BulkDataURI (model/bulk_data.py).
BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW", "US or SS or OW"})
_TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)

JsonDataset = dict[str, Any]
# Called with (tag, VR, reason) for every element left out because its value is invalid.
InvalidElementHandler = Callable[[BaseTag, str, str], None]


def element_vr(dataset: Dataset, tag: BaseTag) -> str:
    """Return the element's VR without reading a deferred value (dictionary VR for implicit files)."""
    raw = dataset.get_item(tag, keep_deferred=True)
    vr = getattr(raw, "VR", None)
    if vr:
        return str(vr)
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"  # private or unknown tag in an implicit VR file


def format_tag(tag: BaseTag) -> str:
    """Format a tag the way error comments show it: (gggg,eeee)."""
    return f"({tag.group:04X},{tag.element:04X})"


def metadata_json(
    dataset: Dataset, on_invalid: InvalidElementHandler | None = None, bulk: BulkReferences | None = None,
    base: int = 0,
) -> JsonDataset:
    """Return ``dataset`` as DICOM JSON; invalid elements are reported and left out.

    Binary attributes are left out, unless ``bulk`` is given: then inline or by reference (BulkDataURI).
    ``base``: where the values this dataset's offsets count from start in the file (a sequence's value).
    """
    result: JsonDataset = {}
    for tag in sorted(dataset.keys()):
        tag = BaseTag(tag)
        if tag.element == 0:
            continue  # group lengths are meaningless once re-encoded
        vr = element_vr(dataset, tag)
        if vr in BULK_VRS:
            raw = dataset.get_item(tag, keep_deferred=True)
            entry = bulk.element_json(raw, vr, base) if bulk is not None else None
            if entry is not None:
                result[f"{tag:08X}"] = entry
            continue
        try:
            within = items_base(dataset.get_item(tag, keep_deferred=True), base) if bulk is not None else 0
            element = dataset[tag]
            if vr == "SQ":
                items = [metadata_json(item, on_invalid, bulk, within) for item in element.value or []]
                result[f"{tag:08X}"] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
                continue
            problem = invalid_value_reason(element)
            if problem is None:
                result[f"{tag:08X}"] = element_json(element)
        except Exception as exc:  # pydicom raises many types for undecodable values
            problem = f"Dicom element could not be read: {exc}"
        if problem is not None and on_invalid is not None:
            on_invalid(tag, vr, problem)
    return result


def element_json(element: DataElement) -> JsonDataset:
    """One element's DICOM JSON; an empty value of a multi-valued element is ``null`` (PS3.18 F.2.5)."""
    values = element.value
    if not isinstance(values, MultiValue) or not any(_is_empty(value) for value in values):
        return element.to_json_dict(None, 0)
    # pydicom writes "" for an empty LO/CS/DA value and fails on an empty IS, DS or PN one: convert the others alone.
    return {"vr": element.VR, "Value": [
        None if _is_empty(value) else DataElement(element.tag, element.VR, value).to_json_dict(None, 0)["Value"][0]
        for value in values
    ]}


def _is_empty(value: object) -> bool:
    return value is None or (isinstance(value, str | PersonName) and not trim(str(value)))


def invalid_value_reason(element: DataElement) -> str | None:
    """Return why the element's value does not validate for its VR, or None when it does."""
    vr = element.VR
    if vr not in _TEXT_VRS or element.value is None:
        return None
    values = element.value if isinstance(element.value, MultiValue) else [element.value]
    for value in values:
        text = str(value).rstrip("\x00") if value is not None else ""
        if "\x00" in text:
            return f'Content "{text}" contains a NUL character'
        if not text:
            continue
        try:
            validate_value(vr, text, config.RAISE)
        except ValueError as exc:
            detail = str(exc).split(" Please see")[0]
            return f'Content "{text}" does not validate VR {vr}: {detail}'
    return None


PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def json_key(tag: BaseTag) -> str:
    """The DICOM JSON key of a tag: 8 upper-case hex digits."""
    return f"{tag:08X}"


def first_value(attributes: JsonDataset, tag: BaseTag) -> str | None:
    """Return the attribute's first value as text (a person name's Alphabetic group), or None when absent."""
    values = attributes.get(json_key(tag), {}).get("Value") or []
    if not values or values[0] is None:
        return None
    value = values[0]
    if isinstance(value, dict):
        value = next((value[group] for group in PN_GROUPS if value.get(group)), "")
    text = trim(str(value))
    return text or None


def person_name_forms(attributes: JsonDataset, tag: BaseTag) -> list[str]:
    """Return the first person name as written whole ("A=I=P") and as its Alphabetic group, without repeats."""
    values = attributes.get(json_key(tag), {}).get("Value") or []
    if not values or not isinstance(values[0], dict):
        return []
    groups = [str(values[0].get(group) or "") for group in PN_GROUPS]
    whole = "=".join(groups).rstrip("=")
    forms = [form for form in (groups[0], whole) if trim(form)]
    return list(dict.fromkeys(forms))


def person_name_groups(attributes: JsonDataset, tag: BaseTag) -> list[str]:
    """Return the non-empty component groups of the first person name (Alphabetic, Ideographic, Phonetic)."""
    values = attributes.get(json_key(tag), {}).get("Value") or []
    if not values or not isinstance(values[0], dict):
        return []
    return [str(values[0][group]) for group in PN_GROUPS if trim(str(values[0].get(group) or ""))]
