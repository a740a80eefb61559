"""WADO-RS content negotiation: which media type, transfer syntax and framing answer an Accept header.

The tables follow Azure's DICOM service (PS3.18 §8.7): study, series and instance bodies are
`application/dicom` (Explicit VR Little Endian unless `transfer-syntax` says otherwise, `*` meaning as
stored), frames are `application/octet-stream` or `image/jp2`; beyond Azure, frames are also served in
their stored compressed syntax's own media type, and a bare `*/*` (curl's default) is answered as stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from dicom_core.model.errors import NotAcceptableError
from dicom_core.wado.rendering import JPEG, RENDERED_MEDIA_TYPES
from dicom_core.wado.transfer_syntaxes import ORIGINAL, TRANSCODE_TARGETS, can_decode, check_transcodable
from dicom_core.wado.video_streams import is_video_stream
from dicom_core.wire.media_types import ANY, DICOM, MediaType, parse_accept, parse_media_type, unwrap_multipart

OCTET_STREAM = "application/octet-stream"
JP2 = "image/jp2"
JLS = "image/jls"
DICOM_RLE = "image/dicom-rle"
JPHC = "image/jphc"
TRANSFER_SYNTAX = "transfer-syntax"
AS_STORED = ORIGINAL  # the transfer-syntax value `*`


class Resource(Enum):
    """What a WADO-RS request retrieves."""

    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"
    FRAMES = "frames"


class Framing(Enum):
    """How a media range without multipart/related around it is answered."""

    SINGLE = "single part"
    MULTIPART = "multipart"  # `*/*` is always answered as multipart, as Azure does
    REFUSED = "refused"


@dataclass(frozen=True)
class Representation:
    """The negotiated answer: payload media type, transfer syntax (a UID or `*`) and framing."""

    media_type: str
    transfer_syntax: str
    multipart: bool


@dataclass(frozen=True)
class _Rule:
    """One row of a negotiation table."""

    answered_as: str  # the payload media type of the answer
    default_syntax: str
    syntaxes: frozenset[str] | None  # transfer-syntax values allowed; None: any, checked per instance
    bare: Framing


_FRAME_FAMILIES: dict[str, frozenset[str]] = {
    JP2: frozenset({JPEG2000Lossless, JPEG2000}),
    JPEG: frozenset({JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1}),
    JLS: frozenset({JPEGLSLossless, JPEGLSNearLossless}),
    DICOM_RLE: frozenset({RLELossless}),
    JPHC: frozenset({HTJ2KLossless, HTJ2KLosslessRPCL, HTJ2K}),
}
# Frames of these syntaxes are Explicit VR Little Endian frames byte for byte: they need no transcoding.
FRAME_EQUIVALENT: dict[str, str] = {
    ImplicitVRLittleEndian: ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian: ExplicitVRLittleEndian,
}

_MULTI_INSTANCE = {
    DICOM: _Rule(DICOM, ExplicitVRLittleEndian, None, Framing.REFUSED),
    ANY: _Rule(DICOM, AS_STORED, None, Framing.MULTIPART),
}
_TABLES: dict[Resource, dict[str, _Rule]] = {
    Resource.STUDY: _MULTI_INSTANCE,
    Resource.SERIES: _MULTI_INSTANCE,
    Resource.INSTANCE: {
        DICOM: _Rule(DICOM, ExplicitVRLittleEndian, None, Framing.SINGLE),
        ANY: _Rule(DICOM, AS_STORED, None, Framing.MULTIPART),
    },
    Resource.FRAMES: {
        OCTET_STREAM: _Rule(OCTET_STREAM, ExplicitVRLittleEndian, frozenset({ExplicitVRLittleEndian, AS_STORED}),
                            Framing.SINGLE),
        JP2: _Rule(JP2, JPEG2000Lossless, _FRAME_FAMILIES[JP2] | {AS_STORED}, Framing.REFUSED),
        **{media: _Rule(media, AS_STORED, family | {AS_STORED}, Framing.REFUSED)
           for media, family in _FRAME_FAMILIES.items() if media != JP2},
        ANY: _Rule(OCTET_STREAM, AS_STORED, frozenset({ExplicitVRLittleEndian, AS_STORED}), Framing.MULTIPART),
    },
}


def negotiate(accept: str | None, resource: Resource, stored_syntaxes: frozenset[str]) -> Representation:
    """Choose the answer to ``accept`` for instances stored in ``stored_syntaxes``, or raise a 406."""
    # No Accept header means anything (RFC 9110), like `*/*`.
    ranges = parse_accept(accept) or [parse_media_type(ANY)]
    offers = [(media.quality, rep) for media in ranges
              if media.quality > 0 and (rep := _offer(media, resource)) is not None]
    feasible = [(quality, rep) for quality, rep in offers if _feasible(rep, resource, stored_syntaxes)]
    if feasible:
        quality, best = feasible[0]
        # Like Azure: an as-stored offer that is liked at least as much wins, sparing a transcode.
        return next((rep for q, rep in feasible[1:] if rep.transfer_syntax == AS_STORED and q >= quality), best)
    if offers:
        _explain_infeasible(offers[0][1], resource, stored_syntaxes)
    raise NotAcceptableError(f"The request headers are not acceptable. {describe(resource)}")


def negotiate_as_stored(accept: str | None, resource: Resource) -> Representation | None:
    """The answer to ``accept`` if it is as stored whatever the instances' syntaxes (known without rows), else None."""
    ranges = parse_accept(accept) or [parse_media_type(ANY)]
    offers = [rep for media in ranges if media.quality > 0 and (rep := _offer(media, resource)) is not None]
    if resource is Resource.FRAMES or not offers or offers[0].transfer_syntax != AS_STORED:
        return None
    # The preferred offer is feasible for any syntaxes, and so are the as-stored offers that could win instead.
    return negotiate(accept, resource, frozenset())


