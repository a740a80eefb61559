"""Reindex of an extended query tag: its rate, against the STOW rate of the same run, and STOW's pace during it.

Stores an archive of small instances (STOW alone: the baseline), adds a tag and times the reindex from the
moment its operation runs to 200 (instances per second), then adds a second tag and keeps storing studies
while that reindex runs, counting what was stored until it ends: STOW during a reindex should keep at least
half its pace.
"""

from __future__ import annotations

import asyncio
import time

import httpx
from pydicom.uid import generate_uid

from tests.factories import make_instance

from .data import multipart, multipart_content_type
from .report import Results, Row
from .stack import Stack

PER_STUDY = 10
CONCURRENCY = 4
POLL_SECONDS = 0.2
TARGET = 0.5


def _bodies(instances: int) -> list[bytes]:
    bodies = []
    for _ in range(0, instances, PER_STUDY):
        study, series = generate_uid(), generate_uid()
        bodies.append(multipart([make_instance(study=study, series=series, InstanceNumber=number, SeriesNumber=1)
                                 for number in range(1, PER_STUDY + 1)]))
    return bodies


async def _stow(stack: Stack, bodies: list[bytes]) -> float:
    slots = asyncio.Semaphore(CONCURRENCY)
    headers = {"Content-Type": multipart_content_type(), "Accept": "application/dicom+json"}
    async with httpx.AsyncClient(timeout=600) as client:
        async def send(body: bytes) -> None:
            async with slots:
                response = await client.post(f"{stack.url}/studies", content=body, headers=headers)
                if response.status_code not in (200, 202):
                    raise RuntimeError(f"STOW answered {response.status_code}: {response.text[:300]}")

        start = time.perf_counter()
        await asyncio.gather(*(send(body) for body in bodies))
        return time.perf_counter() - start


def _add_tag(stack: Stack, keyword: str, level: str) -> str:
    response = httpx.post(f"{stack.url}/extendedquerytags", json=[{"path": keyword, "level": level}], timeout=60)
    if response.status_code != 202:
        raise RuntimeError(f"adding {keyword} answered {response.status_code}: {response.text[:300]}")
    return str(response.json()["href"])


def _wait_for(href: str, *, running: bool) -> float:
    """Poll the operation until it runs (``running``) or is done; the moment it was seen so."""
    while True:
        response = httpx.get(href, timeout=60)
        if (running and response.json()["status"] == "running") or response.status_code == 200:
            return time.perf_counter()
        time.sleep(POLL_SECONDS)


def run(results: Results, stack: Stack) -> None:
    """Measure the reindex rate and STOW's pace during a reindex."""
    instances = stack.options.reindex_instances
    alone = asyncio.run(_stow(stack, _bodies(instances)))
    stow_rate = instances / alone
    print(f"  STOW alone: {stow_rate:.1f} instances/s", flush=True)
    href = _add_tag(stack, "InstanceNumber", "Instance")
    started = _wait_for(href, running=True)
    reindex_rate = instances / (_wait_for(href, running=False) - started)
    results.add(Row(operation=f"reindex of one extended tag over {instances} instances",
                    measured=f"{reindex_rate:.0f} instances/s", baseline=f"STOW alone: {stow_rate:.0f} instances/s",
                    target="—", ratio=reindex_rate / stow_rate))
    href = _add_tag(stack, "SeriesNumber", "Series")
    _wait_for(href, running=True)
    stored, seconds = asyncio.run(_stow_while_running(stack, href))
    ratio = (stored / seconds) / stow_rate
    results.add(Row(operation=f"STOW while a reindex of {instances}+ instances runs ({stored} stored)",
                    measured=f"{stored / seconds:.1f} instances/s",
                    baseline=f"STOW alone: {stow_rate:.1f} instances/s",
                    target=f"≥ {TARGET}×", ratio=ratio, passed=ratio >= TARGET))


async def _stow_while_running(stack: Stack, href: str) -> tuple[int, float]:
    """Store studies (``CONCURRENCY`` requests in flight) until the operation is done: (instances, seconds)."""
    done = asyncio.Event()
    stored = 0

    async def watch() -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            while (await client.get(href)).status_code == 202:
                await asyncio.sleep(POLL_SECONDS)
        done.set()

    async def store() -> None:
        nonlocal stored
        while not done.is_set():
            await _stow(stack, _bodies(PER_STUDY))
            if not done.is_set():
                stored += PER_STUDY  # only what was stored inside the window counts

    start = time.perf_counter()
    watcher = asyncio.create_task(watch())
    await asyncio.gather(*(store() for _ in range(CONCURRENCY)))
    await watcher
    return stored, time.perf_counter() - start
