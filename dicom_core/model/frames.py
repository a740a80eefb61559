"""Byte ranges of each frame inside a stored Part-10 file, found once at store time."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from pydicom.tag import ItemTag, SequenceDelimiterTag

UNDEFINED_LENGTH = 0xFFFFFFFF
_ITEM_HEADER = struct.Struct("<HHI")

ByteRange = tuple[int, int]  # (offset, length) within the stored file


@dataclass(frozen=True)
class FrameIndex:
    """Where each frame's bytes are: a regular native layout or explicit fragment lists."""

    number_of_frames: int
    native_offset: int | None = None
    native_frame_length: int | None = None
    fragments: tuple[tuple[ByteRange, ...], ...] | None = None

    def ranges(self, frame: int) -> tuple[ByteRange, ...]:
        """Return the byte ranges of the 1-based ``frame`` (several for a multi-fragment frame)."""
        if not 1 <= frame <= self.number_of_frames:
            raise IndexError(frame)
        if self.fragments is not None:
            return self.fragments[frame - 1]
        assert self.native_offset is not None and self.native_frame_length is not None
        return ((self.native_offset + (frame - 1) * self.native_frame_length, self.native_frame_length),)

    def shifted(self, delta: int) -> FrameIndex:
        """Return the index of the same frames in a file with ``delta`` more bytes in front."""
        if self.fragments is not None:
            fragments = tuple(tuple((offset + delta, length) for offset, length in f) for f in self.fragments)
            return FrameIndex(self.number_of_frames, fragments=fragments)
        assert self.native_offset is not None
        return FrameIndex(self.number_of_frames, self.native_offset + delta, self.native_frame_length)

    def to_json(self) -> dict[str, object]:
        """Return a compact JSON-able form."""
        if self.fragments is not None:
            return {"frames": self.number_of_frames, "fragments": [[list(r) for r in f] for f in self.fragments]}
        return {"frames": self.number_of_frames, "offset": self.native_offset, "length": self.native_frame_length}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FrameIndex:
        """Rebuild an index written by :meth:`to_json`."""
        frames = int(data["frames"])
        if "fragments" in data:
            fragments = tuple(tuple((int(o), int(n)) for o, n in f) for f in data["fragments"])
            return cls(frames, fragments=fragments)
        return cls(frames, native_offset=int(data["offset"]), native_frame_length=int(data["length"]))


def native_frame_index(
    value_offset: int, value_length: int, *, rows: int, columns: int, samples: int, bits_allocated: int,
    photometric: str, number_of_frames: int,
) -> FrameIndex | None:
    """Index native (uncompressed) pixel data; None where frames are not byte-aligned or don't fit."""
    if bits_allocated % 8 or number_of_frames < 1:
        return None  # 1-bit data is packed across frame boundaries
    frame_length = rows * columns * samples * bits_allocated // 8
    if photometric.startswith("YBR_FULL_422") or photometric.startswith("YBR_PARTIAL_422"):
        frame_length = frame_length * 2 // 3  # two samples per pixel after chroma subsampling
    if frame_length <= 0 or frame_length * number_of_frames > value_length:
        return None
    return FrameIndex(number_of_frames, native_offset=value_offset, native_frame_length=frame_length)


def encapsulated_frame_index(file: BinaryIO, value_offset: int, number_of_frames: int) -> FrameIndex | None:
    """Index encapsulated pixel data by reading only the item headers of its fragments."""
    file.seek(value_offset)
    offset_table: list[int] = []
    fragments: list[ByteRange] = []
    first = True
    while True:
        header = file.read(_ITEM_HEADER.size)
        if len(header) < _ITEM_HEADER.size:
            return None  # truncated
        group, element, length = _ITEM_HEADER.unpack(header)
        tag = group << 16 | element
        if tag == SequenceDelimiterTag:
            break
        if tag != ItemTag or length == UNDEFINED_LENGTH:
            return None
        position = file.tell()
        if first:
            table = file.read(length)
            offset_table = [v for (v,) in struct.iter_unpack("<I", table[: len(table) // 4 * 4])]
            first = False
        else:
            fragments.append((position, length))
            file.seek(length, 1)
    return _group_fragments(fragments, offset_table, number_of_frames)


def _group_fragments(fragments: list[ByteRange], offset_table: list[int], number_of_frames: int) -> FrameIndex | None:
    if not fragments or number_of_frames < 1:
        return None
    if number_of_frames == 1:
        return FrameIndex(1, fragments=(tuple(fragments),))
    if len(fragments) == number_of_frames:
        return FrameIndex(number_of_frames, fragments=tuple((f,) for f in fragments))
    if len(offset_table) != number_of_frames:
        return None  # several fragments per frame and no Basic Offset Table to group them
    # Basic Offset Table values are offsets of each frame's first item header from the first fragment's.
    first_item = fragments[0][0] - _ITEM_HEADER.size
    starts = {fragment[0] - _ITEM_HEADER.size - first_item: i for i, fragment in enumerate(fragments)}
    try:
        boundaries = [starts[offset] for offset in offset_table] + [len(fragments)]
    except KeyError:
        return None
    frames = tuple(tuple(fragments[boundaries[i] : boundaries[i + 1]]) for i in range(number_of_frames))
    return FrameIndex(number_of_frames, fragments=frames) if all(frames) else None
