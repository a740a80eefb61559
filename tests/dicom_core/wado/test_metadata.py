"""Metadata answers: separator records to a JSON array, gzip, and ETag matching."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator

import pytest

from dicom_core.wado.metadata import gzipped, json_array, matches_entity_tag


async def _chunks(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _join(body: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in body])


@pytest.mark.parametrize("chunks", [
    (b'{"a":1}\n{"b":"x\\ny"}\n',),
    (b'{"a":1}', b"\n", b'{"b":"x\\ny"}\n'),
    (b'{"a":1}\n{"b', b'":"x\\ny"}', b"\n", b""),
    (b"{", b'"a":1}\n{"b":"x\\ny"}', b"\n"),
])
async def test_records_become_one_array_however_they_are_chunked(chunks: tuple[bytes, ...]) -> None:
    assert json.loads(await _join(json_array(_chunks(*chunks)))) == [{"a": 1}, {"b": "x\ny"}]


async def test_no_records_is_an_empty_array() -> None:
    assert await _join(json_array(_chunks())) == b"[]"


async def test_gzipped_stream_decompresses_to_the_input() -> None:
    data = [b"x" * 1000, b"y" * 300_000, b"z"]
    assert gzip.decompress(await _join(gzipped(_chunks(*data)))) == b"".join(data)


@pytest.mark.parametrize("header", ['"abc"', 'W/"abc"', '"abc-gzip"', 'abc', '"x", "abc"', "*"])
def test_if_none_match_matches(header: str) -> None:
    assert matches_entity_tag(header, "abc")


@pytest.mark.parametrize("header", [None, "", '"abd"', '"abc-br"'])
def test_if_none_match_does_not_match(header: str | None) -> None:
    assert not matches_entity_tag(header, "abc")
