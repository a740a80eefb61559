"""The operation runner over Azurite: chunks from the checkpoint, leases, ETag-guarded saves."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from azure.core.exceptions import ServiceResponseError

from dicom_core.operations.records import (
    OPERATIONS_TABLE,
    Operation,
    OperationStatus,
    create_operation,
    get_operation,
    save_operation,
)
from dicom_core.operations.runner import Pace, Step, register_handler, run_operations
from dicom_core.storage.clients import Storage, table_name

COUNTING = "testCounting"
FAILING = "testFailing"
FLAKY = "testFlaky"
FAST = Pace(pause_seconds=0.0)


async def _count_to_five(storage: Storage, operation: Operation) -> Step:
    done = operation.checkpoint["done"] + 1
    return Step({"done": done}, done * 20, done=done == 5, results={"counted": done})


async def _fail(storage: Storage, operation: Operation) -> Step:
    raise RuntimeError("this operation cannot be worked")


_outages = {"left": 2}


async def _unavailable_twice(storage: Storage, operation: Operation) -> Step:
    if _outages["left"]:
        _outages["left"] -= 1
        raise ServiceResponseError("storage dropped the connection")
    return await _count_to_five(storage, operation)


register_handler(COUNTING, _count_to_five)
register_handler(FAILING, _fail)
register_handler(FLAKY, _unavailable_twice)


async def test_an_operation_runs_chunk_by_chunk_to_succeeded(own: Storage) -> None:
    created = await create_operation(own, COUNTING, ["things/1"], {"done": 0})
    assert await run_operations(own, pace=FAST) == 5
    finished = await get_operation(own, created.id)
    assert finished is not None
    assert (finished.status, finished.percent_complete, finished.checkpoint) == (OperationStatus.SUCCEEDED, 100,
                                                                                 {"done": 5})
    assert finished.results == {"counted": 5}


async def test_a_budget_stops_the_worker_and_the_next_resumes_from_the_checkpoint(own: Storage) -> None:
    created = await create_operation(own, COUNTING, [], {"done": 0})
    await run_operations(own, worker="a", pace=Pace(pause_seconds=0.3, budget_seconds=0.5))
    paused = await get_operation(own, created.id)
    assert paused is not None and paused.status is OperationStatus.RUNNING
    assert 0 < paused.checkpoint["done"] < 5 and paused.percent_complete == paused.checkpoint["done"] * 20
    await run_operations(own, worker="a", pace=FAST)
    finished = await get_operation(own, created.id)
    assert finished is not None and finished.checkpoint == {"done": 5}


async def test_an_operation_leased_by_another_worker_is_left_alone(own: Storage) -> None:
    created = await create_operation(own, COUNTING, [], {"done": 0})
    await save_operation(own, replace(created, lease_owner="other",
                                      lease_until=datetime.now(UTC) + timedelta(minutes=1)))
    assert await run_operations(own, worker="me", pace=FAST) == 0


async def test_an_expired_lease_is_taken_over(own: Storage) -> None:
    created = await create_operation(own, COUNTING, [], {"done": 3})
    await save_operation(own, replace(created, status=OperationStatus.RUNNING, lease_owner="dead",
                                      lease_until=datetime.now(UTC) - timedelta(seconds=1)))
    assert await run_operations(own, worker="me", pace=FAST) == 2


async def test_a_handler_that_raises_fails_the_operation(own: Storage) -> None:
    created = await create_operation(own, FAILING, [], {})
    await run_operations(own, pace=FAST)
    failed = await get_operation(own, created.id)
    assert failed is not None and failed.status is OperationStatus.FAILED


async def test_a_chunk_that_storage_fails_is_retried_from_its_checkpoint(own: Storage) -> None:
    created = await create_operation(own, FLAKY, [], {"done": 0})
    await run_operations(own, pace=FAST)
    finished = await get_operation(own, created.id)
    assert finished is not None and (finished.status, finished.checkpoint) == (OperationStatus.SUCCEEDED, {"done": 5})
    assert _outages["left"] == 0


async def test_an_unknown_or_malformed_id_is_none(own: Storage) -> None:
    assert await get_operation(own, "0" * 32) is None
    assert await get_operation(own, "not-a-guid") is None


async def test_the_runner_creates_no_table_while_no_operation_was_ever_started(own: Storage) -> None:
    """The timer runs every few seconds on every server: with nothing to do it must leave storage as it is."""
    assert await run_operations(own, pace=FAST) == 0
    names = [table.name async for table in own.table_service.list_tables()]
    assert table_name(own.settings, OPERATIONS_TABLE) not in names
