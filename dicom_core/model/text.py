"""Folding of text for case- and accent-insensitive matching, and the words of person names."""

from __future__ import annotations

import re
import unicodedata

# DICOM pads values with trailing spaces (and some writers with NULs); they never take part in matching.
PADDING = " \x00"
# Words of a person name: separated by the component (^) and group (=) delimiters, spaces and punctuation.
_WORD_SEPARATORS = re.compile(r"[\W_]+")
# Empty trailing components ("Doe^John^^^") mean the same name as none ("Doe^John").
_TRAILING_DELIMITERS = re.compile(r"[\s^=]+$")


def trim(value: str) -> str:
    """Strip leading spaces and trailing space/NUL padding."""
    return value.strip(PADDING)


def fold_case(value: str) -> str:
    """Trim and upper-case: the comparison form of strings matched case-insensitively."""
    return trim(value).upper()


def strip_accents(value: str) -> str:
    """Decompose (NFKD) and drop the combining marks: 'Tá' becomes 'Ta'."""
    return "".join(char for char in unicodedata.normalize("NFKD", value) if not unicodedata.combining(char))


def fold(value: str) -> str:
    """Trim, strip accents and upper-case: the comparison form of person names and of index keys."""
    return strip_accents(trim(value)).upper()


def fold_person_name(value: str) -> str:
    """Fold a person name and drop its empty trailing components."""
    return _TRAILING_DELIMITERS.sub("", fold(value))


def name_words(value: str) -> list[str]:
    """Return the folded words of a person name, in order ('Doe^John Paul' -> DOE, JOHN, PAUL)."""
    return [word for word in _WORD_SEPARATORS.split(fold(value)) if word]
