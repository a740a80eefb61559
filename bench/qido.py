"""QIDO-RS: p50/p95 latency and Table entities read (X-DicomWeb-Entities-Read) per query kind of the QIDO benchmark.

Queries go over HTTP to a server started with DICOMWEB_QUERY_STATS=true. Rows marked "probe" ask for the values
of a probe group (bench/archive.py), which match the same 3 studies in every archive: they measure how a search's
cost grows with the archive, not with its result. With two archives (a small one and
the large one, each with its own tables and server) every query kind runs against both, interleaved, so the
"a search costs about as much in 10,000 studies as in 100" comparison is made in one run: a row passes when its p50
at the large archive is at most twice the small one's (or 5 ms more) and it reads at most 2 × (offset + limit)
entities; with one archive only, when its p95 is at most 50 ms. The storage floor
(one Table query of a one-entity partition with the SDK) is measured against each archive's index table too:
Azurite answers a query by scanning its whole table, so that floor grows with the archive where Azure's does not.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta

import httpx
from azure.data.tables import TableClient

from dicom_core.qido.service import ENTITIES_READ_HEADER

from .archive import FAMILY, GIVEN, MODALITIES, PROBE_GROUPS, PROBE_MIN_STUDIES, Archive, ProbeGroup
from .environment import Azurite, cpu_seconds
from .report import Results, Row
from .stats import p50, p95

P95_TARGET_MS = 50.0
ENTITIES_TARGET = 2.0  # × (offset + limit)
# Search at scale: p50 at the large archive ≤ SCALING_TARGET × the small archive's, or ≤ its p50 + SCALING_SLACK_MS.
SCALING_TARGET = 2.0
SCALING_SLACK_MS = 5.0
DEFAULT_LIMIT = 100


@dataclass(frozen=True)
class Query:
    """One request of a query kind: its path (under /v2), query string, and offset + limit."""

    path: str
    query: str
    wanted: int


QueryKind = Callable[[Archive, random.Random], Query]


def _page(query: str) -> int:
    options = dict(item.split("=", 1) for item in query.split("&") if "=" in item)
    return int(options.get("offset", 0)) + int(options.get("limit", DEFAULT_LIMIT))


def _q(path: str, query: str) -> Query:
    return Query(path, query, _page(query))


def _month(rng: random.Random) -> str:
    start = date(2010, 1, 1) + timedelta(days=rng.randrange(4900))
    return f"{start:%Y%m%d}-{start + timedelta(days=30):%Y%m%d}"


def _probe_group(archive: Archive, rng: random.Random) -> ProbeGroup | None:
    """A probe group of the archive (alike in every archive of PROBE_MIN_STUDIES or more), or None without."""
    return ProbeGroup(rng.randrange(PROBE_GROUPS)) if len(archive.studies) >= PROBE_MIN_STUDIES else None


def _probe(archive: Archive, rng: random.Random, keyword: str) -> str:
    """A probe group's value of a study attribute (a planned study's in an archive without probes)."""
    group = _probe_group(archive, rng)
    return group.attributes[keyword] if group else rng.choice(archive.values(keyword))


def _probe_month(archive: Archive, rng: random.Random) -> str:
    group = _probe_group(archive, rng)
    return group.month() if group else _month(rng)


def _study(archive: Archive, rng: random.Random) -> str:
    return rng.choice(archive.studies).uid


def _series_instances(archive: Archive, rng: random.Random) -> Query:
    study = rng.choice(archive.studies)
    series = rng.choice(list(study.modalities))
    return _q(f"/studies/{study.uid}/series/{series}/instances", "")


def _instance(archive: Archive, rng: random.Random) -> tuple[str, str, str]:
    study = rng.choice(archive.studies)
    series, sop = rng.choice(study.instances)
    return study.uid, series, sop


QUERY_KINDS: dict[str, QueryKind] = {
    "studies, unfiltered (limit 100)": lambda a, rng: _q("/studies", "limit=100"),
    "studies, unfiltered, 5th page of 100": lambda a, rng: _q("/studies", "limit=100&offset=400"),
    "studies, PatientID (probe: 3 studies)": lambda a, rng: _q("/studies", f"PatientID={_probe(a, rng, 'PatientID')}"),
    "studies, AccessionNumber": lambda a, rng: _q(
        "/studies", f"AccessionNumber={rng.choice(a.values('AccessionNumber'))}"),
    "studies, StudyInstanceUID list of 5": lambda a, rng: _q(
        "/studies", "StudyInstanceUID=" + "%5C".join(s.uid for s in rng.sample(a.studies, min(5, len(a.studies))))),
    "studies, StudyDate one month (probe: 3 studies)": lambda a, rng: _q(
        "/studies", f"StudyDate={_probe_month(a, rng)}"),
    "studies, StudyDate open range (limit 100)": lambda a, rng: _q("/studies", "StudyDate=20150101-&limit=100"),
    "studies, PatientName exact (probe: 3 studies)": lambda a, rng: _q(
        "/studies", f"PatientName={_probe(a, rng, 'PatientName')}"),
    # The fuzzy rows' limits are what every archive of 500 studies or more fills (the fewest matches at 500: 7 and
    # 17), so both archives answer a full page: with limit 25 the small one answered 17 results on average.
    "studies, PatientName fuzzy 3 letters (limit 5)": lambda a, rng: _q(
        "/studies", f"PatientName={rng.choice(FAMILY)[:3]}&fuzzymatching=true&limit=5"),
    "studies, PatientName wildcard 'Family^Gi*' (probe: 3 studies)": lambda a, rng: _q(
        "/studies", f"PatientName={_probe(a, rng, 'PatientName')[:-2]}*&limit=25"),
    "studies, ReferringPhysicianName exact (probe: 3 studies)": lambda a, rng: _q(
        "/studies", f"ReferringPhysicianName={_probe(a, rng, 'ReferringPhysicianName')}"),
    "studies, ReferringPhysicianName fuzzy (limit 15)": lambda a, rng: _q(
        "/studies", f"ReferringPhysicianName={rng.choice(GIVEN)[:4]}&fuzzymatching=true&limit=15"),
    "studies, ModalitiesInStudy (limit 100)": lambda a, rng: _q(
        "/studies", f"ModalitiesInStudy={rng.choice(MODALITIES)}&limit=100"),
    "studies, combination: PatientID + StudyDate range (probe: 3 studies)": lambda a, rng: _q(
        "/studies", f"PatientID={_probe(a, rng, 'PatientID')}&StudyDate=20100101-20301231"),
    "studies, OHIF list: fuzzy name + date range (limit 101, probe: 3 studies)": lambda a, rng: _q(
        "/studies", f"PatientName={_probe(a, rng, 'PatientName').split('^')[0]}&fuzzymatching=true"
                    "&StudyDate=20100101-20301231&limit=101&includefield=00081030,00080060"),
    "studies, no index: StudyDescription (limit 10, scan)": lambda a, rng: _q(
        "/studies", f"StudyDescription=Study%20{rng.randrange(50)}&limit=10"),
    "studies, extended tag StudyID exact (limit 25, probe: 3 studies)": lambda a, rng: _q(
        "/studies", f"StudyID={_probe(a, rng, 'StudyID')}&limit=25"),
    "studies, extended tag StudyID wildcard 'BS1*' (limit 25)": lambda a, rng: _q("/studies", "StudyID=BS1*&limit=25"),
    "series, extended study tag StudyID (limit 25, probe: 3 studies)": lambda a, rng: _q(
        "/series", f"StudyID={_probe(a, rng, 'StudyID')}&limit=25"),
    "series, unfiltered (limit 100)": lambda a, rng: _q("/series", "limit=100"),
    "series, Modality (limit 100)": lambda a, rng: _q("/series", f"Modality={rng.choice(MODALITIES)}&limit=100"),
    "series, PatientID (probe: 3 studies)": lambda a, rng: _q("/series", f"PatientID={_probe(a, rng, 'PatientID')}"),
    "instances, unfiltered (limit 100)": lambda a, rng: _q("/instances", "limit=100"),
    "instances, SOPInstanceUID": lambda a, rng: _q("/instances", f"SOPInstanceUID={_instance(a, rng)[2]}"),
    "instances, SeriesInstanceUID": lambda a, rng: _q("/instances", f"SeriesInstanceUID={_instance(a, rng)[1]}"),
    "/studies/{s}/series": lambda a, rng: _q(f"/studies/{_study(a, rng)}/series", ""),
    "/studies/{s}/instances": lambda a, rng: _q(f"/studies/{_study(a, rng)}/instances", ""),
    "/studies/{s}/series/{se}/instances": _series_instances,
}
# A scan reads up to its budget by design: its entities are reported, not held to the index target.
SCAN_KINDS = frozenset({"studies, no index: StudyDescription (limit 10, scan)"})


@dataclass
class KindFigures:
    """What one query kind cost against one archive."""

    latencies_ms: list[float] = field(default_factory=list)
    entities: list[int] = field(default_factory=list)
    results: list[int] = field(default_factory=list)
    wanted: list[int] = field(default_factory=list)
    # CPU seconds the server and Azurite's table service spent while the requests ran (None: a process unknown).
    server_cpu: float | None = 0.0
    azurite_cpu: float | None = 0.0

    @property
    def entities_ratio(self) -> float:
        """The largest entities read / (offset + limit) of any request."""
        return max(e / w for e, w in zip(self.entities, self.wanted, strict=True))


@dataclass(frozen=True)
class Target:
    """An archive as the benchmark sees it: its plan, its server, its index table."""

    label: str
    archive: Archive
    url: str
    connection_string: str
    index_table: str
    server_pid: int | None = None
    azurite_pid: int | None = None  # the table service's: it answers every query of both archives


def _cpu(pid: int | None) -> float | None:
    return None if pid is None else cpu_seconds(pid)


def _run(client: httpx.Client, target: Target, query: Query, figures: KindFigures) -> None:
    url = f"{target.url}/v2{query.path}" + (f"?{query.query}" if query.query else "")
    server_cpu, azurite_cpu = _cpu(target.server_pid), _cpu(target.azurite_pid)
    start = time.perf_counter()
    response = client.get(url, headers={"Accept": "application/dicom+json"})
    figures.latencies_ms.append((time.perf_counter() - start) * 1000)
    # Requests run one at a time, so what both processes spent meanwhile is this search's (ticks of 10 ms: the
    # sum over a kind's requests is what the row reports, per search).
    server_after, azurite_after = _cpu(target.server_pid), _cpu(target.azurite_pid)
    figures.server_cpu = None if server_cpu is None or server_after is None or figures.server_cpu is None \
        else figures.server_cpu + server_after - server_cpu
    figures.azurite_cpu = None if azurite_cpu is None or azurite_after is None or figures.azurite_cpu is None \
        else figures.azurite_cpu + azurite_after - azurite_cpu
    if response.status_code not in (200, 204):
        raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:300]}")
    figures.entities.append(int(response.headers[ENTITIES_READ_HEADER]))
    figures.results.append(len(response.json()) if response.status_code == 200 else 0)
    figures.wanted.append(query.wanted)


def measure_kinds(targets: list[Target], repeat: int, seed: int = 2) -> dict[str, dict[str, KindFigures]]:
    """Run every query kind ``repeat`` times against each target, interleaved; kind -> label -> figures."""
    figures: dict[str, dict[str, KindFigures]] = {}
    with httpx.Client(timeout=120) as client:
        for target in targets:  # warm up connections, the server's storage clients and its per-process lookups
            _run(client, target, Query("/studies", "limit=1", 1), KindFigures())
            # A process's first search by UID looks up whether the UID layout before is left (legacy_uid_layout.py).
            _run(client, target, Query("/instances", "SOPInstanceUID=1.2.3.4", 1), KindFigures())
        for name, kind in QUERY_KINDS.items():
            figures[name] = {target.label: KindFigures() for target in targets}
            rngs = {target.label: random.Random(f"{seed}-{name}") for target in targets}
            for _ in range(repeat):
                for target in targets:
                    _run(client, target, kind(target.archive, rngs[target.label]), figures[name][target.label])
    return figures


def table_shards() -> int:
    """The shard count of the archives (DICOMWEB_TABLE_SHARDS, which the server reads too; else the emulator's
    default, which a server opening the fresh tables takes)."""
    from dicom_core.settings import int_setting
    from dicom_core.storage.clients import EMULATOR_TABLE_SHARDS

    return int_setting(os.environ, "DICOMWEB_TABLE_SHARDS", EMULATOR_TABLE_SHARDS)


def storage_floor_ms(target: Target, repeat: int) -> list[float]:
    """Latencies of one SDK query of a one-entity index partition (an AccessionNumber's)."""
    async def measure() -> list[float]:
        from azure.data.tables.aio import TableServiceClient

        from dicom_core.storage.clients import INDEX_KINDS_OF_THEIR_OWN
        from dicom_core.storage.sharded_table import ShardedTable

        latencies = []
        rng = random.Random(3)
        shards = table_shards()  # as the archive's seeding
        async with TableServiceClient.from_connection_string(target.connection_string) as service, \
                ShardedTable.of_service(service, target.index_table, shards, INDEX_KINDS_OF_THEIR_OWN) as table:
            for _ in range(repeat):
                accession = rng.choice(target.archive.values("AccessionNumber")).lower()
                start = time.perf_counter()
                _ = [entity async for entity in table.query_entities(
                    "PartitionKey eq @pk", parameters={"pk": f"s.acc|{accession}"})]
                latencies.append((time.perf_counter() - start) * 1000)
        return latencies

    return asyncio.run(measure())


def add_rows(results: Results, figures: dict[str, dict[str, KindFigures]], large: str, small: str | None) -> None:
    """One row per query kind, for the large archive (and the small one beside it)."""
    for name, by_label in figures.items():
        big = by_label[large]
        p95_ms, ratio = p95(big.latencies_ms), big.entities_ratio
        scan = name in SCAN_KINDS
        entities_held = scan or ratio <= ENTITIES_TARGET
        measured = (f"p50 {p50(big.latencies_ms):.0f} / p95 {p95_ms:.0f} ms, entities ≤ {max(big.entities)} "
                    f"({ratio:.2f}× (offset+limit)){_cpu_per_search(big)}")
        entities_target = "" if scan else ", entities ≤ 2×(offset+limit)"
        baseline, scale = "—", None
        passed = p95_ms <= P95_TARGET_MS and entities_held
        target = f"p95 ≤ {P95_TARGET_MS:.0f} ms{entities_target}"
        if small is not None:
            little = by_label[small]
            baseline = (f"{small}: p50 {p50(little.latencies_ms):.0f} / p95 {p95(little.latencies_ms):.0f} ms, "
                        f"entities ≤ {max(little.entities)}{_cpu_per_search(little)}")
            big_p50, small_p50 = p50(big.latencies_ms), p50(little.latencies_ms)
            scale = big_p50 / small_p50 if small_p50 > 0 else None
            flat = big_p50 <= SCALING_TARGET * small_p50 or big_p50 <= small_p50 + SCALING_SLACK_MS
            passed = flat and entities_held
            target = f"p50 ≤ {SCALING_TARGET:.0f}× {small}'s or +{SCALING_SLACK_MS:.0f} ms{entities_target}"
        results.add(Row(operation=f"QIDO {name}", measured=measured, baseline=baseline, target=target, ratio=scale,
                        passed=passed, note=f"{large}" + (", scan: entities not held to the target" if scan else "")))
        results.samples.setdefault(f"QIDO latency ({large})", {})[name] = big.latencies_ms


def _cpu_per_search(figures: KindFigures) -> str:
    """The server's and Azurite's CPU per search, when both processes are known."""
    if figures.server_cpu is None or figures.azurite_cpu is None:
        return ""
    searches = len(figures.latencies_ms)
    return (f"; CPU per search: server {figures.server_cpu * 1000 / searches:.1f} ms, "
            f"Azurite {figures.azurite_cpu * 1000 / searches:.1f} ms")


def connection_table(connection_string: str, name: str) -> TableClient:
    """A sync TableClient (for counting entities after seeding)."""
    return TableClient.from_connection_string(connection_string, name)


def count_entities(connection_string: str, name: str) -> int:
    """How many entities a table holds in all its shards (reads them all: for reporting the archive's size)."""
    from dicom_core.storage.clients import INDEX_KINDS_OF_THEIR_OWN
    from dicom_core.storage.sharded_table import table_names

    total = 0
    for shard in table_names(name, table_shards(), INDEX_KINDS_OF_THEIR_OWN if name.endswith("Index") else ()):
        with connection_table(connection_string, shard) as table:
            total += sum(1 for _ in table.list_entities(select=["PartitionKey"]))
    return total


# Counting a table lists all of it, and Azurite sorts the whole table for every page: only small ones are counted.
COUNT_UP_TO_STUDIES = 2_000


def run(results: Results, azurite: Azurite, *, studies: int, instances: int, small_studies: int, repeat: int,
        processes: int, large_mode: str = "bulk", small_mode: str = "store", seed: bool = True,
        present_only: bool = False, share: tuple[int, int] | None = None) -> None:
    """Seed a large and a small archive on ``azurite``, measure every query kind against both, add the rows.

    The small archive goes through the product's per-instance store path (its rate is the one to quote);
    the large one by default in bulk (see bench/archive.py), which leaves the same entities. With
    ``seed=False`` the archives seeded earlier on this Azurite (same sizes, same plan) are measured.
    """
    from dicom_core.settings import Settings

    from .archive import plan_archive, present_studies, register_extended_tag, seed_archive
    from .environment import Server

    labels = {"large": f"{studies:,} studies", "small": f"{small_studies:,} studies"}
    sizes = {"large": (studies, instances),
             "small": (small_studies, max(small_studies, instances * small_studies // studies))}
    seeds = {"large": 1, "small": 7}
    targets, servers = [], []
    try:
        for prefix in ("small", "large"):
            count, total = sizes[prefix]
            if seed:
                settings = Settings(storage_connection_string=azurite.connection_string, table_prefix=prefix,
                                    blob_container=f"{prefix}-files", metadata_container=f"{prefix}-metadata",
                                    table_shards=table_shards())
                asyncio.run(register_extended_tag(settings))
                seeded = seed_archive(settings, count, total, seed=seeds[prefix], processes=processes,
                                      mode=large_mode if prefix == "large" else small_mode)
                note = (f"{labels[prefix]} / {seeded.instances:,} instances seeded in-process ({seeded.mode} mode, "
                        f"bench/archive.py) by {seeded.processes} processes in {seeded.seconds:.0f} s: "
                        f"{seeded.instances_per_second:.0f} instances/s")
                if count <= COUNT_UP_TO_STUDIES:
                    note += (f"; {count_entities(azurite.connection_string, f'{prefix}Studies'):,} study-table and "
                             f"{count_entities(azurite.connection_string, f'{prefix}Index'):,} index entities")
                print(note, flush=True)
                results.notes.append(note)
            archive = plan_archive(count, total, seeds[prefix])
            if share is not None and prefix == "large":
                # A bulk seeding whose other processes failed: that process's studies are the complete ones.
                archive = type(archive)(archive.studies[share[0]::share[1]])
            if present_only and share is None:
                settings = Settings(storage_connection_string=azurite.connection_string, table_prefix=prefix,
                                    table_shards=table_shards())
                archive = asyncio.run(present_studies(settings, archive))
                labels[prefix] = f"{len(archive.studies):,} studies"
                note = (f"{prefix} archive: {len(archive.studies):,} studies / {archive.instance_count:,} instances "
                        "present (its seeding was cut short); queries pick values among those")
                print(note, flush=True)
                results.notes.append(note)
            server = Server.start(azurite, prefix=prefix)
            servers.append(server)
            targets.append(Target(labels[prefix], archive, server.url, azurite.connection_string, f"{prefix}Index",
                                  server.pid, azurite.table_pid))
        figures = measure_kinds(targets, repeat)
        add_rows(results, figures, labels["large"], labels["small"])
        for target in targets:
            floor = storage_floor_ms(target, repeat)
            note = (f"storage floor at {target.label}: one SDK query of a one-entity index partition takes "
                    f"p50 {p50(floor):.0f} / p95 {p95(floor):.0f} ms (Azurite scans the whole Table a query names)")
            print(note, flush=True)
            results.notes.append(note)
            results.samples.setdefault("Table query floor (one-entity partition)", {})[target.label] = floor
    finally:
        for server in servers:
            server.stop()
