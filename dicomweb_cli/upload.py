"""`dicomweb upload`: store every DICOM file under some folders with STOW-RS, in concurrent multipart batches.

Resuming is skipping: before sending, each study's instances are looked up with QIDO-RS
(`/studies/{study}/instances`); a server without QIDO, or one that does not know the study, gets every file,
and an instance it already has comes back as failure 45070, which counts as "already there" too.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx
from tqdm import tqdm

from dicom_core.wire.media_types import DICOM, DICOM_JSON, MULTIPART_RELATED
from dicom_core.wire.multipart import new_boundary, write_parts

from .dicom_files import LocalInstance, scan
from .json_values import JsonDataset, first_value, json_values
from .transport import Endpoint, TransientError, open_client, send_with_retries

MIB = 1024 * 1024
READ_CHUNK_BYTES = 1 * MIB
QIDO_PAGE = 200
# FailureReason codes (PS3.18 Table I.2-1 and Azure's DICOM service).
INSTANCE_EXISTS = 45070
PROCESSING_FAILURE = 272  # a storage error on the server: worth one more try
AUTH_STATUSES = frozenset({401, 403})


@dataclass(frozen=True)
class UploadOptions:
    """How to batch and pace an upload."""

    batch_files: int = 20
    batch_bytes: int = 64 * MIB
    concurrency: int = 4
    progress: bool = True
    skip_existing: bool = True


@dataclass
class UploadSummary:
    """What an upload did, file by file."""

    found: list[LocalInstance] = field(default_factory=list)
    not_dicom: list[Path] = field(default_factory=list)
    already_by_search: list[LocalInstance] = field(default_factory=list)
    already_by_server: list[LocalInstance] = field(default_factory=list)
    stored: list[LocalInstance] = field(default_factory=list)
    failed: dict[Path, str] = field(default_factory=dict)
    bytes_sent: int = 0
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, else 1."""
        return 1 if self.failed else 0


class AuthorizationError(Exception):
    """The service refused the credentials (401/403): no point in sending the other batches."""


def plan_batches(instances: Sequence[LocalInstance], max_files: int, max_bytes: int) -> list[list[LocalInstance]]:
    """Group instances, in order, into batches of at most ``max_files`` files and ``max_bytes`` (bigger files alone)."""
    batches: list[list[LocalInstance]] = []
    current: list[LocalInstance] = []
    size = 0
    for instance in instances:
        if current and (len(current) >= max_files or size + instance.size > max_bytes):
            batches.append(current)
            current, size = [], 0
        current.append(instance)
        size += instance.size
    if current:
        batches.append(current)
    return batches


async def upload(endpoint: Endpoint, paths: Iterable[Path], options: UploadOptions,
                 progress_file: TextIO = sys.stderr) -> UploadSummary:
    """Upload every DICOM instance under ``paths``; return what happened to each file."""
    started = time.monotonic()
    found = scan(paths)
    summary = UploadSummary(found=found.instances, not_dicom=found.skipped)
    async with open_client(endpoint) as client:
        to_send = list(found.instances)
        if options.skip_existing and to_send:
            on_server = await _instances_on_server(client, endpoint, {i.study for i in to_send}, options.concurrency)
            summary.already_by_search = [i for i in to_send if (i.study, i.instance) in on_server]
            to_send = [i for i in to_send if (i.study, i.instance) not in on_server]
        with tqdm(total=sum(i.size for i in to_send), unit="B", unit_scale=True, unit_divisor=1024,
                  desc="Uploading", file=progress_file, disable=not options.progress, dynamic_ncols=True) as bar:
            uploader = _Uploader(client, endpoint, summary, bar, len(to_send))
            retry_later = await uploader.send_all(plan_batches(to_send, options.batch_files, options.batch_bytes),
                                                  options.concurrency)
            if retry_later:  # storage errors on the server: one more try, one file at a time
                for instance in retry_later:
                    summary.failed.pop(instance.path, None)
                await uploader.send_all([[i] for i in retry_later], options.concurrency)
    summary.seconds = time.monotonic() - started
    return summary


async def _instances_on_server(
    client: httpx.AsyncClient, endpoint: Endpoint, studies: set[str], concurrency: int
) -> set[tuple[str, str]]:
    """Return (study, SOP instance) of the instances QIDO-RS lists for each study; nothing when it can't tell."""
    slots = asyncio.Semaphore(concurrency)

    async def one_study(study: str) -> set[tuple[str, str]]:
        async with slots:
            known: set[tuple[str, str]] = set()
            offset = 0
            while True:
                params = {"includefield": "SOPInstanceUID", "limit": str(QIDO_PAGE), "offset": str(offset)}
                try:
                    build = functools.partial(client.build_request, "GET", f"{endpoint.url}/studies/{study}/instances",
                                              params=params, headers={"Accept": DICOM_JSON})
                    response = await send_with_retries(client, build, endpoint)
                except TransientError:
                    return known
                if response.status_code != 200:
                    return known  # 204: none; 404/400/405/406: unknown study or no QIDO — 45070 will tell
                try:
                    rows = response.json()
                except ValueError:
                    return known
                if not isinstance(rows, list):
                    return known
                known |= {(study, str(uid)) for row in rows if (uid := first_value(row, "SOPInstanceUID"))}
                if len(rows) < QIDO_PAGE:
                    return known
                offset += len(rows)

    results = await asyncio.gather(*(one_study(study) for study in sorted(studies)))
    return set().union(*results)


