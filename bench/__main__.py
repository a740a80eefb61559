"""`python -m bench`: the benchmark table, every row a ratio against a baseline measured in the same run.

Starts its own Azurite (blob and table services on free ports, a temporary location; tables in memory)
and its own server (local_host serving function_app, with DICOMWEB_QUERY_STATS=true), generates the data
with pydicom, runs the operations in turn, prints the table with a pass/short mark per row and writes
bench/results/{name}.json, .md and -latency.png. The storage requests per stored instance ("requests")
are counted on an Azurite and a server of their own (Azurite's debug logs on, no timers). Sizes are
options; the defaults keep the whole run under 10 minutes on a quiet 2-core machine, which is why the QIDO
archive is smaller than the archive-scale run's (said in the output).
The archive-scale QIDO run (10,000 studies) is `python -m bench.qido_archive`.
"""

from __future__ import annotations

import argparse
import contextlib
import time

from . import (
    bulkdata,
    cold_start,
    dimse,
    dimse_find,
    dimse_requests,
    dimse_workers,
    frames,
    memory,
    metadata,
    new_studies,
    qido,
    reindex,
    storage_requests,
    stow,
    transcoding,
    wado,
)
from .environment import Azurite, Server, cpu_seconds
from .report import Results
from .stack import PREFIX, Stack, StoredStudy

# Sections run only when named: the C-FIND benchmark seeds an archive of its own (minutes at 1,000 studies); the
# gateway-workers comparison only informs the default of DICOMWEB_DIMSE_WORKERS.
OPT_IN = ("dimse_find", "dimse_workers")
OPERATIONS = ("requests", "cold_start", "stow", "new_studies", "wado", "metadata", "frames", "bulkdata", "memory",
              "transcoding", "qido", "dimse", "dimse_requests", "dimse_find", "dimse_workers", "reindex")


def _options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(op for op in OPERATIONS if op not in OPT_IN),
                        help="comma list of: " + ", ".join(OPERATIONS) + " (by default all but " + ", ".join(OPT_IN)
                             + ")")
    parser.add_argument("--name", default="latest", help="results file name under bench/results/")
    parser.add_argument("--requests-instances", type=int, default=50,
                        help="instances of the storage-request counts into one series, and as new studies")
    parser.add_argument("--requests-single", type=int, default=20,
                        help="single-instance requests into an existing series of the storage-request counts")
    parser.add_argument("--cold-start-repeat", type=int, default=7,
                        help="fresh interpreters importing the app, with and without bytecode (as many the baseline)")
    parser.add_argument("--stow-instances", type=int, default=500,
                        help="CT-like instances per STOW round (the study WADO and metadata read the last one)")
    parser.add_argument("--ct-side", type=int, default=512, help="rows = columns of the CT-like instances")
    parser.add_argument("--stow-batch", type=int, default=10, help="instances per multipart request")
    parser.add_argument("--new-studies", type=int, default=500,
                        help="new single-instance studies of the studies-per-second row (new_studies)")
    parser.add_argument("--dimse-instances", type=int, default=500,
                        help="CT-like instances per C-STORE and STOW round of the DIMSE gateway's benchmark")
    parser.add_argument("--dimse-find-studies", type=int, default=1000,
                        help="studies of the C-FIND benchmark's archive (the archive-scale figure is 10,000)")
    parser.add_argument("--dimse-find-instances", type=int, default=3000, help="instances of that archive")
    parser.add_argument("--dimse-find-repeat", type=int, default=5, help="C-FINDs (and QIDO twins) per query kind")
    parser.add_argument("--stow-concurrency", default="1,4,16", help="requests in flight, comma list")
    parser.add_argument("--stow-rounds", type=int, default=1, help="rounds per concurrency (best one counts)")
    parser.add_argument("--wado-rounds", type=int, default=3)
    parser.add_argument("--metadata-repeat", type=int, default=20)
    parser.add_argument("--frames-repeat", type=int, default=40)
    parser.add_argument("--frame-side", type=int, default=512)
    parser.add_argument("--native-frames", type=int, default=200)
    parser.add_argument("--encapsulated-frames", type=int, default=50)
    parser.add_argument("--memory-mb", type=int, default=1024, help="size of the large STOW and WADO")
    parser.add_argument("--memory-part-mb", type=int, default=10)
    parser.add_argument("--transcode-frames", type=int, default=8)
    parser.add_argument("--transcode-repeat", type=int, default=3)
    parser.add_argument("--qido-studies", type=int, default=1000, help="the archive-scale run's figure is 10,000")
    parser.add_argument("--qido-instances", type=int, default=3000, help="the archive-scale run's figure is 100,000")
    parser.add_argument("--qido-small-studies", type=int, default=100)
    parser.add_argument("--qido-repeat", type=int, default=10)
    parser.add_argument("--qido-seeding", choices=("bulk", "store", "stow"), default="bulk")
    parser.add_argument("--reindex-instances", type=int, default=1000,
                        help="instances stored before a reindex, and again while one runs")
    parser.add_argument("--processes", type=int, default=2, help="seeding processes of the QIDO archive")
    options = parser.parse_args(argv)
    unknown = set(options.only.split(",")) - set(OPERATIONS)
    if unknown:
        parser.error(f"unknown operations: {', '.join(sorted(unknown))}")
    return options


