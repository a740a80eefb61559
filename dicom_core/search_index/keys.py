"""Keys of the secondary index table: which partition and RowKey an index entry of a study, series or instance has.

Each searchable value gets its own partition (`{index}|{folded, encoded value}`) and each entry's RowKey starts
with an inverted sort key, so a newest-first page is one RowKey range read; lookups by UID hold one entry per
target. Pure functions of the stored attributes; writing and removing entries is `entries.py`.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from azure.data.tables import TableEntity

from dicom_core.model.dicom_json import JsonDataset, first_value, person_name_forms
from dicom_core.model.tags import ACCESSION_NUMBER, PATIENT_ID, PATIENT_NAME, REFERRING_PHYSICIAN_NAME, STUDY_DATE
from dicom_core.model.text import fold, fold_person_name, name_words

# Index names: the first part of an entry's PartitionKey. 's.' entries point at studies, 'se.' at series,
# 'i.' at instances.
ALL_STUDIES = "s.all"
STUDIES_BY_PATIENT_ID = "s.pid"
STUDIES_BY_ACCESSION = "s.acc"
STUDIES_BY_PATIENT_NAME = "s.pn"
STUDIES_BY_PATIENT_NAME_WORD = "s.pnw"
STUDIES_BY_REFERRING = "s.ref"
STUDIES_BY_REFERRING_WORD = "s.refw"
STUDIES_BY_DATE = "s.date"
STUDIES_BY_MODALITY = "s.mod"
ALL_SERIES = "se.all"
SERIES_BY_UID = "se.uid"
SERIES_BY_MODALITY = "se.mod"
INSTANCES_BY_UID = "i.uid"
# Lookups by UID hold one entry per target; their RowKey is the target alone, no sort key.
UNSORTED_INDEXES = frozenset({SERIES_BY_UID, INSTANCES_BY_UID})
CLAIMS = "claim"

# Words of person names are indexed by every prefix up to this length; a longer query word reads the
# partition of its first WORD_PREFIX_CHARS characters and verification checks the rest.
WORD_PREFIX_CHARS = 6
# Values are indexed by their first characters (keys hold 1 KiB; an encoded character takes up to 9).
KEY_VALUE_CHARS = 100
_KEY_SAFE = frozenset(string.ascii_letters + string.digits + " -._^=,:;()+!@$~*")
_MAX_MICROSECONDS = 10**16 - 1  # year 2286


@dataclass(frozen=True)
class IndexKey:
    """Where an entry lives: its partition, and for date entries the inverted date leading its RowKey."""

    partition: str
    row_prefix: str = ""

    @property
    def index(self) -> str:
        """The index name."""
        return self.partition.split("|", 1)[0]

    def row_key(self, sort_key: str, *uids: str) -> str:
        """The RowKey of the entry for the target ``uids`` (study[, series[, instance]])."""
        target = "|".join(uids)
        return target if self.index in UNSORTED_INDEXES else f"{self.row_prefix}{sort_key}|{target}"


@dataclass(frozen=True)
class IndexEntry:
    """A parsed index entry: its key and the study, series or instance it points at."""

    key: IndexKey
    study: str
    series: str | None = None
    instance: str | None = None


def encode_key(value: str) -> str:
    """Percent-encode what Table keys forbid or this layout reserves ('/', '\\', '#', '?', '|', '%', quotes, ...).

    Character by character, so the encoding of a prefix is a prefix of the encoding.
    """
    return "".join(char if char in _KEY_SAFE else "".join(f"%{byte:02X}" for byte in char.encode()) for char in value)


def partition_key(index: str, value: str | None = None) -> str:
    """The PartitionKey of an index, for a (folded, truncated, encoded) value."""
    return index if value is None else f"{index}|{encode_key(fold(value)[:KEY_VALUE_CHARS])}"


def inverted_time(moment: datetime) -> str:
    """A sort key that orders later moments first."""
    micros = int(moment.timestamp() * 1_000_000)
    return f"{_MAX_MICROSECONDS - micros:016d}"


def inverted_date(date: str) -> str:
    """A RowKey prefix that orders later dates (yyyymmdd) first."""
    return f"{99_999_999 - int(date):08d}"


def date_key(date: str) -> IndexKey:
    """The key of a study date entry."""
    return IndexKey(STUDIES_BY_DATE, f"{inverted_date(date)}|")


def study_keys(attributes: JsonDataset, modalities: Iterable[str]) -> set[IndexKey]:
    """Every key under which a study with these study-level attributes and modalities is found."""
    keys = {IndexKey(ALL_STUDIES)}
    for index, tag in ((STUDIES_BY_PATIENT_ID, PATIENT_ID), (STUDIES_BY_ACCESSION, ACCESSION_NUMBER)):
        value = first_value(attributes, tag)
        if value:
            keys.add(IndexKey(partition_key(index, value)))
    for exact, words, tag in (
        (STUDIES_BY_PATIENT_NAME, STUDIES_BY_PATIENT_NAME_WORD, PATIENT_NAME),
        (STUDIES_BY_REFERRING, STUDIES_BY_REFERRING_WORD, REFERRING_PHYSICIAN_NAME),
    ):
        for form in person_name_forms(attributes, tag):
            if fold_person_name(form):
                keys.add(IndexKey(partition_key(exact, fold_person_name(form))))
            keys.update(IndexKey(partition_key(words, prefix)) for prefix in word_prefixes(form))
    date = first_value(attributes, STUDY_DATE)
    if date and len(date) >= 8 and date[:8].isdigit():
        keys.add(date_key(date[:8]))
    keys.update(IndexKey(partition_key(STUDIES_BY_MODALITY, modality)) for modality in modalities if modality)
    return keys


def word_prefixes(name: str) -> set[str]:
    """The prefixes (up to WORD_PREFIX_CHARS long) of every word of a person name."""
    return {word[:length] for word in name_words(name) for length in range(1, min(len(word), WORD_PREFIX_CHARS) + 1)}


def series_keys(series: str, modality: str) -> set[IndexKey]:
    """Every key under which a series with this Modality is found."""
    keys = {IndexKey(ALL_SERIES), IndexKey(partition_key(SERIES_BY_UID, series))}
    if modality:
        keys.add(IndexKey(partition_key(SERIES_BY_MODALITY, modality)))
    return keys


def instance_key(instance: str) -> IndexKey:
    """The key under which an instance is found by its SOPInstanceUID."""
    return IndexKey(partition_key(INSTANCES_BY_UID, instance))


def study_row_modalities(row: TableEntity | dict[str, object]) -> set[str]:
    """The modalities of a study row (the keys of its ModalityCounts)."""
    return set(json.loads(str(row.get("ModalityCounts") or "{}")))


def study_row_keys(row: TableEntity | dict[str, object]) -> set[IndexKey]:
    """The keys a committed study row must be found under."""
    return study_keys(json.loads(str(row.get("Attributes") or "{}")), study_row_modalities(row))


def parse_entry(entity: TableEntity | dict[str, object]) -> IndexEntry:
    """Parse an index entry back into its key and target."""
    partition, row = str(entity["PartitionKey"]), str(entity["RowKey"])
    parts = row.split("|")
    key = IndexKey(partition)
    if key.index == STUDIES_BY_DATE:
        key, parts = IndexKey(partition, f"{parts[0]}|"), parts[1:]
    if key.index not in UNSORTED_INDEXES:
        parts = parts[1:]
    return IndexEntry(key, *parts)

