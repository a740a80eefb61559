"""C-STORE over 8 associations, each sending a study of its own, into one gateway process against two.

A hospital's modalities send different studies at once; `DICOMWEB_DIMSE_WORKERS=2` spreads their associations over
two processes (SO_REUSEPORT), whose commits then meet in no study's rows (into one study they compete for them:
docs/dimse.md). Both gateways run over one Azurite; rounds alternate between them, each storing new studies. Per
gateway: its rate, its CPU per C-STORE (the worker processes included) and Azurite's, summed over its rounds. Then,
on the storage-request section's stack, the exact storage requests per C-STORE of the same scenario (64² CT) for
each process count.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import generate_uid

from .dimse import ASSOCIATIONS, c_store, cpu_seconds, start_gateway
from .dimse_requests import count_c_stores
from .environment import Azurite, _stop
from .report import Results, Row, Section
from .stack import PREFIX
from .storage_requests import PREFIX as COUNTING_PREFIX
from .storage_requests import Count, Scenario, counting_stack, ct_series, section
from .stow import Files, _fixed_uid

WORKERS = (1, 2)
ROUNDS = 3
# A second process costs about a tenth more CPU per C-STORE (two storage loops, two sets of clients): the default
# is worth changing only for a gain clearly beyond that and beyond the noise of interleaved rounds.
TARGET = 1.2


@dataclass
class _Totals:
    """What one gateway's rounds added up to."""

    seconds: float = 0.0
    instances: int = 0
    megabytes: float = 0.0
    gateway_cpu: float = 0.0
    azurite_cpu: float = 0.0
    failed: int = 0

    def add(self, other: _Totals) -> None:
        """Add one round's figures."""
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def mb_per_second(self) -> float:
        """The rate over all rounds."""
        return self.megabytes / self.seconds

    def cpu_ms(self, seconds: float) -> float:
        """CPU milliseconds per C-STORE."""
        return 1000 * seconds / self.instances


def study_shares(files: Files, folder: Path, shares: int, rng: random.Random) -> list[list[Path]]:
    """The files written to ``folder`` as ``shares`` studies of one series each (new UIDs for every file)."""
    files.renew()
    paths: list[list[Path]] = []
    for share in range(shares):
        study, series = _fixed_uid(rng), _fixed_uid(rng)
        paths.append([])
        for index in range(share, len(files.data), shares):
            path = folder / f"{share}-{index}.dcm"
            path.write_bytes(files.data[index].replace(files.study.encode(), study.encode())
                             .replace(files.series.encode(), series.encode()))
            paths[-1].append(path)
    return paths


