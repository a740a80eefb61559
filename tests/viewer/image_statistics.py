"""Pixel statistics of a screenshot region: whether a viewport shows an image, and how two images differ."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

# The central part of the viewport: OHIF's overlays (texts, orientation markers, scrollbar) are at its edges.
CENTRAL_FRACTION = 0.5
# A drawn image: the grey levels spread (a blank or single-colour canvas has a deviation near 0).
MIN_DEVIATION = 20.0
MIN_DISTINCT_LEVELS = 8
# Two different images: the mean absolute difference of their central regions (0-255 scale).
MIN_MEAN_DIFFERENCE = 10.0


@dataclass(frozen=True)
class RegionStatistics:
    """Grey-level statistics of the central region of a screenshot."""

    mean: float
    deviation: float
    distinct_levels: int
    pixels: np.ndarray = field(repr=False, compare=False)  # the region's grey levels, for comparisons

    @property
    def drawn(self) -> bool:
        """Whether the region shows an image rather than a blank canvas."""
        return self.deviation >= MIN_DEVIATION and self.distinct_levels >= MIN_DISTINCT_LEVELS

    def differs_from(self, other: RegionStatistics) -> bool:
        """Whether this region shows another image than ``other`` does."""
        if self.pixels.shape != other.pixels.shape:
            return True
        difference = np.abs(self.pixels.astype(np.int16) - other.pixels.astype(np.int16))
        return float(difference.mean()) >= MIN_MEAN_DIFFERENCE

    def describe(self) -> str:
        """A short text for assertion messages."""
        return f"mean {self.mean:.1f}, deviation {self.deviation:.1f}, {self.distinct_levels} grey levels"


def central_region_statistics(png: bytes) -> RegionStatistics:
    """Return the statistics of the central part of a PNG screenshot (of the viewport element)."""
    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    height, width = grey.shape
    margin_y, margin_x = int(height * (1 - CENTRAL_FRACTION) / 2), int(width * (1 - CENTRAL_FRACTION) / 2)
    region = grey[margin_y:height - margin_y, margin_x:width - margin_x]
    return RegionStatistics(mean=float(region.mean()), deviation=float(region.std()),
                            distinct_levels=len(np.unique(region)), pixels=region)
