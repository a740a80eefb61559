"""The HTTP Warning header of DICOMweb answers: ``299 <service>: "<text>"`` (PS3.18 §8.3, RFC 7234 §5.5)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

# Header values are Latin-1 without controls: a client's text (an ignored parameter's name) is escaped to ASCII.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")


def warning_header(base_url: str, texts: Iterable[str]) -> str:
    """One Warning header value carrying every text, from the service at ``base_url`` (its host, or ``-``)."""
    agent = urlsplit(base_url).netloc or "-"
    return ", ".join(f'299 {agent}: "{_quoted(text)}"' for text in texts)


def _quoted(text: str) -> str:
    escaped = _CONTROLS.sub(" ", text).replace("\\", "\\\\").replace('"', '\\"')
    return escaped.encode("ascii", "backslashreplace").decode("ascii")
