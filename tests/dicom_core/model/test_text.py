"""Folding text for case- and accent-insensitive matching, and the words of person names."""

from __future__ import annotations

import pytest

from dicom_core.model.text import fold, fold_case, fold_person_name, name_words, strip_accents, trim


def test_trim_strips_space_and_nul_padding() -> None:
    assert trim(" ID1 \x00") == "ID1"


def test_fold_case_keeps_accents() -> None:
    assert fold_case("tá ") == "TÁ"


def test_strip_accents_drops_combining_marks() -> None:
    assert strip_accents("Tá Müller Ça") == "Ta Muller Ca"


def test_fold_is_accent_and_case_insensitive() -> None:
    assert fold("Hall^X^Tá") == fold("HALL^x^ta")


def test_person_name_without_empty_trailing_components_is_the_same_name() -> None:
    assert fold_person_name("Doe^John^^^") == fold_person_name("doe^john") == "DOE^JOHN"


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("Doe^John", ["DOE", "JOHN"]),
        ("Jonathan^Rand^Stone Hall^^", ["JONATHAN", "RAND", "STONE", "HALL"]),
        ("Müller-Lüdenscheidt^Jürgen", ["MULLER", "LUDENSCHEIDT", "JURGEN"]),
        ("Yamada^Tarou=山田^太郎", ["YAMADA", "TAROU", "山田", "太郎"]),
        ("", []),
    ],
)
def test_name_words_split_on_components_spaces_and_punctuation(name: str, words: list[str]) -> None:
    assert name_words(name) == words
