"""The bytes of chosen frames of a whole stored file: as stored, native little endian, or JPEG 2000 Lossless."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian

from dicom_core.wado.jpeg2000_encoding import jpeg2000_codestream
from dicom_core.wado.little_endian import little_endian_bytes, prepare_explicit_little_endian
from dicom_core.wado.pixel_decoding import check_frames, decode_frames, read_instance, transfer_syntax
from dicom_core.wado.stored_frames import stored_frame
from dicom_core.wado.transfer_syntaxes import ORIGINAL, check_transcodable, needs_transcoding, normalized
from dicom_core.wado.video_streams import is_video_stream


@dataclass(frozen=True)
class FrameBytes:
    """Frames' bytes and the transfer syntax they are in."""

    transfer_syntax: str
    frames: list[bytes]


def frame_bytes(source: BinaryIO, frames: Sequence[int], target: str) -> FrameBytes:
    """Each 1-based frame as stored, as native little endian bytes or as a JPEG 2000 Lossless codestream (``target``).

    Frames of a video stream are not stored one by one: as stored or native, each is decoded (PS3.5 §8.2.5's
    decoded video: RGB, 8 bits, colour-by-pixel) and answered in Explicit VR Little Endian.
    """
    dataset = read_instance(source)
    stored = transfer_syntax(dataset)
    wanted = stored if normalized(target) == ORIGINAL else normalized(target)
    if is_video_stream(stored) and wanted in (stored, ExplicitVRLittleEndian):
        check_frames(dataset, frames)
        return FrameBytes(ExplicitVRLittleEndian,
                          [little_endian_bytes(decoded.pixels) for decoded in decode_frames(dataset, frames)])
    check_transcodable(stored, target)
    check_frames(dataset, frames)
    if not needs_transcoding(stored, wanted) or (wanted == ExplicitVRLittleEndian and not stored.is_compressed):
        if stored == ExplicitVRBigEndian and wanted == ExplicitVRLittleEndian:
            prepare_explicit_little_endian(dataset, from_big_endian=True, pixel_data=True)
        return FrameBytes(wanted, [stored_frame(dataset, frame) for frame in frames])
    if wanted == ExplicitVRLittleEndian:
        return FrameBytes(wanted, [little_endian_bytes(decoded.pixels) for decoded in decode_frames(dataset, frames)])
    return FrameBytes(wanted, [jpeg2000_codestream(decoded) for decoded in decode_frames(dataset, frames)])
