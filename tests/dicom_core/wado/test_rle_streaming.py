"""RLE Lossless instances transcoded to Explicit VR Little Endian while they download."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import replace

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from dicom_core.model.errors import NotAcceptableError
from dicom_core.model.frames import encapsulated_frame_index
from dicom_core.model.identifiers import InstanceIdentifiers
from dicom_core.storage.clients import Storage, open_storage
from dicom_core.stow.service import StoreRequest, store_instances
from dicom_core.wado.retrieve import retrieve_instance, retrieve_series
from dicom_core.wado.rle_streaming import Transcoded, streamable_index, transcode_streamed
from dicom_core.wado.transcoding import transcode_instance
from dicom_core.wire.media_types import parse_media_type
from dicom_core.wire.multipart import iter_parts
from tests.factories import make_dataset, to_bytes

TRANSCODED = f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"


def _rle(frames: int = 3, rows: int = 16, columns: int = 16, bits: int = 16, **attributes: object) -> Dataset:
    ds = make_dataset(rows=rows, columns=columns, frames=frames, **attributes)
    if bits == 8:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = (np.arange(rows * columns * frames) % 251).astype(np.uint8).tobytes()
    ds.compress(RLELossless)
    return ds


def _colour(**attributes: object) -> Dataset:
    ds = make_dataset(rows=8, columns=8, frames=2, **attributes)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = bytes(i % 256 for i in range(8 * 8 * 3 * 2))
    ds.compress(RLELossless)
    return ds


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _store(storage: Storage, ds: Dataset) -> InstanceIdentifiers:
    request = StoreRequest(api_version=2, study_uid=None, content_type="application/dicom", accept=None,
                           base_url="http://test")
    assert (await store_instances(storage, request, _body(to_bytes(ds)))).status == 200
    return InstanceIdentifiers(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)


async def _retrieved(storage: Storage, ids: InstanceIdentifiers) -> tuple[bytes, int]:
    response = await retrieve_instance(storage, ids, TRANSCODED)
    assert not isinstance(response.body, bytes)  # streamed
    body = b"".join([chunk async for chunk in response.body])  # type: ignore[union-attr]
    return body, int(response.headers["Content-Length"])


def _whole(data: bytes) -> Dataset:
    """What transcoding the whole file gives."""
    return dcmread(transcode_instance(io.BytesIO(data), ExplicitVRLittleEndian))


def _index(data: bytes) -> object:
    ds = dcmread(io.BytesIO(data), defer_size=0)
    offset = data.find(b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff") + 12
    return encapsulated_frame_index(io.BytesIO(data), offset, int(ds.get("NumberOfFrames") or 1))


@pytest.mark.parametrize("bits", [8, 16])
async def test_a_grey_instance_is_answered_as_the_whole_file_transcode_would(storage: Storage, bits: int) -> None:
    ds = _rle(bits=bits)
    body, length = await _retrieved(storage, await _store(storage, ds))
    assert length == len(body)
    streamed, whole = dcmread(io.BytesIO(body)), _whole(to_bytes(ds))
    assert streamed.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert streamed.PixelData == whole.PixelData
    assert streamed == whole


async def test_an_odd_pixel_length_is_padded_to_an_even_one(storage: Storage) -> None:
    ds = _rle(frames=3, rows=3, columns=5, bits=8)
    body, length = await _retrieved(storage, await _store(storage, ds))
    streamed = dcmread(io.BytesIO(body))
    assert length == len(body)
    assert len(streamed.PixelData) == 46
    assert streamed.PixelData[:45] == _whole(to_bytes(ds)).PixelData[:45]


async def test_elements_after_pixel_data_are_kept(storage: Storage) -> None:
    ds = _rle()
    ds.DataSetTrailingPadding = b"\x00" * 6
    body, length = await _retrieved(storage, await _store(storage, ds))
    assert length == len(body)
    assert dcmread(io.BytesIO(body)).DataSetTrailingPadding == b"\x00" * 6


async def test_the_instance_is_read_in_two_storage_requests(own: Storage, storage_fault_proxy) -> None:
    ids = await _store(own, _rle())
    proxied = await open_storage(replace(own.settings, storage_connection_string=storage_fault_proxy.connection_string))
    try:
        storage_fault_proxy.requests.clear()
        await _retrieved(proxied, ids)
    finally:
        await proxied.close()
    assert [(service, method) for service, method, _ in storage_fault_proxy.requests] == [
        ("table", "GET"), ("blob", "GET")]


async def test_a_series_of_rle_instances_is_answered_part_by_part_as_whole_file_transcodes_would(
        storage: Storage) -> None:
    first = _rle()
    second = _rle(bits=8, study=first.StudyInstanceUID, series=first.SeriesInstanceUID)
    colour = _colour(study=first.StudyInstanceUID, series=first.SeriesInstanceUID)  # transcoded whole
    for ds in (first, second, colour):
        await _store(storage, ds)
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={ExplicitVRLittleEndian}'
    response = await retrieve_series(storage, first.StudyInstanceUID, first.SeriesInstanceUID, accept)
    boundary = parse_media_type(response.headers["Content-Type"]).params["boundary"]
    parts = [dcmread(part.file) async for part in iter_parts(response.body, boundary,  # type: ignore[arg-type]
                                                               max_part_bytes=1 << 24)]
    assert len(parts) == 3
    parts = {str(part.SOPInstanceUID): part for part in parts}
    for ds in (first, second, colour):
        assert parts[ds.SOPInstanceUID] == _whole(to_bytes(ds))


async def test_the_first_frame_is_sent_before_the_file_has_arrived() -> None:
    data = to_bytes(_rle(frames=4, rows=64, columns=64))
    index = _index(data)
    pieces: asyncio.Queue[bytes | None] = asyncio.Queue()
    half = index.ranges(2)[0][0]  # type: ignore[attr-defined]
    pieces.put_nowait(data[:half])

    async def chunks() -> AsyncIterator[bytes]:
        while (piece := await pieces.get()) is not None:
            yield piece

    transcoded = await transcode_streamed(chunks(), index, len(data), _no_whole)  # type: ignore[arg-type]
    assert isinstance(transcoded, Transcoded)
    body = transcoded.body()
    header, first = await anext(body), await anext(body)
    assert len(first) == 64 * 64 * 2  # the first frame, while half the file is still to come
    pieces.put_nowait(data[half:])
    pieces.put_nowait(None)
    rest = b"".join([chunk async for chunk in body])
    assert dcmread(io.BytesIO(header + first + rest)).PixelData == _whole(data).PixelData


async def test_a_colour_instance_is_transcoded_whole_from_the_same_read() -> None:
    data = to_bytes(_colour())
    result = await transcode_streamed(_body(data), _index(data), len(data),  # type: ignore[arg-type]
                                      lambda source: transcode_instance(source, ExplicitVRLittleEndian))
    assert not isinstance(result, Transcoded)
    assert dcmread(result).PixelData == _whole(data).PixelData


async def test_a_frame_that_does_not_decode_fails_the_body() -> None:
    data = bytearray(to_bytes(_rle(frames=2)))
    index = _index(bytes(data))
    offset, _ = index.ranges(2)[0]  # type: ignore[attr-defined]
    data[offset + 8 : offset + 12] = (10**6).to_bytes(4, "little")  # a segment beyond the frame's end
    transcoded = await transcode_streamed(_body(bytes(data)), index, len(data), _no_whole)  # type: ignore[arg-type]
    assert isinstance(transcoded, Transcoded)
    with pytest.raises(Exception):  # noqa: B017 - the decoder's own error, or the length check
        async for _ in transcoded.body():
            pass


def test_only_rle_to_explicit_little_endian_with_fragments_streams() -> None:
    index = _index(to_bytes(_rle()))
    assert streamable_index(RLELossless, ExplicitVRLittleEndian, index) is index  # type: ignore[arg-type]
    assert streamable_index(RLELossless, ExplicitVRLittleEndian, None) is None
    assert streamable_index(ExplicitVRLittleEndian, RLELossless, index) is None  # type: ignore[arg-type]


def _no_whole(source: io.BytesIO) -> io.BytesIO:
    raise NotAcceptableError("not expected to be transcoded whole")
