"""Tests of the streaming multipart/related reader and writer."""

from __future__ import annotations

import asyncio
import hashlib
import string
import tempfile
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicom_core.model.errors import BadRequestError, PayloadTooLargeError
from dicom_core.wire import multipart
from dicom_core.wire.multipart import (
    MAX_BOUNDARY_LENGTH,
    MAX_HEADER_BYTES,
    MAX_PADDING_BYTES,
    boundary_from_content_type,
    iter_parts,
    new_boundary,
    write_parts,
)

CRLF = b"\r\n"
ORTHANC_BOUNDARY = "107c723f-c432-44b7-a0aa-8ded9c2647df-107c723f-c432-44b7-a0aa-8ded9c2647df"
MIB = 1024 * 1024
LARGE_PART_BYTES = 20 * MIB
LARGE_CHUNK_BYTES = 64 * 1024
NO_LIMIT = 1 << 40

BCHARS_NOSPACE = string.digits + string.ascii_letters + "'()+_,-./:=?"
HEADER_NAME_CHARS = string.ascii_letters + string.digits + "-"

PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ParsedPart = tuple[dict[str, str], str | None, bytes]


# ---------------------------------------------------------------- helpers


async def aiter_chunks(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    """Yield ``chunks`` as an async stream, the way a request body arrives."""
    for chunk in chunks:
        yield chunk


class CountingSource:
    """An async chunk stream that records how many chunks the reader asked for."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self.taken = 0

    def __aiter__(self) -> CountingSource:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = next(self._chunks)
        except StopIteration:
            raise StopAsyncIteration from None
        self.taken += 1
        return chunk


def split(data: bytes, size: int) -> list[bytes]:
    """Cut ``data`` into chunks of ``size`` bytes."""
    return [data[i : i + size] for i in range(0, len(data), size)]


def split_at(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """Cut ``data`` at the given positions (any order, duplicates allowed)."""
    edges = [0, *sorted(cuts), len(data)]
    return [data[start:end] for start, end in zip(edges, edges[1:], strict=False)]


async def read_all(chunks: Iterable[bytes], boundary: str, **options: Any) -> list[ParsedPart]:
    """Collect every part first (as a concurrent consumer holds them), then read and close them."""
    options.setdefault("max_part_bytes", NO_LIMIT)
    parts = [part async for part in iter_parts(aiter_chunks(chunks), boundary, **options)]
    result = []
    for part in parts:
        with part:
            body = part.file.read()
            assert len(body) == part.size
            result.append((part.headers, part.content_type, body))
    return result


def without_delimiter(data: bytes, delimiter: bytes) -> bytes:
    """Remove every occurrence of ``delimiter`` from ``data`` by dropping its leading CR."""
    while delimiter in data:
        data = data.replace(delimiter, delimiter[1:])
    return data


def record_spooled_files(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Make the reader's spooled files observable; return the list they are appended to."""
    created: list[Any] = []
    real = tempfile.SpooledTemporaryFile

    def spooled(*args: Any, **kwargs: Any) -> Any:
        created.append(real(*args, **kwargs))
        return created[-1]

    monkeypatch.setattr(multipart.tempfile, "SpooledTemporaryFile", spooled)
    return created


async def write_all(parts: Sequence[tuple[dict[str, str], list[bytes]]], boundary: str) -> bytes:
    """Run the writer over in-memory parts and join its output."""

    async def source() -> AsyncIterator[tuple[dict[str, str], AsyncIterator[bytes]]]:
        for headers, chunks in parts:
            yield headers, aiter_chunks(chunks)

    return b"".join([chunk async for chunk in write_parts(source(), boundary)])


# ---------------------------------------------------------------- strategies

boundaries = st.builds(
    lambda inner, last: inner + last,
    st.text(BCHARS_NOSPACE + " ", max_size=69),
    st.sampled_from(BCHARS_NOSPACE),
)
header_names = st.text(HEADER_NAME_CHARS, min_size=1, max_size=20)
header_values = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=30).map(str.strip)
header_lists = st.lists(st.tuples(header_names, header_values), max_size=4, unique_by=lambda h: h[0].lower())
paddings = st.text(" \t", max_size=3).map(str.encode)


