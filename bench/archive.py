"""A synthetic archive for the QIDO benchmark, and seeding it in-process.

The plan is deterministic per seed: N studies of 1-3 series, M instances in all, patients with several
studies, a spread of names, dates and modalities. Three ways to seed it, all skipping HTTP:

- "store" (the product's per-instance path): each instance is a pydicom Part-10 file read and validated by
  `read_part10` / `validate_instance`, its metadata JSON uploaded, its index entries written as intents
  (`write_index_intents`) and its rows committed (`commit_instance`). About 8 Table requests per instance.
- "stow": each study as one multipart body through `dicom_core.stow.service.store_instances` (files and series
  metadata documents too; slowest).
- "bulk": the same entities, computed by the product's own functions (`validate_instance` once per series,
  the commit's row operations, `study_keys` / `series_keys` / `instance_key`), written as upserts in
  entity-group transactions of up to 100 per partition. About 1.6 Table requests per instance: the only way
  to seed 100,000 instances on a shared 2-core machine in under an hour. tests/bench checks that "bulk" and
  "store" leave the same rows and index entries.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import multiprocessing
import random
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from copy import deepcopy
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta

from azure.core.exceptions import ResourceNotFoundError, ServiceRequestError, ServiceResponseError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from dicom_core.extended_tags.indexing import index_new_instance, registered_tags
from dicom_core.extended_tags.registry import ExtendedTag, TagStatus, create_tags
from dicom_core.index.commit import commit_instance
from dicom_core.index.instance_metadata import row_metadata_text
from dicom_core.index.rows import STUDY_ROW, InstanceRecord, instance_operations, series_row_key
from dicom_core.model.dicom_json import JsonDataset
from dicom_core.model.identifiers import StoredInstance, new_version
from dicom_core.model.levels import Level
from dicom_core.model.part10 import read_part10
from dicom_core.search_index.entries import write_index_intents
from dicom_core.search_index.extended import entries_of
from dicom_core.search_index.extended_current import pointer_row
from dicom_core.search_index.keys import (
    CLAIMS,
    INSTANCES_BY_UID,
    SERIES_BY_UID,
    STUDIES_BY_ACCESSION,
    entry_entity,
    instance_key,
    inverted_time,
    series_keys,
    series_row_keys,
    study_keys,
    study_row_keys,
)
from dicom_core.settings import Settings
from dicom_core.storage.blobs import JSON_CONTENT, metadata_blob_name, put_json
from dicom_core.storage.clients import Storage, open_storage
from dicom_core.stow.service import StoreRequest, store_instances
from dicom_core.stow.validation import validate_instance
from tests.factories import make_instance, multipart_body

FAMILY = ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Robinson", "Wright",
          "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall", "Wood", "Jackson", "Clarke",
          "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "García", "Martínez", "López", "Rossi", "Russo"]
GIVEN = ["Oliver", "Amelia", "Harry", "Isla", "Jack", "Ava", "Charlie", "Emily", "Thomas", "Sophia", "Jacob",
         "Mia", "Noah", "Lena", "Jonas", "Lucía", "Mateo", "Giulia", "Leon", "Marie"]
MODALITIES = ["CT", "MR", "US", "CR", "DX", "MG", "PT", "NM"]
FIRST_DAY = date(2010, 1, 1)
DAYS = 5000
BOUNDARY = "bench-archive"
# An extended query tag of every archive, registered Ready before seeding: a study's StudyID, one of 40 values.
EXTENDED_TAG = ExtendedTag("00200010", "SH", Level.STUDY, status=TagStatus.READY)
STUDY_ID_VALUES = 40


@dataclass(frozen=True)
class PlannedStudy:
    """One study of the archive: its attributes and, per instance, (series, SOP instance UID)."""

    uid: str
    attributes: dict[str, str]
    modalities: dict[str, str]  # series -> Modality
    instances: list[tuple[str, str]]


@dataclass
class Archive:
    """The planned archive, and what queries need to pick values that exist."""

    studies: list[PlannedStudy] = field(default_factory=list)

    @property
    def instance_count(self) -> int:
        """Instances in all."""
        return sum(len(study.instances) for study in self.studies)

    def values(self, keyword: str) -> list[str]:
        """Every study's value of a study-level attribute."""
        return [study.attributes[keyword] for study in self.studies]


