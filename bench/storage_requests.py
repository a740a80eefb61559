"""Storage requests per stored instance: every request Azurite serves while the server stores, counted exactly.

The figure every write-path change is judged by: unlike a time, it does not depend on the machine's load.
The section runs an Azurite of its own with debug logs (``azurite_log.py`` reads them) and a server of its own
without timers, stores the instances of each scenario through STOW-RS (one request at a time, every scenario
on a new study or series, so no cache of the server helps), then runs the maintenance a store defers (the
blob cleanup with a ``now`` far in the future, then the change-feed sequencer) in this process and counts
that separately. A warm-up store first creates the tables and containers and the feed's counter row.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from pydicom.uid import ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation, generate_uid

from dicom_core.changefeed.sequencer import sequence_pending
from dicom_core.maintenance.blob_cleanup import run_cleanup
from dicom_core.settings import Settings
from dicom_core.storage.clients import open_storage
from tests.factories import to_bytes

from .archive import DAYS, FAMILY, FIRST_DAY, GIVEN
from .azurite_log import RequestLog, ServedRequest
from .data import ct_dataset, ct_pixels, multipart, multipart_content_type
from .environment import Azurite, Server
from .report import Results, Row, Section

PREFIX = "reqs"
SIDE = 64
FAR_FUTURE = datetime.now(UTC) + timedelta(days=3650)
FAILED_SOP_SEQUENCE = "00081198"
DEFERRED_TARGET = 1.0
BASELINE = "SDK upload of the file: 1"


@dataclass(frozen=True)
class Scenario:
    """What is stored, and the requests per stored instance it should cost."""

    key: str
    title: str
    target: float


SERIES = Scenario("series", "CT 64², 10 per request, into one new series", 3.0)
SINGLE = Scenario("single", "CT 64², 1 per request, into an existing series", 5.0)
STUDIES = Scenario("studies", "CR/DX 64², 10 per request, each a new study", 12.0)
SCENARIOS = (SERIES, SINGLE, STUDIES)


@dataclass(frozen=True)
class Counting:
    """An Azurite logging every request, the server storing into it, and how to reach its storage in-process."""

    azurite: Azurite
    server: Server
    log: RequestLog
    settings: Settings


@dataclass(frozen=True)
class Count:
    """The requests one scenario's stores made, and those of the maintenance they deferred."""

    scenario: Scenario
    instances: int
    stored: tuple[ServedRequest, ...]
    deferred: tuple[ServedRequest, ...]

    @property
    def per_instance(self) -> float:
        """Requests of the stores per stored instance."""
        return len(self.stored) / self.instances

    @property
    def deferred_per_instance(self) -> float:
        """Requests of the deferred maintenance per stored instance."""
        return len(self.deferred) / self.instances


@contextlib.contextmanager
def counting_stack() -> Iterator[Counting]:
    """Start Azurite with debug logs and a server without timers; store one warm-up instance (not counted)."""
    azurite = Azurite.start(in_memory_tables=True, in_memory_blobs=True, debug=True)
    try:
        server = Server.start(azurite, prefix=PREFIX, timers=False)
        try:
            log = RequestLog(azurite.debug_log("azurite-blob"), azurite.blob_port,
                             azurite.debug_log("azurite-table"), azurite.table_port)
            settings = Settings(storage_connection_string=azurite.connection_string, table_prefix=PREFIX,
                                blob_container=f"{PREFIX}-files", metadata_container=f"{PREFIX}-metadata")
            counting = Counting(azurite, server, log, settings)
            store(counting, [ct_series(10)])
            maintain(counting)
            yield counting
        finally:
            server.stop()
    finally:
        azurite.stop()


def ct_series(count: int, study: str | None = None, series: str | None = None) -> list[bytes]:
    """``count`` CT-like 64² instances of one series (a new study and series unless given)."""
    study, series, pixels = study or generate_uid(), series or generate_uid(), ct_pixels(SIDE)
    return [to_bytes(ct_dataset(study, series, number + 1, pixels, SIDE)) for number in range(count)]


