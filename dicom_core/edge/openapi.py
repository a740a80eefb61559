"""The OpenAPI 3 document of the whole HTTP API (`openapi.yaml` beside this module), served at `/v{n}/api.yaml`."""

from __future__ import annotations

import functools
from pathlib import Path

from dicom_core.wire.service_result import ServiceResult

DOCUMENT_PATH = Path(__file__).with_name("openapi.yaml")
MEDIA_TYPE = "application/yaml"


@functools.cache
def document() -> bytes:
    """Return the document's bytes (read once; it ships with the code)."""
    return DOCUMENT_PATH.read_bytes()


def serve_document() -> ServiceResult:
    """Answer `GET /v{n}/api.yaml` with the document."""
    return ServiceResult(body=document(), media_type=MEDIA_TYPE)
