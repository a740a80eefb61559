"""Keys of the secondary index table: which partition and RowKey an index entry of a study, series or instance has.

Each searchable value gets its own partition (`{index}|{folded, encoded value}`) and each entry's RowKey starts
with an inverted sort key, so a newest-first page is one RowKey range read. Words of person names are entries of
their own: one partition per first character and the whole word leading the RowKey, so the words beginning with
any prefix are one RowKey range. Lookups by series or SOP instance UID are point reads: one entity per UID, its
RowKey the UID, in the partition of the UID's root (the UID without its last component), with one property per
target (study[, series]) the UID was stored in: the instances of a series (and the series of one source) share a
root, so the entries of a request share a transaction, and Azurite, which scans a whole table for every query,
answers a point read from its key index. Pure functions of the stored attributes; writing and removing entries is
`entries.py`.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from azure.data.tables import TableEntity

from dicom_core.model.dicom_json import JsonDataset, first_value, person_name_forms
from dicom_core.model.tags import (
    ACCESSION_NUMBER,
    PATIENT_ID,
    PATIENT_NAME,
    PPS_START_DATE,
    PPS_START_TIME,
    REFERRING_PHYSICIAN_NAME,
    SERIES_NUMBER,
    STUDY_DATE,
    STUDY_ID,
    STUDY_TIME,
)
from dicom_core.model.text import fold, name_words
from dicom_core.storage.sharded_table import partition_kind

# Index names: the first part of an entry's PartitionKey. 's.' entries point at studies, 'se.' at series,
# 'i.' at instances.
ALL_STUDIES = "s.all"
STUDIES_BY_PATIENT_ID = "s.pid"
STUDIES_BY_ACCESSION = "s.acc"
STUDIES_BY_PATIENT_NAME_WORD = "s.pnword"
STUDIES_BY_REFERRING_WORD = "s.refword"
# A name's first two words joined by PAIR_JOIN, e.g. DOE^JOHN: 'Doe^Jo*' is then one range, not every DOE.
STUDIES_BY_PATIENT_NAME_PAIR = "s.pnpair"
STUDIES_BY_REFERRING_PAIR = "s.refpair"
STUDIES_BY_DATE = "s.date"
# StudyID and StudyTime (required matching keys of PS3.18): one partition each, the value leading the RowKey and
# ended by VALUE_END, so an exact value, a time range or a prefix is one RowKey range, and the entries of the
# studies one request stores share a partition.
STUDIES_BY_STUDY_ID = "s.sid"
STUDIES_BY_TIME = "s.time"
STUDIES_BY_MODALITY = "s.mod"
ALL_SERIES = "se.all"
SERIES_BY_UID = "se.at"
SERIES_BY_MODALITY = "se.mod"
# SeriesNumber and PerformedProcedureStepStartDate/Time: value-led, one partition each, like StudyID and StudyTime.
SERIES_BY_NUMBER = "se.num"
SERIES_BY_PPS_DATE = "se.ppsdate"
SERIES_BY_PPS_TIME = "se.ppstime"
INSTANCES_BY_UID = "i.at"
# Lookups by UID: partition `{index}|{root of the UID}`, RowKey `{uid}`, one property per target (TARGET_PREFIX and
# a hash of the target: the target's UIDs joined by '|'), written by merge, blanked by a delete (merge, "").
UID_INDEXES = frozenset({SERIES_BY_UID, INSTANCES_BY_UID})
TARGET_PREFIX = "t"
# The layouts before, read beside the current one while entries of them are left (legacy_uid_layout.py) and moved
# by the reindex (maintenance/reindex.py): a RowKey range per UID in the partition of its root (RowKey
# `{uid}|{the rest of the target}`), and before that a partition per UID (RowKey the target).
UID_RANGE_LAYOUT = {SERIES_BY_UID: "se.root", INSTANCES_BY_UID: "i.root"}
UID_PARTITION_LAYOUT = {SERIES_BY_UID: "se.uid", INSTANCES_BY_UID: "i.uid"}
LEGACY_UID_INDEXES = frozenset({*UID_RANGE_LAYOUT.values(), *UID_PARTITION_LAYOUT.values()})
# Name words and word pairs: RowKey `{encoded word}!{sort}|{study}` in the partition of the word's first
# character (a pair is one "word" `{first}^{second}`).
NAME_WORD_INDEXES = frozenset({STUDIES_BY_PATIENT_NAME_WORD, STUDIES_BY_REFERRING_WORD,
                               STUDIES_BY_PATIENT_NAME_PAIR, STUDIES_BY_REFERRING_PAIR})
# Indexes whose RowKey begins with the value and WORD_END: name words and the single-partition value indexes.
VALUE_LED_INDEXES = NAME_WORD_INDEXES | {STUDIES_BY_STUDY_ID, STUDIES_BY_TIME, SERIES_BY_NUMBER, SERIES_BY_PPS_DATE,
                                         SERIES_BY_PPS_TIME}
# Joins the two words of a pair: name words hold letters and digits only, so it never occurs in a word.
PAIR_JOIN = "^"
CLAIMS = "claim"
# The indexes of each person name attribute: words, leading word pairs. An exact name is found by its word pair
# (or its word, when it has one), a superset that verification narrows.
NAME_INDEXES = (
    (STUDIES_BY_PATIENT_NAME_WORD, STUDIES_BY_PATIENT_NAME_PAIR, PATIENT_NAME),
    (STUDIES_BY_REFERRING_WORD, STUDIES_BY_REFERRING_PAIR, REFERRING_PHYSICIAN_NAME),
)
# Whole names had partitions of their own (`s.pn|{name}`, `s.ref|{name}`) before: no search reads them, the
# reindex deletes them.
LEGACY_EXACT_NAME_INDEXES = ("s.pn", "s.ref")

# Values are indexed by their first characters (keys hold 1 KiB; an encoded character takes up to 9).
KEY_VALUE_CHARS = 100
# Name words are indexed by their first characters (an encoded character of a word takes up to 12).
WORD_KEY_CHARS = 64
# Ends the word in a name word's RowKey: it sorts before every character of an encoded word ('%', digits,
# letters), so DOE's entries come before DOEL's, and a whole word is the range [DOE!, DOE").
WORD_END = "!"
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
        return partition_kind(self.partition)

    def row_key(self, sort_key: str, *uids: str) -> str:
        """The RowKey of the entry for the target ``uids`` (study[, series[, instance]])."""
        target = "|".join(uids)
        if self.index in UID_INDEXES:  # the looked-up UID (the target's last), as row_prefix
            return self.row_prefix
        if self.index in UID_RANGE_LAYOUT.values():  # the looked-up UID leads, as row_prefix
            return self.row_prefix + "|".join(uids[:-1])
        if self.index in UID_PARTITION_LAYOUT.values():
            return target
        return f"{self.row_prefix}{sort_key}|{target}"


@dataclass(frozen=True)
class IndexEntry:
    """A parsed index entry: its key, the study, series or instance it points at, and its sort key."""

    key: IndexKey
    study: str
    series: str | None = None
    instance: str | None = None
    sort_key: str = ""


def encode_key(value: str) -> str:
    """Percent-encode what Table keys forbid or this layout reserves ('/', '\\', '#', '?', '|', '%', quotes, ...).

    Character by character, so the encoding of a prefix is a prefix of the encoding.
    """
    return "".join(char if char in _KEY_SAFE else "".join(f"%{byte:02X}" for byte in char.encode()) for char in value)


def successor(key: str) -> str:
    """The first string after every string that starts with ``key`` (the end of a prefix range)."""
    return key[:-1] + chr(ord(key[-1]) + 1)


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
    for words, pairs, tag in NAME_INDEXES:
        forms = person_name_forms(attributes, tag)
        keys.update(word_key(words, word) for form in forms for word in name_words(form))
        keys.update(word_key(pairs, PAIR_JOIN.join(form_words[:2]))
                    for form_words in map(name_words, forms) if len(form_words) >= 2)
    date = first_value(attributes, STUDY_DATE)
    if date and len(date) >= 8 and date[:8].isdigit():
        keys.add(date_key(date[:8]))
    study_id = first_value(attributes, STUDY_ID)
    if study_id and study_id.strip():
        keys.add(value_key(STUDIES_BY_STUDY_ID, fold(study_id.strip())))
    time = stored_time(first_value(attributes, STUDY_TIME))
    if time:
        keys.add(value_key(STUDIES_BY_TIME, time))
    keys.update(IndexKey(partition_key(STUDIES_BY_MODALITY, modality)) for modality in modalities if modality)
    return keys


def word_key(index: str, word: str) -> IndexKey:
    """The key of a (folded) name word's entry: the partition of its first character, the word leading the RowKey."""
    cut = word[:WORD_KEY_CHARS]
    return IndexKey(f"{index}|{encode_key(cut[:1])}", f"{encode_key(cut)}{WORD_END}")