def radiographs(count: int, seed: int = 0) -> list[bytes]:
    """``count`` CR and DX 64² instances, each a study of its own with the QIDO archive's kind of attributes."""
    rng, pixels, instances = random.Random(seed), ct_pixels(SIDE), []
    for number in range(count):
        ds = ct_dataset(generate_uid(), generate_uid(), 1, pixels, SIDE)
        sop_class = ComputedRadiographyImageStorage if number % 2 == 0 else DigitalXRayImageStorageForPresentation
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.Modality = "CR" if number % 2 == 0 else "DX"
        ds.PatientID, ds.AccessionNumber = f"RX{rng.randrange(10 ** 6):06d}", f"RXA{number:07d}"
        ds.PatientName = f"{rng.choice(FAMILY)}^{rng.choice(GIVEN)}"
        ds.ReferringPhysicianName = f"{rng.choice(FAMILY)}^{rng.choice(GIVEN)}"
        ds.StudyDate = (FIRST_DAY + timedelta(days=rng.randrange(DAYS))).strftime("%Y%m%d")
        ds.StudyTime, ds.StudyID = f"{rng.randrange(7, 19):02d}{rng.randrange(60):02d}00", f"{number + 1}"
        ds.StudyDescription = "Chest PA" if number % 2 == 0 else "Knee AP"
        del ds.RescaleIntercept, ds.RescaleSlope
        instances.append(to_bytes(ds))
    return instances


def in_requests(instances: Sequence[bytes], per_request: int) -> list[list[bytes]]:
    """The instances, ``per_request`` to a request."""
    return [list(instances[start:start + per_request]) for start in range(0, len(instances), per_request)]


def store(counting: Counting, requests: Sequence[Sequence[bytes]]) -> None:
    """Send the STOW requests one after another; fail unless every instance was stored."""
    headers = {"Content-Type": multipart_content_type(), "Accept": "application/dicom+json"}
    with httpx.Client(base_url=f"{counting.server.url}/v2", timeout=600) as client:
        for parts in requests:
            response = client.post("/studies", content=multipart(list(parts)), headers=headers)
            failed = response.json().get(FAILED_SOP_SEQUENCE) if response.status_code in (200, 202) else None
            if response.status_code != 200 or failed:
                raise RuntimeError(f"STOW answered {response.status_code}: {response.text[:300]}")


def maintain(counting: Counting) -> tuple[ServedRequest, ...]:
    """Run the deferred maintenance in this process (the sequencer, cleanup of every entry); its requests."""
    return asyncio.run(_maintain(counting))


async def _maintain(counting: Counting) -> tuple[ServedRequest, ...]:
    storage = await open_storage(counting.settings)  # its create-if-missing requests come before the mark
    try:
        start = await asyncio.to_thread(counting.log.settle)
        await sequence_pending(storage)  # first: retiring intents may hand versions to the cleanup
        await run_cleanup(storage, now=FAR_FUTURE)
        end = await asyncio.to_thread(counting.log.settle)
    finally:
        await storage.close()
    return tuple(counting.log.between(start, end))


def count(counting: Counting, scenario: Scenario, requests: Sequence[Sequence[bytes]],
          setup: Sequence[Sequence[bytes]] = ()) -> Count:
    """Store ``setup`` and run its maintenance (not counted), then count ``requests`` and their maintenance."""
    if setup:
        store(counting, setup)
        maintain(counting)
    start = counting.log.settle()
    store(counting, requests)
    stored = tuple(counting.log.between(start, counting.log.settle()))
    return Count(scenario, sum(map(len, requests)), stored, maintain(counting))


