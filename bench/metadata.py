"""Series metadata (WADO-RS) of a large series, against one blob GET of a document of the same size.

The first request after the store is answered by the process that stored the series (it keeps the document it
wrote: one Table read); a second server process, which holds no copy, reads the row and the document at once.
"""

from __future__ import annotations

import asyncio
import time

import httpx
from azure.storage.blob import ContentSettings

from .environment import Server
from .report import Results, Row
from .stack import PREFIX, Stack, StoredStudy
from .stats import p50

TARGET = 2.0
FIRST_TARGET = 3.0
SOP_INSTANCE_UID = "00080018"


def run(results: Results, stack: Stack, stored: StoredStudy) -> None:
    """Interleave the metadata request and the blob GET; add the p50 row."""
    url = f"{stack.url}/studies/{stored.study}/series/{stored.series}/metadata"
    headers = {"Accept": "application/dicom+json", "Accept-Encoding": "identity"}
    server_ms, blob_ms, first_ms = [], [], []
    instance_ms, instance_blob_ms, study_ms = [], [], []

    async def rounds() -> int:
        async with httpx.AsyncClient(timeout=120) as client, stack.scratch() as container:
            # The first request reads the series row and the document (the server keeps a copy of the document
            # after it, sent again while the series row's ETag is unchanged): reported apart, as a note.
            # Its connection is opened first (a path no route serves: no storage touched), as the baseline's GETs
            # run on a warm pool: the row measures the server's first answer, not the client's connect.
            await client.get(f"{stack.server.url}/bench-connection-warm-up")
            start = time.perf_counter()
            first = await client.get(url, headers=headers)
            first_ms.append((time.perf_counter() - start) * 1000)
            size = len(first.content)
            instance = first.json()[0][SOP_INSTANCE_UID]["Value"][0]
            try:
                await container.create_container()
            except Exception:  # exists
                pass
            blob = container.get_blob_client("metadata/same-size.json")
            await blob.upload_blob(b"[" + b" " * (size - 2) + b"]", overwrite=True,
                                   content_settings=ContentSettings(content_type="application/dicom+json"))
            for _ in range(stack.options.metadata_repeat):
                start = time.perf_counter()
                response = await client.get(url, headers=headers)
                response.raise_for_status()
                server_ms.append((time.perf_counter() - start) * 1000)
                start = time.perf_counter()
                await (await blob.download_blob()).readall()
                blob_ms.append((time.perf_counter() - start) * 1000)
            # Instance and study metadata, the instance's against one blob GET of its size.
            single = container.get_blob_client("metadata/instance-size.json")
            one = await client.get(f"{url[:-len('/metadata')]}/instances/{instance}/metadata", headers=headers)
            await single.upload_blob(b" " * len(one.content), overwrite=True)
            study_url = f"{stack.url}/studies/{stored.study}/metadata"
            for _ in range(stack.options.metadata_repeat):
                start = time.perf_counter()
                (await client.get(f"{url[:-len('/metadata')]}/instances/{instance}/metadata",
                                  headers=headers)).raise_for_status()
                instance_ms.append((time.perf_counter() - start) * 1000)
                start = time.perf_counter()
                await (await single.download_blob()).readall()
                instance_blob_ms.append((time.perf_counter() - start) * 1000)
                start = time.perf_counter()
                (await client.get(study_url, headers=headers)).raise_for_status()
                study_ms.append((time.perf_counter() - start) * 1000)
            return size

    size = asyncio.run(rounds())
    other_ms = _first_in_another_process(stack, stored, headers)
    ratio = p50(server_ms) / p50(blob_ms)
    results.add(Row(
        operation=f"series metadata, {stored.instances} instances ({size / 1e6:.2f} MB JSON), p50",
        measured=f"{p50(server_ms):.0f} ms", baseline=f"one blob GET of {size / 1e6:.2f} MB: {p50(blob_ms):.0f} ms",
        target=f"p50 ≤ {TARGET}×", ratio=ratio, passed=ratio <= TARGET))
    first = first_ms[0] / p50(blob_ms)
    results.add(Row(
        operation="series metadata, first request after the store (the storing process: its kept copy, one Table read)",
        measured=f"{first_ms[0]:.0f} ms", baseline=f"one blob GET of {size / 1e6:.2f} MB (p50): {p50(blob_ms):.0f} ms",
        target=f"≤ {FIRST_TARGET:g}×", ratio=first, passed=first <= FIRST_TARGET))
    results.notes.append(f"series metadata, first request for it in another server process (no copy kept: the row "
                         f"and the document read at once; the process served one request before): {other_ms:.0f} ms, "
                         f"{other_ms / p50(blob_ms):.2f}× the blob GET's p50; the series metadata row is the kept "
                         "copy's p50")
    results.notes.append(f"instance metadata p50 {p50(instance_ms):.1f} ms (one blob GET of its size: "
                         f"{p50(instance_blob_ms):.1f} ms, {p50(instance_ms) / p50(instance_blob_ms):.2f}×); study "
                         f"metadata p50 {p50(study_ms):.0f} ms ({p50(study_ms) / p50(blob_ms):.2f}× the series "
                         "document's blob GET)")
    results.samples["Series metadata"] = {"WADO-RS series metadata": server_ms, "one blob GET, same size": blob_ms}


def _first_in_another_process(stack: Stack, stored: StoredStudy, headers: dict[str, str]) -> float:
    """Milliseconds of the first request for the series' metadata to a second server process (it keeps no copy)."""
    other = Server.start(stack.azurite, prefix=PREFIX, timers=False)
    try:
        study = f"{other.url}/v2/studies/{stored.study}"
        with httpx.Client(timeout=120) as client:
            # Its connection and storage clients warmed by another series' request (a 404: one Table read).
            client.get(f"{study}/series/{stored.series}.1/metadata", headers=headers)
            start = time.perf_counter()
            client.get(f"{study}/series/{stored.series}/metadata", headers=headers).raise_for_status()
            return (time.perf_counter() - start) * 1000
    finally:
        other.stop()
