"""UID checks before a UID reaches a blob name or a Table key."""

from __future__ import annotations

import pytest

from dicom_core.model.errors import BadRequestError
from dicom_core.model.uids import is_valid_uid, normalize_uid, require_valid_uid


@pytest.mark.parametrize("uid", ["1.2.3", "1", "1." * 31 + "1"])
def test_valid_uids(uid: str) -> None:
    assert is_valid_uid(uid)


@pytest.mark.parametrize("uid", ["", "abc.123", "11|", "1.2.", "1" * 65, "../1", "1.2'3", "1 2"])
def test_invalid_uids(uid: str) -> None:
    assert not is_valid_uid(uid)


def test_trailing_padding_is_stripped() -> None:
    assert normalize_uid("1.2.3\x00") == normalize_uid("1.2.3 ") == "1.2.3"


def test_route_uid_error_names_the_parameter() -> None:
    with pytest.raises(BadRequestError, match="StudyInstanceUID"):
        require_valid_uid("1.2.x", "StudyInstanceUID")
