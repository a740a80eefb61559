"""Binary attributes in DICOM JSON: small ones inline, the others as BulkDataURI markers naming their bytes.

At store time each binary value larger than INLINE_MAX_BYTES becomes `{"vr": …, "BulkDataURI": "bulkdata:studies/
{s}/series/{se}/instances/{i}/bulkdata/{version}/{offset}-{length}"}`: offset and length of the value in the stored
file, under the version that file is stored as, and for a value with a media type of its own a suffix naming it
(`{offset}-{length}.pdf`, `MEDIA_TYPES`): an encapsulated document by its MIMETypeOfEncapsulatedDocument, and the
pixel data of a video transfer syntax, whose URI names the video stream instead: its one fragment, or the lengths of
the fragments it is split over, which lie one item header apart (`{offset}-{length}_{length}….mp4`). Serving turns
the marker into an absolute URL by replacing its prefix (`MARKER`), one `bytes.replace` per answer; nothing stored
carries a host name.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataelem import RawDataElement
from pydicom.uid import MPEG2MPHL, MPEG2MPHLF, MPEG2MPML, MPEG2MPMLF, MPEGTransferSyntaxes

from dicom_core.model.frames import UNDEFINED_LENGTH
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance

# A video stream split over more fragments than this is referenced as its items (the URI would grow too long).
MAX_PIECES = 64
ITEM_HEADER_BYTES = 8  # (FFFE,E000) and a 4-byte length before each fragment
# Binary values up to this size are written inline (InlineBinary); larger ones by reference (BulkDataURI).
INLINE_MAX_BYTES = 1024
MARKER_SCHEME = "bulkdata:"
# How a marker starts in stored JSON; `"` is escaped inside JSON strings, so this only matches the attribute itself.
MARKER = b'"BulkDataURI":"' + MARKER_SCHEME.encode()
# The one JSON VR of an ambiguous dictionary VR (implicit VR files): native pixel data and the like are OW there.
_JSON_VR = {"OB or OW": "OW", "US or OW": "OW", "US or SS or OW": "OW"}
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_BINARY_JSON = re.compile(rb'"vr":"(?:O[BDFLVW]|UN)"')
_RANGE = re.compile(rf"([0-9]{{1,15}})-([0-9]{{1,15}}(?:_[0-9]{{1,15}}){{0,{MAX_PIECES - 1}}})(?:\.([a-z0-9]{{1,8}}))?")
_PATH = re.compile(r"studies/([^/]+)/series/([^/]+)/instances/([^/]+)/bulkdata/([0-9A-Za-z]+)/([^/]+)")
OCTET_STREAM = "application/octet-stream"
# The media types a bulk data value is answered as besides application/octet-stream, by their URI suffix.
MEDIA_TYPES = {
    "pdf": "application/pdf", "xml": "text/xml", "stl": "model/stl", "obj": "model/obj", "mtl": "model/mtl",
    "mpeg2": "video/mpeg2", "mp4": "video/mp4",
}
_SUFFIXES = {media_type: suffix for suffix, media_type in MEDIA_TYPES.items()}
_MPEG2 = frozenset({MPEG2MPML, MPEG2MPMLF, MPEG2MPHL, MPEG2MPHLF})  # the others are MPEG-4 AVC/H.264 or HEVC


@dataclass(frozen=True)
class BulkLocation:
    """Where a BulkDataURI's bytes are in the stored file, and the media type they are answered as."""

    offset: int
    length: int
    media_type: str = OCTET_STREAM
    pieces: tuple[int, ...] = ()  # a stream split over fragments: their lengths, one item header apart

    def file_ranges(self, start: int, count: int) -> list[tuple[int, int]]:
        """The (offset, length) ranges of the stored file holding ``count`` bytes of the value from ``start``."""
        if not self.pieces:
            return [(self.offset + start, count)] if count else []
        ranges, position, end = [], self.offset, start + count
        for piece in self.pieces:
            low, high = max(start, 0), min(end, piece)
            if low < high:
                ranges.append((position + low, high - low))
            start, end, position = start - piece, end - piece, position + piece + ITEM_HEADER_BYTES
        return ranges


@dataclass(frozen=True)
class OwnMedia:
    """A value answered as a media type of its own: its bytes (within the value, or the value) and the URI suffix."""

    offset: int  # in the parsed file
    lengths: tuple[int, ...]  # one, or the fragments of a stream, each after the previous one's end and an item header
    suffix: str

    @property
    def end(self) -> int:
        """Where its last byte ends in the parsed file."""
        return self.offset + sum(self.lengths) + ITEM_HEADER_BYTES * (len(self.lengths) - 1)


@dataclass
class BulkReferences:
    """Collects the binary attributes of one parsed file while its DICOM JSON is made."""

    shift: int = 0  # bytes the stored file has in front of the parsed one
    offsets_valid: bool = True  # False for a deflated file: offsets in the inflated stream mean nothing stored
    lengths: dict[int, int] = field(default_factory=dict)  # value offset -> length of undefined-length values
    media: dict[int, OwnMedia] = field(default_factory=dict)  # value offset -> values with a media type of their own
    pending: list[dict[str, Any]] = field(default_factory=list)

    def element_json(self, raw: Any, vr: str, base: int = 0) -> dict[str, Any] | None:
        """The DICOM JSON of one binary element (raw, not read; offsets from ``base``), or None if unreferenceable."""
        vr = _JSON_VR.get(vr, vr)
        value, tell, length = getattr(raw, "value", None), _value_tell(raw), getattr(raw, "length", None)
        if tell is not None:
            tell += base
        if length == UNDEFINED_LENGTH:
            length = len(value) if isinstance(value, bytes) else self.lengths.get(tell) if tell is not None else None
        if isinstance(value, bytes) and len(value) <= INLINE_MAX_BYTES:
            return {"vr": vr, "InlineBinary": base64.b64encode(value).decode()} if value else {"vr": vr}
        if tell is None or length is None or not self.offsets_valid:
            return None
        own = self.media.get(tell)
        location = f"{tell + self.shift}-{length}" if own is None else \
            f"{own.offset + self.shift}-{'_'.join(map(str, own.lengths))}.{own.suffix}"
        entry = {"vr": vr, "BulkDataURI": location}
        self.pending.append(entry)
        return entry

    def locate(self, stored: StoredInstance) -> None:
        """Complete the markers with the instance and version whose stored file holds the bytes."""
        prefix = MARKER_SCHEME + instance_path(stored)
        for entry in self.pending:
            entry["BulkDataURI"] = prefix + entry["BulkDataURI"]
        self.pending = []


