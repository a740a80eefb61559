"""Series metadata (WADO-RS) of a large series, against one blob GET of a document of the same size.

The first request after a store is answered by the process that stored into the series (it keeps the document it
wrote: one Table read); a second server process, which holds no copy, reads the row and the document at once.
The first-request row is the p50 of a few single-instance stores into the series, each followed at once by the
series' metadata; the very first request (after the large STOW and the sections between, one sample) is a note.
"""

from __future__ import annotations

import asyncio
import time

import httpx
from azure.storage.blob import ContentSettings

from tests.factories import to_bytes

from .data import ct_dataset, ct_pixels, multipart, multipart_content_type
from .environment import Server
from .report import Results, Row
from .stack import PREFIX, Stack, StoredStudy
from .stats import p50

TARGET = 2.0
FIRST_TARGET = 3.0
SOP_INSTANCE_UID = "00080018"
AFTER_STORE_REPEAT = 7  # single-instance stores into the series, each followed by its first metadata request
AFTER_STORE_SIDE = 64  # their pixels (the series' metadata records are the same size whatever the pixels)


def run(results: Results, stack: Stack, stored: StoredStudy) -> None:
    """Interleave the metadata request and the blob GET; add the p50 row."""
    url = f"{stack.url}/studies/{stored.study}/series/{stored.series}/metadata"
    headers = {"Accept": "application/dicom+json", "Accept-Encoding": "identity"}
    server_ms, blob_ms, first_ms, after_store_ms = [], [], [], []
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
            # The first request after each of a few stores into the series (each changes the series row; the
            # storing process keeps the document it wrote), interleaved with the blob GET as above.
            pixels = ct_pixels(AFTER_STORE_SIDE)
            stow_headers = {"Content-Type": multipart_content_type(), "Accept": "application/dicom+json"}
            for number in range(AFTER_STORE_REPEAT):
                part = to_bytes(ct_dataset(stored.study, stored.series, stored.instances + number + 1, pixels,
                                           AFTER_STORE_SIDE))
                stowed = await client.post(f"{stack.url}/studies", content=multipart([part]), headers=stow_headers)
                if stowed.status_code != 200:
                    raise RuntimeError(f"STOW answered {stowed.status_code}: {stowed.text[:300]}")
                start = time.perf_counter()
                (await client.get(url, headers=headers)).raise_for_status()
                after_store_ms.append((time.perf_counter() - start) * 1000)
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
    first = p50(after_store_ms) / p50(blob_ms)
    results.add(Row(
        operation=f"series metadata, first request after a store (p50 of {AFTER_STORE_REPEAT}, each after one "
                  "instance stored into the series: the storing process's kept copy, one Table read)",
        measured=f"{p50(after_store_ms):.0f} ms",
        baseline=f"one blob GET of {size / 1e6:.2f} MB (p50): {p50(blob_ms):.0f} ms",
        target=f"≤ {FIRST_TARGET:g}×", ratio=first, passed=first <= FIRST_TARGET))
    results.notes.append(f"series metadata, the very first request after the {stored.instances}-instance STOW (one "
                         "sample; after the sections between, and idle storage connections are dropped after 4 s): "
                         f"{first_ms[0]:.0f} ms, {first_ms[0] / p50(blob_ms):.2f}× the blob GET's p50")
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
