"""Which transfer syntaxes stored pixel data can be decoded from and which ones a retrieve can be answered in."""

from __future__ import annotations

from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import UID, AllTransferSyntaxes, ExplicitVRLittleEndian, JPEG2000Lossless

from dicom_core.model.errors import NotAcceptableError
from dicom_core.model.uids import normalize_uid

ORIGINAL = "*"  # the transfer-syntax parameter value meaning "as stored"
TRANSCODE_TARGETS: frozenset[UID] = frozenset({ExplicitVRLittleEndian, JPEG2000Lossless})

_POSSIBLE = ", ".join([f"'{ORIGINAL}' (as stored)"] + [f"{uid} ({uid.name})" for uid in sorted(TRANSCODE_TARGETS)])
_KNOWN_SYNTAXES = frozenset(AllTransferSyntaxes)


def normalized(syntax: str) -> str:
    """A transfer syntax UID as compared here: without padding or surrounding space."""
    return normalize_uid(syntax.strip())


def described(syntax: str) -> str:
    """A transfer syntax UID and its name, for messages."""
    return f"{syntax} ({UID(syntax).name})" if syntax in _KNOWN_SYNTAXES else f"'{syntax}' (unknown)"


def can_decode(transfer_syntax: str) -> bool:
    """Tell whether pixel data in ``transfer_syntax`` can be decoded here."""
    try:
        return bool(get_decoder(UID(normalized(transfer_syntax))).is_available)
    except (NotImplementedError, ValueError):
        return False


def needs_transcoding(stored: str, requested: str) -> bool:
    """Tell whether answering ``requested`` from a file stored as ``stored`` changes its bytes."""
    wanted = normalized(requested)
    return wanted != ORIGINAL and wanted != normalized(stored)


def check_transcodable(stored: str, requested: str) -> None:
    """Raise NotAcceptableError (406) unless a file stored as ``stored`` can be returned as ``requested``."""
    if not needs_transcoding(stored, requested):
        return
    wanted = normalized(requested)
    if wanted not in TRANSCODE_TARGETS:
        raise NotAcceptableError(
            f"The transfer syntax {described(wanted)} cannot be produced; possible are {_POSSIBLE}."
        )
    if not can_decode(stored):
        raise NotAcceptableError(
            f"The instance is stored as {described(normalized(stored))}, which cannot be transcoded; "
            f"retrieve it with transfer-syntax={ORIGINAL}."
        )
