"""`dicomweb search`: QIDO-RS for studies, series or instances, printed as a table or as DICOM JSON."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from dicom_core.wire.media_types import DICOM_JSON

from .json_values import JsonDataset, display_value
from .transport import Endpoint, open_client, send_with_retries

LEVELS = ("studies", "series", "instances")
# The columns of the table, per level: attributes every QIDO-RS answer has by default.
COLUMNS: dict[str, tuple[str, ...]] = {
    "studies": ("StudyInstanceUID", "StudyDate", "PatientName", "PatientID", "AccessionNumber", "ModalitiesInStudy",
                "NumberOfStudyRelatedInstances"),
    "series": ("StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber", "NumberOfSeriesRelatedInstances"),
    "instances": ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "InstanceNumber"),
}
MAX_CELL = 64


class SearchError(Exception):
    """The service refused the search; the message says why."""


@dataclass(frozen=True)
class SearchQuery:
    """A QIDO-RS query: the level, an optional study/series scope, and its query parameters."""

    level: str
    study: str | None = None
    series: str | None = None
    filters: tuple[tuple[str, str], ...] = ()
    include_fields: tuple[str, ...] = ()
    limit: int | None = None
    offset: int = 0
    fuzzy: bool = False
    all_pages: bool = False
    page_size: int = 100

    def path(self) -> str:
        """Return the resource path of the query, e.g. /studies/{study}/series."""
        if self.series and not self.study:
            raise ValueError("--series needs --study")
        if self.level == "studies":
            if self.study or self.series:
                raise ValueError("a study search takes no --study or --series (filter with -f StudyInstanceUID=...)")
            return "/studies"
        if self.level == "series":
            if self.series:
                raise ValueError("a series search takes no --series (filter with -f SeriesInstanceUID=...)")
            return f"/studies/{self.study}/series" if self.study else "/series"
        if self.study and self.series:
            return f"/studies/{self.study}/series/{self.series}/instances"
        return f"/studies/{self.study}/instances" if self.study else "/instances"

    def params(self, offset: int, limit: int | None) -> list[tuple[str, str]]:
        """Return the query parameters for one page."""
        params = list(self.filters) + [("includefield", field) for field in self.include_fields]
        if self.fuzzy:
            params.append(("fuzzymatching", "true"))
        if limit is not None:
            params.append(("limit", str(limit)))
        if offset:
            params.append(("offset", str(offset)))
        return params


@dataclass
class SearchResult:
    """The matches, in the service's order."""

    rows: list[JsonDataset] = field(default_factory=list)


async def search(endpoint: Endpoint, query: SearchQuery) -> SearchResult:
    """Run the query (every page with ``all_pages``) and return the matches."""
    result = SearchResult()
    offset = query.offset
    async with open_client(endpoint) as client:
        while True:
            limit = query.page_size if query.all_pages else query.limit
            build = functools.partial(client.build_request, "GET", endpoint.url + query.path(),
                                      params=tuple(query.params(offset, limit)),
                                      headers={"Accept": DICOM_JSON})
            response = await send_with_retries(client, build, endpoint)
            if response.status_code == 204:
                return result
            if response.status_code != 200:
                raise SearchError(f"HTTP {response.status_code}: {' '.join(response.text.split())[:300]}")
            page = response.json()
            page = page if isinstance(page, list) else [page]
            result.rows.extend(page)
            if not query.all_pages or not page or (limit is not None and len(page) < limit):
                return result
            offset += len(page)


def format_table(rows: Sequence[JsonDataset], level: str, extra_columns: Sequence[str] = ()) -> str:
    """Return the rows as an aligned text table with the level's columns (and any included fields)."""
    columns = list(COLUMNS[level]) + [c for c in extra_columns if c not in COLUMNS[level] and c.isalpha()]
    cells = [[_cell(display_value(row, column)) for column in columns] for row in rows]
    widths = [max([len(column)] + [len(row[i]) for row in cells]) for i, column in enumerate(columns)]
    lines = ["  ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def format_json(rows: Sequence[JsonDataset]) -> str:
    """Return the rows as the DICOM JSON array the service answered."""
    return json.dumps(list(rows), indent=2)


def _cell(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"
