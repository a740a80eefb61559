"""C-FIND at STUDY level on an archive of N studies against QIDO-RS of the same search, interleaved.

An archive (bench/archive.py, bulk seeding, `--dimse-find-studies`; the archive-scale figure is 10,000) is seeded
under a prefix of its own; the server and the DIMSE gateway (with DICOMWEB_QUERY_STATS=true) serve it. Each
query kind is a study-level identifier of the keys a PACS worklist asks for; its QIDO twin is the query string the
gateway builds from the identifier (`dimse_gateway.identifiers.search_of`), paged as the gateway pages it
(200 a page). The gateway logs the entities each C-FIND's pages read; QIDO answers them in
X-DicomWeb-Entities-Read. Target: the same entities and matches as QIDO (C-FIND has no limit: every match).
"""

from __future__ import annotations

import argparse
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import httpx
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from dicom_core.qido.query import MAX_LIMIT
from dicom_core.qido.service import ENTITIES_READ_HEADER
from dicom_core.settings import Settings
from dimse_gateway.identifiers import search_of

from .archive import FAMILY, GIVEN, MODALITIES, Archive, plan_archive, seed_archive
from .dimse import GATEWAY_AE, gateway_log, start_gateway
from .environment import Azurite, Server, _stop
from .report import Results, Row
from .stats import p50

PREFIX = "cfind"
SEED = 1
RETURN_KEYS = ("StudyInstanceUID", "PatientName", "PatientID", "StudyDate", "AccessionNumber", "ModalitiesInStudy",
               "NumberOfStudyRelatedInstances")
_LOGGED = re.compile(r"C-FIND at STUDY level: (\d+) matches, (\d+) entities read")

Keys = dict[str, str]
KINDS: dict[str, Callable[[Archive, random.Random], Keys]] = {
    "PatientID": lambda a, rng: {"PatientID": rng.choice(a.values("PatientID"))},
    "AccessionNumber": lambda a, rng: {"AccessionNumber": rng.choice(a.values("AccessionNumber"))},
    "StudyInstanceUID list of 5": lambda a, rng: {
        "StudyInstanceUID": "\\".join(s.uid for s in rng.sample(a.studies, min(5, len(a.studies))))},
    "StudyDate one month": lambda a, rng: {"StudyDate": _month(rng)},
    "PatientName wildcard 'Fam^Gi*'": lambda a, rng: {"PatientName": f"{rng.choice(FAMILY)}^{rng.choice(GIVEN)[:2]}*"},
    "ModalitiesInStudy (every match, paged)": lambda a, rng: {"ModalitiesInStudy": rng.choice(MODALITIES)},
}


def _month(rng: random.Random) -> str:
    start = date(2010, 1, 1) + timedelta(days=rng.randrange(4900))
    return f"{start:%Y%m%d}-{start + timedelta(days=30):%Y%m%d}"


@dataclass
class Figures:
    """One kind's C-FINDs and QIDO twins: latencies, entities read, matches."""

    find_ms: list[float] = field(default_factory=list)
    find_entities: list[int] = field(default_factory=list)
    find_matches: list[int] = field(default_factory=list)
    qido_ms: list[float] = field(default_factory=list)
    qido_entities: list[int] = field(default_factory=list)
    qido_matches: list[int] = field(default_factory=list)

    @property
    def same(self) -> bool:
        """Whether every C-FIND read the entities and found the matches of its QIDO twin."""
        return self.find_entities == self.qido_entities and self.find_matches == self.qido_matches


def identifier(keys: Keys) -> Dataset:
    """A STUDY-level identifier with ``keys`` and the worklist's return keys."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for keyword in RETURN_KEYS:
        setattr(ds, keyword, keys.get(keyword, ""))
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


class _GatewayLog:
    """The gateway's log, read from where the last look stopped."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = path.stat().st_size

    def last_find(self) -> tuple[int, int]:
        """(matches, entities read) of the C-FIND logged since the last look."""
        with self._path.open("rb") as log:
            log.seek(self._offset)
            text = log.read().decode(errors="replace")
            self._offset = log.tell()
        found = _LOGGED.findall(text)
        if len(found) != 1:
            raise RuntimeError(f"expected one C-FIND log line, found {len(found)}: {text[-500:]}")
        return int(found[0][0]), int(found[0][1])


def _c_find(association: Association, ds: Dataset) -> tuple[float, int]:
    start = time.perf_counter()
    matches, final = 0, -1
    for status, _ in association.send_c_find(ds, StudyRootQueryRetrieveInformationModelFind):
        if status.Status in (0xFF00, 0xFF01):
            matches += 1
        else:
            final = int(status.Status)
    if final != 0:
        raise RuntimeError(f"C-FIND answered 0x{final:04X}")
    return (time.perf_counter() - start) * 1000, matches