def value_key(index: str, value: str) -> IndexKey:
    """The key of an entry of a single-partition value index: the value leading the RowKey."""
    return IndexKey(index, f"{_value_text(value[:KEY_VALUE_CHARS])}{WORD_END}")


def value_range(index: str, low: str | None, high: str | None, *, prefix: bool = True) -> tuple[str, str, str | None]:
    """The partition and RowKey range [low, high) of a value index's entries from ``low`` through ``high``.

    With ``prefix``, a bound is compared at its own length (a time ``1030`` takes in ``103059``); otherwise
    ``high`` is one whole value.
    """
    start = _value_text(low) if low else ""
    if high is None:
        return index, start, None
    end = _value_text(high[:KEY_VALUE_CHARS])
    return index, start, successor(end if prefix else end + WORD_END)


def _value_text(value: str) -> str:
    """A value as it leads a RowKey: encoded, WORD_END included (a StudyID may hold one; a name word never does)."""
    return encode_key(value).replace(WORD_END, "%21")


def stored_time(value: str | None) -> str:
    """A TM value as the time index keeps it (no colons, no spaces); empty when it is no time."""
    time = (value or "").strip().replace(":", "")
    return time if time[:2].isdigit() else ""


def word_range(index: str, word: str, *, whole: bool) -> tuple[str, str, str]:
    """The partition and RowKey range [low, high) of the entries of ``word``, or of every word it begins."""
    cut = word[:WORD_KEY_CHARS]
    low = encode_key(cut) + (WORD_END if whole else "")
    return f"{index}|{encode_key(cut[:1])}", low, successor(low)


