"""The API versions of the URL prefix: `/v1/...` (strict validation) and `/v2/...` (lenient)."""

from __future__ import annotations

from dicom_core.model.errors import BadRequestError

SUPPORTED_VERSIONS = (1, 2)


def parse_api_version(segment: str) -> int:
    """Return the major version of a `v{n}` route segment, or raise a 400 naming the supported ones."""
    major, _, minor = segment.partition(".")
    if major.isdigit() and int(major) in SUPPORTED_VERSIONS and minor in ("", "0"):
        return int(major)
    supported = ", ".join(f"v{v}" for v in SUPPORTED_VERSIONS)
    raise BadRequestError(f"The API version 'v{segment}' is not supported. Supported versions: {supported}.")
