"""QIDO-RS: search for studies, series and instances, newest first, reading a page's worth of Table entities.

The query string is parsed and validated (`qido_query`), the most selective index serves the candidates and
every candidate is verified against its row (`qido_candidates`), the page is cut from the front, and each
result is built from its rows (`qido_response`). What the search read is counted (`qido_reads`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from dicom_core.model.dicom_json import JsonDataset
from dicom_core.model.errors import NotAcceptableError
from dicom_core.wire.media_types import DICOM_JSON, accepts
from dicom_core.qido.candidates import Hit, hits
from dicom_core.qido.query import QidoResource, parse_query
from dicom_core.qido.reads import SearchReads
from dicom_core.qido.response import build_datasets
from dicom_core.storage.clients import Storage

LOGGER = logging.getLogger(__name__)
ENTITIES_READ_HEADER = "X-DicomWeb-Entities-Read"
# Every search may read this many entities per result asked for (offset + limit) on top of the scan budget:
# an index that serves the whole filter reads about two (the entry and its row).
ENTITIES_PER_RESULT = 3


@dataclass(frozen=True)
class SearchRequest:
    """The HTTP facts of a QIDO-RS request."""

    resource: QidoResource
    api_version: int
    query_string: str
    accept: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None


@dataclass(frozen=True)
class SearchResponse:
    """The results of a search and what it cost."""

    datasets: list[JsonDataset]
    entities_read: int
    blobs_read: int
    source: str
    warning: str | None = None

    @property
    def status(self) -> int:
        """200 with results, 204 without."""
        return 200 if self.datasets else 204

    def body(self) -> bytes:
        """The DICOM JSON array of the results."""
        return json.dumps(self.datasets, separators=(",", ":")).encode()

    def headers(self, *, with_stats: bool) -> dict[str, str]:
        """Response headers: the Warning of a search cut short, and the entities read if asked for."""
        headers = {"Warning": self.warning} if self.warning else {}
        if with_stats:
            headers[ENTITIES_READ_HEADER] = str(self.entities_read)
        return headers


async def search(storage: Storage, request: SearchRequest) -> SearchResponse:
    """Run one QIDO-RS search."""
    if not accepts(request.accept, DICOM_JSON):
        raise NotAcceptableError(f"The request headers are not acceptable: QIDO-RS answers with {DICOM_JSON}.")
    query = parse_query(
        request.resource, request.query_string, api_version=request.api_version,
        study_uid=request.study_uid, series_uid=request.series_uid,
    )
    wanted = query.offset + query.limit
    budget = storage.settings.query_scan_budget + ENTITIES_PER_RESULT * wanted
    reads = SearchReads(storage, budget=budget, wanted=wanted)
    source, stream = hits(reads, query)
    page: list[Hit] = []
    seen = 0
    try:
        async for hit in stream:
            seen += 1
            if seen > query.offset:
                page.append(hit)
            reads.wanted = wanted - seen
            if len(page) >= query.limit or reads.exhausted:
                break
    finally:
        await stream.aclose()
    warning = None
    if reads.exhausted and len(page) < query.limit:
        warning = (f'299 - "The search stopped after reading {reads.entities} index entities without an index for its '
                   'filters; results may be missing. Add a filter on an indexed attribute."')
    datasets = await build_datasets(reads, query, page)
    LOGGER.debug("QIDO %s via %s: %d results, %d entities and %d metadata blobs read",
                 request.resource.name, source, len(datasets), reads.entities, reads.blobs)
    return SearchResponse(datasets, reads.entities, reads.blobs, source, warning)
