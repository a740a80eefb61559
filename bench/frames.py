"""One frame of a large native multi-frame instance and of an encapsulated one, against one ranged blob read.

The baseline reads the very bytes the server answers with: their offset is found in the stored file. Both
are read over the same HTTP client library (aiohttp, the one the storage SDK uses), so that the ratio is the
server's cost and not the difference between two clients (httpx's async client took ~1.8 ms more than aiohttp
to read a 512 KB body from the same server, measured).
"""

from __future__ import annotations

import asyncio
import random
import time

import aiohttp
import httpx
from pydicom.uid import RLELossless

from .data import Instance, multiframe, multipart, multipart_content_type
from .report import Results, Row
from .stack import Stack
from .stats import p50

TARGET = 1.3
FRAME_ACCEPT = "application/octet-stream; transfer-syntax=*"


async def _store(client: httpx.AsyncClient, stack: Stack, instance: Instance) -> None:
    response = await client.post(f"{stack.url}/studies", content=multipart([instance.data]),
                                 headers={"Content-Type": multipart_content_type(), "Accept": "application/dicom+json"})
    if response.status_code != 200:
        raise RuntimeError(f"storing the multi-frame instance answered {response.status_code}: {response.text[:300]}")


async def _measure(stack: Stack, instance: Instance, frames: int) -> tuple[list[float], list[float], int]:
    url = f"{stack.url}/studies/{instance.study}/series/{instance.series}/instances/{instance.sop}/frames"
    rng = random.Random(5)
    server_ms, blob_ms, size = [], [], 0
    async with httpx.AsyncClient(timeout=120) as client:
        await _store(client, stack, instance)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as client, stack.files() as container:
        name = [blob.name async for blob in container.list_blobs(name_starts_with=f"{instance.study}/")][0]
        stored = await (await container.download_blob(name)).readall()
        for _ in range(stack.options.frames_repeat):
            number = rng.randrange(1, frames + 1)
            start = time.perf_counter()
            async with client.get(f"{url}/{number}", headers={"Accept": FRAME_ACCEPT}) as response:
                content = await response.read()
            server_ms.append((time.perf_counter() - start) * 1000)
            if response.status != 200:
                raise RuntimeError(f"frame {number} answered {response.status}: {content[:300]!r}")
            offset, size = stored.find(content), len(content)
            if offset < 0:
                raise RuntimeError(f"frame {number}'s bytes are not in the stored file")
            start = time.perf_counter()
            await (await container.download_blob(name, offset=offset, length=size)).readall()
            blob_ms.append((time.perf_counter() - start) * 1000)
    return server_ms, blob_ms, size


def run(results: Results, stack: Stack) -> None:
    """Measure a frame of each instance; add a row per instance."""
    options = stack.options
    cases = [
        (f"native, {options.native_frames} frames of {options.frame_side}²",
         multiframe(options.native_frames, options.frame_side), options.native_frames),
        (f"RLE Lossless, {options.encapsulated_frames} frames of {options.frame_side}²",
         multiframe(options.encapsulated_frames, options.frame_side, RLELossless), options.encapsulated_frames),
    ]
    plot = results.samples.setdefault("Frames (one frame)", {})
    for label, instance, frames in cases:
        server_ms, blob_ms, size = asyncio.run(_measure(stack, instance, frames))
        ratio = p50(server_ms) / p50(blob_ms)
        results.add(Row(
            operation=f"frame of a {label} instance ({size / 1e3:.0f} KB), p50", measured=f"{p50(server_ms):.1f} ms",
            baseline=f"one ranged blob read: {p50(blob_ms):.1f} ms", target=f"p50 ≤ {TARGET}×", ratio=ratio,
            passed=ratio <= TARGET))
        plot[f"WADO-RS frame, {label.split(',')[0]}"] = server_ms
        plot[f"ranged blob read, {label.split(',')[0]}"] = blob_ms
