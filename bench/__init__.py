"""Benchmarks of the DICOMweb server against the storage under it (`python -m bench`; see bench/__main__.py)."""
