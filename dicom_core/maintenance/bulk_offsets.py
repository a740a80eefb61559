"""BulkDataURIs for instances stored before metadata held them: `python -m dicom_core.maintenance.bulk_offsets`.

Instances stored before bulk data have DICOM JSON without any binary attribute (as Azure's service answers it).
This walks every instance row; where its JSON has no binary attribute, it parses the stored file's elements
with ranged reads (values larger than the parser's deferral threshold are skipped, never read; encapsulated
pixel data's item headers are read), makes the JSON the store makes today, and copies the binary attributes
(InlineBinary and BulkDataURI markers) into the stored JSON: the row's `Metadata` (If-Match on the row) or the
version's metadata blob. Then the series row is touched (its ETag changes), so every series document and study
answer is rebuilt from the rows on its next read, and the study row too (the study metadata ETag). Nothing is
re-stored and the file is not rewritten. Idempotent: run it again after a failure, or with ``--study``.

Why a job and not the first metadata request: series and study metadata come from the series documents, so
adding offsets on first use would parse every old file of a series inside one request and write the document
from a reader; the job keeps serving parse-free and writes through the rows the documents are rebuilt from.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.data.tables import TableEntity, UpdateMode
from pydicom.uid import DeflatedExplicitVRLittleEndian

from dicom_core.index.instance_metadata import kept_in_row, metadata_of_row, row_metadata_text
from dicom_core.index.reads import get_row, instance_rows, stored_instance
from dicom_core.index.rows import ROW_METADATA, STUDY_ROW, instance_row_key, series_row_key
from dicom_core.model.bulk_data import has_binary_attributes, with_binary_of
from dicom_core.model.dicom_json import metadata_json
from dicom_core.model.errors import NotFoundError
from dicom_core.model.identifiers import StoredInstance
from dicom_core.model.part10 import InvalidPart10Error, read_part10
from dicom_core.settings import Settings
from dicom_core.storage.blobs import delete_blob_if_exists, instance_blob_name, metadata_blob_name, put_json
from dicom_core.storage.clients import Storage, open_storage
from dicom_core.storage.concurrency import bounded_gather
from dicom_core.storage.ranged_file import BLOCK_BYTES, RangedBlobFile
from dicom_core.storage.tables import etag_of, unchanged_since

_CONCURRENCY = 8
_PAGE = 1000


@dataclass
class BulkOffsetsReport:
    """What a run did: instances read, instances given binary attributes, and files it could not parse."""

    instances: int = 0
    updated: int = 0
    unreadable: int = 0
    file_requests: int = 0  # ranged GETs of stored files


async def add_bulk_offsets(storage: Storage, studies: list[str] | None = None) -> BulkOffsetsReport:
    """Give the instances of ``studies`` (default: every study) whose JSON lacks binary attributes their
    InlineBinary values and BulkDataURI markers, computed from their stored files."""
    report = BulkOffsetsReport()
    for study in studies if studies is not None else [s async for s in _all_studies(storage)]:
        rows = await instance_rows(storage, study)
        report.instances += len(rows)
        updated = await bounded_gather((_update(storage, study, row, report) for row in rows), limit=_CONCURRENCY)
        series = {stored_instance(study, row).ids.series for row, done in zip(rows, updated, strict=True) if done}
        for uid in sorted(series):
            await _touch(storage, study, series_row_key(uid))
        if series:
            await _touch(storage, study, STUDY_ROW)
        report.updated += sum(updated)
    return report


async def _update(storage: Storage, study: str, row: TableEntity, report: BulkOffsetsReport) -> bool:
    """Add the binary attributes to one instance's JSON; True when it changed."""
    if str(row.get("TransferSyntaxUid")) == DeflatedExplicitVRLittleEndian:
        return False  # offsets inside a deflated stream name nothing in the stored file
    stored = stored_instance(study, row)
    data = await metadata_of_row(storage, stored, row)
    if data is None or has_binary_attributes(data):
        return False  # replaced meanwhile, or stored with bulk data already
    try:
        parsed = await _parsed_json(storage, stored, int(row["Size"]), report)
    except (InvalidPart10Error, NotFoundError, HttpResponseError):  # a file gone (replaced meanwhile) or unreadable
        report.unreadable += 1
        return False
    record: dict[str, Any] = json.loads(data)
    if not with_binary_of(record, parsed):
        return False
    text = json.dumps(record, separators=(",", ":"))
    return await _write(storage, stored, row, text)


