"""Fuzzing the multipart reader: whatever the body, `iter_parts` yields parts or raises a 4xx DicomWebError."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicom_core.model.errors import DicomWebError
from dicom_core.wire.multipart import MAX_BOUNDARY_LENGTH, boundary_from_content_type, iter_parts

BOUNDARY = "fz"
# Pieces that multipart bodies are made of, so that generated bodies reach the parser's every state.
TOKENS = st.sampled_from([
    b"--fz", b"--fz--", b"\r\n", b"\r", b"\n", b"--", b"-", b" ", b"\t", b"Content-Type: application/dicom",
    b"Content-Type", b":", b"X: " + b"a" * 300, b"\r\n\r\n", b"fz", b"DICM", b"\x00",
])
BODIES = st.lists(st.one_of(TOKENS, st.binary(max_size=40)), max_size=40).map(b"".join)
FUZZ = settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


async def _chunks(data: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    position = 0
    for size in sizes:
        yield data[position : position + size]
        position += size
    yield data[position:]


def _read(data: bytes, sizes: list[int], max_part_bytes: int = 1 << 20) -> list[bytes]:
    async def collect() -> list[bytes]:
        bodies = []
        async for part in iter_parts(_chunks(data, sizes), BOUNDARY, max_part_bytes=max_part_bytes,
                                     spool_memory_bytes=64):
            with part:
                bodies.append(part.file.read())
        return bodies

    return asyncio.run(collect())


@FUZZ
@given(body=BODIES, sizes=st.lists(st.integers(min_value=1, max_value=50), max_size=10),
       max_part_bytes=st.integers(min_value=1, max_value=200))
def test_any_body_gives_parts_or_a_4xx(body: bytes, sizes: list[int], max_part_bytes: int) -> None:
    try:
        _read(body, sizes, max_part_bytes)
    except DicomWebError as exc:
        assert 400 <= exc.status < 500


@FUZZ
@given(boundary=st.text(max_size=300))
def test_any_boundary_parameter_is_accepted_or_a_400(boundary: str) -> None:
    try:
        accepted = boundary_from_content_type({"boundary": boundary})
    except DicomWebError as exc:
        assert exc.status == 400
    else:
        assert 1 <= len(accepted) <= MAX_BOUNDARY_LENGTH
