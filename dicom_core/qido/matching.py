"""Matching QIDO-RS conditions against stored DICOM JSON values (the first value of each attribute, as indexed)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from dicom_core.model.dicom_json import JsonDataset, first_value, person_name_forms, person_name_groups
from dicom_core.model.tags import MODALITIES_IN_STUDY
from dicom_core.model.text import fold, fold_case, fold_person_name, name_words
from dicom_core.qido.query import Condition, MatchKind
from dicom_core.qido.row_filters import same_number, time_in_range


def matches(condition: Condition, attributes: JsonDataset, modalities: Iterable[str] = ()) -> bool:
    """Tell whether stored ``attributes`` (and, for ModalitiesInStudy, the study's ``modalities``) match."""
    if condition.tag == MODALITIES_IN_STUDY:
        return any(_matches_text(condition, modality) for modality in modalities)
    if condition.vr == "PN":
        # Each component group is a name of its own (`山田*` finds `Yamada^Tarou=山田^太郎`), and so is the whole.
        forms = dict.fromkeys([*person_name_forms(attributes, condition.tag),
                               *person_name_groups(attributes, condition.tag)])
        if condition.kind is MatchKind.FUZZY:
            return any(fuzzy_name_match(condition.value, form) for form in forms)
        return any(_matches_text(condition, form) for form in forms)
    value = first_value(attributes, condition.tag)
    return value is not None and _matches_text(condition, value)


def fuzzy_name_match(query: str, name: str) -> bool:
    """Prefix match on words, like Azure's full-text search: 'jo do' matches 'John^Doe', 'ohn' does not."""
    wanted, words = name_words(query), name_words(name)
    if not wanted:
        return False
    return any(
        all(word.startswith(prefix) for word, prefix in zip(words[start:], wanted, strict=False))
        for start in range(len(words) - len(wanted) + 1)
    )


def wildcard_match(pattern: str, value: str, *, person_name: bool = False) -> bool:
    """DICOM wildcard matching ('*' any run, '?' one character), case-insensitive; names also accent-insensitive."""
    if person_name:
        return _wildcard_regex(fold(pattern)).fullmatch(fold_person_name(value)) is not None
    return _wildcard_regex(fold_case(pattern)).fullmatch(fold_case(value)) is not None


def _matches_text(condition: Condition, value: str) -> bool:
    person_name = condition.vr == "PN"
    if condition.kind is MatchKind.RANGE and condition.vr == "TM":
        return time_in_range(value, condition.low, condition.high)
    if condition.kind is MatchKind.RANGE:
        date = value[:8]
        return (condition.low is None or date >= condition.low) and (condition.high is None or date <= condition.high)
    if condition.kind is MatchKind.ANY_OF:
        if condition.vr == "UI":
            return value in condition.values
        return fold_case(value) in {fold_case(v) for v in condition.values}
    if condition.kind is MatchKind.WILDCARD:
        return wildcard_match(condition.value, value, person_name=person_name)
    if person_name:
        return fold_person_name(value) == fold_person_name(condition.value)
    if condition.vr == "IS":
        return same_number(value, condition.value)
    return fold_case(value) == fold_case(condition.value)


@lru_cache(maxsize=256)
def _wildcard_regex(pattern: str) -> re.Pattern[str]:
    parts = [".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern]
    return re.compile("".join(parts), re.DOTALL)