async def _parsed_json(
    storage: Storage, stored: StoredInstance, size: int, report: BulkOffsetsReport,
) -> dict[str, Any]:
    """The DICOM JSON the store makes of the stored file today, its markers naming ``stored``."""
    file = RangedBlobFile(storage.files, instance_blob_name(stored), size, asyncio.get_running_loop())

    def parse() -> dict[str, Any]:
        try:
            parsed = read_part10(io.BufferedReader(file, BLOCK_BYTES))
            made = metadata_json(parsed.dataset, None, parsed.bulk)
        except NotImplementedError as exc:  # pydicom's answer to some malformed values
            raise InvalidPart10Error(str(exc)) from exc
        parsed.bulk.locate(stored)
        return made

    try:
        return await asyncio.to_thread(parse)
    finally:
        report.file_requests += file.requests


async def _write(storage: Storage, stored: StoredInstance, row: TableEntity, text: str) -> bool:
    """Store the JSON where the version's reads find it; False when the row changed meanwhile."""
    ids = stored.ids
    in_row = row_metadata_text(text)
    if not in_row:
        await put_json(storage, metadata_blob_name(stored), text.encode())
    if kept_in_row(row) or in_row:
        entity = {"PartitionKey": ids.study, "RowKey": instance_row_key(ids.series, ids.instance),
                  ROW_METADATA: in_row}
        try:
            await storage.studies.update_entity(entity, mode=UpdateMode.MERGE, **unchanged_since(etag_of(row)))
        except (ResourceNotFoundError, HttpResponseError):
            if not in_row:
                await delete_blob_if_exists(storage.metadata, metadata_blob_name(stored))
            return False  # replaced or deleted meanwhile: its new version was stored with bulk data
        return True
    current = await get_row(storage, ids.study, instance_row_key(ids.series, ids.instance), select=["Version"])
    if current is None or str(current.get("Version")) != stored.version:
        await delete_blob_if_exists(storage.metadata, metadata_blob_name(stored))  # replaced while written
        return False
    return True


async def _touch(storage: Storage, study: str, row_key: str) -> None:
    """Change a row's ETag (a merge of nothing), so what is verified against it is made again."""
    try:
        await storage.studies.update_entity({"PartitionKey": study, "RowKey": row_key}, mode=UpdateMode.MERGE)
    except ResourceNotFoundError:
        pass  # deleted meanwhile


async def _all_studies(storage: Storage) -> AsyncIterator[str]:
    for shard in storage.studies.shards:
        pages = shard.query_entities("RowKey eq @row", parameters={"row": STUDY_ROW}, select=["PartitionKey"],
                                     results_per_page=_PAGE).by_page()
        try:
            async for page in pages:
                async for entity in page:
                    yield str(entity["PartitionKey"])
        except ResourceNotFoundError:
            continue  # a shard not created yet holds nothing


async def _main(studies: list[str] | None) -> int:
    storage = await open_storage(Settings.from_environment())
    try:
        report = await add_bulk_offsets(storage, studies)
    finally:
        await storage.close()
    print(f"{report.instances} instances read, {report.updated} given their binary attributes, "
          f"{report.unreadable} files unreadable, {report.file_requests} ranged file reads")
    return 0


def main(argv: list[str] | None = None) -> None:
    """Command line: add BulkDataURIs to the instances of the storage the environment's settings name."""
    parser = argparse.ArgumentParser(prog="python -m dicom_core.maintenance.bulk_offsets",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--study", action="append", help="only this study (repeatable)")
    arguments = parser.parse_args(argv)
    sys.exit(asyncio.run(_main(arguments.study)))


if __name__ == "__main__":
    main()
