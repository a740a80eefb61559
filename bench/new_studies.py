"""New single-instance studies (a CR/DX archive) stored per second, against SDK uploads of the same files.

The files are the storage-request section's radiographs (`storage_requests.radiographs`: CR and DX 64², each a
study of its own with patient and referring physician names, IDs, accession number, date), stored through STOW-RS
in requests of `--stow-batch` with 4 requests in flight, as a modality gateway pushing a day's work would; then the
same bytes are uploaded straight to a container of the benchmark's own with the SDK, 4 transfers in flight. The
rate follows the storage requests a new study costs (the `requests` section's third scenario); it is reported, not
held to a target.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from .data import multipart, multipart_content_type
from .report import Results, Row
from .stack import Stack
from .storage_requests import in_requests, radiographs
from .stow import sdk_upload

IN_FLIGHT = 4


async def _stow(stack: Stack, files: list[bytes], batch: int) -> float:
    slots = asyncio.Semaphore(IN_FLIGHT)
    headers = {"Content-Type": multipart_content_type(), "Accept": "application/dicom+json"}
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=IN_FLIGHT)) as client:
        async def send(parts: list[bytes]) -> None:
            async with slots:
                response = await client.post(f"{stack.url}/studies", content=multipart(parts), headers=headers)
                if response.status_code != 200:
                    raise RuntimeError(f"STOW answered {response.status_code}: {response.text[:300]}")

        start = time.perf_counter()
        await asyncio.gather(*(send(parts) for parts in in_requests(files, batch)))
        return time.perf_counter() - start


def run(results: Results, stack: Stack) -> None:
    """Store ``--new-studies`` new single-instance studies; add the row with the SDK's rate beside it."""
    options = stack.options
    files = radiographs(options.new_studies, seed=1)
    stow_seconds = asyncio.run(_stow(stack, files, options.stow_batch))
    sdk_seconds = asyncio.run(sdk_upload(stack, files, IN_FLIGHT, "new-studies"))
    studies_per_second, uploads_per_second = len(files) / stow_seconds, len(files) / sdk_seconds
    results.add(Row(
        operation=f"new single-instance studies (CR/DX 64²) stored per second, {len(files)} in requests of "
                  f"{options.stow_batch}, {IN_FLIGHT} in flight",
        measured=f"{studies_per_second:.1f} studies/s",
        baseline=f"SDK upload of the same files, {IN_FLIGHT} in flight: {uploads_per_second:.1f} files/s",
        target="reported", ratio=studies_per_second / uploads_per_second))
