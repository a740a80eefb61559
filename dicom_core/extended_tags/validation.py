"""Checking what an administrator asks for: the body of `POST /extendedquerytags`, tag paths, PATCH bodies.

Each rule and its 400 follows Azure's DICOM service: path and level required, no duplicates, no tag of the
default QIDO set, no tag in a sequence, a VR from the supported list that matches the dictionary, a private
tag with VR and privateCreator, a standard tag without privateCreator.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.tag import BaseTag

from dicom_core.extended_tags.registry import ExtendedTag, QueryStatus
from dicom_core.model.errors import BadRequestError
from dicom_core.model.levels import ALL_QUERYABLE, Level
from dicom_core.search_index.extended_values import SUPPORTED_VRS

_HEX_PATH = re.compile(r"[0-9A-Fa-f]{8}")
_KEYWORD = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_FIELDS = ("path", "vr", "privatecreator", "level")
MAX_PRIVATE_CREATOR_CHARS = 64


def parse_tag_path(text: str) -> BaseTag:
    """The tag of a path (8 hex digits or a keyword); 400 for a sequence path or anything unknown."""
    text = text.strip()
    if "." in text:
        raise BadRequestError(f"The extended query tag '{text}' is invalid as it cannot be a part of a sequence.")
    if _HEX_PATH.fullmatch(text):
        return BaseTag(int(text, 16))
    if _KEYWORD.fullmatch(text) and (number := tag_for_keyword(text)) is not None:
        return BaseTag(number)
    raise BadRequestError(f"The given tag path '{text}' is invalid.")


def tag_path(tag: BaseTag) -> str:
    """The registry's path of a tag: 8 upper-case hex digits."""
    return f"{int(tag):08X}"


def parse_add_body(body: bytes) -> list[ExtendedTag]:
    """The tags a POST body asks for (status Adding); 400 with Azure's reasons otherwise."""
    try:
        items = json.loads(body or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequestError(f"The request body is not valid. Details: {exc}") from exc
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise BadRequestError("The request body is not valid. Details: expected a JSON array of extended query tags.")
    if not items:
        raise BadRequestError("The request body is not valid. Details: the list of extended query tags is empty.")
    tags = [_tag_of(item) for item in items]
    seen: set[str] = set()
    for tag in tags:
        if tag.path in seen:
            raise BadRequestError(f"The extended query tag '{tag.path}' has been specified before.")
        seen.add(tag.path)
    return tags


def _tag_of(item: dict[str, Any]) -> ExtendedTag:
    fields = {str(key).lower(): value for key, value in item.items()}
    for name in ("path", "level"):
        if not isinstance(fields.get(name), str) or not fields[name].strip():
            raise BadRequestError(f"The extended query tag is invalid as it has missing or empty field '{name}'.")
    unknown = sorted(set(fields) - set(_FIELDS))
    if unknown:
        raise BadRequestError(f"The request body is not valid. Details: unknown field '{unknown[0]}'.")
    tag = parse_tag_path(fields["path"])
    path = tag_path(tag)
    level = _level(fields["level"], path)
    vr = fields.get("vr")
    creator = fields.get("privatecreator")
    if vr is not None and not isinstance(vr, str) or creator is not None and not isinstance(creator, str):
        raise BadRequestError(f"The extended query tag '{path}' is invalid: vr and privateCreator are strings.")
    vr = vr.strip().upper() if vr else None
    creator = creator.strip() if creator else None
    if tag in ALL_QUERYABLE:
        raise BadRequestError(f"The query tag '{path}' is already supported.")
    if tag.is_private:
        return ExtendedTag(path, _private_vr(path, vr, creator, tag), level, creator)
    if creator:
        raise BadRequestError(f"The private creator is not empty for standard tag '{path}'.")
    return ExtendedTag(path, _standard_vr(path, vr, tag), level)


def _level(text: str, path: str) -> Level:
    try:
        return Level(text.strip().lower())
    except ValueError:
        raise BadRequestError(f"The level '{text}' of extended query tag '{path}' is invalid: "
                              f"expected Study, Series or Instance.") from None


def _private_vr(path: str, vr: str | None, creator: str | None, tag: BaseTag) -> str:
    if tag.element <= 0x00FF:
        raise BadRequestError(f"The extended query tag '{path}' is invalid: private creator and group length "
                              f"elements cannot be indexed.")
    if not vr:
        raise BadRequestError(f"The vr for private tag '{path}' is missing.")
    if not creator:
        raise BadRequestError(f"The private creator for private tag '{path}' is missing.")
    if len(creator) > MAX_PRIVATE_CREATOR_CHARS or "\\" in creator:
        raise BadRequestError(f"The private creator '{creator}' for tag '{path}' is invalid.")
    if vr not in SUPPORTED_VRS:
        raise BadRequestError(f"The VR code '{vr}' for tag '{path}' is not supported.")
    return vr


def _standard_vr(path: str, vr: str | None, tag: BaseTag) -> str:
    try:
        known = dictionary_VR(tag)
    except KeyError:
        raise BadRequestError(f"The extended query tag '{path}' is not a known standard tag.") from None
    if known == "SQ" or keyword_for_tag(tag) == "":
        raise BadRequestError(f"The VR code '{known}' for tag '{path}' is not supported.")
    choices = [choice.strip() for choice in known.split(" or ")]
    if vr is None:
        if len(choices) > 1 or choices[0] not in SUPPORTED_VRS:
            raise BadRequestError(f"The VR code '{known}' for tag '{path}' is not supported.")
        return choices[0]
    if vr not in SUPPORTED_VRS:
        raise BadRequestError(f"The VR code '{vr}' for tag '{path}' is not supported.")
    if vr not in choices:
        raise BadRequestError(f"The VR code '{vr}' is incorrectly specified for '{path}'. The expected VR code for "
                              f"it is '{known}'. Retry this request either with the correct VR code or without "
                              f"specifying it.")
    return vr


def parse_query_status(body: bytes) -> QueryStatus:
    """The QueryStatus of a PATCH body ``{"queryStatus": "enabled" | "disabled"}`` (names and values any case)."""
    try:
        document = json.loads(body or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequestError(f"The request body is not valid. Details: {exc}") from exc
    if not isinstance(document, dict):
        raise BadRequestError("The request body is not valid. Details: expected a JSON object.")
    fields = {str(key).lower(): value for key, value in document.items()}
    value = fields.get("querystatus")
    if not isinstance(value, str):
        raise BadRequestError("The request body is not valid. Details: the field 'queryStatus' is required.")
    try:
        return QueryStatus(value.strip().lower())
    except ValueError:
        raise BadRequestError(f"The request body is not valid. Details: '{value}' is not a valid queryStatus: "
                              f"expected Enabled or Disabled.") from None
