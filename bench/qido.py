"""QIDO-RS at archive scale: p50/p95 latency and Table entities read per query kind.

`python bench/qido.py [--studies 10000] [--instances 100000] [--repeat 20] [--azurite BLOB_PORT,TABLE_PORT]
                      [--connection-string CS] [--skip-seed]`

Seeds an archive through the STOW service (`dicom_core.stow.store_instances`, so the index entries are the
ones the store path writes): N studies of 1-3 series, M instances in all, patients with several studies,
a realistic spread of names, dates and modalities. Then runs every query kind --repeat times with varying
values through `dicom_core.qido.search` and prints, per kind, the median and 95th percentile latency and the
entities read. `make bench` runs it against an Azurite of its own (BENCH_ARGS passes options).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from dicom_core.qido import SearchRequest, search  # noqa: E402
from dicom_core.qido_query import QidoResource  # noqa: E402
from dicom_core.settings import Settings, azurite_connection_string  # noqa: E402
from dicom_core.storage import Storage, open_storage  # noqa: E402
from dicom_core.stow import StoreRequest, store_instances  # noqa: E402
from factories import make_instance, multipart_body  # noqa: E402

FAMILY = ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Robinson", "Wright",
          "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall", "Wood", "Jackson", "Clarke",
          "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "García", "Martínez", "López", "Rossi", "Russo"]
GIVEN = ["Oliver", "Amelia", "Harry", "Isla", "Jack", "Ava", "Charlie", "Emily", "Thomas", "Sophia", "Jacob",
         "Mia", "Noah", "Lena", "Jonas", "Lucía", "Mateo", "Giulia", "Leon", "Marie"]
MODALITIES = ["CT", "MR", "US", "CR", "DX", "MG", "PT", "NM"]
BOUNDARY = "bench-qido"
PARTS_PER_REQUEST = 50
SEED_REQUESTS_AT_ONCE = 4


@dataclass
class Archive:
    """What the queries need to know about the seeded archive."""

    patients: list[str] = field(default_factory=list)
    accessions: list[str] = field(default_factory=list)
    studies: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    series: dict[str, list[str]] = field(default_factory=dict)  # study -> its series
    instances: list[tuple[str, str, str]] = field(default_factory=list)


def _uid(rng: random.Random) -> str:
    return f"2.25.{rng.getrandbits(100)}"  # deterministic per --seed, so --skip-seed finds the same archive


def _plan(studies: int, instances: int, rng: random.Random) -> tuple[Archive, list[list[dict[str, object]]]]:
    """The archive and, per STOW request, the attributes of each instance to store."""
    archive = Archive()
    per_study = max(1, instances // studies)
    parts: list[dict[str, object]] = []
    first_day = date(2010, 1, 1)
    for i in range(studies):
        patient = f"BP{rng.randrange(max(1, studies // 3)):06d}"
        study, accession = _uid(rng), f"BA{i:07d}"
        name = f"{rng.choice(FAMILY)}^{rng.choice(GIVEN)}"
        attributes = dict(
            PatientID=patient, PatientName=name, AccessionNumber=accession,
            StudyDate=(first_day + timedelta(days=rng.randrange(5000))).strftime("%Y%m%d"),
            ReferringPhysicianName=f"{rng.choice(FAMILY)}^{rng.choice(GIVEN)}", StudyDescription=f"Study {i % 50}",
        )
        series = [_uid(rng) for _ in range(rng.randint(1, min(3, per_study)))]
        modalities = {se: rng.choice(MODALITIES) for se in series}
        archive.patients.append(patient)
        archive.accessions.append(accession)
        archive.studies.append(study)
        archive.names.append(name)
        archive.series[study] = series
        for k in range(per_study):
            se, sop = series[k % len(series)], _uid(rng)
            archive.instances.append((study, se, sop))
            parts.append(dict(study=study, series=se, sop=sop, rows=1, columns=1, Modality=modalities[se], **attributes))
    requests = [parts[start:start + PARTS_PER_REQUEST] for start in range(0, len(parts), PARTS_PER_REQUEST)]
    return archive, requests


async def _seed(storage: Storage, requests: list[list[dict[str, object]]]) -> float:
    slots = asyncio.Semaphore(SEED_REQUESTS_AT_ONCE)
    done = 0

    async def body(data: bytes):
        yield data

    async def store(instances: list[dict[str, object]]) -> None:
        nonlocal done
        request = StoreRequest(api_version=2, study_uid=None, accept=None, base_url="http://bench", upsert=True,
                               content_type=f'multipart/related; type="application/dicom"; boundary={BOUNDARY}')
        async with slots:
            parts = [make_instance(**attributes) for attributes in instances]  # type: ignore[arg-type]
            response = await store_instances(storage, request, body(multipart_body(parts, BOUNDARY)))
        if response.status != 200:
            raise RuntimeError(f"seeding failed with {response.status}")
        done += 1
        if done % 20 == 0:
            print(f"  seeded {done}/{len(requests)} requests", file=sys.stderr)

    start = time.perf_counter()
    await asyncio.gather(*(store(parts) for parts in requests))
    return time.perf_counter() - start


Query = Callable[[random.Random], tuple[QidoResource, str, dict[str, str]]]


def _queries(archive: Archive) -> dict[str, Query]:
    def month(rng: random.Random) -> str:
        start = date(2010, 1, 1) + timedelta(days=rng.randrange(4900))
        return f"{start:%Y%m%d}-{start + timedelta(days=30):%Y%m%d}"

    def study(rng: random.Random) -> str:
        return rng.choice(archive.studies)

    studies, series, instances = QidoResource.ALL_STUDIES, QidoResource.ALL_SERIES, QidoResource.ALL_INSTANCES
    return {
        "studies, unfiltered (limit 100)": lambda rng: (studies, "limit=100", {}),
        "studies, unfiltered, 5th page of 100": lambda rng: (studies, "limit=100&offset=400", {}),
        "studies, PatientID": lambda rng: (studies, f"PatientID={rng.choice(archive.patients)}", {}),
        "studies, AccessionNumber": lambda rng: (studies, f"AccessionNumber={rng.choice(archive.accessions)}", {}),
        "studies, StudyInstanceUID list of 5": lambda rng: (
            studies, "StudyInstanceUID=" + "\\".join(rng.sample(archive.studies, 5)), {}),
        "studies, StudyDate one month": lambda rng: (studies, f"StudyDate={month(rng)}", {}),
        "studies, StudyDate open range (limit 100)": lambda rng: (studies, "StudyDate=20150101-&limit=100", {}),
        "studies, PatientName exact": lambda rng: (studies, f"PatientName={rng.choice(archive.names)}", {}),
        "studies, PatientName fuzzy 3 letters (limit 25)": lambda rng: (
            studies, f"PatientName={rng.choice(FAMILY)[:3]}&fuzzymatching=true&limit=25", {}),
        "studies, PatientName wildcard 'Fam^Gi*' (limit 25)": lambda rng: (
            studies, f"PatientName={rng.choice(FAMILY)}^{rng.choice(GIVEN)[:2]}*&limit=25", {}),
        "studies, ReferringPhysicianName fuzzy (limit 25)": lambda rng: (
            studies, f"ReferringPhysicianName={rng.choice(GIVEN)[:4]}&fuzzymatching=true&limit=25", {}),
        "studies, ModalitiesInStudy (limit 100)": lambda rng: (
            studies, f"ModalitiesInStudy={rng.choice(MODALITIES)}&limit=100", {}),
        "studies, OHIF list: fuzzy name + date range (limit 101)": lambda rng: (
            studies, f"PatientName={rng.choice(FAMILY)[:4]}&fuzzymatching=true&StudyDate=20100101-20301231"
                     "&limit=101&includefield=00081030,00080060", {}),
        "studies, no index: StudyDescription (limit 10, scan)": lambda rng: (
            studies, f"StudyDescription=Study {rng.randrange(50)}&limit=10", {}),
        "series, unfiltered (limit 100)": lambda rng: (series, "limit=100", {}),
        "series, Modality (limit 100)": lambda rng: (series, f"Modality={rng.choice(MODALITIES)}&limit=100", {}),
        "series, PatientID": lambda rng: (series, f"PatientID={rng.choice(archive.patients)}", {}),
        "instances, unfiltered (limit 100)": lambda rng: (instances, "limit=100", {}),
        "instances, SOPInstanceUID": lambda rng: (instances, f"SOPInstanceUID={rng.choice(archive.instances)[2]}", {}),
        "instances, SeriesInstanceUID": lambda rng: (
            instances, f"SeriesInstanceUID={rng.choice(archive.instances)[1]}", {}),
        "/studies/{s}/series": lambda rng: (QidoResource.STUDY_SERIES, "", {"study_uid": study(rng)}),
        "/studies/{s}/instances": lambda rng: (QidoResource.STUDY_INSTANCES, "", {"study_uid": study(rng)}),
        "/studies/{s}/series/{se}/instances": lambda rng: _series_instances(archive, rng),
    }


def _series_instances(archive: Archive, rng: random.Random) -> tuple[QidoResource, str, dict[str, str]]:
    study, series, _ = rng.choice(archive.instances)
    return QidoResource.STUDY_SERIES_INSTANCES, "", {"study_uid": study, "series_uid": series}


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def _measure(storage: Storage, archive: Archive, repeat: int, rng: random.Random) -> None:
    print(f"| query | p50 ms | p95 ms | entities p50 | entities max | results p50 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, make in _queries(archive).items():
        latencies, entities, results = [], [], []
        for _ in range(repeat):
            resource, query, scope = make(rng)
            start = time.perf_counter()
            response = await search(storage, SearchRequest(resource, 2, query, **scope))
            latencies.append((time.perf_counter() - start) * 1000)
            entities.append(response.entities_read)
            results.append(len(response.datasets))
        print(f"| {name} | {statistics.median(latencies):.0f} | {_percentile(latencies, 0.95):.0f} | "
              f"{statistics.median(entities):.0f} | {max(entities)} | {statistics.median(results):.0f} |")


async def main() -> None:
    """Seed (unless told not to), then measure."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--azurite", help="BLOB_PORT,TABLE_PORT of an Azurite on 127.0.0.1")
    parser.add_argument("--connection-string", help="storage account (default: the app settings' account)")
    parser.add_argument("--prefix", default="bench", help="table prefix and container prefix of the archive")
    parser.add_argument("--skip-seed", action="store_true", help="measure an archive seeded before (same --seed)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the archive and the queries")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = Settings.from_environment()
    if args.azurite:
        blob_port, table_port = (int(port) for port in args.azurite.split(","))
        settings = replace(settings, storage_connection_string=azurite_connection_string("127.0.0.1", blob_port, table_port))
    elif args.connection_string:
        settings = replace(settings, storage_connection_string=args.connection_string)
    settings = replace(settings, table_prefix=args.prefix, blob_container=f"{args.prefix}-files",
                       metadata_container=f"{args.prefix}-metadata", store_concurrency=8)
    storage = await open_storage(settings)
    try:
        archive, requests = _plan(args.studies, args.instances, random.Random(args.seed))
        if not args.skip_seed:
            seconds = await _seed(storage, requests)
            print(f"Seeded {args.studies} studies, {len(archive.instances)} instances through STOW in {seconds:.0f} s "
                  f"({len(archive.instances) / seconds:.0f} instances/s)\n")
        await _measure(storage, archive, args.repeat, random.Random(args.seed + 1))
    finally:
        await storage.close()


if __name__ == "__main__":
    asyncio.run(main())