def _qido(client: httpx.Client, url: str, query_string: str) -> tuple[float, int, int]:
    start, entities, matches, offset = time.perf_counter(), 0, 0, 0
    while True:
        response = client.get(f"{url}/v2/studies?{query_string}&limit={MAX_LIMIT}&offset={offset}",
                              headers={"Accept": "application/dicom+json"})
        if response.status_code not in (200, 204):
            raise RuntimeError(f"QIDO answered {response.status_code}: {response.text[:300]}")
        entities += int(response.headers[ENTITIES_READ_HEADER])
        page = len(response.json()) if response.status_code == 200 else 0
        matches += page
        if page < MAX_LIMIT:
            return (time.perf_counter() - start) * 1000, entities, matches
        offset += MAX_LIMIT


def measure(archive: Archive, port: int, log: _GatewayLog, url: str, repeat: int) -> dict[str, Figures]:
    """Every kind ``repeat`` times, each C-FIND followed by its QIDO twin."""
    figures: dict[str, Figures] = {}
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    association = ae.associate("127.0.0.1", port, ae_title=GATEWAY_AE)
    if not association.is_established:
        raise RuntimeError("the gateway refused the association")
    try:
        with httpx.Client(timeout=300) as client:
            _c_find(association, identifier({"PatientID": "warm-up"}))  # warm up the gateway's storage clients
            log.last_find()
            _qido(client, url, "PatientID=warm-up")
            for name, kind in KINDS.items():
                rng, own = random.Random(f"{SEED}-{name}"), Figures()
                for _ in range(repeat):
                    ds = identifier(kind(archive, rng))
                    find_ms, matches = _c_find(association, ds)
                    logged_matches, entities = log.last_find()
                    if logged_matches != matches:
                        raise RuntimeError(f"{name}: {matches} responses, the gateway logged {logged_matches}")
                    qido_ms, qido_entities, qido_matches = _qido(client, url, search_of(ds, patient_root=False)
                                                                 .query_string)
                    own.find_ms.append(find_ms)
                    own.find_entities.append(entities)
                    own.find_matches.append(matches)
                    own.qido_ms.append(qido_ms)
                    own.qido_entities.append(qido_entities)
                    own.qido_matches.append(qido_matches)
                figures[name] = own
    finally:
        association.release()
    return figures


def run(results: Results, azurite: Azurite, options: argparse.Namespace) -> None:
    """Seed the archive, serve it by HTTP and DIMSE, add a row per query kind."""
    studies, instances = options.dimse_find_studies, options.dimse_find_instances
    settings = Settings(storage_connection_string=azurite.connection_string, table_prefix=PREFIX,
                        blob_container=f"{PREFIX}-files", metadata_container=f"{PREFIX}-metadata")
    seeded = seed_archive(settings, studies, instances, seed=SEED, processes=options.processes, mode="bulk")
    note = (f"C-FIND archive: {studies:,} studies / {seeded.instances:,} instances seeded in bulk in "
            f"{seeded.seconds:.0f} s")
    print(note, flush=True)
    results.notes.append(note)
    archive = plan_archive(studies, instances, SEED)
    server = Server.start(azurite, prefix=PREFIX)
    try:
        process, port = start_gateway(azurite, PREFIX, extra_env={"DICOMWEB_QUERY_STATS": "true"}, log_level="INFO")
        try:
            figures = measure(archive, port, _GatewayLog(gateway_log(azurite, port)), server.url,
                              options.dimse_find_repeat)
        finally:
            _stop(process)
    finally:
        server.stop()
    for name, own in figures.items():
        ratio = max(f / q if q else 1.0 for f, q in zip(own.find_entities, own.qido_entities, strict=True))
        results.add(Row(
            operation=f"C-FIND study level, {name}, {studies:,} studies",
            measured=f"p50 {p50(own.find_ms):.0f} ms, entities ≤ {max(own.find_entities)}, matches ≤ "
                     f"{max(own.find_matches)}",
            baseline=f"QIDO-RS of the same search: p50 {p50(own.qido_ms):.0f} ms, entities ≤ "
                     f"{max(own.qido_entities)}, matches ≤ {max(own.qido_matches)}",
            target="entities and matches = QIDO's", ratio=ratio, passed=own.same,
            note="" if own.same else f"C-FIND {own.find_entities} / {own.find_matches}, QIDO {own.qido_entities} / "
                                     f"{own.qido_matches}"))
