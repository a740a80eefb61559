"""This process's copy of the study rows its last commit into each study left, so the next commit reads nothing.

A stale copy is harmless: the commit's transaction is guarded by the copy's ETags, fails, and the rows are read
again (`index/commit.py`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from azure.data.tables import TableEntity, UpdateMode

from dicom_core.index.rows import GENERATION_ROW, STUDY_ROW
from dicom_core.storage.clients import Storage
from dicom_core.storage.lru_cache import LruCache
from dicom_core.storage.tables import Operation

MAX_KNOWN_STUDIES = 4_096


@dataclass(frozen=True)
class KnownStudy:
    """A study's rows as this process's last commit into it left them, with the ETags the commit's answer gave."""

    study: TableEntity
    generation: TableEntity
    series: dict[str, TableEntity]


_known: LruCache[tuple[str, str, str], KnownStudy] = LruCache(MAX_KNOWN_STUDIES)


def study_key(storage: Storage, study: str) -> tuple[str, str, str]:
    """The key a study's commits and this copy go by (one table, one study)."""
    return (storage.studies.url, storage.studies.table_name, study)


def known_study(storage: Storage, study: str) -> KnownStudy | None:
    """This process's copy of a study's rows, or None."""
    return _known.get(study_key(storage, study))


def remember_rows(storage: Storage, study: str, read_series: Mapping[str, TableEntity | None],
                  operations: Sequence[Operation], answers: Sequence[Mapping[str, Any]]) -> None:
    """Keep the study row, marker and series rows a transaction wrote, with the ETags of its answer."""
    key = study_key(storage, study)
    kept = _known.get(key)  # its other series rows: unchanged by this transaction
    _known.discard(key)
    if len(answers) != len(operations) or not all(answer.get("etag") for answer in answers):
        return  # an answer without an ETag per operation: the next commit reads the rows
    written: dict[str, TableEntity] = {}
    partial: set[str] = set()  # series rows only merged into (a copy of the study attributes): not known whole
    for operation, answer in zip(operations, answers, strict=True):
        row_key = str(operation[1]["RowKey"])
        if len(operation) > 2 and operation[2].get("mode") == UpdateMode.MERGE:
            partial.add(row_key.split("|", 1)[1])
        elif row_key in (STUDY_ROW, GENERATION_ROW) or row_key.startswith("series|"):
            entity = TableEntity(operation[1])
            entity._metadata = {"etag": answer["etag"], "timestamp": None}
            written[row_key] = entity
    series = {**(kept.series if kept is not None else {}),
              **{uid: row for uid, row in read_series.items() if row is not None}}
    series.update((row_key.split("|", 1)[1], row) for row_key, row in written.items()
                  if row_key.startswith("series|"))
    for uid in partial:
        series.pop(uid, None)
    if STUDY_ROW in written and GENERATION_ROW in written:
        _known.put(key, KnownStudy(written[STUDY_ROW], written[GENERATION_ROW], series))


def known_generation(storage: Storage, study: str) -> str | None:
    """The study's generation in this process's copy of its rows (None: no copy); the next commit assumes it."""
    known = _known.get(study_key(storage, study))
    return str(known.generation.get("Generation") or "") if known is not None else None


def knows_study(storage: Storage, study: str) -> bool:
    """Whether this process holds a copy of a study's rows (its commits then read nothing)."""
    return _known.get(study_key(storage, study)) is not None


def forget_study(storage: Storage, study: str) -> None:
    """Drop this process's copy of a study's rows (a delete changed them)."""
    _known.discard(study_key(storage, study))
