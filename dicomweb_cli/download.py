"""`dicomweb download`: WADO-RS of a study or series into a folder tree `{study}/{series}/{instance}.dcm`."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import httpx
import pydicom
from tqdm import tqdm

from dicom_core.model.errors import DicomWebError
from dicom_core.model.uids import is_valid_uid, normalize_uid
from dicom_core.wire.media_types import DICOM, MULTIPART_RELATED, parse_media_type
from dicom_core.wire.multipart import boundary_from_content_type, iter_parts

from .transport import Endpoint, open_client, send_with_retries

# Every instance as stored (no transcoding), one Part-10 file per part.
ACCEPT_ORIGINAL = f'{MULTIPART_RELATED}; type="{DICOM}"; transfer-syntax=*'
MAX_INSTANCE_BYTES = 1 << 40
SPOOL_MEMORY_BYTES = 8 * 1024 * 1024
_IDENTIFYING_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


class DownloadError(Exception):
    """The service refused the retrieve, or answered something that is not multipart DICOM."""


@dataclass
class DownloadSummary:
    """The files written."""

    files: list[Path] = field(default_factory=list)
    bytes_received: int = 0
    unreadable_parts: int = 0


async def download(endpoint: Endpoint, study: str, series: str | None, folder: Path, *, progress: bool = True,
                   progress_file: TextIO = sys.stderr) -> DownloadSummary:
    """Retrieve the study (or one of its series) and write each instance under ``folder``."""
    path = f"/studies/{study}" + (f"/series/{series}" if series else "")
    summary = DownloadSummary()
    async with open_client(endpoint) as client:
        response = await send_with_retries(client, lambda: client.build_request(
            "GET", endpoint.url + path, headers={"Accept": ACCEPT_ORIGINAL}), endpoint, stream=True)
        try:
            if response.status_code != 200:
                text = (await response.aread()).decode("utf-8", "replace")
                raise DownloadError(f"HTTP {response.status_code}: {' '.join(text.split())[:300]}")
            media = parse_media_type(response.headers.get("content-type", ""))
            if media.type != MULTIPART_RELATED:
                raise DownloadError(f"the service answered {media.type or 'no Content-Type'}, not {MULTIPART_RELATED}")
            length = response.headers.get("content-length")
            with tqdm(total=int(length) if length and length.isdigit() else None, unit="B", unit_scale=True,
                      unit_divisor=1024, desc="Downloading", file=progress_file, disable=not progress,
                      dynamic_ncols=True) as bar:
                try:
                    async for part in iter_parts(_counted(response, bar, summary), boundary_from_content_type(
                            media.params), max_part_bytes=MAX_INSTANCE_BYTES, spool_memory_bytes=SPOOL_MEMORY_BYTES):
                        with part:
                            target = _save(part.file, folder)
                        if target is None:
                            summary.unreadable_parts += 1
                        else:
                            summary.files.append(target)
                        bar.set_postfix_str(f"{len(summary.files)} files", refresh=False)
                except DicomWebError as exc:
                    raise DownloadError(f"the multipart answer is malformed: {exc.message}") from exc
        finally:
            await response.aclose()
    return summary


async def _counted(response: httpx.Response, bar: tqdm[Any], summary: DownloadSummary) -> AsyncIterator[bytes]:
    async for chunk in response.aiter_bytes():
        summary.bytes_received += len(chunk)
        bar.update(len(chunk))
        yield chunk


def _save(file: BinaryIO, folder: Path) -> Path | None:
    """Write one spooled Part-10 file to {study}/{series}/{instance}.dcm; None if its UIDs can't be read."""
    try:
        dataset = pydicom.dcmread(file, stop_before_pixels=True, specific_tags=list(_IDENTIFYING_KEYWORDS), force=True)
        uids = [normalize_uid(str(dataset.get(keyword, "") or "")) for keyword in _IDENTIFYING_KEYWORDS]
    except Exception:  # pydicom raises many types for malformed files
        return None
    if not all(is_valid_uid(uid) for uid in uids):
        return None  # a UID becomes a path segment: only digits and dots may
    study, series, instance = uids
    target = folder / study / series / f"{instance}.dcm"
    target.parent.mkdir(parents=True, exist_ok=True)
    file.seek(0)
    # Written beside the target and renamed: an interrupted download never leaves a truncated .dcm.
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".partial-", delete=False) as out:
        shutil.copyfileobj(file, out)
    os.replace(out.name, target)
    return target
