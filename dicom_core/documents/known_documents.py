"""Series metadata documents this process read or wrote lately, each with the series row state it reflects.

A document that reflects the series row with ETag E holds exactly the instances E stands for, and every
store, upsert or delete in the series gives the row a new ETag; so a kept copy is sent only when the row,
read for every request, still has the ETag it was kept under. One Table read then answers a series'
metadata, where reading the document itself takes a GET more. Writers keep what they wrote when it is
exact (`document_writes`), so the first read after a store in the writing process needs no GET.
"""

from __future__ import annotations

from dataclasses import dataclass

from dicom_core.documents.series_documents import series_state
from dicom_core.storage.blob_reads import Body
from dicom_core.storage.clients import Storage
from dicom_core.storage.lru_cache import LruCache

MAX_DOCUMENTS = 256
MAX_BYTES = 64 * 1024 * 1024
MAX_DOCUMENT_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class KnownDocument:
    """The bytes of a series document and the state they are exact for (`series_state` of a series row ETag)."""

    state: str
    data: bytes
    binary: bool | None = None  # whether it holds a binary attribute (None: not known)


_known: LruCache[tuple[str, str, str], KnownDocument] = LruCache(MAX_DOCUMENTS, MAX_BYTES)


def known_document(storage: Storage, study: str, series: str, series_etag: str) -> bytes | None:
    """The kept bytes of a series document if they reflect the series row with ``series_etag``, else None."""
    known = _known.get((storage.metadata.url, study, series))
    return known.data if known is not None and known.state == series_state(series_etag) else None


def known_without_binary(storage: Storage, study: str, series: str) -> bool:
    """Whether the kept copy of a series document is known to hold no binary attribute (then it is served as kept)."""
    known = _known.get((storage.metadata.url, study, series))
    return known is not None and known.binary is False


def has_known_document(storage: Storage, study: str, series: str) -> bool:
    """Whether a copy of the series document is kept, whatever row it reflects."""
    return _known.get((storage.metadata.url, study, series)) is not None


def keep_written(
    storage: Storage, study: str, series: str, state: str, data: bytes, binary: bool | None = None,
) -> None:
    """Keep the bytes a writer wrote, exact for ``state`` (a series row's `series_state`; the next read sends them)."""
    if len(data) <= MAX_DOCUMENT_BYTES:
        _known.put((storage.metadata.url, study, series), KnownDocument(state, data, binary), len(data))


def forget_document(storage: Storage, study: str, series: str) -> None:
    """Drop the kept copy of a series document (this process changed the document and does not hold the result)."""
    _known.discard((storage.metadata.url, study, series))


async def remembered(storage: Storage, study: str, series: str, series_etag: str, document: Body) -> Body:
    """Yield ``document`` (one reflecting the series row with ``series_etag``) and keep a copy once read whole."""
    chunks: list[bytes] | None = []
    size = 0
    async for chunk in document:
        if chunks is not None:
            size += len(chunk)
            if size <= MAX_DOCUMENT_BYTES:
                chunks.append(chunk)
            else:
                chunks = None  # too large to keep
        yield chunk
    if chunks is not None:
        _known.put((storage.metadata.url, study, series), KnownDocument(series_state(series_etag), b"".join(chunks)),
                   size)