def document_suffix(mime_type: object) -> str | None:
    """The URI suffix of an encapsulated document's MIMETypeOfEncapsulatedDocument, None for one not answered so."""
    return _SUFFIXES.get(str(mime_type or "").strip().lower())


def video_suffix(transfer_syntax: str) -> str | None:
    """The URI suffix of pixel data in ``transfer_syntax`` (an MPEG-2, MPEG-4 AVC/H.264 or HEVC video), else None."""
    if transfer_syntax not in MPEGTransferSyntaxes:
        return None
    return "mpeg2" if transfer_syntax in _MPEG2 else "mp4"


def items_base(raw: Any, base: int) -> int:
    """Where the offsets inside a sequence's items count from: pydicom reads a defined-length sequence from its
    value's bytes (offsets relative to it), an undefined-length one from the file (offsets as its parent's)."""
    tell = _value_tell(raw)
    if isinstance(raw, RawDataElement):
        defined = raw.length != UNDEFINED_LENGTH
    else:  # converted already (the sequence depth check reads every sequence)
        defined = not getattr(raw, "is_undefined_length", True)
    return base + tell if defined and tell is not None else base


def _value_tell(raw: Any) -> int | None:
    tell = getattr(raw, "value_tell", None)  # a RawDataElement
    return tell if tell is not None else getattr(raw, "file_tell", None)  # or one already converted


def instance_path(stored: StoredInstance) -> str:
    """The path of an instance's bulk data, relative to the versioned root: `studies/…/bulkdata/{version}/`."""
    ids = stored.ids
    return f"studies/{ids.study}/series/{ids.series}/instances/{ids.instance}/bulkdata/{stored.version}/"


def parse_uri_path(path: str) -> tuple[StoredInstance, BulkLocation] | None:
    """The version and location a BulkDataURI's path below the root names (what `instance_path` makes), or None."""
    match = _PATH.fullmatch(path)
    location = parse_location(match[5]) if match else None
    if match is None or location is None:
        return None
    return StoredInstance(InstanceIdentifiers(match[1], match[2], match[3]), match[4]), location


def with_urls(document: bytes, root: str) -> bytes:
    """Stored JSON with its markers made absolute URLs under ``root`` (`https://host/v2`)."""
    return document.replace(MARKER, b'"BulkDataURI":"' + root.encode() + b"/")


def parse_location(text: str) -> BulkLocation | None:
    """What a URL's last segment `{offset}-{length}[_{length}…][.{suffix}]` names, or None when it is not one handed
    out (several lengths only for a video stream)."""
    match = _RANGE.fullmatch(text)
    if match is None or (match[3] is not None and match[3] not in MEDIA_TYPES):
        return None
    media_type = MEDIA_TYPES[match[3]] if match[3] else OCTET_STREAM
    lengths = tuple(int(length) for length in match[2].split("_"))
    if len(lengths) > 1 and not media_type.startswith("video/"):
        return None
    return BulkLocation(int(match[1]), sum(lengths), media_type, lengths if len(lengths) > 1 else ())


def without_bulk_data(records: bytes) -> bytes:
    """Newline-separated JSON records with every binary attribute left out, as Azure's service answers them."""
    if not _BINARY_JSON.search(records):
        return records
    return b"\n".join(_strip_record(line) if _BINARY_JSON.search(line) else line for line in records.split(b"\n"))


def _strip_record(record: bytes) -> bytes:
    return json.dumps(_strip(json.loads(record)), separators=(",", ":")).encode()


def _strip(value: Any) -> Any:
    if isinstance(value, list):
        return [_strip(item) for item in value]
    if not isinstance(value, dict):
        return value
    return {key: _strip(item) for key, item in value.items()
            if not (isinstance(item, dict) and item.get("vr") in BINARY_VRS)}


def has_binary_attributes(record: bytes) -> bool:
    """Whether stored DICOM JSON holds any binary attribute (inline or by reference), inside sequences too."""
    return _BINARY_JSON.search(record) is not None


def with_binary_of(record: dict[str, Any], parsed: dict[str, Any]) -> int:
    """Copy into ``record`` the binary attributes of ``parsed`` (the same instance's JSON made from its file) that
    it lacks, inside sequence items too where both have as many; return how many were copied."""
    copied = 0
    for key, value in parsed.items():
        if not isinstance(value, dict):
            continue
        if value.get("vr") in BINARY_VRS:
            if key not in record:
                record[key] = value
                copied += 1
            continue
        mine = record.get(key)
        if value.get("vr") == "SQ" and isinstance(mine, dict) and mine.get("vr") == "SQ":
            theirs, ours = value.get("Value") or [], mine.get("Value") or []
            if len(theirs) == len(ours):
                copied += sum(with_binary_of(item, other) for item, other in zip(ours, theirs, strict=True))
    if copied:  # keep the tag order every other record has
        ordered = sorted(record.items())
        record.clear()
        record.update(ordered)
    return copied