def _uid(rng: random.Random) -> str:
    return f"2.25.{rng.getrandbits(100)}"


# Studies planned alike in every archive of PROBE_MIN_STUDIES or more (the same attributes, UIDs and series), in
# PROBE_GROUPS groups of PROBE_GROUP_STUDIES sharing a PatientID, names, a month and a StudyID no other study has:
# a query for a group's value matches the same studies in the small and the large archive, so a row compares the
# same result at two archive sizes (a value drawn from the plan matches more studies the larger the archive).
PROBE_GROUPS = 8
PROBE_GROUP_STUDIES = 3
PROBE_MIN_STUDIES = 100
PROBE_FIRST_DAY = FIRST_DAY + timedelta(days=DAYS + 365)  # after every other study's date
PROBE_DAYS = 60  # between the first days of two groups: a month's range holds one group


@dataclass(frozen=True)
class ProbeGroup:
    """The values the studies of one probe group share."""

    number: int

    @property
    def attributes(self) -> dict[str, str]:
        """The study attributes every study of the group has (AccessionNumber and StudyDate apart)."""
        return dict(PatientID=f"PP{self.number:04d}", PatientName=f"Probe{self.number:02d}^Same",
                    ReferringPhysicianName=f"Referrer{self.number:02d}^Same", StudyDescription="Probe",
                    StudyID=f"PS{self.number:02d}")

    @property
    def first_day(self) -> date:
        """The date of the group's first study; the others follow a day apart."""
        return PROBE_FIRST_DAY + timedelta(days=PROBE_DAYS * self.number)

    def month(self) -> str:
        """A StudyDate range of 30 days that holds the group's studies and no other study."""
        return f"{self.first_day:%Y%m%d}-{self.first_day + timedelta(days=30):%Y%m%d}"


