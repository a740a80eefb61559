"""Server peak RSS during one large multipart STOW and one large study WADO (bounded memory, not speed)."""

from __future__ import annotations

import time

import httpx
from pydicom.uid import generate_uid

from .data import large_study_body, multipart_content_type
from .environment import peak_rss_mb, reset_peak_rss, rss_mb
from .report import Results, Row
from .stack import Stack

TARGET_MB = 300.0


def run(results: Results, stack: Stack) -> None:
    """Store a study of --memory-mb MB in one request, then retrieve it whole; add a row for each."""
    options, pid = stack.options, stack.server.pid
    study = generate_uid()
    total, part = options.memory_mb, options.memory_part_mb
    # Without a resettable peak (clear_refs), the figure is the process's peak since it started.
    resettable = reset_peak_rss(pid)
    before = rss_mb(pid)
    start = time.perf_counter()
    response = httpx.post(f"{stack.url}/studies", content=large_study_body(study, total, part), timeout=3600,
                          headers={"Content-Type": multipart_content_type(), "Accept": "application/dicom+json"})
    stow_seconds = time.perf_counter() - start
    if response.status_code not in (200, 202):
        raise RuntimeError(f"the {total} MB STOW answered {response.status_code}: {response.text[:300]}")
    failed = len(response.json().get("00081198", {}).get("Value", []))
    stow_peak = peak_rss_mb(pid)
    results.add(Row(
        operation=f"server peak RSS, one {total} MB multipart STOW ({total // part} × {part} MB)",
        measured=f"{stow_peak:.0f} MB", baseline=f"RSS before: {before:.0f} MB; {total / stow_seconds:.0f} MB/s",
        target=f"≤ {TARGET_MB:.0f} MB", passed=stow_peak <= TARGET_MB,
        note=", ".join(filter(None, ["" if resettable else "peak since the server started",
                                     f"{failed} instance(s) failed with a storage error" if failed else ""]))))
    reset_peak_rss(pid)
    before = rss_mb(pid)
    start, size = time.perf_counter(), 0
    with httpx.stream("GET", f"{stack.url}/studies/{study}", timeout=3600,
                      headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}) as answer:
        answer.raise_for_status()
        for chunk in answer.iter_raw():
            size += len(chunk)
    wado_seconds = time.perf_counter() - start
    wado_peak = peak_rss_mb(pid)
    results.add(Row(
        operation=f"server peak RSS, WADO-RS of that {size / 1e6:.0f} MB study",
        measured=f"{wado_peak:.0f} MB", baseline=f"RSS before: {before:.0f} MB; {size / 1e6 / wado_seconds:.0f} MB/s",
        target=f"≤ {TARGET_MB:.0f} MB", passed=wado_peak <= TARGET_MB,
        note="" if resettable else "peak since the server started"))