def main(argv: list[str] | None = None) -> None:
    """Run the selected operations and write the results."""
    options = _options(argv)
    only = options.only.split(",")
    if "stow" in only:  # wado and metadata read the study stow stores (storing it twice would answer 409)
        only.remove("stow")
        only.insert(min([only.index(name) for name in ("wado", "metadata") if name in only] + [len(only)]), "stow")
    results = Results(options={key: value for key, value in vars(options).items() if key != "name"})
    started = time.perf_counter()
    with contextlib.ExitStack() as running:
        stack: Stack | None = None
        stored: StoredStudy | None = None
        for name in only:
            print(f"== {name}", flush=True)
            if name == "requests":
                storage_requests.run(results, options)
                continue
            if name == "dimse_requests":
                results.sections.extend(dimse_requests.run(results, options))
                continue
            if name == "dimse_workers":
                results.sections.extend(dimse_workers.run(results, options))
                continue
            if name == "cold_start":
                cold_start.run(results, options)
                continue
            if stack is None:  # started once an operation needs it
                azurite = Azurite.start(in_memory_tables=True, in_memory_blobs=False)
                running.callback(azurite.stop)
                server = Server.start(azurite, prefix=PREFIX)
                running.callback(server.stop)
                stack = Stack(azurite, server, options)
            cpu_before = cpu_seconds(stack.server.pid)
            if name == "stow":
                stored = stow.run(results, stack)
            elif name in ("wado", "metadata"):
                if stored is None:
                    print("  (storing the study first)", flush=True)
                    stored = stow.run(Results(), stack)
                (wado if name == "wado" else metadata).run(results, stack, stored)
            elif name == "new_studies":
                new_studies.run(results, stack)
            elif name == "frames":
                frames.run(results, stack)
            elif name == "bulkdata":
                bulkdata.run(results, stack)
            elif name == "memory":
                memory.run(results, stack)
            elif name == "dimse":
                dimse.run(results, stack)
            elif name == "dimse_find":
                dimse_find.run(results, stack.azurite, options)
            elif name == "transcoding":
                transcoding.run(results, stack)
            elif name == "reindex":
                reindex.run(results, stack)
            elif name == "qido":
                qido.run(results, stack.azurite, studies=options.qido_studies, instances=options.qido_instances,
                         small_studies=options.qido_small_studies, repeat=options.qido_repeat,
                         processes=options.processes, large_mode=options.qido_seeding)
            used = cpu_seconds(stack.server.pid) - cpu_before
            print(f"  server CPU in {name}: {used:.2f} s", flush=True)
            results.notes.append(f"server process CPU (user + system) in {name}: {used:.2f} s")
    if options.qido_studies < 10_000 and "qido" in only:
        results.notes.append(f"QIDO at {options.qido_studies:,} studies / {options.qido_instances:,} instances (the "
                             "archive-scale run's 10,000 / 100,000: `python -m bench.qido_archive`, or --qido-studies)")
    results.notes.append(f"whole run: {time.perf_counter() - started:.0f} s; Azurite, the server and the benchmark "
                         "share the machine, so ratios (same run, interleaved) are the figures to read")
    print()
    print(results.markdown())
    for path in results.write(name=options.name):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
