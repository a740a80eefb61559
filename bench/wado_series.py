"""WADO-RS on one large series next to plain Blob downloads of the same bytes.

`python bench/wado_series.py URL CONNECTION_STRING [--instances 500] [--repeat 5] [--pid PID] [--existing S/SE]`

Stores a series of N small generated instances through the service at URL (e.g. http://127.0.0.1:7071),
then times (median of --repeat runs, whole bodies read):
- GET series metadata, next to downloading the N instances' metadata JSON blobs (what a server without
  precomputed documents would read) and the one series document blob;
- GET the whole series as stored (transfer-syntax=*), next to downloading the N .dcm blobs one after another
  and 8 at a time (the service's read-ahead window).
With --pid, prints the server's peak RSS (VmHWM) before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import numpy as np
from azure.storage.blob.aio import ContainerClient
from pydicom.uid import generate_uid

import sys

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from factories import make_dataset, multipart_body, to_bytes  # noqa: E402

BOUNDARY = "bench-boundary"
STORE_BATCH = 50
WINDOW = 8


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def _store_series(url: str, count: int) -> tuple[str, str, int]:
    study, series = generate_uid(), generate_uid()
    total = 0
    rng = np.random.default_rng(0)
    for start in range(0, count, STORE_BATCH):
        parts = []
        for number in range(start, min(count, start + STORE_BATCH)):
            ds = make_dataset(study=study, series=series, rows=64, columns=64, InstanceNumber=number + 1)
            ds.PixelData = rng.integers(0, 4096, 64 * 64, dtype=np.uint16).tobytes()
            parts.append(to_bytes(ds))
        total += sum(map(len, parts))
        response = httpx.post(f"{url}/v2/studies", content=multipart_body(parts, BOUNDARY), timeout=600,
                              headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
                                       "Accept": "application/dicom+json"})
        response.raise_for_status()
    return study, series, total


async def _timed(repeat: int, run: Callable[[], Awaitable[int]]) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        size = await run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), size


async def _get(client: httpx.AsyncClient, url: str, accept: str) -> int:
    size = 0
    async with client.stream("GET", url, headers={"Accept": accept, "Accept-Encoding": "identity"}) as response:
        response.raise_for_status()
        async for chunk in response.aiter_raw():
            size += len(chunk)
    return size


async def _download_all(container: ContainerClient, names: list[str], window: int) -> int:
    slots = asyncio.Semaphore(window)

    async def one(name: str) -> int:
        async with slots:
            return len(await (await container.download_blob(name)).readall())

    return sum(await asyncio.gather(*(one(name) for name in names)))


async def _measure(args: argparse.Namespace, study: str, series: str) -> None:
    files = ContainerClient.from_connection_string(args.connection_string, args.files_container)
    metadata = ContainerClient.from_connection_string(args.connection_string, args.metadata_container)
    prefix = f"{study}/{series}/"
    dcm = [b.name async for b in files.list_blobs(name_starts_with=prefix)]
    json_blobs = [b.name async for b in metadata.list_blobs(name_starts_with=prefix) if b.name.endswith(".json")]
    base = f"{args.url}/v2/studies/{study}/series/{series}"
    async with httpx.AsyncClient(timeout=600) as client:
        await _get(client, base + "/metadata", "application/dicom+json")  # the first read verifies the document
        rows = [
            ("series metadata (WADO-RS)", await _timed(args.repeat, lambda: _get(client, base + "/metadata", "application/dicom+json"))),
            ("  the series document blob, one GET", await _timed(args.repeat, lambda: _download_all(metadata, [f"{study}/{series}/metadata"], 1))),
            (f"  {len(json_blobs)} metadata JSON blobs, {WINDOW} at a time", await _timed(args.repeat, lambda: _download_all(metadata, json_blobs, WINDOW))),
            ("whole series as stored (WADO-RS)", await _timed(args.repeat, lambda: _get(client, base, 'multipart/related; type="application/dicom"; transfer-syntax=*'))),
            (f"  {len(dcm)} .dcm blobs one after another", await _timed(args.repeat, lambda: _download_all(files, dcm, 1))),
            (f"  {len(dcm)} .dcm blobs, {WINDOW} at a time", await _timed(args.repeat, lambda: _download_all(files, dcm, WINDOW))),
        ]
    await files.close()
    await metadata.close()
    for label, (seconds, size) in rows:
        print(f"{label:48s} {seconds * 1000:8.0f} ms  {size / 1e6:7.2f} MB")


def main() -> None:
    """Store the series, run the measurements, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="service root without version, e.g. http://127.0.0.1:7071")
    parser.add_argument("connection_string", help="the service's storage connection string")
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--files-container", default="dicomweb")
    parser.add_argument("--metadata-container", default="dicomweb-metadata")
    parser.add_argument("--pid", type=int, help="server process id, for its peak RSS")
    parser.add_argument("--existing", metavar="STUDY/SERIES", help="measure a series stored before instead")
    args = parser.parse_args()
    before = _peak_rss_mb(args.pid) if args.pid else None
    if args.existing:
        study, series = args.existing.split("/")
    else:
        start = time.perf_counter()
        study, series, total = _store_series(args.url, args.instances)
        print(f"stored {args.instances} instances ({total / 1e6:.2f} MB) in {time.perf_counter() - start:.1f} s;"
              f" series {study}/{series}")
    asyncio.run(_measure(args, study, series))
    if args.pid:
        print(f"server peak RSS before {before:.0f} MB, after {_peak_rss_mb(args.pid):.0f} MB")


if __name__ == "__main__":
    main()
