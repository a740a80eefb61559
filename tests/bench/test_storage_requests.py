"""The storage-request counter against a real Azurite: positive counts, the same for the same stores, one PUT a file.

The counter reads Azurite's debug logs, so this module starts an Azurite of its own with them (and a server
without timers, as `python -m bench --only requests` does) instead of the session's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from bench.azurite_log import BatchOperation, batch_operations
from bench.storage_requests import SINGLE, Count, Counting, breakdown, count, counting_stack, ct_series, in_requests

INSTANCES = 2


@pytest.fixture(scope="module")
def counting() -> Iterator[Counting]:
    """Azurite with debug logs and a server storing into it, warmed up."""
    with counting_stack() as stack:
        yield stack


@pytest.fixture(scope="module")
def two_runs(counting: Counting) -> tuple[Count, Count]:
    """The same stores twice, each into a new series: two single-instance requests (one part in flight)."""
    return (count(counting, SINGLE, in_requests(ct_series(INSTANCES), 1)),
            count(counting, SINGLE, in_requests(ct_series(INSTANCES), 1)))


def test_every_phase_counts_requests(two_runs: tuple[Count, Count]) -> None:
    for result in two_runs:
        assert result.instances == INSTANCES
        assert len(result.stored) > 0
        assert len(result.deferred) > 0
        assert all(request.operation for request in (*result.stored, *result.deferred))


def _per_store(counts: Counter[str]) -> Counter[str]:
    """The counts without the extended-tag registry reads: a process refreshes its copy by time, not per store."""
    return Counter({kind: n for kind, n in counts.items() if "ExtendedTags" not in kind})


def test_identical_stores_count_identical_requests(two_runs: tuple[Count, Count]) -> None:
    first, second = two_runs
    assert _per_store(breakdown(first.stored)) == _per_store(breakdown(second.stored))
    assert _per_store(breakdown(first.deferred)) == _per_store(breakdown(second.deferred))


def test_the_instance_file_is_one_blob_put_per_instance(two_runs: tuple[Count, Count]) -> None:
    for result in two_runs:
        assert breakdown(result.stored)["blob PUT files"] == INSTANCES
        assert not any(request.kind.startswith("blob") for request in result.deferred)


def test_a_batch_counts_once_with_the_operations_it_carried(two_runs: tuple[Count, Count]) -> None:
    batches = [request for request in two_runs[0].stored
               if request.kind == "table $batch" and "Studies" in request.target]
    assert batches  # each commit is one transaction of the study partition
    assert all(len(request.batch) >= 3 for request in batches)  # instance row, outbox row, series, study, marker


def test_batch_operations_are_read_from_the_changeset() -> None:
    body = "\r\n".join([
        "--batch_1", "Content-Type: multipart/mixed; boundary=changeset_1", "",
        "--changeset_1", "Content-Type: application/http", "",
        "POST http://127.0.0.1:1/devstoreaccount1/tStudies HTTP/1.1", "Accept: application/json", "", "{}",
        "--changeset_1", "Content-Type: application/http", "",
        "PUT http://127.0.0.1:1/devstoreaccount1/tStudies(PartitionKey='a',RowKey='b') HTTP/1.1",
        "If-Match: W/\"1\"", "", "{}",
        "--changeset_1", "Content-Type: application/http", "",
        "PATCH http://127.0.0.1:1/devstoreaccount1/tStudies(PartitionKey='a',RowKey='c') HTTP/1.1", "", "{}",
        "--changeset_1--", "--batch_1--",
    ])
    assert batch_operations(body) == (BatchOperation("table insert", "tStudies"),
                                      BatchOperation("table update (replace, If-Match)", "tStudies"),
                                      BatchOperation("table upsert (merge)", "tStudies"))
