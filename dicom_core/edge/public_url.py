"""The public base URL of a request: the root that absolute URLs in a response (RetrieveURLs) are built on.

With HTTP streams the Functions host forwards each request to the worker's own HTTP server, so the request URL the
app sees is the worker's loopback address; the host (YARP's default transforms) puts the original Host and scheme in
`X-Forwarded-Host` and `X-Forwarded-Proto`. A configured DICOMWEB_PUBLIC_BASE_URL wins over everything; without one
the forwarded headers are honoured (and `X-Forwarded-Prefix`, the path a proxy in front mounts the service at), as
Azure's DICOM service does. A URL built from headers only ever goes into the answer to that same request: nothing
stored carries one (documents, metadata and the change feed hold UIDs, never URLs).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

FORWARDED_HOST = "x-forwarded-host"
FORWARDED_PROTO = "x-forwarded-proto"
FORWARDED_PREFIX = "x-forwarded-prefix"

# A host name or IPv4 address, or a bracketed IPv6 address, each with an optional port; nothing else (no user info,
# path, spaces or control characters can ride along into a URL).
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
# Path segments of unreserved characters, each led by one slash.
_PREFIX = re.compile(r"(?:/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+")
_SCHEMES = ("http", "https")


def public_base_url(configured: str, request_base_url: str, headers: Mapping[str, str]) -> str:
    """The configured base URL if any, else the request's own with its forwarded host, scheme and prefix applied."""
    if configured:
        return configured.rstrip("/")
    request = urlsplit(request_base_url)
    scheme = _first(headers.get(FORWARDED_PROTO)).lower()
    host = _first(headers.get(FORWARDED_HOST))
    prefix = _first(headers.get(FORWARDED_PREFIX)).rstrip("/")
    scheme = scheme if scheme in _SCHEMES else request.scheme
    host = host if _HOST.fullmatch(host) else request.netloc
    prefix = prefix if _PREFIX.fullmatch(prefix) else ""
    return f"{scheme}://{host}{prefix}{request.path.rstrip('/')}"


def _first(value: str | None) -> str:
    """The first of a header's comma-separated values (the one the client-facing proxy set), stripped."""
    return (value or "").split(",", 1)[0].strip()
