"""Cold start: importing the function app in a fresh interpreter, against importing what any store needs.

The baseline is `import pydicom, azure.storage.blob.aio` (reading DICOM and reaching Blob Storage: no server can do
less); both are measured in fresh processes, alternated, the median of several counts.

The baseline's packages are imported from their bytecode (pip compiles them at install); the app is measured from
a copy of its sources with their bytecode compiled the same way (the row), and from a copy without (a note: what
every import pays where no `__pycache__` is shipped or can be written, e.g. under PYTHONDONTWRITEBYTECODE=1, which
made the figure depend on the shell it ran in).
"""

from __future__ import annotations

import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from argparse import Namespace
from pathlib import Path

from .environment import ROOT
from .report import Results, Row

BASELINE_MODULES = ("pydicom", "azure.storage.blob.aio")
APP_MODULE = "function_app"
APP_SOURCES = ("function_app.py", "dicom_core")  # everything `import function_app` reads from the repository
TARGET_RATIO = 2.0
_PROBE = """
import json, resource, sys, time
started = time.perf_counter()
for name in sys.argv[1:]:
    __import__(name)
usage = resource.getrusage(resource.RUSAGE_SELF)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so it would report the benchmark process's own peak.
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"seconds": time.perf_counter() - started, "rss_mb": peak_kb / 1024,
                  "cpu_seconds": usage.ru_utime + usage.ru_stime}))
"""


def _import(modules: tuple[str, ...], cwd: Path = ROOT) -> dict[str, float]:
    """Import ``modules`` in a fresh interpreter (writing no bytecode); return its import seconds and peak RSS (MB)."""
    completed = subprocess.run([sys.executable, "-c", _PROBE, *modules], cwd=cwd, check=True, capture_output=True,
                               text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    result: dict[str, float] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def _app_copy(into: Path, *, compiled: bool) -> Path:
    """A copy of the app's sources under ``into``, with their bytecode compiled or without any."""
    for name in APP_SOURCES:
        source, copy = ROOT / name, into / name
        if source.is_dir():
            shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy)
        if compiled and not (compileall.compile_dir(copy, quiet=1) if copy.is_dir()
                             else compileall.compile_file(copy, quiet=1)):
            raise RuntimeError(f"could not compile {copy}")
    return into


def _median(samples: list[dict[str, float]], key: str) -> float:
    return statistics.median(sample[key] for sample in samples)


def run(results: Results, options: Namespace) -> None:
    """Add the cold-start rows: import time against the baseline, and RSS after import."""
    app, source, baseline = [], [], []
    with tempfile.TemporaryDirectory(prefix="dicomweb-cold-start-") as scratch:
        compiled_copy = _app_copy(Path(scratch) / "compiled", compiled=True)
        source_copy = _app_copy(Path(scratch) / "source", compiled=False)
        for _ in range(options.cold_start_repeat):
            baseline.append(_import(BASELINE_MODULES))
            app.append(_import((APP_MODULE,), compiled_copy))
            source.append(_import((APP_MODULE,), source_copy))
    app_ms, source_ms, base_ms = (_median(samples, "seconds") * 1000 for samples in (app, source, baseline))
    results.add(Row(f"`import {APP_MODULE}` (its bytecode compiled, as the baseline's; fresh interpreter, median of "
                    f"{len(app)})", f"{app_ms:.0f} ms", f"`import {', '.join(BASELINE_MODULES)}`: {base_ms:.0f} ms",
                    f"≤ {TARGET_RATIO:g}×", ratio=app_ms / base_ms, passed=app_ms / base_ms <= TARGET_RATIO))
    results.notes.append(f"`import {APP_MODULE}` from its sources (no bytecode shipped or writable: every import "
                         f"compiles the app): {source_ms:.0f} ms, {source_ms / base_ms:.2f}× the baseline")
    app_cpu, source_cpu, base_cpu = (_median(samples, "cpu_seconds") * 1000 for samples in (app, source, baseline))
    results.notes.append(f"cold start in CPU seconds (interpreter start included, less swayed by the machine's load): "
                         f"`import {APP_MODULE}` {app_cpu:.0f} ms ({app_cpu / base_cpu:.2f}×; from its sources "
                         f"{source_cpu:.0f} ms, {source_cpu / base_cpu:.2f}×), baseline {base_cpu:.0f} ms")
    app_rss = statistics.median(sample["rss_mb"] for sample in app)
    base_rss = statistics.median(sample["rss_mb"] for sample in baseline)
    results.add(Row(f"RSS after `import {APP_MODULE}`", f"{app_rss:.0f} MB", f"baseline's imports: {base_rss:.0f} MB",
                    "reported", ratio=app_rss / base_rss))