def uid_root(uid: str) -> str:
    """A UID without its last component ("" for a UID of one component)."""
    return uid.rpartition(".")[0]


def uid_key(index: str, uid: str) -> IndexKey:
    """The key of a UID lookup entity (SERIES_BY_UID, INSTANCES_BY_UID): the partition of the UID's root, the UID."""
    return IndexKey(partition_key(index, uid_root(uid)), encode_key(uid))


def target_property(*uids: str) -> str:
    """The name of the property of a UID lookup entity that holds the target ``uids`` (study[, series[, instance]])."""
    return TARGET_PREFIX + hashlib.sha256("|".join(uids).encode()).hexdigest()[:16]


def uid_entity(key: IndexKey, *uids: str, blank: bool = False) -> dict[str, str]:
    """The merge that adds the target ``uids`` to a UID lookup entity (or, ``blank``, removes it)."""
    return {"PartitionKey": key.partition, "RowKey": key.row_key("", *uids),
            target_property(*uids): "" if blank else "|".join(uids)}


def entry_entity(key: IndexKey, sort_key: str, *uids: str) -> dict[str, str]:
    """The entity that enters the target ``uids`` under ``key`` (written by merge: a UID lookup entity's other
    targets stay)."""
    if key.index in UID_INDEXES:
        return uid_entity(key, *uids)
    return {"PartitionKey": key.partition, "RowKey": key.row_key(sort_key, *uids)}


def legacy_uid_keys(index: str, uid: str) -> tuple[IndexKey, IndexKey]:
    """The keys the layouts before gave a UID lookup entry: in the range of its root's partition, a partition of its
    own."""
    return (IndexKey(partition_key(UID_RANGE_LAYOUT[index], uid_root(uid)), f"{encode_key(uid)}|"),
            IndexKey(partition_key(UID_PARTITION_LAYOUT[index], uid)))


def legacy_uid_ranges(index: str, uid: str, left: Collection[str]) -> tuple[tuple[str, str | None, str | None], ...]:
    """The partitions and RowKey ranges [low, high) of the entries of ``uid`` in the layouts before that are ``left``
    (old index names)."""
    in_range, own_partition = legacy_uid_keys(index, uid)
    ranges: list[tuple[str, str | None, str | None]] = []
    if in_range.index in left:
        ranges.append((in_range.partition, in_range.row_prefix, successor(in_range.row_prefix)))
    if own_partition.index in left:
        ranges.append((own_partition.partition, None, None))
    return tuple(ranges)


