"""The search index: entries that let QIDO find studies, series and instances by attribute."""
