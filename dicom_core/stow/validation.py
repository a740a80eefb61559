"""STOW-RS per-instance validation, in the order and with the outcomes of Azure's DICOM service."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.uid import ImplicitVRLittleEndian

from dicom_core.model.dicom_json import JsonDataset, format_tag, metadata_json
from dicom_core.model.identifiers import InstanceIdentifiers
from dicom_core.model.levels import ALL_QUERYABLE
from dicom_core.model.part10 import ParsedFile
from dicom_core.model.tags import PATIENT_ID, SERIES_INSTANCE_UID, SOP_CLASS_UID, SOP_INSTANCE_UID, STUDY_INSTANCE_UID
from dicom_core.model.uids import is_valid_uid, normalize_uid

REQUIRED_UIDS = (SOP_CLASS_UID, STUDY_INSTANCE_UID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID)
# v2 fails an instance only on these ("core") attributes; other invalid values become warnings.
CORE_TAGS = frozenset({*REQUIRED_UIDS, PATIENT_ID})

ERROR_PREFIX = "DICOM100"


@dataclass
class ValidatedInstance:
    """The outcome of validating one parsed instance."""

    ids: InstanceIdentifiers | None
    sop_class_uid: str | None
    metadata: JsonDataset = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    implicit_vr: bool = False
    multi_valued_index: bool = False

    @property
    def failed(self) -> bool:
        """Tell whether the instance must not be stored."""
        return bool(self.errors)


def validate_instance(
    parsed: ParsedFile, *, api_version: int, url_study: str | None, extended: frozenset[BaseTag] = frozenset(),
) -> ValidatedInstance:
    """Validate a parsed instance for STOW under API ``api_version`` (1 strict, 2 lenient).

    ``extended``: the attributes of extended query tags, indexed like the default QIDO set.
    """
    dataset = parsed.dataset
    uids = {tag: _uid(dataset, tag) for tag in REQUIRED_UIDS}
    # An explicit VR file may give a UID another VR (US 1 would read as the UID "1"): such a UID is invalid.
    wrong_vr = {tag for tag in REQUIRED_UIDS if uids[tag] and dataset[tag].VR != "UI"}
    ids = None
    if all(uids[tag] and is_valid_uid(uids[tag]) and tag not in wrong_vr for tag in REQUIRED_UIDS):
        ids = InstanceIdentifiers(uids[STUDY_INSTANCE_UID], uids[SERIES_INSTANCE_UID], uids[SOP_INSTANCE_UID])
    result = ValidatedInstance(ids=ids, sop_class_uid=uids[SOP_CLASS_UID] or None)
    result.implicit_vr = parsed.transfer_syntax == ImplicitVRLittleEndian

    for tag in REQUIRED_UIDS:
        if not uids[tag]:
            result.errors.append(_comment(tag, f"The required tag '{format_tag(tag)}' is missing."))
        elif not is_valid_uid(uids[tag]) or tag in wrong_vr:
            result.errors.append(_comment(
                tag, f"Dicom element '{_keyword(dataset, tag)}' failed validation for VR 'UI': DICOM Identifier is "
                "invalid. Value length should not exceed 64 characters and contain only digits and dots."))
    if result.errors:
        return result
    if url_study is not None and uids[STUDY_INSTANCE_UID] != url_study:
        result.errors.append("The StudyInstanceUid in the payload does not match the specified StudyInstanceUid.")
        return result
    _check_patient_id(dataset, api_version, result)

    def on_invalid(tag: BaseTag, vr: str, reason: str) -> None:
        comment = _comment(tag, reason)
        if tag in CORE_TAGS or (api_version == 1 and (tag in ALL_QUERYABLE or tag in extended)):
            result.errors.append(comment)
        elif api_version >= 2:
            result.warnings.append(comment)

    result.metadata = metadata_json(dataset, on_invalid, parsed.bulk)
    result.multi_valued_index = any(
        len(result.metadata.get(f"{tag:08X}", {}).get("Value", ())) > 1 for tag in ALL_QUERYABLE
    )
    return result


def _check_patient_id(dataset: Dataset, api_version: int, result: ValidatedInstance) -> None:
    if PATIENT_ID not in dataset:
        result.errors.append(_comment(PATIENT_ID, f"The required tag '{format_tag(PATIENT_ID)}' is missing."))
        return
    value = str(dataset[PATIENT_ID].value or "").rstrip(" \x00")
    if not value:
        comment = _comment(PATIENT_ID, f"The required tag '{format_tag(PATIENT_ID)}' is missing.")
        (result.errors if api_version == 1 else result.warnings).append(comment)


def _uid(dataset: Dataset, tag: BaseTag) -> str:
    if tag not in dataset:
        return ""
    try:
        value = dataset[tag].value
    except Exception:
        return ""
    return normalize_uid(str(value or ""))


def _keyword(dataset: Dataset, tag: BaseTag) -> str:
    return dataset[tag].keyword or format_tag(tag)


def _comment(tag: BaseTag, message: str) -> str:
    return f"{ERROR_PREFIX}: {format_tag(tag)} - {message}"


