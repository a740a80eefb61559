"""Series metadata (WADO-RS) of a large series, against one blob GET of a document of the same size."""

from __future__ import annotations

import asyncio
import time

import httpx
from azure.storage.blob import ContentSettings

from .report import Results, Row
from .stack import Stack, StoredStudy
from .stats import p50

TARGET = 2.0


def run(results: Results, stack: Stack, stored: StoredStudy) -> None:
    """Interleave the metadata request and the blob GET; add the p50 row."""
    url = f"{stack.url}/studies/{stored.study}/series/{stored.series}/metadata"
    headers = {"Accept": "application/dicom+json", "Accept-Encoding": "identity"}
    server_ms, blob_ms, first_ms = [], [], []

    async def rounds() -> int:
        async with httpx.AsyncClient(timeout=120) as client, stack.scratch() as container:
            # The first request reads the series row and the document (the server keeps a copy of the document
            # after it, sent again while the series row's ETag is unchanged): reported apart, as a note.
            start = time.perf_counter()
            size = len((await client.get(url, headers=headers)).content)
            first_ms.append((time.perf_counter() - start) * 1000)
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
            return size

    size = asyncio.run(rounds())
    ratio = p50(server_ms) / p50(blob_ms)
    results.add(Row(
        operation=f"series metadata, {stored.instances} instances ({size / 1e6:.2f} MB JSON), p50",
        measured=f"{p50(server_ms):.0f} ms", baseline=f"one blob GET of {size / 1e6:.2f} MB: {p50(blob_ms):.0f} ms",
        target=f"p50 ≤ {TARGET}×", ratio=ratio, passed=ratio <= TARGET))
    results.notes.append(f"series metadata, first request after the store (no copy kept yet: row and document "
                         f"read): {first_ms[0]:.0f} ms, {first_ms[0] / p50(blob_ms):.2f}× the blob GET's p50; the "
                         "row is the kept copy's p50")
    results.samples["Series metadata"] = {"WADO-RS series metadata": server_ms, "one blob GET, same size": blob_ms}
