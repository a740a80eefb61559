"""Large STOW parts go straight into their blob's staged blocks: stored byte for byte, with no local disk file."""

from __future__ import annotations

import functools
import io
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import cast

import numpy as np
import pytest
from pydicom import dcmread

from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance
from dicom_core.model.part10 import PREAMBLE
from dicom_core.storage.clients import Storage, open_storage
from dicom_core.stow.blob_spool import BlobSpool
from dicom_core.stow.service import StoreRequest, store_instances
from dicom_core.wado.frames import retrieve_frames
from dicom_core.wado.instance_reads import instance_row
from tests.factories import make_dataset, multipart_body, to_bytes

BOUNDARY = "spool-boundary"
MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
MIB = 1024 * 1024
# 32 frames of 1024 x 1024 16-bit pixels: a 64 MiB part, eight times the in-memory spool.
LARGE = {"rows": 1024, "columns": 1024, "frames": 32}


@pytest.fixture
def spool_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Where every temporary file now goes, under a name: a part spooled to local disk leaves a file here."""
    folder = tmp_path / "spool"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "TemporaryFile",
                        functools.partial(tempfile.NamedTemporaryFile, dir=folder, delete=False))
    yield folder


async def _chunks(data: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def _store(storage: Storage, body: bytes, content_type: str = MULTIPART, chunk_size: int = 256 * 1024) -> int:
    request = StoreRequest(api_version=2, study_uid=None, content_type=content_type, accept=None,
                           base_url="http://test")
    result = await store_instances(storage, request, _chunks(body, chunk_size))
    return int(result.status)


async def _stored_bytes(storage: Storage, ids: InstanceIdentifiers) -> bytes:
    row = await instance_row(storage, ids)
    name = f"{ids.study}/{ids.series}/{ids.instance}/{row['Version']}.dcm"
    return await (await storage.files.download_blob(name)).readall()


def _ids(data: bytes) -> InstanceIdentifiers:
    ds = dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    return InstanceIdentifiers(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)


async def test_a_large_part_is_stored_byte_for_byte_with_no_local_disk_file(own: Storage, spool_dir: Path) -> None:
    data = to_bytes(make_dataset(**LARGE))
    assert len(data) > 64 * MIB >= 8 * own.settings.spool_memory_bytes

    assert await _store(own, multipart_body([data], BOUNDARY)) == 200

    assert list(spool_dir.iterdir()) == []
    assert await _stored_bytes(own, _ids(data)) == data


async def test_a_part_of_1000_mib_is_stored_byte_for_byte_with_no_local_disk_file(
    own: Storage, spool_dir: Path
) -> None:
    """The largest part the default limits admit (1 GiB per part and request) goes to its blob as it arrives."""
    data = to_bytes(make_dataset(rows=1024, columns=1024, frames=500))
    assert 1000 * MIB < len(data) < own.settings.max_part_bytes

    assert await _store(own, multipart_body([data], BOUNDARY), chunk_size=MIB) == 200

    assert list(spool_dir.iterdir()) == []
    assert await _stored_bytes(own, _ids(data)) == data


async def test_a_large_single_part_body_is_stored_with_no_local_disk_file(own: Storage, spool_dir: Path) -> None:
    data = to_bytes(make_dataset(**LARGE))

    assert await _store(own, data, content_type="application/dicom") == 200

    assert list(spool_dir.iterdir()) == []
    assert await _stored_bytes(own, _ids(data)) == data


async def test_a_large_file_without_preamble_is_stored_with_one_added(own: Storage, spool_dir: Path) -> None:
    data = to_bytes(make_dataset(**LARGE))[len(PREAMBLE):]  # as pydicom writes datasets made in memory

    assert await _store(own, multipart_body([data], BOUNDARY)) == 200

    assert list(spool_dir.iterdir()) == []
    assert await _stored_bytes(own, _ids(data)) == PREAMBLE + data


async def test_several_large_parts_of_one_request_are_each_stored(own: Storage, spool_dir: Path) -> None:
    parts = [to_bytes(make_dataset(rows=1024, columns=1024, frames=10)) for _ in range(3)]

    assert await _store(own, multipart_body(parts, BOUNDARY)) == 200

    assert list(spool_dir.iterdir()) == []
    for data in parts:
        assert await _stored_bytes(own, _ids(data)) == data


async def test_a_head_without_identifiers_falls_back_to_a_local_file(own: Storage, spool_dir: Path) -> None:
    # An ImageType of 54 KB comes before the UIDs, and the 16 KiB head ends inside it: no UIDs to name the blob by,
    # so the part is spooled locally as before, and the spool directory shows it (the checks above would see that).
    storage = await open_storage(replace(own.settings, spool_memory_bytes=16 * 1024))
    try:
        data = to_bytes(make_dataset(rows=256, columns=256, ImageType=["ORIGINAL"] * 6000))
        assert await _store(storage, multipart_body([data], BOUNDARY), chunk_size=8 * 1024) == 200
        assert len(list(spool_dir.iterdir())) == 1
        assert await _stored_bytes(storage, _ids(data)) == data
    finally:
        await storage.close()


async def test_a_large_part_arriving_in_one_chunk_is_staged_when_it_is_complete(own: Storage, spool_dir: Path) -> None:
    # No chunk boundary to stage blocks at while it arrives: they are staged (and the cleanup entry written) before
    # the part is parsed.
    data = to_bytes(make_dataset(**LARGE))
    body = multipart_body([data], BOUNDARY)

    assert await _store(own, body, chunk_size=len(body)) == 200

    assert list(spool_dir.iterdir()) == []
    assert await _stored_bytes(own, _ids(data)) == data


async def test_the_frames_of_a_staged_part_are_found_where_the_blob_holds_them(own: Storage, spool_dir: Path) -> None:
    # Parsed from the staged blob itself (ranged reads), so its frame index points into the stored file.
    data = to_bytes(make_dataset(**LARGE))
    assert await _store(own, multipart_body([data], BOUNDARY)) == 200

    response = await retrieve_frames(own, _ids(data), "32", "application/octet-stream; transfer-syntax=*")
    body = response.body if isinstance(response.body, bytes) else b"".join(
        [chunk async for chunk in response.body])  # type: ignore[union-attr]

    last_frame = np.arange(1024 * 1024 * 32, dtype=np.uint16).reshape(32, -1)[31].tobytes()
    assert last_frame in body and len(body) < len(last_frame) + 4096


async def test_a_small_part_reads_whole_and_in_pieces_alike() -> None:
    spool = BlobSpool(cast(Storage, None), MIB, cover=_never_covered)
    data = bytes(range(256)) * 2000
    for start in range(0, len(data), 65536):
        spool.write(data[start:start + 65536])
    spool.seek(0)
    assert spool.read(len(data)) == data  # the whole part: the spool's own buffer
    assert spool.read(1) == b""
    spool.seek(10)
    assert spool.read(5) == data[10:15]
    spool.seek(0)
    assert spool.read() == data


async def _never_covered(stored: StoredInstance) -> None:
    raise AssertionError("a part held in memory is never staged")
