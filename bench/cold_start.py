"""Cold start: importing the function app in a fresh interpreter, against importing what any store needs.

The baseline is `import pydicom, azure.storage.blob.aio` (reading DICOM and reaching Blob Storage: no server can do
less); both are measured in fresh processes, alternated, the median of several counts.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from argparse import Namespace

from .environment import ROOT
from .report import Results, Row

BASELINE_MODULES = ("pydicom", "azure.storage.blob.aio")
APP_MODULE = "function_app"
TARGET_RATIO = 2.0
_PROBE = """
import json, resource, sys, time
started = time.perf_counter()
for name in sys.argv[1:]:
    __import__(name)
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": time.perf_counter() - started, "rss_mb": usage.ru_maxrss / 1024,
                  "cpu_seconds": usage.ru_utime + usage.ru_stime}))
"""


def _import(modules: tuple[str, ...]) -> dict[str, float]:
    """Import ``modules`` in a fresh interpreter; return its import seconds and peak RSS (MB)."""
    completed = subprocess.run([sys.executable, "-c", _PROBE, *modules], cwd=ROOT, check=True,
                               capture_output=True, text=True)
    result: dict[str, float] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def run(results: Results, options: Namespace) -> None:
    """Add the cold-start rows: import time against the baseline, and RSS after import."""
    app, baseline = [], []
    for _ in range(options.cold_start_repeat):
        baseline.append(_import(BASELINE_MODULES))
        app.append(_import((APP_MODULE,)))
    app_seconds = statistics.median(sample["seconds"] for sample in app)
    base_seconds = statistics.median(sample["seconds"] for sample in baseline)
    ratio = app_seconds / base_seconds
    results.add(Row(f"`import {APP_MODULE}` (fresh interpreter, median of {len(app)})",
                    f"{app_seconds * 1000:.0f} ms", f"`import {', '.join(BASELINE_MODULES)}`: "
                    f"{base_seconds * 1000:.0f} ms", f"≤ {TARGET_RATIO:g}×", ratio=ratio,
                    passed=ratio <= TARGET_RATIO))
    app_cpu = statistics.median(sample["cpu_seconds"] for sample in app)
    base_cpu = statistics.median(sample["cpu_seconds"] for sample in baseline)
    results.notes.append(f"cold start in CPU seconds (interpreter start included, less swayed by the machine's load): "
                         f"`import {APP_MODULE}` {app_cpu * 1000:.0f} ms, baseline {base_cpu * 1000:.0f} ms, "
                         f"{app_cpu / base_cpu:.2f}×")
    app_rss = statistics.median(sample["rss_mb"] for sample in app)
    base_rss = statistics.median(sample["rss_mb"] for sample in baseline)
    results.add(Row(f"RSS after `import {APP_MODULE}`", f"{app_rss:.0f} MB", f"baseline's imports: {base_rss:.0f} MB",
                    "reported", ratio=app_rss / base_rss))
