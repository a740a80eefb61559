"""The benchmark's bulk seeding leaves the same rows and index entries as the product's store path."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from azure.data.tables import TableClient, TableEntity

from bench.archive import plan_archive, seed_archive
from dicom_core.index.outbox import OUTBOX_PREFIX
from dicom_core.index.rows import GENERATION_ROW
from dicom_core.search_index.keys import CLAIMS, parse_entries
from dicom_core.settings import Settings
from dicom_core.storage.clients import INDEX_KINDS_OF_THEIR_OWN
from dicom_core.storage.sharded_table import table_names
from tests.processes import TEST_TABLE_SHARDS

ROW_PROPERTIES = ("InstanceCount", "SeriesCount", "ModalityCounts", "Attributes", "SopClassUid",
                  "TransferSyntaxUid", "Size", "Modality")


def _seed(azurite, prefix: str, mode: str) -> None:
    settings = Settings(storage_connection_string=azurite.connection_string, table_prefix=prefix,
                        blob_container=f"{prefix}-files", metadata_container=f"{prefix}-metadata",
                        table_shards=TEST_TABLE_SHARDS)
    seed_archive(settings, 3, 12, seed=5, processes=1, mode=mode)


def _entities(azurite, name: str) -> Iterator[TableEntity]:
    """Every entity of the table ``name``, in each of its shards (and, for the index, its kinds' own Tables)."""
    shards = TEST_TABLE_SHARDS
    for shard in table_names(name, shards, INDEX_KINDS_OF_THEIR_OWN if name.endswith("Index") else ()):
        with TableClient.from_connection_string(azurite.connection_string, shard) as table:
            yield from table.list_entities()


def _rows(azurite, prefix: str) -> set[tuple[object, ...]]:
    """The study-table rows without what differs per run (versions, times); outbox rows by count."""
    rows = set()
    for entity in _entities(azurite, f"{prefix}Studies"):
        row_key = str(entity["RowKey"])
        if row_key.startswith(OUTBOX_PREFIX):
            rows.add((entity["PartitionKey"], "outbox", json.loads(entity["Changes"])[0]["instance"]))
            continue
        if row_key == GENERATION_ROW:
            continue  # the store path's generation marker: bulk seeding leaves it to the first store

        rows.add((entity["PartitionKey"], row_key, *(str(entity.get(name)) for name in ROW_PROPERTIES)))
    return rows


def _entries(azurite, prefix: str) -> set[tuple[object, ...]]:
    """Index entries as (index partition, target), without their time-based sort keys."""
    entries = set()
    for entity in _entities(azurite, f"{prefix}Index"):
        if str(entity["PartitionKey"]).startswith(f"{CLAIMS}|"):
            entries.add((entity["PartitionKey"], entity["RowKey"]))
            continue
        entries.update((entry.key.partition, entry.study, entry.series, entry.instance)
                       for entry in parse_entries(entity))
    return entries


@pytest.fixture(scope="module")
def seeded(azurite) -> None:
    _seed(azurite, "eqstore", "store")
    _seed(azurite, "eqbulk", "bulk")


def test_bulk_seeding_leaves_the_rows_the_store_path_leaves(azurite, seeded) -> None:
    store = _rows(azurite, "eqstore")
    assert len(store) == 3 + sum(len(s.modalities) for s in plan_archive(3, 12, 5).studies) + 2 * 12
    assert _rows(azurite, "eqbulk") == store


def test_bulk_seeding_leaves_the_index_entries_the_store_path_leaves(azurite, seeded) -> None:
    store = _entries(azurite, "eqstore")
    assert len(store) > 12
    assert _entries(azurite, "eqbulk") == store
