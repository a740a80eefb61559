"""QIDO-RS: searching studies, series and instances."""
