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
    server_ms, blob_ms, verifying_ms = [], [], []
    # A non-matching If-None-Match takes the path every request took before the document was read at the
    # same time as the series row (row, then properties, then the document): the before/after of that change.
    verifying = {**headers, "If-None-Match": '"not-the-current-tag"'}

    async def rounds() -> int:
        async with httpx.AsyncClient(timeout=120) as client, stack.scratch() as container:
            size = len((await client.get(url, headers=headers)).content)
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
                start = time.perf_counter()
                (await client.get(url, headers=verifying)).raise_for_status()
                verifying_ms.append((time.perf_counter() - start) * 1000)
            return size

    size = asyncio.run(rounds())
    ratio = p50(server_ms) / p50(blob_ms)
    results.add(Row(
        operation=f"series metadata, {stored.instances} instances ({size / 1e6:.2f} MB JSON), p50",
        measured=f"{p50(server_ms):.0f} ms", baseline=f"one blob GET of {size / 1e6:.2f} MB: {p50(blob_ms):.0f} ms",
        target=f"p50 ≤ {TARGET}×", ratio=ratio, passed=ratio <= TARGET))
    results.notes.append(f"series metadata through the row-then-verify path (what every request took before): "
                         f"p50 {p50(verifying_ms):.0f} ms, {p50(verifying_ms) / p50(blob_ms):.2f}× the blob GET")
    results.samples["Series metadata"] = {"WADO-RS series metadata": server_ms, "one blob GET, same size": blob_ms,
                                          "row, then verify, then read (before)": verifying_ms}
