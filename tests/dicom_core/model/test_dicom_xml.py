from __future__ import annotations

from xml.etree import ElementTree

from dicom_core.model.dicom_xml import NATIVE_DICOM_NAMESPACE, to_native_xml

NS = "{" + NATIVE_DICOM_NAMESPACE + "}"


def _root(dataset: dict[str, object]) -> ElementTree.Element:
    return ElementTree.fromstring(to_native_xml(dataset))


def test_document_is_a_native_dicom_model() -> None:
    data = to_native_xml({})

    assert data.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    assert _root({}).tag == f"{NS}NativeDicomModel"


def test_attribute_carries_tag_vr_keyword_and_numbered_values() -> None:
    [attribute] = _root({"00081190": {"vr": "UR", "Value": ["http://x/studies/1"]}})

    assert attribute.attrib == {"tag": "00081190", "vr": "UR", "keyword": "RetrieveURL"}
    [value] = attribute
    assert (value.tag, value.get("number"), value.text) == (f"{NS}Value", "1", "http://x/studies/1")


def test_sequence_items_nest_their_attributes() -> None:
    dataset = {"00081199": {"vr": "SQ", "Value": [{"00081150": {"vr": "UI", "Value": ["1.2"]}},
                                                  {"00081150": {"vr": "UI", "Value": ["1.3"]}}]}}

    [sequence] = _root(dataset)

    items = sequence.findall(f"{NS}Item")
    assert [item.get("number") for item in items] == ["1", "2"]
    assert [item.find(f"{NS}DicomAttribute/{NS}Value").text for item in items] == ["1.2", "1.3"]


def test_person_name_is_split_into_components() -> None:
    [attribute] = _root({"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}})

    name = attribute.find(f"{NS}PersonName/{NS}Alphabetic")
    assert [(part.tag, part.text) for part in name] == [(f"{NS}FamilyName", "Doe"), (f"{NS}GivenName", "Jane")]


def test_text_is_escaped() -> None:
    [attribute] = _root({"00081196": {"vr": "US", "Value": [1]}, "00104000": {"vr": "LT", "Value": ["a<b&c"]}})[1:]

    assert attribute.find(f"{NS}Value").text == "a<b&c"


def test_attribute_without_value_is_empty() -> None:
    [attribute] = _root({"00081198": {"vr": "SQ"}})

    assert list(attribute) == []