@st.composite
def bodies(draw: st.DrawFn, boundary: str) -> bytes:
    """Part bodies rich in CR, LF, dashes and the boundary text, but without the delimiter CRLF--boundary."""
    bound = boundary.encode()
    tricky = [b"\r", b"\n", CRLF, b"-", b"--", b"\r\n-", b"\r\n--", bound, b"--" + bound, b"--" + bound + b"--"]
    tricky += [b"\r\n--" + bound[:-1], CRLF + CRLF, b"\r\n--" + bound[1:]]
    pieces = draw(st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(tricky)), max_size=12))
    return without_delimiter(b"".join(pieces), b"\r\n--" + bound)


@st.composite
def chunkings(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """Random splits of ``data``, sometimes into 1-byte chunks."""
    if draw(st.booleans()):
        return split(data, 1)
    return split_at(data, draw(st.lists(st.integers(0, len(data)), max_size=40)))


# ---------------------------------------------------------------- reader properties


@PROPERTY_SETTINGS
@given(data=st.data(), boundary=boundaries)
def test_reader_returns_exactly_the_parts_of_a_hand_built_body(data: st.DataObject, boundary: str) -> None:
    bound = boundary.encode()
    parts = data.draw(st.lists(st.tuples(header_lists, bodies(boundary)), max_size=4))
    preamble = without_delimiter(data.draw(st.binary(max_size=30)), b"\r\n--" + bound)
    if preamble.startswith(b"--" + bound):
        preamble = b"x" + preamble
    raw = bytearray(preamble + CRLF if preamble else b"")
    expected = []
    for headers, body in parts:
        raw += b"--" + bound + data.draw(paddings) + CRLF
        for name, value in headers:
            raw += f"{name}:{data.draw(st.sampled_from(['', ' ', '  ']))}{value} ".encode() + CRLF
        raw += CRLF + body + CRLF
        expected_headers = {name.lower(): value for name, value in headers}
        expected.append((expected_headers, expected_headers.get("content-type"), body))
    raw += b"--" + bound + b"--" + data.draw(st.binary(max_size=20))

    assert asyncio.run(read_all(data.draw(chunkings(bytes(raw))), boundary)) == expected


@PROPERTY_SETTINGS
@given(data=st.data(), boundary=boundaries)
def test_writer_output_reads_back_as_the_same_parts(data: st.DataObject, boundary: str) -> None:
    parts = data.draw(st.lists(st.tuples(header_lists.map(dict), bodies(boundary)), max_size=4))
    written = asyncio.run(write_all([(headers, data.draw(chunkings(body))) for headers, body in parts], boundary))

    parsed = asyncio.run(read_all(data.draw(chunkings(written)), boundary))

    expected = [({k.lower(): v for k, v in headers.items()}, body) for headers, body in parts]
    assert [(headers, body) for headers, _, body in parsed] == expected


# ---------------------------------------------------------------- reader examples

CURL_BODY = (
    b"--------------------------d74496d66958873e\r\n"
    b'Content-Disposition: form-data; name="file"; filename="image.dcm"\r\n'
    b"Content-Type: application/dicom\r\n"
    b"\r\n"
    b"DICM-bytes-1\r\n"
    b"--------------------------d74496d66958873e\r\n"
    b'Content-Disposition: form-data; name="file"; filename="other.dcm"\r\n'
    b"Content-Type: application/dicom\r\n"
    b"\r\n"
    b"DICM-bytes-2\r\n"
    b"--------------------------d74496d66958873e--\r\n"
)
CURL_BOUNDARY = "------------------------d74496d66958873e"


@pytest.mark.asyncio
async def test_curl_form_parts_keep_content_disposition_and_content_type() -> None:
    parts = await read_all([CURL_BODY], CURL_BOUNDARY)

    assert [body for _, _, body in parts] == [b"DICM-bytes-1", b"DICM-bytes-2"]
    assert parts[0][0] == {
        "content-disposition": 'form-data; name="file"; filename="image.dcm"',
        "content-type": "application/dicom",
    }
    assert parts[0][1] == "application/dicom"


@pytest.mark.asyncio
async def test_part_without_content_type_has_content_type_none() -> None:
    body = (
        b"--b\r\nContent-Location: x\r\n\r\nfirst\r\n"
        b"--b\r\nContent-Type: application/dicom\r\n\r\nsecond\r\n--b--"
    )

    parts = await read_all([body], "b")

    assert [content_type for _, content_type, _ in parts] == [None, "application/dicom"]


@pytest.mark.asyncio
async def test_part_with_no_headers_at_all() -> None:
    assert await read_all([b"--b\r\n\r\npayload\r\n--b--\r\n"], "b") == [({}, None, b"payload")]


@pytest.mark.asyncio
async def test_header_names_are_lower_cased_values_stripped_and_repeats_joined() -> None:
    body = b"--b\r\nX-Thing:  one \r\nx-thing:two\r\nCONTENT-TYPE: application/dicom\r\n\r\n\r\n--b--"

    [(headers, content_type, _)] = await read_all([body], "b")

    assert headers == {"x-thing": "one, two", "content-type": "application/dicom"}
    assert content_type == "application/dicom"


@pytest.mark.asyncio
async def test_preamble_and_epilogue_are_ignored() -> None:
    body = b"This is a preamble.\r\n--b\r\n\r\ndata\r\n--b--\r\nThis is an epilogue.\r\n--b\r\n\r\nnot a part"

    assert await read_all([body], "b") == [({}, None, b"data")]


@pytest.mark.asyncio
async def test_epilogue_is_not_read() -> None:
    source = CountingSource([b"--b\r\n\r\ndata\r\n--b--", b"epilogue", b"more epilogue"])

    parts = [part async for part in iter_parts(source, "b", max_part_bytes=NO_LIMIT)]

    assert len(parts) == 1 and source.taken == 1
    parts[0].close()


@pytest.mark.asyncio
async def test_transport_padding_after_delimiters_is_allowed() -> None:
    body = b"--b \t \r\n\r\none\r\n--b\t\r\n\r\ntwo\r\n--b--  \r\n"

    assert [b for _, _, b in await read_all(split(body, 1), "b")] == [b"one", b"two"]


@pytest.mark.asyncio
async def test_padding_longer_than_the_limit_is_bad_request() -> None:
    body = b"--b" + b" " * (MAX_PADDING_BYTES + 1)

    with pytest.raises(BadRequestError, match="padding"):
        await read_all([body, b"\r\n\r\nx\r\n--b--"], "b")


@pytest.mark.asyncio
async def test_zero_parts_yields_nothing() -> None:
    assert await read_all([b"--b--"], "b") == []


@pytest.mark.asyncio
async def test_body_may_contain_the_boundary_text_not_preceded_by_crlf_dashes() -> None:
    body = b"--b\r\n\r\n--b\r\nb--b--\n--b\r--b\r\n-b\r\n--b--"

    assert await read_all(split(body, 1), "b") == [({}, None, b"--b\r\nb--b--\n--b\r--b\r\n-b")]


@pytest.mark.asyncio
@pytest.mark.parametrize("chunk_size", [1, NO_LIMIT], ids=["1-byte-chunks", "one-chunk"])
async def test_boundary_followed_by_other_text_is_body_content(chunk_size: int) -> None:
    body = b"--b\r\n\r\nx\r\n--bc\r\n--b-x\r\n--bc\r\n--b--"

    assert await read_all(split(body, chunk_size), "b") == [({}, None, b"x\r\n--bc\r\n--b-x\r\n--bc")]


MALFORMED_BODIES = {
    "missing-close-delimiter": ([b"--b\r\n\r\npart without end\r\n"], "close delimiter"),
    "ends-inside-a-delimiter-line": ([b"--b\r\n\r\ndata\r\n--b-"], "close delimiter"),
    "missing-opening-delimiter": ([b"just some bytes\r\n--other\r\n\r\nx\r\n--other--"], "no opening delimiter"),
    "empty-body": ([], "no opening delimiter"),
    "header-block-without-empty-line": ([b"--b\r\nContent-Type: application/dicom\r\n"], "empty line"),
    "header-line-without-colon": ([b"--b\r\nnot a header\r\n\r\nx\r\n--b--"], "Name: value"),
}


@pytest.mark.asyncio
@pytest.mark.parametrize(("chunks", "message"), MALFORMED_BODIES.values(), ids=MALFORMED_BODIES.keys())
async def test_malformed_body_is_bad_request_with_a_clear_message(chunks: list[bytes], message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        await read_all(chunks, "b")


@pytest.mark.asyncio
async def test_header_block_of_exactly_the_limit_is_accepted() -> None:
    line = b"X: " + b"a" * (MAX_HEADER_BYTES - len(b"X: "))

    [(headers, _, _)] = await read_all(split(b"--b\r\n" + line + b"\r\n\r\nx\r\n--b--", 1000), "b")

    assert len(headers["x"]) == MAX_HEADER_BYTES - len(b"X: ")


@pytest.mark.asyncio
async def test_header_block_over_16_kib_is_bad_request() -> None:
    line = b"X: " + b"a" * (MAX_HEADER_BYTES - len(b"X: ") + 1)

    with pytest.raises(BadRequestError, match=str(MAX_HEADER_BYTES)):
        await read_all(split(b"--b\r\n" + line + b"\r\n\r\nx\r\n--b--", 1000), "b")


@pytest.mark.asyncio
async def test_endless_header_block_is_rejected_after_the_limit() -> None:
    source = CountingSource([b"--b\r\nX: "] + [b"a" * 1024] * 1000)

    with pytest.raises(BadRequestError, match=str(MAX_HEADER_BYTES)):
        [part async for part in iter_parts(source, "b", max_part_bytes=NO_LIMIT)]

    assert source.taken <= MAX_HEADER_BYTES // 1024 + 2


@pytest.mark.asyncio
async def test_part_of_exactly_max_part_bytes_is_accepted() -> None:
    parts = await read_all([b"--b\r\n\r\n0123456789\r\n--b--"], "b", max_part_bytes=10)

    assert parts == [({}, None, b"0123456789")]


@pytest.mark.asyncio
async def test_part_over_max_part_bytes_is_payload_too_large_without_reading_further() -> None:
    source = CountingSource([b"--b\r\n\r\n"] + [b"12345678"] * 100 + [b"\r\n--b--"])

    with pytest.raises(PayloadTooLargeError, match="limit of 10 bytes"):
        [part async for part in iter_parts(source, "b", max_part_bytes=10)]

    # 16 bytes arrived, of which all but the held-back len("\r\n--b") - 1 are known to be body.
    assert source.taken == 3


@pytest.mark.asyncio
async def test_part_over_max_part_bytes_in_one_big_chunk_is_not_spooled(monkeypatch: pytest.MonkeyPatch) -> None:
    files = record_spooled_files(monkeypatch)

    with pytest.raises(PayloadTooLargeError):
        await read_all([b"--b\r\n\r\n" + b"x" * MIB + b"\r\n--b--"], "b", max_part_bytes=10)

    assert len(files) == 1 and files[0].closed


@pytest.mark.asyncio
async def test_large_part_spools_to_disk() -> None:
    boundary = new_boundary()
    payload = bytes(range(256)) * (LARGE_PART_BYTES // 256)
    head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    body = head + payload + f"\r\n--{boundary}--".encode()

    parts = [
        part
        async for part in iter_parts(
            aiter_chunks(split(body, LARGE_CHUNK_BYTES)), boundary, max_part_bytes=NO_LIMIT, spool_memory_bytes=MIB
        )
    ]

    with parts[0] as part:
        assert part.file._rolled  # type: ignore[attr-defined]
        assert part.size == LARGE_PART_BYTES
        assert hashlib.sha256(part.file.read()).digest() == hashlib.sha256(payload).digest()


@pytest.mark.asyncio
async def test_small_part_stays_in_memory() -> None:
    parts = [part async for part in iter_parts(aiter_chunks([b"--b\r\n\r\nx\r\n--b--"]), "b", max_part_bytes=10)]

    with parts[0] as part:
        assert not part.file._rolled  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_part_is_yielded_as_soon_as_its_closing_delimiter_arrives() -> None:
    source = CountingSource([b"--b\r\n\r\nfirst\r\n--b\r\n", b"\r\nsecond\r\n--b--"])
    parts = iter_parts(source, "b", max_part_bytes=NO_LIMIT)

    first = await anext(parts)

    assert source.taken == 1 and first.file.read() == b"first"
    first.close()
    await parts.aclose()


@pytest.mark.asyncio
async def test_yielded_parts_stay_readable_while_iteration_continues() -> None:
    parts = iter_parts(aiter_chunks([b"--b\r\n\r\none\r\n--b\r\n\r\ntwo\r\n--b--"]), "b", max_part_bytes=NO_LIMIT)

    held = [await anext(parts), await anext(parts)]
    with pytest.raises(StopAsyncIteration):
        await anext(parts)

    assert [part.file.read() for part in held] == [b"one", b"two"]
    assert held[0].file is not held[1].file
    for part in held:
        part.close()


@pytest.mark.asyncio
async def test_closing_the_iterator_early_closes_the_parts_it_still_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    files = record_spooled_files(monkeypatch)
    body = b"--b\r\n\r\none\r\n--b\r\n\r\ntwo\r\n--b\r\n\r\nthree\r\n--b\r\n\r\nfour, in progress"
    parts = iter_parts(aiter_chunks([body]), "b", max_part_bytes=NO_LIMIT)

    first = await anext(parts)
    await parts.aclose()

    assert len(files) == 4
    assert [file.closed for file in files] == [False, True, True, True]
    first.close()


@pytest.mark.asyncio
async def test_part_context_manager_closes_its_file() -> None:
    [part] = [part async for part in iter_parts(aiter_chunks([b"--b\r\n\r\nx\r\n--b--"]), "b", max_part_bytes=10)]

    with part as entered:
        assert entered is part

    assert part.file.closed


# ---------------------------------------------------------------- boundary


@pytest.mark.parametrize(
    "boundary",
    ["b", "a" * 70, "with space inside", BCHARS_NOSPACE[-20:], "----WebKitFormBoundary7MA4",
     ORTHANC_BOUNDARY, "a" * MAX_BOUNDARY_LENGTH],
)
def test_valid_boundary_is_returned(boundary: str) -> None:
    assert boundary_from_content_type({"boundary": boundary, "type": "application/dicom"}) == boundary


@pytest.mark.parametrize(
    "boundary",
    ["", "a" * (MAX_BOUNDARY_LENGTH + 1), "semi;colon", 'quo"te', "trailing space ", "caf\u00e9", "line\r\nbreak",
     "star*"],
    ids=["empty", "over-the-bound", "semicolon", "quote", "trailing-space", "non-ascii", "crlf", "star"],
)
def test_invalid_boundary_is_bad_request(boundary: str) -> None:
    with pytest.raises(BadRequestError, match="boundary"):
        boundary_from_content_type({"boundary": boundary})


def test_boundary_over_rfc_2046_limit_as_orthanc_sends_it_is_accepted() -> None:
    # Orthanc's DICOMweb plugin (1.7 and later) joins two UUIDs: 73 characters, over RFC 2046's 70.
    assert len(ORTHANC_BOUNDARY) == 73
    assert boundary_from_content_type({"boundary": ORTHANC_BOUNDARY}) == ORTHANC_BOUNDARY


def test_missing_boundary_is_bad_request() -> None:
    with pytest.raises(BadRequestError, match="no boundary"):
        boundary_from_content_type({"type": "application/dicom"})


def test_new_boundary_is_valid_and_random() -> None:
    boundary = new_boundary()

    assert boundary_from_content_type({"boundary": boundary}) == boundary
    assert new_boundary() != boundary


# ---------------------------------------------------------------- writer


@pytest.mark.asyncio
async def test_writer_emits_delimiters_headers_bodies_and_close_delimiter() -> None:
    parts = [({"Content-Type": "application/dicom", "Content-Location": "/x"}, [b"ab", b"cd"]), ({}, [b"e"])]

    assert await write_all(parts, "b") == (
        b"--b\r\nContent-Type: application/dicom\r\nContent-Location: /x\r\n\r\nabcd\r\n"
        b"--b\r\n\r\ne\r\n"
        b"--b--\r\n"
    )


@pytest.mark.asyncio
async def test_writer_with_zero_parts_emits_only_the_close_delimiter() -> None:
    assert await write_all([], "b") == b"--b--\r\n"


@pytest.mark.asyncio
async def test_writer_passes_body_chunks_through_without_copying() -> None:
    big = b"x" * MIB

    async def source() -> AsyncIterator[tuple[dict[str, str], AsyncIterator[bytes]]]:
        yield {}, aiter_chunks([big, big])

    emitted = [chunk async for chunk in write_parts(source(), "b")]

    assert sum(chunk is big for chunk in emitted) == 2
    assert all(len(chunk) < 100 for chunk in emitted if chunk is not big)


@pytest.mark.asyncio
async def test_writer_rejects_a_header_with_a_line_break() -> None:
    with pytest.raises(ValueError, match="CR or LF"):
        await write_all([({"Content-Type": "a/b\r\nX-Injected: 1"}, [b""])], "b")

