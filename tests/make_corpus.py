"""Write tests/corpus/: bad STOW requests (malformed multipart bodies, broken Part-10 files) and bad query strings.

Run `python -m tests.make_corpus` from the repository root after changing it, and check in its outputs with it;
`tests/test_bad_input_corpus.py` replays them. Everything is deterministic (fixed UIDs), so re-running it
rewrites the same bytes.
"""

from __future__ import annotations

import io
import json
import struct
import sys
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tests.factories import make_dataset, to_bytes  # noqa: E402

CORPUS = Path(__file__).resolve().parent / "corpus"
BOUNDARY = "corpus-boundary"
MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
DICOM = "application/dicom"
# The instance the corpus server holds, so that frame and rendered queries reach their parameter checks.
STUDY = "1.2.826.0.1.3680043.8.498.1001"
SERIES = "1.2.826.0.1.3680043.8.498.1002"
SOP = "1.2.826.0.1.3680043.8.498.1003"
INSTANCE_PATH = f"/v2/studies/{STUDY}/series/{SERIES}/instances/{SOP}"
# Explicit VR Little Endian item and delimiter tags: (FFFE,E000) item, (FFFE,E00D) item end, (FFFE,E0DD) sequence end.
_ITEM = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
_ITEM_END = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
_SEQUENCE_END = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
_CONTENT_SEQUENCE = struct.pack("<HH", 0x0040, 0xA730) + b"SQ\x00\x00" + struct.pack("<I", 0xFFFFFFFF)


@dataclass(frozen=True)
class BadRequest:
    """One corpus request: what to send, and the 4xx it must get."""

    name: str
    path: str
    content_type: str
    body: str  # file under tests/corpus/
    status: int
    method: str = "POST"


def _uid(n: int) -> str:
    return f"1.2.826.0.1.3680043.8.498.{2000 + n}"


def _instance(n: int, **attributes: object) -> bytes:
    return to_bytes(make_dataset(study=_uid(n), series=_uid(100 + n), sop=_uid(200 + n), **attributes))


def _multipart(*parts: bytes, boundary: str = BOUNDARY, close: bool = True, part_type: str = DICOM) -> bytes:
    body = b"".join(f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode() + p + b"\r\n" for p in parts)
    return body + (f"--{boundary}--\r\n".encode() if close else b"")


