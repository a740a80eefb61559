"""The multipart answer's writes: the first one at once, the others joined to a useful size."""

from __future__ import annotations

from collections.abc import AsyncIterator

from dicom_core.wado.response import coalesced


async def _chunks(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def test_the_first_chunk_is_written_at_once_and_small_ones_after_it_joined() -> None:
    writes = [chunk async for chunk in coalesced(_chunks(b"head", b"a", b"b", b"c" * 10, b"d"), size=8)]
    assert writes == [b"head", b"abcccccccccc", b"d"]


async def test_a_large_chunk_is_written_as_it_is() -> None:
    large = b"x" * 100
    writes = [chunk async for chunk in coalesced(_chunks(b"head", large, b"y"), size=8)]
    assert writes == [b"head", large, b"y"]
