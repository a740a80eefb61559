"""DICOM UID checks applied before a UID reaches a blob name or a Table key."""

from __future__ import annotations

import re

from dicom_core.model.errors import BadRequestError

MAX_UID_LENGTH = 64
# Azure's DICOM service accepts digits and dots ending in a digit (PS3.5 §9.1 allows no more).
_UID_PATTERN = re.compile(r"[0-9.]*[0-9]")
_PADDING = " \x00"


def normalize_uid(value: str) -> str:
    """Strip the trailing space/NUL padding that DICOM allows on UI values."""
    return value.rstrip(_PADDING)


def is_valid_uid(value: str) -> bool:
    """Tell whether ``value`` (already normalized) is a UID this service accepts."""
    return 0 < len(value) <= MAX_UID_LENGTH and _UID_PATTERN.fullmatch(value) is not None


def require_valid_uid(value: str, name: str) -> str:
    """Return the normalized UID, or raise a 400 naming the route parameter."""
    uid = normalize_uid(value)
    if not is_valid_uid(uid):
        raise BadRequestError(f"The {name} '{value}' is not a valid DICOM UID: digits and dots, at most 64 characters.")
    return uid
