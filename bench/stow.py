"""STOW-RS of CT-like instances in multipart batches at concurrency 1, 4 and 16, against SDK uploads of the same files.

Each round stores the same files under fresh UIDs (patched in place: the placeholders have a fixed length)
through the server, then uploads the same bytes straight to a container of the benchmark's own with the
SDK, the same number of transfers in flight as requests in flight, interleaved.
"""

from __future__ import annotations

import asyncio
import random
import time

import httpx

from tests.factories import to_bytes

from .data import ct_dataset, ct_pixels, multipart, multipart_content_type
from .environment import cpu_seconds
from .report import Results, Row
from .stack import Stack, StoredStudy

TARGET = 0.7
FAILED_SOP_SEQUENCE = "00081198"
UID_DIGITS = 38


def _fixed_uid(rng: random.Random) -> str:
    """A UID of a fixed length, so it can be swapped for another in an encoded file."""
    return f"2.25.{rng.randrange(10 ** (UID_DIGITS - 1), 10 ** UID_DIGITS)}"


class Files:
    """CT-like Part-10 files whose study, series and SOP instance UIDs can be renewed cheaply."""

    def __init__(self, count: int, side: int, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.study, self.series = _fixed_uid(self.rng), _fixed_uid(self.rng)
        pixels = ct_pixels(side)
        self.sops, self.data = [], []
        for number in range(count):
            ds = ct_dataset(self.study, self.series, number + 1, pixels, side)
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = _fixed_uid(self.rng)
            self.sops.append(str(ds.SOPInstanceUID))
            self.data.append(to_bytes(ds))

    @property
    def total_bytes(self) -> int:
        """Bytes of all files."""
        return sum(map(len, self.data))

    def renew(self) -> None:
        """Give every file new UIDs (a new study of one series)."""
        study, series = _fixed_uid(self.rng), _fixed_uid(self.rng)
        for index, old in enumerate(self.data):
            sop = _fixed_uid(self.rng)
            self.data[index] = old.replace(self.study.encode(), study.encode()).replace(
                self.series.encode(), series.encode()).replace(self.sops[index].encode(), sop.encode())
            self.sops[index] = sop
        self.study, self.series = study, series


async def _stow(stack: Stack, files: Files, batch: int, concurrency: int) -> tuple[float, int]:
    """(seconds, instances that failed): a 202 names failures (a storage error is 272) and is counted, not fatal."""
    bodies = [multipart(files.data[start:start + batch]) for start in range(0, len(files.data), batch)]
    slots = asyncio.Semaphore(concurrency)
    headers = {"Content-Type": multipart_content_type(), "Accept": "application/dicom+json"}
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=concurrency)) as client:
        async def send(body: bytes) -> int:
            async with slots:
                response = await client.post(f"{stack.url}/studies", content=body, headers=headers)
                if response.status_code not in (200, 202):
                    raise RuntimeError(f"STOW answered {response.status_code}: {response.text[:300]}")
                return len(response.json().get(FAILED_SOP_SEQUENCE, {}).get("Value", []))

        start = time.perf_counter()
        failed = sum(await asyncio.gather(*(send(body) for body in bodies)))
        return time.perf_counter() - start, failed


async def sdk_upload(stack: Stack, files: list[bytes], concurrency: int, prefix: str) -> float:
    """Seconds to upload ``files`` to the benchmark's scratch container with the SDK, ``concurrency`` at a time."""
    slots = asyncio.Semaphore(concurrency)
    async with stack.scratch() as container:
        try:
            await container.create_container()
        except Exception:  # exists
            pass

        async def upload(index: int, data: bytes) -> None:
            async with slots:
                await container.upload_blob(f"{prefix}/{index}.dcm", data, overwrite=True)

        start = time.perf_counter()
        await asyncio.gather(*(upload(index, data) for index, data in enumerate(files)))
        return time.perf_counter() - start


def _cpu(stack: Stack) -> tuple[float, float]:
    """CPU seconds so far of the server and of Azurite."""
    return cpu_seconds(stack.server.pid), sum(cpu_seconds(pid) for pid in stack.azurite.pids)


def run(results: Results, stack: Stack) -> StoredStudy:
    """Measure every concurrency; return the last study stored (for the retrieve benchmarks)."""
    options = stack.options
    files = Files(options.stow_instances, options.ct_side)
    mb = files.total_bytes / 1e6
    concurrencies = [int(c) for c in str(options.stow_concurrency).split(",")]
    figures: dict[int, tuple[list[float], list[float]]] = {c: ([], []) for c in concurrencies}
    failures: dict[int, int] = {c: 0 for c in concurrencies}
    # CPU ms per instance (server; Azurite under STOW; Azurite under the SDK upload): steadier than the rates.
    cpu: dict[int, list[tuple[float, float, float]]] = {c: [] for c in concurrencies}
    failed = 0
    for round_ in range(options.stow_rounds):
        for concurrency in concurrencies:
            files.renew()
            before = _cpu(stack)
            stow_seconds, failed = asyncio.run(_stow(stack, files, options.stow_batch, concurrency))
            between = _cpu(stack)
            failures[concurrency] += failed
            sdk_seconds = asyncio.run(sdk_upload(stack, files.data, concurrency, f"stow/{round_}/{concurrency}"))
            after = _cpu(stack)
            per = 1000 / len(files.data)
            cpu[concurrency].append(((between[0] - before[0]) * per, (between[1] - before[1]) * per,
                                     (after[1] - between[1]) * per))
            stored_mb = mb * (len(files.data) - failed) / len(files.data)
            figures[concurrency][0].append(stored_mb / stow_seconds)
            figures[concurrency][1].append(mb / sdk_seconds)
    for concurrency, (stow, sdk) in figures.items():
        stow_rate, sdk_rate = max(stow), max(sdk)  # best of the rounds: the least disturbed by other load
        ratio = stow_rate / sdk_rate
        results.add(Row(
            operation=f"STOW-RS {options.stow_instances} × {files.total_bytes / len(files.data) / 1e6:.2f} MB, "
                      f"{options.stow_batch} per request, {concurrency} request(s) in flight",
            measured=f"{stow_rate:.1f} MB/s", baseline=f"SDK upload, {concurrency} in flight: {sdk_rate:.1f} MB/s",
            target=f"≥ {TARGET}×", ratio=ratio, passed=ratio >= TARGET,
            note=f"{failures[concurrency]} instance(s) failed with a storage error" if failures[concurrency] else ""))
        server_ms, azurite_ms, azurite_sdk_ms = (min(values) for values in zip(*cpu[concurrency], strict=True))
        results.notes.append(
            f"STOW at {concurrency} in flight, CPU per instance: server {server_ms:.1f} ms, "
            f"Azurite {azurite_ms:.1f} ms (Azurite under the SDK upload of the same file: {azurite_sdk_ms:.1f} ms)")
    stored_bytes = files.total_bytes * (len(files.data) - failed) // len(files.data)
    return StoredStudy(files.study, files.series, len(files.data) - failed, stored_bytes)