def negotiate_rendered(accept: str | None, offered: tuple[str, ...] = RENDERED_MEDIA_TYPES) -> str:
    """Choose one of the ``offered`` image types; no Accept, `*/*` and `image/*` get the first (JPEG)."""
    ranges = parse_accept(accept)
    if not ranges:
        return offered[0]
    for media in ranges:
        if media.quality > 0:
            for rendered in offered:
                if media.matches(rendered):
                    return rendered
    raise NotAcceptableError(
        f"The request headers are not acceptable: rendered images are {' or '.join(offered)}."
    )


def frame_syntax(stored: str) -> str:
    """The transfer syntax a stored file's raw frames are in (Implicit VR LE frames are Explicit VR LE)."""
    return FRAME_EQUIVALENT.get(stored, stored)


def frame_family(media_type: str) -> frozenset[str] | None:
    """The stored transfer syntaxes whose raw frames are of ``media_type`` (None: not a compressed type)."""
    return _FRAME_FAMILIES.get(media_type)


def describe(resource: Resource) -> str:
    """Say which Accept values a resource answers, for 406 messages."""
    offers = []
    for media, rule in _TABLES[resource].items():
        syntaxes = sorted(rule.syntaxes) if rule.syntaxes is not None else [AS_STORED, *sorted(TRANSCODE_TARGETS)]
        default = "as stored" if rule.default_syntax == AS_STORED else rule.default_syntax
        framing = f'{media} or ' if rule.bare is Framing.SINGLE else ""
        offers.append(
            f'{framing}multipart/related; type="{media}" (transfer-syntax {", ".join(syntaxes)}; default {default})'
        )
    return f"The {resource.value} resource answers " + "; ".join(offers) + "."


def _offer(media: MediaType, resource: Resource) -> Representation | None:
    payload, multipart = unwrap_multipart(media)
    rule = _TABLES[resource].get(payload.type)
    if rule is None or (not multipart and rule.bare is Framing.REFUSED):
        return None
    syntax = payload.params.get(TRANSFER_SYNTAX, rule.default_syntax).strip() or rule.default_syntax
    if rule.syntaxes is not None and syntax not in rule.syntaxes:
        return None
    return Representation(rule.answered_as, syntax, multipart or rule.bare is Framing.MULTIPART)


def _feasible(rep: Representation, resource: Resource, stored_syntaxes: frozenset[str]) -> bool:
    family = frame_family(rep.media_type) if resource is Resource.FRAMES else None
    if family is not None and not stored_syntaxes <= family:
        # Compressed frames are only passed through, except JPEG 2000 lossless, which is made on demand.
        return (rep.media_type == JP2 and rep.transfer_syntax == JPEG2000Lossless
                and all(map(can_decode, stored_syntaxes)))
    if rep.transfer_syntax == AS_STORED:
        return True
    if resource is Resource.FRAMES:
        if rep.transfer_syntax == ExplicitVRLittleEndian and stored_syntaxes \
                and all(map(is_video_stream, stored_syntaxes)):
            return True  # frames of a video are decoded (or a 406 says how to install the decoder)
        stored_syntaxes = frozenset(map(frame_syntax, stored_syntaxes))
    return all(stored == rep.transfer_syntax or (rep.transfer_syntax in TRANSCODE_TARGETS and can_decode(stored))
               for stored in stored_syntaxes)


def _explain_infeasible(rep: Representation, resource: Resource, stored_syntaxes: frozenset[str]) -> None:
    """Raise the 406 that says why the preferred offer cannot be produced."""
    family = frame_family(rep.media_type) if resource is Resource.FRAMES else None
    if family is not None and not stored_syntaxes <= family:
        raise NotAcceptableError(
            f"The frames are stored as {', '.join(sorted(stored_syntaxes))}, not as {rep.media_type} "
            f"({', '.join(sorted(family))}); ask for application/octet-stream or image/jp2."
        )
    for stored in sorted(stored_syntaxes):
        check_transcodable(frame_syntax(stored) if resource is Resource.FRAMES else stored, rep.transfer_syntax)
    raise NotAcceptableError(f"The request headers are not acceptable. {describe(resource)}")