def _element_explicit(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH", group, element) + vr + struct.pack("<H", len(value)) + value


def _without_pixels(n: int) -> bytes:
    ds = make_dataset(study=_uid(n), series=_uid(100 + n), sop=_uid(200 + n))
    del ds.PixelData
    return to_bytes(ds)


def _nested(n: int, depth: int) -> bytes:
    """A file whose ContentSequence nests ``depth`` levels (written by hand: pydicom's writer recurses)."""
    return _without_pixels(n) + (_CONTENT_SEQUENCE + _ITEM) * depth + (_ITEM_END + _SEQUENCE_END) * depth


def _meta_end(data: bytes) -> int:
    """Offset of the first dataset byte: after the preamble and the File Meta group (its length is element 1)."""
    (group_length,) = struct.unpack_from("<I", data, 132 + 8)
    return 132 + 12 + group_length


def _deflate_bomb(n: int, inflated_bytes: int) -> bytes:
    """A deflated file whose dataset inflates to over ``inflated_bytes``: zeros compress about 1000:1."""
    plain = to_bytes(make_dataset(study=_uid(n), series=_uid(100 + n), sop=_uid(200 + n),
                                  transfer_syntax=DeflatedExplicitVRLittleEndian, PixelData=None))
    start = _meta_end(plain)
    dataset = zlib.decompress(plain[start:], -zlib.MAX_WBITS)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = deflater.compress(dataset + struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\x00\x00"
                            + struct.pack("<I", inflated_bytes))
    zeros = b"\x00" * (1 << 20)
    for _ in range(inflated_bytes >> 20):
        out += deflater.compress(zeros)
    return plain[:start] + out + deflater.flush()


def _long_length(n: int) -> bytes:
    """A PatientComments (LT) element that claims 60,000 bytes where the file ends after 4."""
    return _without_pixels(n) + struct.pack("<HH", 0x0010, 0x4000) + b"LT" + struct.pack("<H", 60000) + b"abcd"


def _wrong_vr_uid(n: int) -> bytes:
    """StudyInstanceUID (0020,000D) written with VR US: two bytes of binary instead of a UID."""
    data = bytearray(_without_pixels(n))
    tag = struct.pack("<HH", 0x0020, 0x000D) + b"UI"
    at = data.index(tag)
    (length,) = struct.unpack_from("<H", data, at + 6)
    data[at : at + 8 + length] = _element_explicit(0x0020, 0x000D, b"US", b"\x01\x00")
    return bytes(data)


def _unknown_vr(n: int) -> bytes:
    """A file whose SeriesInstanceUID element carries the VR 'ZZ', which no dictionary has."""
    data = bytearray(_without_pixels(n))
    at = data.index(struct.pack("<HH", 0x0020, 0x000E) + b"UI")
    data[at + 4 : at + 6] = b"ZZ"
    return bytes(data)


def dicom_files() -> dict[str, bytes]:
    """Broken Part-10 files, each sent alone as application/dicom: every one fails with 43264 (409)."""
    whole = _instance(1)
    return {
        "truncated-in-pixel-data.dcm": whole[: len(whole) - 40],
        "truncated-in-file-meta.dcm": whole[:150],
        "length-beyond-end.dcm": _long_length(2),
        "uid-with-wrong-vr.dcm": _wrong_vr_uid(3),
        "unknown-vr.dcm": _unknown_vr(4),
        "nested-70-levels.dcm": _nested(5, 70),
        "nested-5000-levels.dcm": _nested(6, 5000),
        "deflate-bomb-200mib.dcm": _deflate_bomb(7, 200 * 1024 * 1024),
        "not-dicom.dcm": b"This is a text file, not DICOM.\n" * 8,
        "dicm-then-garbage.dcm": b"\x00" * 128 + b"DICM" + bytes(range(256)) * 4,
        "no-transfer-syntax.dcm": _no_transfer_syntax(),
        "missing-sop-instance-uid.dcm": _instance(8, SOPInstanceUID=None),
        "traversal-study-uid.dcm": _instance(9, StudyInstanceUID="../../../etc"),
        "odata-quote-in-series-uid.dcm": _instance(10, SeriesInstanceUID="1.2' or PartitionKey ne '"),
        "uid-over-64-characters.dcm": _instance(11, SOPInstanceUID="1." + "2" * 70),
        "empty.dcm": b"",
    }


def _no_transfer_syntax() -> bytes:
    ds = make_dataset(study=_uid(12), series=_uid(112), sop=_uid(212))
    del ds.file_meta.TransferSyntaxUID
    buffer = io.BytesIO()
    ds.save_as(buffer, implicit_vr=False, little_endian=True)
    return buffer.getvalue()


def multipart_requests() -> tuple[dict[str, bytes], list[BadRequest]]:
    """Malformed STOW bodies and headers: what to write, and the requests sending them."""
    good = _instance(20)
    long_boundary = "b" * 257
    files = {
        "no-close-delimiter.bin": _multipart(good, close=False),
        "no-opening-delimiter.bin": b"just some bytes without any delimiter\r\n",
        "long-boundary.bin": _multipart(good, boundary=long_boundary),
        "header-without-colon.bin": f"--{BOUNDARY}\r\nContent-Type application/dicom\r\n\r\n".encode() + good
        + f"\r\n--{BOUNDARY}--\r\n".encode(),
        "huge-part-header.bin": f"--{BOUNDARY}\r\nX-Padding: {'a' * 20000}\r\n\r\n".encode() + good
        + f"\r\n--{BOUNDARY}--\r\n".encode(),
        "header-block-never-ends.bin": f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n".encode(),
        "delimiter-padding-too-long.bin": f"--{BOUNDARY}".encode() + b" " * 2000 + b"\r\n\r\n" + good,
        "only-text-parts.bin": _multipart(b"hello", part_type="text/plain"),
        "broken-parts-only.bin": _multipart(b"not dicom", _instance(21)[:200]),
        "good.dcm": good,
        "empty.bin": b"",
    }
    requests = [
        BadRequest("multipart body without its close delimiter", "/v2/studies", MULTIPART,
                   "multipart/no-close-delimiter.bin", 400),
        BadRequest("multipart body without any delimiter", "/v2/studies", MULTIPART,
                   "multipart/no-opening-delimiter.bin", 400),
        BadRequest("boundary of 257 characters (over the 256 accepted; RFC 2046 allows 70)", "/v2/studies",
                   f'multipart/related; type="application/dicom"; boundary={long_boundary}',
                   "multipart/long-boundary.bin", 400),
        BadRequest("part header line without a colon", "/v2/studies", MULTIPART,
                   "multipart/header-without-colon.bin", 400),
        BadRequest("part header block over 16 KiB", "/v2/studies", MULTIPART, "multipart/huge-part-header.bin", 400),
        BadRequest("part header block that never ends", "/v2/studies", MULTIPART,
                   "multipart/header-block-never-ends.bin", 400),
        BadRequest("over 1 KiB of padding after a delimiter", "/v2/studies", MULTIPART,
                   "multipart/delimiter-padding-too-long.bin", 400),
        BadRequest("no part is DICOM", "/v2/studies", MULTIPART, "multipart/only-text-parts.bin", 415),
        BadRequest("every part is broken", "/v2/studies", MULTIPART, "multipart/broken-parts-only.bin", 409),
        BadRequest("empty multipart body", "/v2/studies", MULTIPART, "multipart/empty.bin", 400),
        BadRequest("multipart without boundary", "/v2/studies", 'multipart/related; type="application/dicom"',
                   "multipart/good.dcm", 415),
        BadRequest("multipart with start parameter", "/v2/studies", MULTIPART + "; start=x",
                   "multipart/good.dcm", 400),
        BadRequest("multipart/form-data", "/v2/studies", f"multipart/form-data; boundary={BOUNDARY}",
                   "multipart/good.dcm", 415),
        BadRequest("no Content-Type", "/v2/studies", "", "multipart/good.dcm", 415),
        BadRequest("study UID in the URL with a letter", "/v2/studies/1.2.3a", DICOM, "multipart/good.dcm", 400),
        BadRequest("study UID in the URL with a quote", "/v2/studies/1.2'3", DICOM, "multipart/good.dcm", 400),
        BadRequest("study UID in the URL of 65 characters", "/v2/studies/1." + "2" * 63, DICOM,
                   "multipart/good.dcm", 400),
        BadRequest("instance into another study than the URL's", f"/v2/studies/{STUDY}", DICOM,
                   "multipart/good.dcm", 409),
        BadRequest("unknown API version", "/v9/studies", DICOM, "multipart/good.dcm", 400),
    ]
    return files, requests


def bad_queries() -> list[tuple[int, str]]:
    """(status, path with query string) of GET requests that must be refused."""
    instance = INSTANCE_PATH
    return [
        (400, "/v2/studies?PatientName=%3Cscript%3E"),
        (400, "/v2/studies?PatientName=<script>"),
        (400, "/v2/studies?PatientName=a%3cb"),
        (400, f"/v2/studies/{STUDY}/metadata?x=%3C"),
        (400, f"{instance}/rendered?quality=50&x=<"),
        (400, "/health/check?<"),
        (400, "/v2/studies?limit=-1"),
        (400, "/v2/studies?emptyvaluematching=maybe"),
        (400, "/v2/studies?charset=ISO-8859-1"),
        (406, "/v2/studies?accept=application/dicom"),
        (400, "/v2/studies?limit=abc"),
        (400, "/v2/studies?limit=1&limit=2"),
        (400, "/v2/studies?offset=-1"),
        (400, "/v2/studies?offset=99999999999999999999999"),
        (400, "/v2/studies?fuzzymatching=maybe"),
        (400, "/v2/studies?StudyDate=2020"),
        (400, "/v2/studies?StudyDate=20201301"),
        (400, "/v2/studies?StudyDate=20200102-20200101"),
        (400, "/v2/studies?StudyDate=-"),
        (400, "/v2/studies?PatientName=a&PatientName=b"),
        (400, "/v2/studies?00100010=a&PatientName=b"),
        (400, '/v2/studies?PatientName=%22Doe&fuzzymatching=true'),
        (414, "/v2/studies?PatientName=" + "A" * 9000),
        (400, "/v2/studies/1.2.3a/series"),
        (400, "/v2/studies/1.2.3/series/1.2'3/instances"),
        (400, "/v2/studies/1." + "2" * 63 + "/metadata"),
        (400, f"/v2/studies/{STUDY}/series/{SERIES}/instances/1.2.3.-/metadata"),
        (400, f"/v2/studies/{STUDY}/series/{SERIES}/instances/..%2e/frames/1"),
        (404, "/v2/studies/..%2F..%2Fetc/metadata"),
        (400, f"/v2/studies/{STUDY}/series/{SERIES}/instances/%2e%2e/rendered"),
        (400, f"{instance}/frames/0"),
        (400, f"{instance}/frames/-1"),
        (400, f"{instance}/frames/abc"),
        (400, f"{instance}/frames/1,,2"),
        (404, f"{instance}/frames/99"),
        (400, f"{instance}/rendered?quality=0"),
        (400, f"{instance}/rendered?quality=101"),
        (400, f"{instance}/rendered?quality=abc"),
        (400, f"{instance}/frames/0/rendered"),
        (400, "/v0/studies"),
        (400, "/vx/studies"),
    ]


def main() -> None:
    """Write every corpus file and the two manifests."""
    for folder in ("dicom", "multipart"):
        (CORPUS / folder).mkdir(parents=True, exist_ok=True)
    requests: list[BadRequest] = []
    for name, data in dicom_files().items():
        (CORPUS / "dicom" / name).write_bytes(data)
        requests.append(BadRequest(f"broken Part-10 file {name}", "/v2/studies", DICOM, f"dicom/{name}", 409))
    files, multipart = multipart_requests()
    for name, data in files.items():
        (CORPUS / "multipart" / name).write_bytes(data)
    requests += multipart
    (CORPUS / "requests.json").write_text(json.dumps([asdict(r) for r in requests], indent=1) + "\n")
    (CORPUS / "valid-instance.dcm").write_bytes(
        to_bytes(make_dataset(study=STUDY, series=SERIES, sop=SOP, transfer_syntax=ExplicitVRLittleEndian)))
    lines = [f"{status} {query}" for status, query in bad_queries()]
    (CORPUS / "bad_queries.txt").write_text(
        "# status path?query: GET requests the server must refuse (written by tests/make_corpus.py)\n"
        + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
