"""The DIMSE statuses the gateway answers (PS3.7 Annex C, PS3.4), and a failure status with its comment."""

from __future__ import annotations

from pydicom.dataset import Dataset

SUCCESS = 0x0000
PENDING = 0xFF00
CANCELLED = 0xFE00
OUT_OF_RESOURCES = 0xA700
# C-STORE: the dataset failed validation; C-FIND: the identifier cannot be answered.
DOES_NOT_MATCH_SOP_CLASS = 0xA900
UNABLE_TO_PROCESS = 0xC001
# N-ACTION (storage commitment)
NO_SUCH_ACTION = 0x0123
INVALID_ARGUMENT = 0x0115
# An LO element (ErrorComment) holds 64 characters.
MAX_COMMENT_CHARS = 64


def failure(code: int, comment: str) -> Dataset:
    """A failure status with its ErrorComment."""
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:MAX_COMMENT_CHARS]
    return status
