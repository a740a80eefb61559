"""Where an instance's DICOM JSON is read from: its row when kept there (most instances), else its own blob.

The store keeps the JSON in the instance row's `Metadata` property when it fits (MAX_ROW_METADATA_CHARS),
so storing an instance writes no metadata blob and reading its metadata needs no request beyond the row.
Larger ones, and instances stored before rows held it, have `{study}/{series}/{instance}/{version}.json`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dicom_core.index.reads import get_row
from dicom_core.index.rows import MAX_ROW_METADATA_CHARS, ROW_METADATA, instance_row_key
from dicom_core.model.identifiers import StoredInstance
from dicom_core.storage.blobs import metadata_blob_name, read_blob_or_none
from dicom_core.storage.clients import Storage


def row_metadata_text(metadata_json: str) -> str:
    """The `Metadata` property a row gets for an instance's compact DICOM JSON ("": too long, kept in a blob)."""
    return metadata_json if len(metadata_json) <= MAX_ROW_METADATA_CHARS else ""


def kept_in_row(row: Mapping[str, Any]) -> bool:
    """Whether an instance row holds its DICOM JSON (else it is in the version's metadata blob)."""
    return bool(row.get(ROW_METADATA))


async def metadata_of_row(storage: Storage, stored: StoredInstance, row: Mapping[str, Any]) -> bytes | None:
    """The DICOM JSON of the version ``row`` names (``stored``); None when its blob is gone (replaced meanwhile)."""
    if kept_in_row(row):
        return str(row[ROW_METADATA]).encode()
    return await read_blob_or_none(storage.metadata, metadata_blob_name(stored))


async def metadata_of_version(storage: Storage, stored: StoredInstance) -> bytes | None:
    """The DICOM JSON of one stored version, from its row while it is current; None once it is gone."""
    ids = stored.ids
    key = instance_row_key(ids.series, ids.instance)
    row = await get_row(storage, ids.study, key, select=["Version", ROW_METADATA])
    if row is not None and str(row.get("Version")) == stored.version and kept_in_row(row):
        return str(row[ROW_METADATA]).encode()
    return await read_blob_or_none(storage.metadata, metadata_blob_name(stored))
