"""Which index range serves a search: the most selective indexed study-level filter of a query, and for person
names the whole word, word prefix or leading word pair whose entries hold every name the condition can match."""

from __future__ import annotations

import re
from dataclasses import dataclass

from dicom_core.model.levels import Level
from dicom_core.model.tags import (
    ACCESSION_NUMBER,
    MODALITIES_IN_STUDY,
    MODALITY,
    PATIENT_ID,
    PPS_START_DATE,
    PPS_START_TIME,
    SERIES_NUMBER,
    STUDY_DATE,
    STUDY_ID,
    STUDY_TIME,
)
from dicom_core.model.text import fold, name_words
from dicom_core.qido.query import Condition, MatchKind, QidoQuery
from dicom_core.search_index.keys import (
    NAME_INDEXES,
    PAIR_JOIN,
    SERIES_BY_MODALITY,
    SERIES_BY_NUMBER,
    SERIES_BY_PPS_DATE,
    SERIES_BY_PPS_TIME,
    STUDIES_BY_ACCESSION,
    STUDIES_BY_DATE,
    STUDIES_BY_MODALITY,
    STUDIES_BY_PATIENT_ID,
    STUDIES_BY_STUDY_ID,
    STUDIES_BY_TIME,
    VALUE_LED_INDEXES,
    inverted_date,
    partition_key,
    stored_number,
    value_range,
    word_range,
)
from dicom_core.storage.sharded_table import partition_kind

# The words of a folded name: what `name_words` splits on ([\W_]+) is what separates them.
_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class IndexRange:
    """An index partition and, for dates and name words, the RowKey range to read."""

    partition: str
    low: str | None = None
    high: str | None = None

    @property
    def level(self) -> Level:
        """The level of what the range's entries point at (index names: 's.' studies, 'se.' series)."""
        return Level.SERIES if partition_kind(self.partition).startswith("se.") else Level.STUDY

    @property
    def by_word(self) -> bool:
        """Tell whether the range holds value-led entries (name words, StudyID, StudyTime: ordered by value, then
        newest first)."""
        return partition_kind(self.partition) in VALUE_LED_INDEXES


@dataclass(frozen=True)
class NameTerm:
    """The folded word (or leading word pair) of a name condition whose entries hold every name it can match."""

    word: str
    whole: bool
    pair: bool = False  # a pair of the name's first two words (`word` is `{first}^{second}`)


def study_index_range(query: QidoQuery) -> IndexRange | None:
    """The index range serving the query's most selective indexed study-level filter, if any."""
    for index, tag in ((STUDIES_BY_ACCESSION, ACCESSION_NUMBER), (STUDIES_BY_PATIENT_ID, PATIENT_ID)):
        condition = query.condition(tag)
        if condition is not None and condition.kind is MatchKind.EXACT:
            return IndexRange(partition_key(index, condition.value))
    conditions = [(words, pairs, query.condition(tag)) for words, pairs, tag in NAME_INDEXES]
    for words, pairs, condition in sorted(conditions, key=lambda named: not _exact(named[2])):
        term = name_term(condition)
        if term is not None:
            return IndexRange(*word_range(pairs if term.pair else words, term.word, whole=term.whole))
    date = query.condition(STUDY_DATE)
    if date is not None:
        return IndexRange(
            STUDIES_BY_DATE,
            low=f"{inverted_date(date.high)}|" if date.high else None,
            high=f"{inverted_date(date.low)}}}" if date.low else None,
        )
    study_id = query.condition(STUDY_ID)
    if study_id is not None and study_id.kind is MatchKind.EXACT and study_id.value.strip():
        value = fold(study_id.value.strip())
        return IndexRange(*value_range(STUDIES_BY_STUDY_ID, value, value, prefix=False))
    time = query.condition(STUDY_TIME)
    if time is not None and time.kind is MatchKind.RANGE:
        return IndexRange(*value_range(STUDIES_BY_TIME, time.low, time.high))
    modalities = query.condition(MODALITIES_IN_STUDY)
    if modalities is not None and modalities.kind is MatchKind.EXACT:
        return IndexRange(partition_key(STUDIES_BY_MODALITY, modalities.value))
    return None


def series_index_range(query: QidoQuery) -> IndexRange | None:
    """The index range serving the query's most selective indexed series-level filter, if any."""
    number = query.condition(SERIES_NUMBER)
    if number is not None and number.kind is MatchKind.EXACT and stored_number(number.value):
        value = stored_number(number.value)
        return IndexRange(*value_range(SERIES_BY_NUMBER, value, value, prefix=False))
    date = query.condition(PPS_START_DATE)
    if date is not None and date.kind is MatchKind.RANGE:
        return IndexRange(*value_range(SERIES_BY_PPS_DATE, date.low, date.high))
    time = query.condition(PPS_START_TIME)
    if time is not None and time.kind is MatchKind.RANGE:
        return IndexRange(*value_range(SERIES_BY_PPS_TIME, time.low, time.high))
    modality = query.condition(MODALITY)
    if modality is not None and modality.kind is MatchKind.EXACT:
        return IndexRange(partition_key(SERIES_BY_MODALITY, modality.value))
    return None


def _exact(condition: Condition | None) -> bool:
    return condition is not None and condition.kind is MatchKind.EXACT


def name_term(condition: Condition | None) -> NameTerm | None:
    """The longest word every name matching a fuzzy or wildcard condition has (whole) or has a word begin with;
    for an exact name, its leading word pair (or its one word), whole."""
    if condition is None:
        return None
    if condition.kind is MatchKind.EXACT:
        words = name_words(condition.value)
        if len(words) >= 2:
            return NameTerm(PAIR_JOIN.join(words[:2]), whole=True, pair=True)
        return NameTerm(words[0], whole=True) if words else None
    if condition.kind is MatchKind.FUZZY:
        # Each query word begins a word of the name.
        return max((NameTerm(word, whole=False) for word in name_words(condition.value)),
                   key=lambda term: len(term.word), default=None)
    if condition.kind is MatchKind.WILDCARD:
        literal = fold(condition.value)
        literal = literal[:min((literal.index(char) for char in "*?" if char in literal), default=len(literal))]
        # A name matching 'DOE^J*' starts with 'DOE^J': DOE is one of its words, and one begins with J.
        found = list(_WORD.finditer(literal))
        terms = [NameTerm(match.group(), whole=match.end() < len(literal)) for match in found]
        if len(found) >= 2 and found[0].start() == 0:
            # The literal begins the name: its first word is the name's first, its second begins the second.
            terms.append(NameTerm(PAIR_JOIN.join((found[0].group(), found[1].group())),
                                  whole=found[1].end() < len(literal), pair=True))
        return max(terms, key=lambda term: (len(term.word), term.whole), default=None)
    return None