class _Uploader:
    """Sends batches concurrently, updating the progress bar and the summary."""

    def __init__(self, client: httpx.AsyncClient, endpoint: Endpoint, summary: UploadSummary, bar: tqdm[Any],
                 total_files: int) -> None:
        self.client, self.endpoint, self.summary, self.bar = client, endpoint, summary, bar
        self.total_files = total_files
        self.done_files = 0
        self.retry_later: list[LocalInstance] = []

    async def send_all(self, batches: list[list[LocalInstance]], concurrency: int) -> list[LocalInstance]:
        """Send the batches, ``concurrency`` at a time; return the instances worth one more try."""
        self.retry_later = []
        queue: asyncio.Queue[list[LocalInstance]] = asyncio.Queue()
        for batch in batches:
            queue.put_nowait(batch)

        refused: list[AuthorizationError] = []

        async def worker() -> None:
            while not queue.empty() and not refused:
                batch = queue.get_nowait()
                try:
                    for smaller in await self._send(batch):
                        queue.put_nowait(smaller)
                except AuthorizationError as exc:
                    refused.append(exc)

        self._show_files()
        await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(batches))))))
        if refused:
            raise refused[0]
        return self.retry_later

    async def _send(self, batch: list[LocalInstance]) -> list[list[LocalInstance]]:
        """Send one batch; return smaller batches to send instead when the service found it too large."""
        counted = 0

        def build() -> httpx.Request:
            nonlocal counted
            self.bar.update(-counted)  # a retry sends the files again from their start
            self.summary.bytes_sent -= counted
            counted = 0
            boundary = new_boundary()
            return self.client.build_request(
                "POST", f"{self.endpoint.url}/studies", content=write_parts(parts(), boundary),
                headers={"Content-Type": f'{MULTIPART_RELATED}; type="{DICOM}"; boundary={boundary}',
                         "Accept": DICOM_JSON})

        async def parts() -> AsyncIterator[tuple[dict[str, str], AsyncIterator[bytes]]]:
            for instance in batch:
                yield {"Content-Type": DICOM}, file_chunks(instance.path)

        async def file_chunks(path: Path) -> AsyncIterator[bytes]:
            nonlocal counted
            with path.open("rb") as file:
                while chunk := await asyncio.to_thread(file.read, READ_CHUNK_BYTES):
                    counted += len(chunk)
                    self.summary.bytes_sent += len(chunk)
                    self.bar.update(len(chunk))
                    yield chunk

        try:
            response = await send_with_retries(self.client, build, self.endpoint)
        except TransientError as exc:
            self._fail(batch, str(exc))
            return []
        except OSError as exc:  # a file went away or became unreadable after the scan
            self._fail(batch, f"could not be read: {exc}")
            return []
        if response.status_code == 413 and len(batch) > 1:
            self.bar.update(-counted)
            self.summary.bytes_sent -= counted
            half = len(batch) // 2
            return [batch[:half], batch[half:]]
        if response.status_code in AUTH_STATUSES:
            raise AuthorizationError(f"HTTP {response.status_code}: {_short(response.text)}")
        self._record(batch, response)
        return []

    def _record(self, batch: list[LocalInstance], response: httpx.Response) -> None:
        """Sort each file of the batch into stored, already there, retry or failed, from the STOW response."""
        body: JsonDataset = {}
        if response.headers.get("content-type", "").split(";")[0].strip() in (DICOM_JSON, "application/json"):
            try:
                body = response.json()
            except ValueError:
                body = {}
        if not isinstance(body, dict) or response.status_code not in (200, 202, 409):
            self._fail(batch, f"HTTP {response.status_code}: {_short(response.text)}")
            return
        stored = {str(first_value(item, "ReferencedSOPInstanceUID"))
                  for item in json_values(body, "ReferencedSOPSequence")}
        failures: dict[str, tuple[int, str]] = {}
        unattributed: list[str] = []
        for item in json_values(body, "FailedSOPSequence"):
            reason = int(first_value(item, "FailureReason") or 0)
            comment = "; ".join(str(first_value(c, "ErrorComment") or "")
                                for c in json_values(item, "FailedAttributesSequence"))
            text = f"failure reason {reason}" + (f": {comment}" if comment else "")
            uid = first_value(item, "ReferencedSOPInstanceUID")
            if uid:
                failures[str(uid)] = (reason, text)
            else:
                unattributed.append(text)
        for instance in batch:
            if instance.instance in stored:
                self.summary.stored.append(instance)
            elif instance.instance in failures:
                reason, text = failures[instance.instance]
                if reason == INSTANCE_EXISTS:
                    self.summary.already_by_server.append(instance)
                elif reason == PROCESSING_FAILURE:
                    self.retry_later.append(instance)
                    self.summary.failed[instance.path] = text
                else:
                    self.summary.failed[instance.path] = text
            else:
                self.summary.failed[instance.path] = (unattributed[0] if unattributed
                                                      else "the server's response does not mention this instance")
        self.done_files += len(batch)
        self._show_files()

    def _fail(self, batch: list[LocalInstance], reason: str) -> None:
        for instance in batch:
            self.summary.failed[instance.path] = reason
        self.done_files += len(batch)
        self._show_files()

    def _show_files(self) -> None:
        self.bar.set_postfix_str(f"{self.done_files}/{self.total_files} files", refresh=False)


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
