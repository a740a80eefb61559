"""WADO-RS of a whole study as stored (transfer-syntax=*), against SDK downloads of the same blobs.

Rate: the study's bytes over the time to read the whole multipart answer, next to downloading every .dcm
blob of the study with the SDK, as many at a time as the server reads ahead. First byte: time to the first
body byte of the answer, next to the first byte of one blob download.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from dicom_core.storage.blob_reads import PREFETCH_WINDOW

from .report import Results, Row
from .stack import Stack, StoredStudy
from .stats import p50

RATE_TARGET = 0.9
FIRST_BYTE_TARGET = 2.0
ACCEPT_AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'


async def _wado(client: httpx.AsyncClient, url: str) -> tuple[float, float, int]:
    """(seconds to the first body byte, seconds to the end, bytes)."""
    start = time.perf_counter()
    first, size = None, 0
    async with client.stream("GET", url, headers={"Accept": ACCEPT_AS_STORED}) as response:
        response.raise_for_status()
        async for chunk in response.aiter_raw():
            if first is None and chunk:
                first = time.perf_counter() - start
            size += len(chunk)
    return first or 0.0, time.perf_counter() - start, size


async def _sdk(stack: Stack, names: list[str], window: int) -> tuple[float, float, int]:
    """(seconds to one blob's first byte, seconds to download all, bytes)."""
    async with stack.files() as container:
        start = time.perf_counter()
        downloader = await container.download_blob(names[0])
        async for _ in downloader.chunks():
            break
        first = time.perf_counter() - start
        slots = asyncio.Semaphore(window)

        async def one(name: str) -> int:
            async with slots:
                return len(await (await container.download_blob(name)).readall())

        start = time.perf_counter()
        size = sum(await asyncio.gather(*(one(name) for name in names)))
        return first, time.perf_counter() - start, size


async def _names(stack: Stack, study: str) -> list[str]:
    async with stack.files() as container:
        return [blob.name async for blob in container.list_blobs(name_starts_with=f"{study}/")]


def run(results: Results, stack: Stack, stored: StoredStudy) -> None:
    """Interleave server and SDK reads of the study; add the rate and first-byte rows."""
    names = asyncio.run(_names(stack, stored.study))
    url = f"{stack.url}/studies/{stored.study}"
    server_first, server_rate, sdk_first, sdk_rate = [], [], [], []

    async def rounds() -> None:
        async with httpx.AsyncClient(timeout=600) as client:
            await _wado(client, url)  # warm-up: connections, the server's clients
            for _ in range(stack.options.wado_rounds):
                first, seconds, size = await _wado(client, url)
                server_first.append(first * 1000)
                server_rate.append(size / 1e6 / seconds)
                first, seconds, size = await _sdk(stack, names, PREFETCH_WINDOW)
                sdk_first.append(first * 1000)
                sdk_rate.append(size / 1e6 / seconds)

    asyncio.run(rounds())
    rate, baseline = max(server_rate), max(sdk_rate)
    results.add(Row(
        operation=f"WADO-RS whole study, {stored.instances} instances ({stored.total_bytes / 1e6:.0f} MB), "
                  "transfer-syntax=*",
        measured=f"{rate:.1f} MB/s", baseline=f"SDK downloads, {PREFETCH_WINDOW} at a time: {baseline:.1f} MB/s",
        target=f"≥ {RATE_TARGET}×", ratio=rate / baseline, passed=rate / baseline >= RATE_TARGET))
    first, blob_first = p50(server_first), p50(sdk_first)
    results.add(Row(
        operation="WADO-RS whole study: first body byte (p50)", measured=f"{first:.0f} ms",
        baseline=f"one blob's first byte: {blob_first:.0f} ms", target=f"≤ {FIRST_BYTE_TARGET}×",
        ratio=first / blob_first, passed=first / blob_first <= FIRST_BYTE_TARGET))
    results.samples["WADO first byte"] = {"WADO-RS study": server_first, "one blob (SDK)": sdk_first}
