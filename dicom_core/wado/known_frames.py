"""The frame index of instances this process served frames of, by version, so the next frame read needs no row first.

A version's file and frame index never change (a store or upsert makes a new version), so what is kept
here is never wrong about its version; whether that version is still the instance's current one is
always asked of the instance row, at the same time as the frame is read (see `wado.frames`).
"""

from __future__ import annotations

from dataclasses import dataclass

from dicom_core.model.frames import FrameIndex
from dicom_core.model.identifiers import InstanceIdentifiers
from dicom_core.storage.clients import Storage
from dicom_core.storage.lru_cache import LruCache

# A native index is a few numbers; an encapsulated one a pair per fragment (1,000 frames: ~16 KB).
MAX_INSTANCES = 1000
MAX_FRAGMENTS = 1_000_000


@dataclass(frozen=True)
class KnownFrames:
    """Where the frames of one version of an instance are, and the transfer syntax it is stored in."""

    version: str
    stored_syntax: str
    index: FrameIndex

    @property
    def weight(self) -> int:
        """How much it counts against the cache's bound: its fragments, at least one."""
        return sum(len(frame) for frame in self.index.fragments) if self.index.fragments is not None else 1


_known: LruCache[tuple[str, InstanceIdentifiers], KnownFrames] = LruCache(MAX_INSTANCES, MAX_FRAGMENTS)


def known_frames(storage: Storage, ids: InstanceIdentifiers) -> KnownFrames | None:
    """The frames of the version of ``ids`` this process saw last, or None."""
    return _known.get((storage.files.url, ids))


def remember_frames(storage: Storage, ids: InstanceIdentifiers, known: KnownFrames) -> None:
    """Remember where the frames of a version of ``ids`` are."""
    _known.put((storage.files.url, ids), known, known.weight)
