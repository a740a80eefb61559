"""Name searches among thousands of names that begin alike: exact answers, reads in proportion to the page.

Three target names share their first 6, 8 and 12 characters with every one of NEIGHBOURS names (`ZQABCDEFGHIJ0000^Pat`
... `ZQABCDEFGHIJ4999^Pat`). Seeding that many studies through the store path would take minutes, so the study
rows and their name entries are written directly, computed by the index's own key functions (`study_keys`,
`IndexKey.row_key`), as bench/archive.py seeds. Only the name entries (words and word pairs) are written.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables import UpdateMode
from pydicom.uid import generate_uid

from dicom_core.index.rows import STUDY_ROW
from dicom_core.model.dicom_json import json_key
from dicom_core.model.tags import PATIENT_NAME, REFERRING_PHYSICIAN_NAME, STUDY_INSTANCE_UID
from dicom_core.qido.query import QidoResource
from dicom_core.qido.service import SearchRequest, SearchResults, search_datasets
from dicom_core.search_index.keys import (
    NAME_WORD_INDEXES,
    inverted_time,
    study_keys,
)
from dicom_core.settings import Settings
from dicom_core.storage.clients import Storage, open_storage

# QIDO_NAME_NEIGHBOURS=500 runs the same assertions on a smaller archive (faster seeding).
NEIGHBOURS = int(os.environ.get("QIDO_NAME_NEIGHBOURS", "5000"))
SHARED = "ZQABCDEFGHIJ"
TARGETS = {6: "ZQABCDXY", 8: "ZQABCDEFXY", 12: "ZQABCDEFGHIJXY"}  # each shares k leading characters with all
# Names two of whose words begin alike: a search by that beginning lists each study once.
TWO_WORDS_ALIKE = {f"ZQDUP{number:02d}": f"ZQDUP{number:02d}^ZQDUPX{number:02d}" for number in range(20)}
STUDIES = QidoResource.ALL_STUDIES
STUDY_UID = json_key(STUDY_INSTANCE_UID)


def _neighbour_word(number: int) -> str:
    return f"{SHARED}{number:04d}"


@dataclass
class NameArchive:
    """The seeded archive: the UID of every study's first name word."""

    storage: Storage
    uids: dict[str, str]  # first word -> study UID

    async def search(self, query: str, resource: QidoResource = STUDIES) -> SearchResults:
        """Run a study search."""
        return await search_datasets(self.storage, SearchRequest(resource, 2, query))

    def words(self, response: SearchResults) -> list[str]:
        """The first name word of each result, in result order."""
        by_uid = {uid: word for word, uid in self.uids.items()}
        return [by_uid[dataset[STUDY_UID]["Value"][0]] for dataset in response.datasets]


def _study_row(uid: str, name: str, created: datetime) -> dict[str, object]:
    attributes = {STUDY_UID: {"vr": "UI", "Value": [uid]},
                  json_key(PATIENT_NAME): {"vr": "PN", "Value": [{"Alphabetic": name}]},
                  json_key(REFERRING_PHYSICIAN_NAME): {"vr": "PN", "Value": [{"Alphabetic": name}]}}
    return {"PartitionKey": uid, "RowKey": STUDY_ROW, "Attributes": json.dumps(attributes),
            "ModalityCounts": json.dumps({"OT": 1}), "InstanceCount": 1, "SeriesCount": 1,
            "CreatedAt": created, "UpdatedAt": created}


async def _seed(storage: Storage, names: dict[str, str]) -> dict[str, str]:
    """Write a study row and its name entries per first word and name, one minute apart, newest last."""
    words = list(names)
    uids = {word: str(generate_uid()) for word in words}
    start = datetime(2024, 1, 1, tzinfo=UTC)
    slots = asyncio.Semaphore(32)
    shared: dict[str, list[dict[str, str]]] = defaultdict(list)

    async def write(request: Awaitable[object]) -> None:
        async with slots:
            await request

    rows = []
    for position, word in enumerate(words):
        created = start + timedelta(minutes=position)
        row = _study_row(uids[word], names[word], created)
        rows.append(row)
        for key in study_keys(json.loads(str(row["Attributes"])), {"OT"}):
            if key.index in NAME_WORD_INDEXES:
                shared[key.partition].append({"PartitionKey": key.partition,
                                              "RowKey": key.row_key(inverted_time(created), uids[word])})
    batches = [entries[start:start + 100] for entries in shared.values() for start in range(0, len(entries), 100)]
    await asyncio.gather(
        *(write(storage.studies.upsert_entity(row, mode=UpdateMode.REPLACE)) for row in rows),
        *(write(storage.index.submit_transaction([("upsert", entry) for entry in batch])) for batch in batches))
    return uids


@pytest.fixture(scope="module")
async def names(unit_settings: Settings) -> AsyncIterator[NameArchive]:
    """NEIGHBOURS studies named alike and the three targets (stored among them, halfway), in tables of their own."""
    storage = await open_storage(replace(unit_settings, table_prefix="names", blob_container="names-files",
                                         metadata_container="names-metadata"))
    await storage.ensure_created()
    neighbours = [_neighbour_word(number) for number in range(NEIGHBOURS)]
    half = NEIGHBOURS // 2
    words = [*neighbours[:half], *TARGETS.values(), *neighbours[half:]]
    names = {word: f"{word}^Pat" for word in words} | {word: name for word, name in TWO_WORDS_ALIKE.items()}
    uids = await _seed(storage, names)
    yield NameArchive(storage, uids)
    await storage.close()


