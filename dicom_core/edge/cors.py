"""CORS decisions: which browser origins may call the API, and the headers a preflight and a response get.

The HTTP edge applies them; the Function App's platform CORS stays empty so the two never disagree.
An allowed origin is always echoed (never `*`), with `Vary: Origin`, so caches keep answers per origin.
No credentials mode: clients send bearer tokens in `Authorization`, not cookies.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ANY_ORIGIN = "*"
ALLOWED_METHODS = ("GET", "POST", "PUT", "DELETE", "OPTIONS")
# What browser DICOMweb clients send beyond the safelisted headers: OHIF's quoted Accept and bearer token,
# STOW's multipart Content-Type, conditional metadata requests, and request ids for log correlation.
ALLOWED_HEADERS = ("Accept", "Authorization", "Content-Type", "If-None-Match", "X-Request-Id",
                   "X-Ms-Client-Request-Id")
EXPOSED_HEADERS = ("Content-Type", "ETag", "Warning", "Content-Location", "Location", "X-Request-Id",
                   "Retry-After", "WWW-Authenticate", "erroneous-dicom-attributes")
MAX_AGE_SECONDS = 7200  # the most Chromium honours
VARY_HEADER = "Origin"


@dataclass(frozen=True)
class CorsPolicy:
    """The origins allowed to call the API from a browser; none means CORS is off."""

    allowed_origins: frozenset[str] = frozenset()

    @classmethod
    def from_origins(cls, origins: Iterable[str]) -> CorsPolicy:
        """A policy allowing ``origins`` (`*` for any), compared case-insensitively and without a trailing slash."""
        return cls(frozenset(normalized for origin in origins if (normalized := _normalize(origin))))

    @property
    def enabled(self) -> bool:
        """Whether any origin is allowed (else no response gets CORS headers)."""
        return bool(self.allowed_origins)

    def allows(self, origin: str | None) -> bool:
        """Whether a request from ``origin`` (its Origin header) may read the answer."""
        if not origin:
            return False
        return ANY_ORIGIN in self.allowed_origins or _normalize(origin) in self.allowed_origins


def response_headers(policy: CorsPolicy, origin: str | None) -> dict[str, str]:
    """The CORS headers of an actual (non-preflight) response, error responses included; empty when not allowed."""
    if origin is None or not policy.allows(origin):
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Expose-Headers": ", ".join(EXPOSED_HEADERS),
    }


def preflight_headers(policy: CorsPolicy, origin: str | None, requested_headers: str | None) -> dict[str, str]:
    """The headers of a 204 answer to a preflight OPTIONS; empty (the browser then refuses) when not allowed."""
    if origin is None or not policy.allows(origin):
        return {}
    headers = {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": ", ".join(ALLOWED_METHODS),
        "Access-Control-Max-Age": str(MAX_AGE_SECONDS),
    }
    allowed = allowed_request_headers(requested_headers)
    if allowed:
        headers["Access-Control-Allow-Headers"] = ", ".join(allowed)
    return headers


def allowed_request_headers(requested: str | None) -> list[str]:
    """The requested headers (Access-Control-Request-Headers) that are allowed, or every allowed one if none asked."""
    allowed = {name.lower(): name for name in ALLOWED_HEADERS}
    names = [name.strip().lower() for name in (requested or "").split(",") if name.strip()]
    if not names:
        return list(ALLOWED_HEADERS)
    return [allowed[name] for name in dict.fromkeys(names) if name in allowed]


def _normalize(origin: str) -> str:
    return origin.strip().rstrip("/").lower()
