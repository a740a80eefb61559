"""QIDO-RS: search for studies, series and instances, newest first, reading a page's worth of Table entities.

The query string is parsed and validated (`qido.query`), the most selective index serves the candidates and
every candidate is verified against its row (`qido.candidates`), the page is cut from the front, and each
result is built from its rows (`qido.datasets`). What the search read is counted (`qido.reads`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from http import HTTPStatus

from dicom_core.model.dicom_json import JsonDataset
from dicom_core.model.errors import NotAcceptableError
from dicom_core.qido.candidates import Hit, hits
from dicom_core.qido.datasets import build_datasets
from dicom_core.qido.extended_filters import ERRONEOUS_ATTRIBUTES_HEADER, narrow_query, take_extended_filters
from dicom_core.qido.extended_source import extended_hits
from dicom_core.qido.query import QidoResource, parse_query
from dicom_core.qido.reads import SearchReads
from dicom_core.storage.clients import Storage
from dicom_core.wire.media_types import DICOM_JSON, accepts
from dicom_core.wire.service_result import ServiceResult
from dicom_core.wire.warnings import warning_header

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
    base_url: str = ""  # the service's URL, which RetrieveURL and the Warning header name


@dataclass(frozen=True)
class SearchResults:
    """The results of a search, what it read (which index served it) and the Warning of a search cut short."""

    datasets: list[JsonDataset]
    entities_read: int
    blobs_read: int
    source: str
    warning: str | None = None
    erroneous: tuple[str, ...] = ()  # extended tags filtered on that have indexing errors
    study_ranges: int = 0  # range queries into study partitions
    index_queries: int = 0  # pages of index ranges read


async def search(storage: Storage, request: SearchRequest) -> ServiceResult:
    """Answer one QIDO-RS search: the DICOM JSON array of its results, 204 without; the entities read if configured."""
    results = await search_datasets(storage, request)
    headers = {"Warning": results.warning} if results.warning else {}
    if results.erroneous:
        headers[ERRONEOUS_ATTRIBUTES_HEADER] = ",".join(results.erroneous)
    if storage.settings.query_stats:
        headers[ENTITIES_READ_HEADER] = str(results.entities_read)
    if not results.datasets:
        return ServiceResult(HTTPStatus.NO_CONTENT, headers)
    return ServiceResult(HTTPStatus.OK, headers, json.dumps(results.datasets, separators=(",", ":")).encode(),
                         DICOM_JSON)


async def search_datasets(storage: Storage, request: SearchRequest) -> SearchResults:
    """Run one QIDO-RS search: its results and what it read."""
    strict = storage.settings.query_strict_parameters
    extended = await take_extended_filters(storage, request.resource, request.query_string, strict=strict)
    query = parse_query(
        request.resource, extended.query_string, api_version=request.api_version,
        study_uid=request.study_uid, series_uid=request.series_uid, strict=strict,
    )
    # The accept query parameter takes the place of the Accept header (PS3.18 §8.3.3.1).
    if not accepts(query.accept if query.accept is not None else request.accept, DICOM_JSON):
        raise NotAcceptableError(f"The request headers are not acceptable: QIDO-RS answers with {DICOM_JSON}.")
    narrowed = await narrow_query(storage, query, extended)
    query = narrowed.query
    wanted = query.offset + query.limit
    budget = storage.settings.query_scan_budget + ENTITIES_PER_RESULT * wanted
    reads = SearchReads(storage, budget=budget, wanted=wanted)
    source, stream = (("extended tag", extended_hits(reads, query, narrowed.driving)) if narrowed.driving
                      else hits(reads, query))
    page: list[Hit] = []
    seen = 0
    try:
        async for hit in stream:
            seen += 1
            if seen > query.offset and len(page) < query.limit:  # limit=0 asks for no results
                page.append(hit)
            reads.wanted = wanted - seen
            if len(page) >= query.limit or reads.exhausted:
                break
    finally:
        await stream.aclose()
    warnings = list(query.warnings)
    if reads.exhausted and len(page) < query.limit:
        warnings.append(f"The search stopped after reading {reads.entities} index entities without an index for its "
                        "filters; results may be missing. Add a filter on an indexed attribute.")
    warning = warning_header(request.base_url, warnings) if warnings else None
    datasets = await build_datasets(reads, query, page, f"{request.base_url}/v{request.api_version}")
    LOGGER.debug("QIDO %s via %s: %d results, %d entities (%d index pages, %d study partition ranges) and %d metadata "
                 "blobs read", request.resource.name, source, len(datasets), reads.entities, reads.index_queries,
                 reads.study_ranges, reads.blobs)
    return SearchResults(datasets, reads.entities, reads.blobs, source, warning, narrowed.erroneous,
                         reads.study_ranges, reads.index_queries)
