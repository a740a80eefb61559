"""The archive-scale QIDO run: `python -m bench.qido_archive [--studies 10000] [--instances 100000]`.

Starts its own Azurite (tables and blobs in memory), seeds a large and a small archive in-process through the
store path, measures every query kind against both and writes bench/results/qido-archive.{json,md,png}.
Takes 30-60 minutes at the defaults on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from .environment import Azurite
from .qido import run
from .report import Results


def main() -> None:
    """Parse the options, run, write the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--small-studies", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--processes", type=int, default=3, help="seeding processes")
    parser.add_argument("--seeding", choices=("bulk", "store", "stow"), default="bulk",
                        help="how the large archive is seeded (bench/archive.py); the small one goes through 'store'")
    parser.add_argument("--name", default="qido-archive", help="results file name under bench/results/")
    parser.add_argument("--attach", metavar="BLOB_PORT,TABLE_PORT",
                        help="measure the archives an earlier run seeded on this Azurite (same sizes); no seeding")
    parser.add_argument("--present-only", action="store_true",
                        help="with --attach: measure the planned studies that were written (seeding cut short)")
    parser.add_argument("--share", metavar="K/N", help="with --attach: query only the studies of seeding share K of N")
    parser.add_argument("--shards", type=int, help="DICOMWEB_TABLE_SHARDS of both archives (else the environment's, "
                        "else the default)")
    parser.add_argument("--note", action="append", default=[], help="a line for the results' notes (repeatable)")
    args = parser.parse_args()
    if args.shards:
        os.environ["DICOMWEB_TABLE_SHARDS"] = str(args.shards)  # the server's, the seeding's and the floor's
    results = Results(options={k: v for k, v in vars(args).items() if k not in ("note", "name")})
    results.notes += args.note
    started = time.perf_counter()
    if args.attach:
        blob_port, table_port = (int(port) for port in args.attach.split(","))
        azurite = Azurite(Path(tempfile.mkdtemp(prefix="dicomweb-bench-")), blob_port, table_port)
    else:
        azurite = Azurite.start(in_memory_tables=True, in_memory_blobs=True)
    try:
        run(results, azurite, studies=args.studies, instances=args.instances, small_studies=args.small_studies,
            repeat=args.repeat, processes=args.processes, large_mode=args.seeding, seed=not args.attach,
            present_only=args.present_only,
            share=tuple(int(x) for x in args.share.split("/")) if args.share else None)
    finally:
        azurite.stop()  # stops only what it started
    results.notes.append(f"whole run: {time.perf_counter() - started:.0f} s")
    print(results.markdown())
    for path in results.write(name=args.name):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
