"""Parsing of Content-Type and Accept headers the way real DICOMweb clients write them."""

from __future__ import annotations

from dataclasses import dataclass, field

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"
JSON = "application/json"
MULTIPART_RELATED = "multipart/related"
ANY = "*/*"


@dataclass(frozen=True)
class MediaType:
    """A media type with lower-cased type/subtype and parameter names; values unquoted."""

    type: str
    params: dict[str, str] = field(default_factory=dict)
    quality: float = 1.0

    def matches(self, other: str) -> bool:
        """Tell whether this (possibly wildcard) range covers the concrete media type ``other``."""
        main, _, sub = self.type.partition("/")
        other_main, _, other_sub = other.partition("/")
        if main == "*":
            return True
        if main != other_main:
            return False
        if sub in ("*", other_sub):
            return True
        # Structured syntax suffix: application/json covers application/dicom+json.
        return "+" in other_sub and other_sub.rsplit("+", 1)[1] == sub


def parse_media_type(value: str) -> MediaType:
    """Parse one media type with parameters; quoted values may contain ';' and ','."""
    pieces = _split_outside_quotes(value, ";")
    media = pieces[0].strip().lower()
    params: dict[str, str] = {}
    quality = 1.0
    for piece in pieces[1:]:
        name, sep, raw = piece.partition("=")
        if not sep:
            continue
        name = name.strip().lower()
        param = _unquote(raw.strip())
        if name == "q":
            try:
                quality = float(param)
            except ValueError:
                quality = 0.0
            continue
        params[name] = param
    return MediaType(media, params, quality)


def parse_accept(value: str | None) -> list[MediaType]:
    """Parse an Accept header into media ranges, best quality first (stable for ties)."""
    if not value or not value.strip():
        return []
    ranges = [parse_media_type(item) for item in _split_outside_quotes(value, ",") if item.strip()]
    return sorted(ranges, key=lambda media: -media.quality)


def unwrap_multipart(media: MediaType) -> tuple[MediaType, bool]:
    """Return the payload media type of a range and whether it asked for multipart/related.

    ``multipart/related; type="X"; transfer-syntax=Y;q=0.5`` becomes ``X; transfer-syntax=Y;q=0.5``; a
    multipart range without ``type`` asks for any payload type.
    """
    if media.type != MULTIPART_RELATED:
        return media, False
    params = {name: value for name, value in media.params.items() if name != "type"}
    return MediaType(media.params.get("type", ANY).strip().lower(), params, media.quality), True


def accepts(accept: str | None, media_type: str) -> bool:
    """Tell whether an Accept header (absent means anything) admits ``media_type``."""
    ranges = parse_accept(accept)
    if not ranges:
        return True
    return any(media.quality > 0 and media.matches(media_type) for media in ranges)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    return value


def _split_outside_quotes(value: str, separator: str) -> list[str]:
    pieces: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    pieces.append("".join(current))
    return pieces