def measure(counting: Counting, instances: int, single: int) -> list[Count]:
    """Count the three scenarios: ``instances`` into one series, ``single`` one by one, ``instances`` studies."""
    study, series = generate_uid(), generate_uid()
    return [
        count(counting, SERIES, in_requests(ct_series(instances), 10)),
        count(counting, SINGLE, in_requests(ct_series(single, study, series), 1),
              setup=[ct_series(1, study, series)]),
        count(counting, STUDIES, in_requests(radiographs(instances), 10)),
    ]


def label(request: ServedRequest, prefix: str = PREFIX) -> str:
    """What a request did and where, e.g. ``table point read Studies → 404``."""
    targets = ",".join(re.sub(r"^(Studies|Index)[0-9]+$", r"\1", name.removeprefix(prefix).lstrip("-"))
                       for name in request.target.split(","))  # a shard of Studies or Index counts as the table
    return f"{request.kind} {targets}" + (f" → {request.status}" if request.failed else "")


def breakdown(requests: Sequence[ServedRequest]) -> Counter[str]:
    """How many requests of each label."""
    return Counter(label(request) for request in requests)


def batch_contents(requests: Sequence[ServedRequest]) -> dict[str, Counter[str]]:
    """Per ``$batch`` label, the operations its transactions carried, by kind."""
    contents: dict[str, Counter[str]] = {}
    for request in requests:
        if request.batch:
            contents.setdefault(label(request), Counter()).update(
                operation.kind.removeprefix("table ") for operation in request.batch)
    return contents


def section(result: Count) -> Section:
    """The scenario's requests by kind, for the stores and for the deferred maintenance."""
    stored, deferred = breakdown(result.stored), breakdown(result.deferred)
    carried = (batch_contents(result.stored), batch_contents(result.deferred))
    rows = []
    for name in sorted({*stored, *deferred}, key=lambda name: (-stored[name], -deferred[name], name)):
        contents = [f"{phase}: {_carried(kinds[name])}"
                    for phase, kinds in zip(("stores", "deferred"), carried, strict=True) if name in kinds]
        shown = name + (f" ({'; '.join(contents)})" if contents else "")
        rows.append((shown, _figure(stored[name]), _figure(stored[name] / result.instances),
                     _figure(deferred[name]), _figure(deferred[name] / result.instances)))
    rows.append(("**total**", str(len(result.stored)), f"{result.per_instance:.2f}", str(len(result.deferred)),
                 f"{result.deferred_per_instance:.2f}"))
    return Section(f"Storage requests, {result.instances} × {result.scenario.title}",
                   ("request", "stores", "per instance", "deferred", "per instance"), tuple(rows))


def rows(result: Count) -> list[Row]:
    """The two table rows of a scenario: the stores' requests and the deferred ones, per stored instance."""
    scenario, n = result.scenario, result.instances
    return [
        Row(operation=f"storage requests per stored instance, {n} × {scenario.title}",
            measured=f"{result.per_instance:.2f} ({len(result.stored)} requests)", baseline=BASELINE,
            target=f"≤ {scenario.target:g}", ratio=result.per_instance, passed=result.per_instance <= scenario.target),
        Row(operation=f"deferred maintenance requests per stored instance, {n} × {scenario.title}",
            measured=f"{result.deferred_per_instance:.2f} ({len(result.deferred)} requests)", baseline=BASELINE,
            target=f"≤ {DEFERRED_TARGET:g}", ratio=result.deferred_per_instance,
            passed=result.deferred_per_instance <= DEFERRED_TARGET),
    ]


def run(results: Results, options: argparse.Namespace) -> None:
    """Count the scenarios on a stack of their own; add two rows and a breakdown section for each."""
    with counting_stack() as counting:
        counts = measure(counting, options.requests_instances, options.requests_single)
    for result in counts:
        for row in rows(result):
            results.add(row)
        results.sections.append(section(result))
        print(section(result).markdown(), flush=True)


def _carried(kinds: Counter[str]) -> str:
    return f"{sum(kinds.values())} operations, " + ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())


def _figure(value: float) -> str:
    if not value:
        return ""
    return str(value) if isinstance(value, int) else f"{value:.2f}"
