"""The Native DICOM Model (PS3.19 §A.1, DICOM XML) of a DICOM JSON dataset, for clients that accept only XML."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree

from pydicom.datadict import keyword_for_tag

from dicom_core.model.dicom_json import JsonDataset

NATIVE_DICOM_NAMESPACE = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
_NAME_COMPONENTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")
_NAME_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def to_native_xml(dataset: JsonDataset) -> bytes:
    """Return ``dataset`` (DICOM JSON) as a UTF-8 NativeDicomModel document."""
    root = ElementTree.Element("NativeDicomModel", {"xmlns": NATIVE_DICOM_NAMESPACE, "xml:space": "preserve"})
    _add_attributes(root, dataset)
    body: bytes = ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)
    return body


def _add_attributes(parent: ElementTree.Element, dataset: JsonDataset) -> None:
    for tag, element in sorted(dataset.items()):
        attributes = {"tag": tag.upper(), "vr": element["vr"]}
        keyword = keyword_for_tag(int(tag, 16))
        if keyword:
            attributes["keyword"] = keyword
        node = ElementTree.SubElement(parent, "DicomAttribute", attributes)
        for number, value in enumerate(element.get("Value", []), start=1):
            _add_value(node, element["vr"], number, value)


def _add_value(node: ElementTree.Element, vr: str, number: int, value: Any) -> None:
    if vr == "SQ":
        _add_attributes(ElementTree.SubElement(node, "Item", {"number": str(number)}), value)
    elif vr == "PN":
        name = ElementTree.SubElement(node, "PersonName", {"number": str(number)})
        for group in _NAME_GROUPS:
            if value.get(group):
                group_node = ElementTree.SubElement(name, group)
                for component, text in zip(_NAME_COMPONENTS, value[group].split("^"), strict=False):
                    if text:
                        ElementTree.SubElement(group_node, component).text = text
    elif value is not None:
        ElementTree.SubElement(node, "Value", {"number": str(number)}).text = str(value)