def series_keys(series: str, modality: str, attributes: JsonDataset | None = None) -> set[IndexKey]:
    """Every key under which a series with this Modality and these series-level attributes is found."""
    keys = {IndexKey(ALL_SERIES), uid_key(SERIES_BY_UID, series)}
    if modality:
        keys.add(IndexKey(partition_key(SERIES_BY_MODALITY, modality)))
    if attributes:
        number = stored_number(first_value(attributes, SERIES_NUMBER))
        if number:
            keys.add(value_key(SERIES_BY_NUMBER, number))
        date = (first_value(attributes, PPS_START_DATE) or "").strip()
        if len(date) >= 8 and date[:8].isdigit():
            keys.add(value_key(SERIES_BY_PPS_DATE, date[:8]))
        time = stored_time(first_value(attributes, PPS_START_TIME))
        if time:
            keys.add(value_key(SERIES_BY_PPS_TIME, time))
    return keys


def series_row_keys(row: TableEntity | dict[str, object]) -> set[IndexKey]:
    """The keys a committed series row must be found under."""
    series = str(row["RowKey"]).split("|", 1)[1]
    return series_keys(series, str(row.get("Modality") or ""), json.loads(str(row.get("Attributes") or "{}")))


def stored_number(value: object) -> str:
    """An IS value as the number index keeps it (`03` is `3`); empty when it is no integer."""
    try:
        return str(int(str(value).strip())) if value is not None else ""
    except ValueError:
        return ""


def instance_key(instance: str) -> IndexKey:
    """The key under which an instance is found by its SOPInstanceUID."""
    return uid_key(INSTANCES_BY_UID, instance)


def study_row_modalities(row: TableEntity | dict[str, object]) -> set[str]:
    """The modalities of a study row (the keys of its ModalityCounts)."""
    return set(json.loads(str(row.get("ModalityCounts") or "{}")))


def study_row_keys(row: TableEntity | dict[str, object]) -> set[IndexKey]:
    """The keys a committed study row must be found under."""
    return study_keys(json.loads(str(row.get("Attributes") or "{}")), study_row_modalities(row))


def parse_entry(entity: Mapping[str, object]) -> IndexEntry:
    """Parse an index entry back into its key, target and sort key."""
    partition, row = str(entity["PartitionKey"]), str(entity["RowKey"])
    index, row_prefix = partition_kind(partition), ""
    if index in UID_INDEXES:
        raise ValueError(f"a UID lookup entity ({partition}) holds several targets: parse_entries reads them")
    if index in UID_RANGE_LAYOUT.values():
        uid, _, rest = row.partition("|")
        study, *middle = rest.split("|")
        key = IndexKey(partition, f"{uid}|")
        return IndexEntry(key, study, middle[0], uid) if middle else IndexEntry(key, study, uid)
    if index == STUDIES_BY_DATE:
        row_prefix, _, row = row.partition("|")
        row_prefix += "|"
    elif index in VALUE_LED_INDEXES:
        row_prefix, _, row = row.partition(WORD_END)
        row_prefix += WORD_END
    parts, sort_key = row.split("|"), ""
    if index not in UID_PARTITION_LAYOUT.values():
        sort_key, parts = parts[0], parts[1:]
    series, instance = (*parts[1:], None, None)[:2]
    return IndexEntry(IndexKey(partition, row_prefix), parts[0], series, instance, sort_key)


def parse_entries(entity: Mapping[str, object]) -> list[IndexEntry]:
    """Parse an index entity into the entries it holds: a UID lookup entity's targets (blanked ones left out), else
    the one entry."""
    partition = str(entity["PartitionKey"])
    if partition_kind(partition) not in UID_INDEXES:
        return [parse_entry(entity)]
    key = IndexKey(partition, str(entity["RowKey"]))
    targets = sorted(str(value) for name, value in entity.items()
                     if name.startswith(TARGET_PREFIX) and isinstance(value, str) and value)
    return [IndexEntry(key, *target.split("|")[:3]) for target in targets]

