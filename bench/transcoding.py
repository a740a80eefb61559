"""Transcoding JPEG 2000, RLE and JPEG-LS files to Explicit VR Little Endian (WADO-RS), against pydicom in-process.

Rate: decoded pixel bytes per second. The server's figure is a whole instance request with
`transfer-syntax=1.2.840.10008.1.2.1`; the baseline decodes the same file with pydicom in this process
(`dcmread` + `pixel_array`, the decoders installed in this venv).
"""

from __future__ import annotations

import io
import time

import httpx
import pydicom
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless

from .data import multiframe, multipart, multipart_content_type
from .report import Results, Row
from .stack import Stack

TARGET = 0.8
# The same request without transcoding: what the storage read and the HTTP answer take on their own.
AS_STORED = "application/dicom; transfer-syntax=*"
SYNTAXES: list[tuple[str, UID, str | None]] = [
    ("JPEG 2000 Lossless", JPEG2000Lossless, "pylibjpeg"),
    ("RLE Lossless", RLELossless, None),
    ("JPEG-LS Lossless", JPEGLSLossless, None),
]


def _decoders(uid: UID) -> str:
    decoder = get_decoder(uid)
    return ", ".join(sorted(decoder.available_plugins)) or "none"


def run(results: Results, stack: Stack) -> None:
    """Store one multi-frame file per syntax, time the transcoded retrieve and pydicom's decode; add a row each."""
    options = stack.options
    frames, side = options.transcode_frames, options.frame_side
    accept = f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"
    plot = results.samples.setdefault("Transcoding to Explicit VR LE (whole instance)", {})
    with httpx.Client(timeout=600) as client:
        for label, uid, plugin in SYNTAXES:
            instance = multiframe(frames, side, uid, encoding_plugin=plugin)
            headers = {"Content-Type": multipart_content_type(), "Accept": "application/dicom+json"}
            response = client.post(f"{stack.url}/studies", content=multipart([instance.data]), headers=headers)
            response.raise_for_status()
            url = f"{stack.url}/studies/{instance.study}/series/{instance.series}/instances/{instance.sop}"
            pixel_bytes = frames * side * side * 2
            server_s, local_s, stored_s = [], [], []
            for _ in range(options.transcode_repeat):
                start = time.perf_counter()
                client.get(url, headers={"Accept": AS_STORED}).raise_for_status()
                stored_s.append(time.perf_counter() - start)
                start = time.perf_counter()
                answer = client.get(url, headers={"Accept": accept})
                server_s.append(time.perf_counter() - start)
                if answer.status_code != 200:
                    raise RuntimeError(f"transcoding {label} answered {answer.status_code}: {answer.text[:300]}")
                start = time.perf_counter()
                _ = pydicom.dcmread(io.BytesIO(instance.data)).pixel_array
                local_s.append(time.perf_counter() - start)
            server_rate, local_rate = pixel_bytes / 1e6 / min(server_s), pixel_bytes / 1e6 / min(local_s)
            ratio = server_rate / local_rate
            results.add(Row(
                operation=f"transcode {label} → Explicit VR LE, {frames} frames of {side}²",
                measured=f"{server_rate:.1f} MB/s decoded", baseline=f"pydicom in-process: {local_rate:.1f} MB/s",
                target=f"≥ {TARGET}×", ratio=ratio, passed=ratio >= TARGET,
                note=f"decoders: {_decoders(uid)}; best times: transcoded {min(server_s) * 1000:.0f} ms, "
                     f"as stored {min(stored_s) * 1000:.0f} ms, pydicom {min(local_s) * 1000:.0f} ms"))
            plot[f"WADO-RS, {label}"] = [s * 1000 for s in server_s]
            plot[f"pydicom, {label}"] = [s * 1000 for s in local_s]