def _queries(word: str, shared: int) -> list[str]:
    """Searches that match the target ``word`` (which shares ``shared`` leading characters) and no neighbour."""
    lower = word.lower()
    return [
        f"PatientName={lower}&fuzzymatching=true",
        f"PatientName={lower[:shared + 1]}&fuzzymatching=true",
        f"PatientName={lower}+pa&fuzzymatching=true",
        f"PatientName=pat+{lower[:shared + 1]}&fuzzymatching=false",  # exact: no such name
        f"PatientName={word}*",
        f"PatientName={lower[:shared + 1]}*",
        f"PatientName={word}^P*",
        f"PatientName={word[:shared + 1]}*^Pat",
        f"PatientName={word}^Pat",
        f"PatientName={lower}^pat",
        f"ReferringPhysicianName={lower[:shared + 1]}&fuzzymatching=true",
        f"ReferringPhysicianName={word}^P?t",
        f"ReferringPhysicianName={word}^Pat",
    ]


@pytest.mark.parametrize(("alike", "query"), [(alike, query) for alike, word in TARGETS.items()
                                                for query in _queries(word, alike)])
async def test_a_name_among_thousands_alike_is_found_reading_its_own_entries(
    names: NameArchive, alike: int, query: str
) -> None:
    response = await names.search(query)
    expected = [] if "fuzzymatching=false" in query else [TARGETS[alike]]
    assert (names.words(response), response.warning) == (expected, None)
    assert response.entities_read <= 2  # its entry and its study row


@pytest.mark.parametrize(
    ("query", "first", "begins"),
    [
        ("PatientName=zqabcd&fuzzymatching=true", 0, "ZQABCD"),
        ("PatientName=ZQABCDEF*", 0, "ZQABCDEF"),
        ("PatientName=zqabcdefghij+p&fuzzymatching=true", 0, SHARED),
        ("ReferringPhysicianName=ZQABCDEFGHIJ*^Pat", 0, SHARED),
        ("PatientName=zqabcd&fuzzymatching=true", 2000, "ZQABCD"),
        ("PatientName=zqab*", NEIGHBOURS - 100, "ZQAB"),
        ("PatientName=pat&fuzzymatching=true", 0, ""),  # every study: all by one word, PAT
    ],
)
async def test_a_page_of_thousands_of_matches_reads_about_offset_plus_limit(
    names: NameArchive, query: str, first: int, begins: str
) -> None:
    limit = 100
    response = await names.search(f"{query}&limit={limit}&offset={first}")
    found = names.words(response)
    assert len(found) == len(set(found)) == limit and response.warning is None
    assert all(word.startswith(begins) for word in found)
    if begins:  # a word range answers by word (newest first within a word): here the words in order
        assert found == sorted(found)
    assert response.entities_read <= 2 * (first + limit) + 16


@pytest.mark.parametrize("query", ["PatientName=zqabcdefghij00&fuzzymatching=true", "PatientName=ZQABCDEFGHIJ00*",
                                   "ReferringPhysicianName=zqabcdefghij00+pat&fuzzymatching=true"])
async def test_every_match_is_found_once_across_pages(names: NameArchive, query: str) -> None:
    whole = await names.search(f"{query}&limit=200")
    expected = [_neighbour_word(number) for number in range(min(100, NEIGHBOURS))]
    assert names.words(whole) == expected  # one word each: by word
    assert whole.entities_read <= 2 * len(expected) + 16
    pages = [names.words(await names.search(f"{query}&limit=30&offset={offset}")) for offset in range(0, 120, 30)]
    assert [word for page in pages for word in page] == expected


async def test_a_few_matches_come_newest_first(names: NameArchive) -> None:
    response = await names.search("PatientName=zqabcdefghij000&fuzzymatching=true")
    assert names.words(response) == [_neighbour_word(number) for number in range(9, -1, -1)]
    assert response.entities_read == 2 * 10


async def test_a_series_search_by_name_reads_about_the_page(names: NameArchive) -> None:
    response = await names.search("PatientName=zqabcdefxy&fuzzymatching=true", QidoResource.ALL_SERIES)
    assert (response.datasets, response.warning) == ([], None)  # the seeded studies have no series rows
    assert response.entities_read == 1  # its entry; it has no series rows (which would carry the study's attributes)


async def test_a_name_with_two_words_alike_is_listed_once_at_its_first_word(names: NameArchive) -> None:
    expected = sorted(TWO_WORDS_ALIKE)  # 40 entries in the range: in index order, each study at its first word
    whole = await names.search("PatientName=zqdup&fuzzymatching=true&limit=50")
    assert names.words(whole) == expected
    pages = [names.words(await names.search(f"PatientName=zqdup&fuzzymatching=true&limit=7&offset={offset}"))
             for offset in range(0, 21, 7)]
    assert [word for page in pages for word in page] == expected
