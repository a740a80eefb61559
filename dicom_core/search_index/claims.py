"""Claims: the sort key of a study or series, fixed by its first store so racing stores agree on one.

A claim lives in the index table, in one partition per study (`{CLAIMS}|{study}`), before the study is committed;
a new study's store claims the study and its first series in one transaction (`claim_new_study`), so a study whose
claims it created is known not to be committed yet (`search_index/entries.py`).
"""

from __future__ import annotations

import asyncio
import functools
import time
from datetime import UTC, datetime, timedelta

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ServiceRequestError
from azure.data.tables import TableTransactionError, UpdateMode

from dicom_core.index.rows import STUDY_ROW, series_row_key
from dicom_core.search_index.keys import CLAIMS, inverted_time
from dicom_core.storage.clients import Storage
from dicom_core.storage.tables import get_entity_or_none

# A claim older than this whose study (or series) never got committed is taken over by the next first store.
CLAIM_TTL = timedelta(hours=1)
REUSE_SECONDS = 30.0
_REUSE_MAX = 20_000


async def study_sort_key(storage: Storage, study: str) -> str:
    """The sort key of a committed study: the one its first store claimed (a new claim when it has none)."""
    return await claim_sort_key(storage, study, STUDY_ROW, committed=True)


async def series_sort_key(storage: Storage, study: str, series: str) -> str:
    """The sort key of a committed series: the one its first store claimed (a new claim when it has none)."""
    return await claim_sort_key(storage, study, series_row_key(series), committed=True)


def claim_partition(study: str) -> str:
    """The index partition holding a study's claims (its own and its series')."""
    return f"{CLAIMS}|{study}"


# Claims of new studies this process made in the last REUSE_SECONDS, or is making: (event loop, account, table,
# study, series) -> (when, the claim). The parts of one request into one new study share one.
_claiming: dict[tuple[int, str, str, str, str], tuple[float, asyncio.Future[tuple[str, str] | None]]] = {}


def forget_claims(study: str, series: str | None = None) -> None:
    """Drop the claims this process made for a study (or one series of it): a delete removed them."""
    for made in [key for key in _claiming if key[3] == study and series in (None, key[4])]:
        del _claiming[made]


async def claim_new_study(storage: Storage, study: str, series: str, *, reuse: bool = True,
                           ) -> tuple[str, str] | None:
    """Claim the sort keys of a new study and its first series in one transaction; None if either is claimed.

    Callers of this process for one study and series share one attempt and, for REUSE_SECONDS, the claims it
    created (a delete that removed them meanwhile changed the study's generation: the commit relying on them
    fails on its marker and claims again).
    """
    table = storage.index
    key = (id(asyncio.get_running_loop()), table.url, table.table_name, study, series)
    now = time.monotonic()
    known = _claiming.get(key)
    if reuse and known is not None and now - known[0] < REUSE_SECONDS and not (
            known[1].done() and (known[1].cancelled() or known[1].exception() or known[1].result() is None)):
        return await asyncio.shield(known[1])
    if len(_claiming) >= _REUSE_MAX:
        for old in [k for k, (moment, _) in _claiming.items() if now - moment >= REUSE_SECONDS]:
            del _claiming[old]
    future = asyncio.ensure_future(_create_claims(storage, study, series))
    _claiming[key] = (now, future)
    return await asyncio.shield(future)


async def _create_claims(storage: Storage, study: str, series: str) -> tuple[str, str] | None:
    now = datetime.now(UTC)
    claims = [{"PartitionKey": claim_partition(study), "RowKey": row_key, "SortKey": inverted_time(now),
               "ClaimedAt": now} for row_key in (STUDY_ROW, series_row_key(series))]
    try:
        await storage.recreating_missing(functools.partial(
            storage.index.submit_transaction, [("create", claim) for claim in claims]))
    except (TableTransactionError, ServiceRequestError):
        return None  # claimed already (or the answer was lost): each claim is read or made on its own
    return str(claims[0]["SortKey"]), str(claims[1]["SortKey"])


async def claim_sort_key(storage: Storage, study: str, row_key: str, *, committed: bool, claimed: bool = False) -> str:
    """Return the sort key of a study (or series): the one the first store claimed, or a new claim.

    Every store that races to create a study agrees on one sort key this way; the study row's CreatedAt is
    only fixed later, by whichever commit creates the row. ``claimed``: the claim most likely exists (read first).
    """
    partition = claim_partition(study)
    likely_new = not committed and not claimed
    for _ in range(5):
        now = datetime.now(UTC)
        claim = {"PartitionKey": partition, "RowKey": row_key, "SortKey": inverted_time(now), "ClaimedAt": now}
        if likely_new:
            try:
                await storage.recreating_missing(functools.partial(storage.index.create_entity, claim))
                return str(claim["SortKey"])
            except (ResourceExistsError, ServiceRequestError):
                pass  # a create is a POST, which the SDK does not retry; reading tells whether it landed
        existing = await get_entity_or_none(storage.index, partition, row_key)
        if existing is None:
            likely_new = True
            continue
        if committed or now - existing["ClaimedAt"] < CLAIM_TTL:
            return str(existing["SortKey"])
        # An old claim whose study was never committed (its first store crashed): start afresh.
        try:
            await storage.index.update_entity(
                claim, mode=UpdateMode.REPLACE, etag=existing.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
            return str(claim["SortKey"])
        except ResourceModifiedError:
            likely_new = False
    raise TimeoutError(f"Could not claim a sort key for {study} {row_key}")
