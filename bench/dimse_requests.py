"""Storage requests per C-STORE: every request Azurite serves while the DIMSE gateway stores, counted exactly.

On the storage-request section's stack (its own Azurite with debug logs, ``storage_requests.counting_stack``), the
gateway stores CT-like 64² instances of one new series over one association, then over 8 associations into one new
study; the deferred maintenance (blob cleanup, change-feed sequencer) is counted apart, as for STOW.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from pydicom.uid import generate_uid

from .dimse import c_store, start_gateway
from .environment import _stop
from .report import Results, Row, Section
from .storage_requests import PREFIX, Count, Counting, Scenario, counting_stack, ct_series, maintain, section

# STOW's scenario of 10 per request into one new series: the figure a C-STORE is held to.
ONE_ASSOCIATION = Scenario("dimse-1", "CT 64² by C-STORE over 1 association, into one new series", 3.0)
EIGHT_ASSOCIATIONS = Scenario("dimse-8", "CT 64² by C-STORE over 8 associations, into one new series", 3.0)


def count_c_stores(counting: Counting, port: int, scenario: Scenario, instances: list[bytes],
                   associations: int) -> Count:
    """Send ``instances`` over ``associations`` and count the requests of the stores and of their maintenance."""
    with tempfile.TemporaryDirectory(prefix="bench-dimse-requests-") as folder:
        paths = []
        for index, data in enumerate(instances):
            path = Path(folder) / f"{index}.dcm"
            path.write_bytes(data)
            paths.append(path)
        start = counting.log.settle()
        _, failed = c_store(port, paths, associations)
        stored = tuple(counting.log.between(start, counting.log.settle()))
    if failed:
        raise RuntimeError(f"{failed} C-STORE(s) failed")
    return Count(scenario, len(instances), stored, maintain(counting))


def measure(instances: int) -> list[Count]:
    """Count ``instances`` C-STOREs over 1 association and as many over 8 (each into a new series)."""
    with counting_stack() as counting:
        process, port = start_gateway(counting.azurite, PREFIX)
        try:
            count_c_stores(counting, port, ONE_ASSOCIATION, ct_series(2), 1)  # warm-up: the gateway's first store
            return [count_c_stores(counting, port, ONE_ASSOCIATION, ct_series(instances), 1),
                    count_c_stores(counting, port, EIGHT_ASSOCIATIONS, ct_series(instances, generate_uid()), 8)]
        finally:
            _stop(process)


def run(results: Results, options: argparse.Namespace) -> list[Section]:
    """Add a row per association count: storage requests per C-STORE (stores, and deferred maintenance)."""
    counts = measure(options.requests_instances)
    sections = []
    for result in counts:
        scenario, n = result.scenario, result.instances
        results.add(Row(
            operation=f"storage requests per C-STORE, {n} × {scenario.title}",
            measured=f"{result.per_instance:.2f} ({len(result.stored)} requests; deferred "
                     f"{result.deferred_per_instance:.2f})",
            baseline="STOW's scenario of 10 per request into a new series (bench --only requests)",
            target=f"≤ {scenario.target:g}", ratio=result.per_instance, passed=result.per_instance <= scenario.target))
        sections.append(section(result))
        print(section(result).markdown(), flush=True)
    return sections
