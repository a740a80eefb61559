"""Bulk data and thumbnails against the blob reads they come down to.

Bulk data: the PixelData BulkDataURI a CT instance's metadata names, against one ranged blob read of the same
bytes (offset and length from the URI). Thumbnail: a study's thumbnail after the first request (which renders
and caches it), against one GET of the cached thumbnail blob. Both over aiohttp, the storage SDK's library,
interleaved in one loop so that load on the machine weighs on both alike.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import httpx

from dicom_core.model.bulk_data import parse_location

from .data import ct_series, multipart, multipart_content_type
from .environment import cpu_seconds
from .report import Results, Row
from .stack import Stack
from .stats import p50

BULK_DATA_TARGET = 1.3
THUMBNAIL_TARGET = 1.5
INSTANCES = 5


async def _measure(stack: Stack) -> dict[str, list[float]]:
    instances = ct_series(INSTANCES)
    study, series = instances[0].study, instances[0].series
    async with httpx.AsyncClient(timeout=120) as client:
        response = await client.post(f"{stack.url}/studies", content=multipart([i.data for i in instances]),
                                     headers={"Content-Type": multipart_content_type()})
        if response.status_code != 200:
            raise RuntimeError(f"storing the series answered {response.status_code}: {response.text[:300]}")
        middle = instances[INSTANCES // 2]
        metadata = (await client.get(f"{stack.url}/studies/{study}/series/{series}/instances/{middle.sop}/metadata",
                                     headers={"Accept": "application/dicom+json"})).json()[0]
        uri = str(metadata["7FE00010"]["BulkDataURI"])
        thumbnail_url = f"{stack.url}/studies/{study}/thumbnail"
        first = await client.get(thumbnail_url, headers={"Accept": "image/jpeg"})
        if first.status_code != 200:
            raise RuntimeError(f"the study thumbnail answered {first.status_code}: {first.text[:300]}")
    location = parse_location(uri.rsplit("/", 1)[1])
    assert location is not None
    samples: dict[str, list[float]] = {"bulk": [], "ranged": [], "thumbnail": [], "blob": [],
                                       "server cpu": [], "azurite cpu bulk": [], "azurite cpu ranged": []}
    server, azurite = stack.server.pid, stack.azurite.pids
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http, \
            stack.files() as files, stack.metadata() as meta:
        file_name = [b.name async for b in files.list_blobs(name_starts_with=f"{study}/{series}/{middle.sop}/")][0]
        cached = [b.name async for b in meta.list_blobs(name_starts_with=f"{study}/") if "thumb" in b.name]
        if len(cached) != 1:
            raise RuntimeError(f"expected one cached thumbnail blob, found {cached}")
        for _ in range(stack.options.frames_repeat):
            cpu, storage_cpu = cpu_seconds(server), _sum_cpu(azurite)
            start = time.perf_counter()
            async with http.get(uri, headers={"Accept": "application/octet-stream"}) as answer:
                body = await answer.read()
            samples["bulk"].append((time.perf_counter() - start) * 1000)
            samples["server cpu"].append(cpu_seconds(server) - cpu)
            samples["azurite cpu bulk"].append(_sum_cpu(azurite) - storage_cpu)
            if answer.status != 200 or len(body) != location.length:
                raise RuntimeError(f"the bulk data answered {answer.status} with {len(body)} bytes")
            storage_cpu = _sum_cpu(azurite)
            start = time.perf_counter()
            await (await files.download_blob(file_name, offset=location.offset, length=location.length)).readall()
            samples["ranged"].append((time.perf_counter() - start) * 1000)
            samples["azurite cpu ranged"].append(_sum_cpu(azurite) - storage_cpu)
            start = time.perf_counter()
            async with http.get(thumbnail_url, headers={"Accept": "image/jpeg"}) as answer:
                image = await answer.read()
            samples["thumbnail"].append((time.perf_counter() - start) * 1000)
            if answer.status != 200 or image != first.content:
                raise RuntimeError(f"the study thumbnail answered {answer.status}, not the first answer's bytes")
            start = time.perf_counter()
            await (await meta.download_blob(cached[0])).readall()
            samples["blob"].append((time.perf_counter() - start) * 1000)
    samples["size"] = [float(location.length)]
    return samples


def _sum_cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def run(results: Results, stack: Stack) -> None:
    """Measure bulk data retrieve and a cached study thumbnail; add a row for each."""
    samples = asyncio.run(_measure(stack))
    bulk, ranged = p50(samples["bulk"]), p50(samples["ranged"])
    results.add(Row(
        operation=f"bulk data (PixelData BulkDataURI, {samples['size'][0] / 1e3:.0f} KB), p50",
        measured=f"{bulk:.1f} ms", baseline=f"one ranged blob read: {ranged:.1f} ms",
        target=f"p50 ≤ {BULK_DATA_TARGET}×", ratio=bulk / ranged, passed=bulk / ranged <= BULK_DATA_TARGET))
    requests = len(samples["bulk"])
    server_ms = sum(samples["server cpu"]) / requests * 1000
    bulk_storage_ms = sum(samples["azurite cpu bulk"]) / requests * 1000
    ranged_storage_ms = sum(samples["azurite cpu ranged"]) / requests * 1000
    results.add(Row(
        operation="bulk data: CPU per request (server processes; Azurite's blob and table services)",
        measured=f"server {server_ms:.1f} ms, Azurite {bulk_storage_ms:.1f} ms",
        baseline=f"one ranged blob read: Azurite {ranged_storage_ms:.1f} ms", target="(reported)"))
    thumbnail, blob = p50(samples["thumbnail"]), p50(samples["blob"])
    results.add(Row(
        operation=f"study thumbnail after the first request ({INSTANCES} CT instances), p50",
        measured=f"{thumbnail:.1f} ms", baseline=f"one blob GET of the cached thumbnail: {blob:.1f} ms",
        target=f"p50 ≤ {THUMBNAIL_TARGET}×", ratio=thumbnail / blob, passed=thumbnail / blob <= THUMBNAIL_TARGET))
    plot = results.samples.setdefault("Bulk data and thumbnails", {})
    plot.update({"bulk data": samples["bulk"], "ranged blob read": samples["ranged"],
                 "study thumbnail (cached)": samples["thumbnail"], "blob GET": samples["blob"]})
