"""Frames and rendered images at the service level: parameters, and the frame index kept in its own blob."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import RLELossless

from dicom_core.index.reads import get_instance
from dicom_core.model.errors import BadRequestError
from dicom_core.model.identifiers import InstanceIdentifiers
from dicom_core.storage.clients import Storage
from dicom_core.stow.service import StoreRequest, store_instances
from dicom_core.wado.frames import parse_frame_list, retrieve_frames
from dicom_core.wire.media_types import parse_media_type
from dicom_core.wire.multipart import iter_parts
from tests.factories import make_dataset, to_bytes


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.mark.parametrize(("text", "frames"), [("1", [1]), ("3,1,2", [3, 1, 2]), (" 2 , 5", [2, 5])])
def test_frame_list_parses(text: str, frames: list[int]) -> None:
    assert parse_frame_list(text) == frames


@pytest.mark.parametrize("text", ["0", "-1", "1,-1", "0,1", "a", "", "1,", "1.5"])
def test_bad_frame_list_is_400(text: str) -> None:
    with pytest.raises(BadRequestError):
        parse_frame_list(text)


async def test_frames_of_an_index_kept_in_a_blob(storage: Storage) -> None:
    count = 3000  # a frame index too long for the Table row
    fragments = [bytes([i % 256]) * (6 + 2 * (i % 4)) for i in range(count)]  # items are of even length
    ds = make_dataset(rows=4, columns=4, frames=count, transfer_syntax=RLELossless, BitsAllocated=8, BitsStored=8,
                      HighBit=7)
    ds.PixelData = encapsulate(fragments)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    request = StoreRequest(api_version=2, study_uid=None, content_type="application/dicom", accept=None,
                           base_url="http://test")
    assert (await store_instances(storage, request, _body(to_bytes(ds)))).status == 200
    ids = InstanceIdentifiers(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert (await get_instance(storage, ids))["FrameIndexInBlob"] is True
    response = await retrieve_frames(storage, ids, "1,2999,3000", "multipart/related; type=image/dicom-rle")
    boundary = parse_media_type(response.headers["Content-Type"]).params["boundary"]
    parts = [part async for part in iter_parts(response.body, boundary, max_part_bytes=1024)]
    assert [part.file.read() for part in parts] == [fragments[0], fragments[2998], fragments[2999]]
    assert {part.content_type for part in parts} == {f"image/dicom-rle; transfer-syntax={RLELossless}"}