def plan_archive(studies: int, instances: int, seed: int = 1) -> Archive:
    """The archive of ``studies`` studies and about ``instances`` instances, the same for the same seed; the last
    PROBE_GROUPS * PROBE_GROUP_STUDIES of them the probe studies when it has PROBE_MIN_STUDIES or more."""
    rng = random.Random(seed)
    archive = Archive()
    per_study = max(1, instances // studies)
    probes = PROBE_GROUPS * PROBE_GROUP_STUDIES if studies >= PROBE_MIN_STUDIES else 0
    for i in range(studies - probes):
        attributes = dict(
            PatientID=f"BP{rng.randrange(max(1, studies // 3)):06d}",
            PatientName=f"{rng.choice(FAMILY)}^{rng.choice(GIVEN)}",
            AccessionNumber=f"BA{seed:02d}{i:07d}",
            StudyDate=(FIRST_DAY + timedelta(days=rng.randrange(DAYS))).strftime("%Y%m%d"),
            ReferringPhysicianName=f"{rng.choice(FAMILY)}^{rng.choice(GIVEN)}",
            StudyDescription=f"Study {i % 50}",
            StudyID=f"BS{i % STUDY_ID_VALUES:02d}",
        )
        archive.studies.append(_planned_study(rng, attributes, per_study))
    probe_rng = random.Random("probe studies")  # not the seed: alike in every archive
    for i in range(probes):
        group = ProbeGroup(i // PROBE_GROUP_STUDIES)
        day = group.first_day + timedelta(days=i % PROBE_GROUP_STUDIES)
        archive.studies.append(_planned_study(probe_rng, {**group.attributes, "AccessionNumber": f"PA{i:07d}",
                                                          "StudyDate": f"{day:%Y%m%d}"}, per_study))
    return archive


def _planned_study(rng: random.Random, attributes: dict[str, str], per_study: int) -> PlannedStudy:
    series = [_uid(rng) for _ in range(rng.randint(1, min(3, per_study)))]
    return PlannedStudy(
        uid=_uid(rng), attributes=attributes, modalities={se: rng.choice(MODALITIES) for se in series},
        instances=[(series[k % len(series)], _uid(rng)) for k in range(per_study)],
    )


def _instance_bytes(study: PlannedStudy, series: str, sop: str) -> bytes:
    return make_instance(study=study.uid, series=series, sop=sop, rows=1, columns=1,
                         Modality=study.modalities[series], **study.attributes)


async def _store_through_index(storage: Storage, study: PlannedStudy) -> None:
    """Store a study's instances one after another the way STOW's per-part path does, minus the .dcm blob.

    A storage error (Azurite dropping a kept-alive connection under load) retries the instance: upsert=True
    makes that safe.
    """
    for series, sop in study.instances:
        parsed = read_part10(io.BytesIO(_instance_bytes(study, series, sop)))
        validated = validate_instance(parsed, api_version=2, url_study=None)
        if validated.failed or validated.ids is None:
            raise RuntimeError(f"planned instance {sop} does not validate: {validated.errors}")
        stored = StoredInstance(validated.ids, new_version())
        text = json.dumps(validated.metadata, separators=(",", ":"))
        record = InstanceRecord(stored=stored, sop_class_uid=validated.sop_class_uid or "",
                                transfer_syntax=str(parsed.transfer_syntax), size=parsed.size,
                                metadata=validated.metadata, metadata_text=row_metadata_text(text))
        for attempt in range(3):
            try:
                if not record.metadata_text:  # too long for the row, as the store does
                    await put_json(storage, metadata_blob_name(stored), text.encode())
                await write_index_intents(storage, record)
                await index_new_instance(storage, record.metadata, stored)  # extended tags, as the store does
                await commit_instance(storage, record, upsert=True)
                break
            except ServiceRequestError:
                if attempt == 2:
                    raise


SOP_INSTANCE_UID = "00080018"
# Index partitions written with each study (its UIDs' roots, its accession number, its claims); the others are
# gathered from many studies and written at the end.
STUDY_OWN_PARTITIONS = (f"{INSTANCES_BY_UID}|", f"{SERIES_BY_UID}|", f"{STUDIES_BY_ACCESSION}|", f"{CLAIMS}|")
TRANSACTION_MAX = 100
REQUESTS_AT_ONCE = 32
RETRIES = 5


def _series_template(study: PlannedStudy, series: str) -> tuple[InstanceRecord, JsonDataset]:
    """The validated record of the series' first instance; the others differ only in SOPInstanceUID."""
    sop = next(sop for se, sop in study.instances if se == series)
    parsed = read_part10(io.BytesIO(_instance_bytes(study, series, sop)))
    validated = validate_instance(parsed, api_version=2, url_study=None)
    if validated.failed or validated.ids is None:
        raise RuntimeError(f"planned instance {sop} does not validate: {validated.errors}")
    record = InstanceRecord(stored=StoredInstance(validated.ids, new_version()),
                            sop_class_uid=validated.sop_class_uid or "", transfer_syntax=str(parsed.transfer_syntax),
                            size=parsed.size, metadata=validated.metadata)
    return record, validated.metadata


def bulk_entities(study: PlannedStudy, created: datetime, *,
                  extended_tag: bool = True) -> tuple[list[dict], list[dict], dict[str, bytes]]:
    """The study partition's rows, the index entries and the metadata blobs that storing ``study`` leaves.

    Rows come from the commit's own row operations applied instance after instance (as `commit_instance`
    would, without the ETag round trips); index keys from the functions `write_index_intents` uses.
    """
    templates = {series: _series_template(study, series) for series in study.modalities}
    rows: dict[str, dict] = {}
    blobs: dict[str, bytes] = {}
    record = None
    for series, sop in study.instances:
        template, metadata = templates[series]
        metadata = deepcopy(metadata)
        metadata[SOP_INSTANCE_UID] = {"vr": "UI", "Value": [sop]}
        ids = replace(template.stored.ids, instance=sop)
        text = json.dumps(metadata, separators=(",", ":"))
        record = replace(template, stored=StoredInstance(ids, new_version()), metadata=metadata,
                         metadata_text=row_metadata_text(text))
        current = [rows.get(key) for key in (STUDY_ROW, series_row_key(series), f"instance|{series}|{sop}")]
        operations = instance_operations(record, *(_as_entity(row) for row in current))
        for operation in operations:
            entity = dict(operation[1])
            rows[entity["RowKey"]] = entity
        if not record.metadata_text:
            blobs[metadata_blob_name(record.stored)] = text.encode()
    study_sort = inverted_time(created)
    study_row = rows[STUDY_ROW]
    modalities = set(json.loads(study_row["ModalityCounts"]))
    entries = [{"PartitionKey": key.partition, "RowKey": key.row_key(study_sort, study.uid)}
               for key in study_keys(json.loads(study_row["Attributes"]), modalities)]
    claims = [{"PartitionKey": f"{CLAIMS}|{study.uid}", "RowKey": STUDY_ROW, "SortKey": study_sort,
               "ClaimedAt": created}]
    for series in study.modalities:
        claims.append({"PartitionKey": f"{CLAIMS}|{study.uid}", "RowKey": series_row_key(series),
                       "SortKey": study_sort, "ClaimedAt": created})
        entries += [entry_entity(key, study_sort, study.uid, series)
                    for key in series_row_keys(rows[series_row_key(series)])]
    entries += [entry_entity(instance_key(sop), "", study.uid, series, sop) for series, sop in study.instances]
    if record is not None and extended_tag:  # its entries: the latest stored instance's value, and their pointer
        extended = entries_of(record.stored, EXTENDED_TAG.indexed, record.metadata)
        if extended:
            entries += [*extended, pointer_row(extended[0]["PartitionKey"], study.uid, record.stored.version,
                                               extended)]
    return list(rows.values()), entries + claims, blobs


async def register_extended_tag(settings: Settings) -> None:
    """Register EXTENDED_TAG as Ready in ``settings``' storage, before seeding: stores index it at once."""
    storage = await open_storage(settings)
    try:
        await create_tags(storage, [EXTENDED_TAG])
    finally:
        await storage.close()


class _Row(dict):
    """A row dict that answers `.metadata` like a TableEntity (the commit's operations read its etag)."""

    metadata = {"etag": "*"}


def _as_entity(row: dict | None) -> _Row | None:
    return None if row is None else _Row(row)


async def _seed_bulk(storage: Storage, studies: list[PlannedStudy], first_index: int, step: int,
                     in_flight: int, progress: multiprocessing.Queue | None, resume: bool = False,
                     shared_only: bool = False) -> None:
    """Write the studies' rows, index entries and metadata blobs in transactions, ``in_flight`` at a time.

    Partitions of one study (its rows, its UIDs, its claims) are written as the study is planned; partitions
    that many studies share (all studies, names, dates, modalities) are gathered and written at the end.
    """
    studies_at_once, requests = asyncio.Semaphore(in_flight), asyncio.Semaphore(REQUESTS_AT_ONCE)
    start = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
    # The extended tag's entries only where it is registered (bench/qido.py registers it; the store path indexes
    # what the registry holds).
    extended_tag = any(tag.path == EXTENDED_TAG.path for tag in await registered_tags(storage))
    shared: dict[str, list[dict]] = defaultdict(list)

    async def transact(table: TableClient, entities: list[dict]) -> None:
        # Index entities merged, as the store writes them: a UID lookup entity gathers one property per target.
        mode = UpdateMode.MERGE if table is storage.index else UpdateMode.REPLACE
        for offset in range(0, len(entities), TRANSACTION_MAX):
            chunk = entities[offset:offset + TRANSACTION_MAX]
            if len(chunk) == 1:
                await _retrying(requests, functools.partial(table.upsert_entity, chunk[0], mode=mode))
            else:
                operations = [("upsert", entity, {"mode": mode}) for entity in chunk]
                await _retrying(requests, functools.partial(table.submit_transaction, operations))

    async def upload(name: str, body: bytes) -> None:
        await _retrying(requests, lambda: storage.metadata.upload_blob(
            name, body, overwrite=True, content_settings=JSON_CONTENT))

    async def one(position: int, study: PlannedStudy) -> None:
        # Newest first follows the plan's order: study k was "stored" k minutes after the first.
        created = datetime.fromtimestamp(start + (first_index + position * step) * 60, UTC)
        async with studies_at_once:
            await _write_study(study, created)
        if progress is not None:
            progress.put(len(study.instances))

    async def _write_study(study: PlannedStudy, created: datetime) -> None:
        if resume:
            try:
                row = await storage.studies.get_entity(study.uid, STUDY_ROW, select=["Attributes", "ModalityCounts"])
            except ResourceNotFoundError:
                row = None
            if row is not None:  # written before: only the shared partitions' entries may be missing
                for entry in _shared_entries(study, row, created):
                    shared[entry["PartitionKey"]].append(entry)
                return
            if shared_only:
                return
        rows, entries, blobs = bulk_entities(study, created, extended_tag=extended_tag)
        own: dict[str, list[dict]] = defaultdict(list)
        for entry in entries:
            partition = entry["PartitionKey"]
            (own if partition.startswith(STUDY_OWN_PARTITIONS) else shared)[partition].append(entry)
        await asyncio.gather(transact(storage.studies, rows),
                             *(transact(storage.index, group) for group in own.values()),
                             *(upload(name, body) for name, body in blobs.items()))

    await asyncio.gather(*(one(position, study) for position, study in enumerate(studies)))
    await asyncio.gather(*(transact(storage.index, sorted(group, key=lambda e: e["RowKey"]))
                           for group in shared.values()))


def _shared_entries(study: PlannedStudy, row: dict, created: datetime) -> list[dict]:
    """The entries a committed study row (and the plan's series) have in partitions many studies share."""
    sort = inverted_time(created)
    entries = [{"PartitionKey": key.partition, "RowKey": key.row_key(sort, study.uid)} for key in study_row_keys(row)]
    for series, modality in study.modalities.items():
        entries += [{"PartitionKey": key.partition, "RowKey": key.row_key(sort, study.uid, series)}
                    for key in series_keys(series, modality)]
    return [entry for entry in entries if not entry["PartitionKey"].startswith(STUDY_OWN_PARTITIONS)]


async def _retrying(slots: asyncio.Semaphore, request: Callable[[], Awaitable[object]]) -> None:
    """Send an idempotent write, again after a dropped connection (Azurite resets some under heavy load)."""
    for attempt in range(RETRIES):
        try:
            async with slots:
                await request()
            return
        except (ServiceRequestError, ServiceResponseError):
            if attempt == RETRIES - 1:
                raise
            await asyncio.sleep(0.5 * (attempt + 1))


async def present_studies(settings: Settings, archive: Archive, at_once: int = 32) -> Archive:
    """The planned studies that have a study row (an archive whose seeding was cut short)."""
    storage = await open_storage(settings)
    slots = asyncio.Semaphore(at_once)

    async def present(study: PlannedStudy) -> bool:
        async with slots:
            try:
                await storage.studies.get_entity(study.uid, STUDY_ROW, select=["RowKey"])
                return True
            except ResourceNotFoundError:
                return False

    try:
        flags = await asyncio.gather(*(present(study) for study in archive.studies))
    finally:
        await storage.close()
    return Archive([study for study, flag in zip(archive.studies, flags, strict=True) if flag])


async def _store_through_stow(storage: Storage, study: PlannedStudy) -> None:
    """Store a study as one multipart STOW body through the service function."""
    request = StoreRequest(api_version=2, study_uid=None, accept=None, base_url="http://bench", upsert=True,
                           content_type=f'multipart/related; type="application/dicom"; boundary={BOUNDARY}')
    data = multipart_body([_instance_bytes(study, series, sop) for series, sop in study.instances], BOUNDARY)

    async def body():
        yield data

    response = await store_instances(storage, request, body())
    if response.status != 200:
        raise RuntimeError(f"storing study {study.uid} answered {response.status}")


async def _seed_share(settings: Settings, archive: Archive, worker: int, workers: int, in_flight: int,
                      mode: str, progress: multiprocessing.Queue | None) -> None:
    storage = await open_storage(settings)
    studies = archive.studies[worker::workers]
    if mode in ("bulk", "resume", "common"):
        try:
            await _seed_bulk(storage, studies, worker, workers, in_flight, progress,
                             resume=mode in ("resume", "common"), shared_only=mode == "common")
        finally:
            await storage.close()
        return
    store = _store_through_stow if mode == "stow" else _store_through_index
    slots = asyncio.Semaphore(in_flight)

    async def one(study: PlannedStudy) -> None:
        async with slots:
            await store(storage, study)
        if progress is not None:
            progress.put(len(study.instances))

    try:
        await asyncio.gather(*(one(study) for study in studies))
    finally:
        await storage.close()


def _worker(settings: Settings, studies: int, instances: int, seed: int, worker: int, workers: int,
            in_flight: int, mode: str, progress: multiprocessing.Queue) -> None:
    archive = plan_archive(studies, instances, seed)
    asyncio.run(_seed_share(settings, archive, worker, workers, in_flight, mode, progress))


@dataclass(frozen=True)
class SeedResult:
    """How long seeding took."""

    studies: int
    instances: int
    seconds: float
    processes: int
    mode: str

    @property
    def instances_per_second(self) -> float:
        """The seeding rate."""
        return self.instances / self.seconds


def seed_archive(settings: Settings, studies: int, instances: int, *, seed: int = 1, processes: int = 3,
                 in_flight: int = 24, mode: str = "bulk", log_every_seconds: float = 30.0,
                 shares: list[int] | None = None) -> SeedResult:
    """Seed the planned archive into ``settings``' storage from ``processes`` processes; return the rate.

    The studies are dealt into ``processes`` shares; ``shares`` runs only some of them (with mode "resume":
    those of an earlier bulk run whose processes failed; studies already written get their shared entries;
    mode "common" only does the latter, leaving the studies never written out).
    """
    archive = plan_archive(studies, instances, seed)
    total = archive.instance_count
    settings = replace(settings, store_concurrency=8)
    context = multiprocessing.get_context("spawn")
    progress: multiprocessing.Queue = context.Queue()
    workers = [context.Process(target=_worker, args=(settings, studies, instances, seed, k, processes, in_flight,
                                                     mode, progress)) for k in (shares or range(processes))]
    start = time.perf_counter()
    for process in workers:
        process.start()
    done, last_log = 0, start
    while any(process.is_alive() for process in workers) or not progress.empty():
        try:
            done += progress.get(timeout=1.0)
        except Exception:  # queue.Empty
            pass
        now = time.perf_counter()
        if now - last_log >= log_every_seconds:
            last_log = now
            print(f"  seeded {done}/{total} instances in {now - start:.0f} s ({done / (now - start):.0f}/s)",
                  file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start
    for process in workers:
        process.join()
        if process.exitcode != 0:
            raise RuntimeError(f"a seeding process exited with {process.exitcode}")
    return SeedResult(studies, total, seconds, processes, mode)
