"""The three sample files of Azure's DICOM walkthrough, in tests/data (provenance and hashes: tests/data/SOURCE.md)."""

from __future__ import annotations

from pathlib import Path

SEED = Path(__file__).resolve().parent / "data"
SEED_STUDY = "1.2.826.0.1.3680043.8.498.13230779778012324449356534479549187420"
SEED_SERIES_A = "1.2.826.0.1.3680043.8.498.45787841905473114233124723359129632652"
