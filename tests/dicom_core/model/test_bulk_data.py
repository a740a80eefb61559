"""BulkDataURI markers recorded while a Part-10 file's DICOM JSON is made, and how stored JSON is served."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pydicom
from pydicom.encaps import encapsulate
from pydicom.uid import MPEG2MPML, MPEG4HP41, DeflatedExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

from dicom_core.model.bulk_data import (
    MARKER_SCHEME,
    BulkLocation,
    has_binary_attributes,
    parse_location,
    with_binary_of,
    with_urls,
    without_bulk_data,
)
from dicom_core.model.dicom_json import metadata_json
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance
from dicom_core.model.part10 import read_part10, stored_stream
from tests.factories import make_binary_dataset, to_bytes

STORED = StoredInstance(InstanceIdentifiers("1.2", "1.3", "1.4"), "v1")


def _metadata(data: bytes) -> tuple[dict[str, Any], bytes]:
    parsed = read_part10(io.BytesIO(data))
    metadata = metadata_json(parsed.dataset, None, parsed.bulk)
    parsed.bulk.locate(STORED)
    return metadata, stored_stream(parsed, io.BytesIO(data)).read()


def _referenced(stored: bytes, entry: dict[str, Any]) -> bytes:
    uri = entry["BulkDataURI"]
    assert uri.startswith(f"{MARKER_SCHEME}studies/1.2/series/1.3/instances/1.4/bulkdata/v1/")
    found = parse_location(uri.rsplit("/", 1)[1])
    assert found is not None
    return b"".join(stored[offset : offset + length] for offset, length in found.file_ranges(0, found.length))


def test_large_binary_attributes_reference_their_bytes_in_the_stored_file() -> None:
    ds = make_binary_dataset()
    metadata, stored = _metadata(to_bytes(ds))
    assert _referenced(stored, metadata["7FE00010"]) == ds.PixelData
    assert _referenced(stored, metadata["60003000"]) == ds[0x60003000].value
    assert _referenced(stored, metadata["00420011"]) == ds.EncapsulatedDocument


def test_binary_attributes_inside_sequences_are_referenced() -> None:
    ds = make_binary_dataset()
    metadata, stored = _metadata(to_bytes(ds))
    item = metadata["54000100"]["Value"][0]
    assert _referenced(stored, item["54001010"]) == ds.WaveformSequence[0].WaveformData


def test_small_binary_attributes_are_inline() -> None:
    ds = make_binary_dataset()
    metadata, _ = _metadata(to_bytes(ds))
    assert metadata["00282000"] == {"vr": "OB", "InlineBinary": base64.b64encode(ds.ICCProfile).decode()}


def test_offsets_count_the_preamble_added_to_a_file_without_one() -> None:
    ds = make_binary_dataset()
    data = to_bytes(ds)
    bare = data[128 + 4:]  # as pydicom writes datasets made in memory
    metadata, stored = _metadata(bare)
    assert _referenced(stored, metadata["7FE00010"]) == ds.PixelData


def test_encapsulated_pixel_data_references_its_items() -> None:
    ds = make_binary_dataset()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([b"\xff\xd8" + b"\x00" * 3000 + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    metadata, stored = _metadata(to_bytes(ds))
    assert _referenced(stored, metadata["7FE00010"]) == pydicom.dcmread(io.BytesIO(stored)).PixelData


def test_omitting_bulk_data_gives_the_json_without_binary_attributes() -> None:
    ds = make_binary_dataset(sop=generate_uid())
    with_bulk, _ = _metadata(to_bytes(ds))
    without = metadata_json(pydicom.dcmread(io.BytesIO(to_bytes(ds)), defer_size=1024))
    records = json.dumps(with_bulk, separators=(",", ":")).encode() + b"\n"
    assert without_bulk_data(records) == json.dumps(without, separators=(",", ":")).encode() + b"\n"


def test_markers_become_urls_under_the_root() -> None:
    record = json.dumps({"7FE00010": {"vr": "OW", "BulkDataURI": f"{MARKER_SCHEME}studies/1/x/0-2"}}).encode()
    assert json.loads(with_urls(record.replace(b": ", b":"), "https://h/v2"))["7FE00010"]["BulkDataURI"] == \
        "https://h/v2/studies/1/x/0-2"


def test_malformed_ranges_are_refused() -> None:
    assert parse_location("12-34") == BulkLocation(12, 34, "application/octet-stream")
    assert parse_location("12-34.pdf") == BulkLocation(12, 34, "application/pdf")
    assert parse_location("12") is None
    assert parse_location("-1-2") is None
    assert parse_location("12-34.html") is None  # only the suffixes this service hands out


def test_binary_attributes_two_sequences_deep_are_referenced_whatever_the_lengths() -> None:
    for undefined in (False, True):
        ds = make_binary_dataset()
        inner = ds.WaveformSequence[0]
        outer = pydicom.Dataset()
        outer.AcquisitionContextSequence = [inner]
        ds.WaveformSequence = [outer]
        for element in (ds["WaveformSequence"], outer["AcquisitionContextSequence"]):
            element.is_undefined_length = undefined
            for item in element.value:
                item.is_undefined_length_sequence_item = undefined
        metadata, stored = _metadata(to_bytes(ds))
        entry = metadata["54000100"]["Value"][0]["00400555"]["Value"][0]["54001010"]
        assert _referenced(stored, entry) == inner.WaveformData


def test_a_deflated_file_leaves_large_binary_values_out() -> None:
    ds = make_binary_dataset()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    metadata, _ = _metadata(buffer.getvalue())
    assert "7FE00010" not in metadata  # offsets in the inflated stream are not offsets in the stored file
    assert "InlineBinary" in metadata["00282000"]


def test_an_encapsulated_document_is_named_with_its_media_type() -> None:
    ds = make_binary_dataset()
    metadata, stored = _metadata(to_bytes(ds))
    uri = metadata["00420011"]["BulkDataURI"]
    assert uri.endswith(".pdf")
    assert _referenced(stored, metadata["00420011"]) == ds.EncapsulatedDocument
    assert "." not in metadata["7FE00010"]["BulkDataURI"].rsplit("/", 1)[1]  # other values: octet-stream


def test_video_pixel_data_names_its_stream() -> None:
    stream = b"\x00\x00\x01\xb3" + bytes(range(256)) * 20
    for transfer_syntax, suffix in ((MPEG4HP41, ".mp4"), (MPEG2MPML, ".mpeg2")):
        ds = make_binary_dataset()
        ds.file_meta.TransferSyntaxUID = transfer_syntax
        ds.NumberOfFrames = 30
        ds.PixelData = encapsulate([stream])
        ds["PixelData"].VR = "OB"
        metadata, stored = _metadata(to_bytes(ds))
        entry = metadata["7FE00010"]
        assert entry["BulkDataURI"].endswith(suffix)
        assert _referenced(stored, entry) == stream


def test_a_video_stream_split_over_fragments_names_their_lengths() -> None:
    stream = b"\x00\x00\x01\xb3" + bytes(range(256)) * 20
    ds = make_binary_dataset()
    ds.file_meta.TransferSyntaxUID = MPEG4HP41
    ds.NumberOfFrames = 30
    ds.PixelData = encapsulate([stream], fragments_per_frame=3)
    ds["PixelData"].VR = "OB"
    metadata, stored = _metadata(to_bytes(ds))
    location = metadata["7FE00010"]["BulkDataURI"].rsplit("/", 1)[1]
    assert location.endswith(".mp4") and location.count("_") == 2
    assert _referenced(stored, metadata["7FE00010"]) == stream


def test_pieces_of_a_split_stream_map_value_bytes_to_file_ranges() -> None:
    location = parse_location("100-10_5_7.mp4")
    assert location == BulkLocation(100, 22, "video/mp4", (10, 5, 7))
    assert location.file_ranges(0, 22) == [(100, 10), (118, 5), (131, 7)]  # 8-byte item headers between them
    assert location.file_ranges(8, 6) == [(108, 2), (118, 4)]
    assert location.file_ranges(21, 1) == [(137, 1)]
    assert parse_location("100-10_5.pdf") is None  # only a video stream is split


def test_binary_attributes_are_copied_into_a_record_without_them_in_tag_order() -> None:
    ds = make_binary_dataset()
    made, _ = _metadata(to_bytes(ds))
    old = metadata_json(pydicom.dcmread(io.BytesIO(to_bytes(ds)), defer_size=1024))  # as stored before bulk data
    assert not has_binary_attributes(json.dumps(old).encode())
    assert with_binary_of(old, made) == 5  # pixel data, overlay, document, ICC profile, and the waveform's data
    assert old == made
    assert list(old) == sorted(old)
    assert with_binary_of(old, made) == 0