def _round(pid: int, azurite: Azurite, port: int, shares: list[list[Path]]) -> _Totals:
    paths = [path for share in shares for path in share]
    # c_store deals the files out round-robin: interleaved, each association gets exactly one share's study.
    dealt = [shares[index % len(shares)][index // len(shares)] for index in range(len(paths))]
    gateway, storage = cpu_seconds(pid), sum(map(cpu_seconds, azurite.pids))
    seconds, failed = c_store(port, dealt, len(shares))
    return _Totals(seconds, len(paths), sum(path.stat().st_size for path in paths) / 1e6,
                   cpu_seconds(pid) - gateway, sum(map(cpu_seconds, azurite.pids)) - storage, failed)


def studies_dealt(studies: int, per_study: int) -> list[bytes]:
    """64² CT instances of ``studies`` new studies, in the order that deals study ``i`` to association ``i``."""
    series = [ct_series(per_study, generate_uid()) for _ in range(studies)]
    return [series[index % studies][index // studies] for index in range(studies * per_study)]


def count_requests(instances: int, associations: int) -> list[Count]:
    """Exact storage requests of ``instances`` C-STOREs over ``associations``, each into a study of its own, for
    each process count (each gateway warmed up first by one C-STORE per association)."""
    counts = []
    with counting_stack() as counting:
        for workers in WORKERS:
            scenario = Scenario(f"dimse-studies-{workers}", f"CT 64² by C-STORE over {associations} associations, "
                                f"each into a study of its own, {workers} gateway process(es)", 3.0)
            process, port = start_gateway(counting.azurite, COUNTING_PREFIX,
                                          extra_env={"DICOMWEB_DIMSE_WORKERS": str(workers)})
            try:
                count_c_stores(counting, port, scenario, studies_dealt(associations, 1), associations)
                counts.append(count_c_stores(counting, port, scenario,
                                             studies_dealt(associations, instances // associations), associations))
            finally:
                _stop(process)
    return counts


def run(results: Results, options: argparse.Namespace) -> list[Section]:
    """2 gateway processes against 1, 8 associations each storing a study of its own: the rate, and the requests."""
    associations = max(ASSOCIATIONS)
    files = Files(options.dimse_instances - options.dimse_instances % associations, options.ct_side, seed=2)
    rng = random.Random(2)
    azurite = Azurite.start(in_memory_tables=True, in_memory_blobs=False)
    gateways = {}
    try:
        for workers in WORKERS:
            gateways[workers] = start_gateway(azurite, PREFIX, extra_env={"DICOMWEB_DIMSE_WORKERS": str(workers)})
        totals = {workers: _Totals() for workers in WORKERS}
        with tempfile.TemporaryDirectory(prefix="bench-dimse-workers-") as folder:
            for _ in range(ROUNDS):
                for workers, (process, port) in gateways.items():
                    shares = study_shares(files, Path(folder), associations, rng)
                    totals[workers].add(_round(process.pid, azurite, port, shares))
                    for share in shares:
                        for path in share:
                            path.unlink()
    finally:
        for process, _ in gateways.values():
            _stop(process)
        azurite.stop()
    one, two = totals[1], totals[2]
    n, mb = len(files.data), files.total_bytes / 1e6
    for workers, total in totals.items():
        print(f"  {workers} worker(s): {total.mb_per_second:.1f} MB/s, gateway CPU "
              f"{total.cpu_ms(total.gateway_cpu):.1f} ms, Azurite CPU {total.cpu_ms(total.azurite_cpu):.1f} ms "
              f"per C-STORE, {total.failed} failed", flush=True)
    ratio, failed = two.mb_per_second / one.mb_per_second, one.failed + two.failed
    results.add(Row(
        operation=f"C-STORE {n} × {mb / n:.2f} MB CT, {associations} associations each into a study of its own, "
                  f"2 gateway processes ({ROUNDS} rounds)",
        measured=f"{two.mb_per_second:.1f} MB/s (gateway CPU {two.cpu_ms(two.gateway_cpu):.1f} ms, Azurite "
                 f"{two.cpu_ms(two.azurite_cpu):.1f} ms per C-STORE)",
        baseline=f"1 gateway process, rounds alternating: {one.mb_per_second:.1f} MB/s (gateway CPU "
                 f"{one.cpu_ms(one.gateway_cpu):.1f} ms, Azurite {one.cpu_ms(one.azurite_cpu):.1f} ms per C-STORE)",
        target=f"≥ {TARGET}× to make 2 the default", ratio=ratio, passed=ratio >= TARGET and not failed,
        note=f"{failed} C-STORE(s) failed" if failed else ""))
    sections = []
    for result in count_requests(options.requests_instances, associations):
        results.add(Row(
            operation=f"storage requests per C-STORE, {result.instances} × {result.scenario.title}",
            measured=f"{result.per_instance:.2f} ({len(result.stored)} requests; deferred "
                     f"{result.deferred_per_instance:.2f})",
            baseline="STOW's scenario of 10 per request into a new series (bench --only requests)",
            target=f"≤ {result.scenario.target:g}", ratio=result.per_instance,
            passed=result.per_instance <= result.scenario.target))
        sections.append(section(result))
        print(section(result).markdown(), flush=True)
    return sections
