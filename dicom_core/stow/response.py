"""The STOW-RS response: the status rule and the dataset of PS3.18 §10.5.3 (DICOM JSON or XML), as a `ServiceResult`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from http import HTTPStatus

from dicom_core.model.dicom_json import JsonDataset
from dicom_core.model.dicom_xml import to_native_xml
from dicom_core.model.identifiers import InstanceIdentifiers
from dicom_core.wire.media_types import DICOM_JSON, DICOM_XML
from dicom_core.wire.service_result import ServiceResult
from dicom_core.wire.warnings import warning_header

# Reason codes (PS3.18 Table I.2-1 and Azure's DICOM service).
PROCESSING_FAILURE = 272
VALIDATION_FAILURE = 43264
INSTANCE_EXISTS = 45070
PENDING_INSTANCE = 45071
DATASET_DOES_NOT_MATCH_SOP_CLASS = 45063
VALIDATION_WARNING = 1

MULTI_VALUE_WARNING = "One or more indexed Dicom tag(s) have multiple values, only first value is indexed."


@dataclass
class StoreOutcome:
    """What happened to one part of a STOW request."""

    ids: InstanceIdentifiers | None = None
    sop_class_uid: str | None = None
    failure_reason: int | None = None
    warning_reason: int | None = None
    comments: list[str] = field(default_factory=list)
    multi_valued_index: bool = False
    wrong_media_type: bool = False
    storage_unavailable: bool = False  # failed (272) because storage could not be reached

    @property
    def succeeded(self) -> bool:
        """Tell whether the instance was stored."""
        return self.failure_reason is None


def store_response(
    outcomes: list[StoreOutcome], *, api_version: int, study_uid: str | None, base_url: str,
    media_type: str = DICOM_JSON,
) -> ServiceResult:
    """Apply Azure's status rule and answer with the response dataset (and a Warning for multi-valued indexes)."""
    stored = [o for o in outcomes if o.succeeded]
    failed = [o for o in outcomes if not o.succeeded]
    if not outcomes:
        return ServiceResult(HTTPStatus.NO_CONTENT)
    if stored and failed:
        status = HTTPStatus.ACCEPTED
    elif stored:
        warned = api_version >= 2 and any(o.warning_reason is not None for o in stored)
        status = HTTPStatus.ACCEPTED if warned else HTTPStatus.OK
    elif all(o.wrong_media_type for o in failed):
        status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    else:
        status = HTTPStatus.CONFLICT

    root = f"{base_url}/v{api_version}"
    body: JsonDataset = {}
    if study_uid is not None and stored:
        body["00081190"] = _value("UR", f"{root}/studies/{study_uid}")
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": [_failed_item(o) for o in failed]}
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": [_referenced_item(o, root, api_version) for o in stored]}
    headers: dict[str, str] = {}
    if any(o.multi_valued_index for o in stored):
        headers["Warning"] = warning_header(base_url, [MULTI_VALUE_WARNING])
    encoded = to_native_xml(body) if media_type == DICOM_XML else json.dumps(body).encode()
    return ServiceResult(status, headers, encoded, media_type)


def _value(vr: str, *values: object) -> dict[str, object]:
    return {"vr": vr, "Value": list(values)}


def _comments_sequence(comments: list[str]) -> dict[str, object]:
    items = [{"00000902": _value("LO", comment)} for comment in comments]
    return {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}


def _identify(item: JsonDataset, outcome: StoreOutcome) -> None:
    if outcome.sop_class_uid:
        item["00081150"] = _value("UI", outcome.sop_class_uid)
    if outcome.ids is not None:
        item["00081155"] = _value("UI", outcome.ids.instance)


def _referenced_item(outcome: StoreOutcome, root: str, api_version: int) -> JsonDataset:
    assert outcome.ids is not None
    ids = outcome.ids
    item: JsonDataset = {}
    _identify(item, outcome)
    item["00081190"] = _value("UR", f"{root}/studies/{ids.study}/series/{ids.series}/instances/{ids.instance}")
    if outcome.warning_reason is not None:
        item["00081196"] = _value("US", outcome.warning_reason)
    if api_version >= 2:
        item["00741048"] = _comments_sequence(outcome.comments)
    return dict(sorted(item.items()))


def _failed_item(outcome: StoreOutcome) -> JsonDataset:
    item: JsonDataset = {}
    _identify(item, outcome)
    item["00081197"] = _value("US", outcome.failure_reason)
    if outcome.comments:
        item["00741048"] = _comments_sequence(outcome.comments)
    return dict(sorted(item.items()))
