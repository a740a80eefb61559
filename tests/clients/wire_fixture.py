"""Wire fixtures: a client's exact request (request line, header block, body framing) as a JSON file, and how
to rebuild the bytes from one for a replay against the real server.

A fixture's request line and header values carry placeholders for what differs per run: ``{authority}`` (the
server's host:port), ``{hostname}`` (its host without the port), ``{study}``, ``{series}``, ``{instance}`` and
``{content_length}``. Its body is a list of literal framing (strings, latin-1) and ``{"instance": n}`` items,
each standing for one Part-10 file; ``{part_length}`` in framing is the length of the file that follows. A
chunked body records its chunk sizes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

from tests.clients.wire_recorder import CRLF, Recorded

FIXTURES = Path(__file__).resolve().parent / "wire_fixtures"
PLACEHOLDERS = ("authority", "hostname", "study", "series", "instance", "content_length")
# A part's own Content-Length header (Orthanc sends one) stands for the length of the file that follows it.
PART_LENGTH = "{part_length}"
_PART_LENGTH_HEADER = re.compile(r"(?im)^(content-length:[ \t]*)\d+")


@dataclass(frozen=True)
class WireFixture:
    """One recorded request of one client and the answer that client expects."""

    name: str
    fixture: dict[str, Any]

    def header(self, name: str) -> str | None:
        """The value of the request's header ``name`` (any case), or None."""
        for line in self.fixture["request"]["headers"]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return str(value.strip())
        return None

    @property
    def instances(self) -> int:
        """How many Part-10 files the body carries."""
        return sum(1 for item in self.fixture["body"] or [] if isinstance(item, dict))

    def request_bytes(self, values: Mapping[str, str], files: Sequence[bytes]) -> bytes:
        """The request as the client sends it, with ``values`` for the placeholders and ``files`` in the body."""
        items = self.fixture["body"] or []
        pieces: list[bytes] = []
        for position, item in enumerate(items):
            if isinstance(item, dict):
                pieces.append(files[item["instance"]])
                continue
            following = items[position + 1] if position + 1 < len(items) else None
            if isinstance(following, dict):
                item = item.replace(PART_LENGTH, str(len(files[following["instance"]])))
            pieces.append(item.encode("latin-1"))
        body = b"".join(pieces)
        values = {**values, "content_length": str(len(body))}
        request = self.fixture["request"]
        lines = [_fill(request["line"], values)]
        lines += [_fill(line, values) for line in request["headers"]]
        head = "".join(line + "\r\n" for line in lines).encode("latin-1") + CRLF
        chunk_sizes = self.fixture.get("chunk_sizes")
        if chunk_sizes is None:
            return head + body
        return head + _chunked(body, chunk_sizes)


def _fill(text: str, values: Mapping[str, str]) -> str:
    for name in PLACEHOLDERS:
        if name in values:
            text = text.replace("{" + name + "}", values[name])
    return text


def _chunked(body: bytes, sizes: Sequence[int]) -> bytes:
    """Frame ``body`` in chunks of the recorded sizes; when the body's length differs, the first size repeats."""
    if sum(sizes) != len(body):
        sizes = [sizes[0]] * (len(body) // sizes[0]) + ([len(body) % sizes[0]] if len(body) % sizes[0] else [])
    out = bytearray()
    offset = 0
    for size in sizes:
        out += f"{size:x}\r\n".encode("ascii") + body[offset:offset + size] + CRLF
        offset += size
    return bytes(out + b"0\r\n\r\n")


def load_all() -> list[WireFixture]:
    """Every fixture in tests/clients/wire_fixtures, by name."""
    return [WireFixture(path.stem, json.loads(path.read_text())) for path in sorted(FIXTURES.glob("*.json"))]


# --- Writing a fixture from a recording ------------------------------------------------------------------------

def _boundary(content_type: str | None) -> str | None:
    if not content_type or not content_type.lower().startswith("multipart/"):
        return None
    message = Message()
    message["Content-Type"] = content_type
    boundary = message.get_param("boundary")
    return boundary if isinstance(boundary, str) else None


def _without_boundary(content_type: str | None) -> str | None:
    return None if content_type is None else re.sub(r";\s*boundary=[^;]*", "", content_type)


def body_template(recorded: Recorded) -> list[str | dict[str, int]] | None:
    """The body as literal framing and instance placeholders (each multipart part's body, or the whole body)."""
    if not recorded.body:
        return None
    content_type = next((value for name, value in recorded.headers if name.lower() == "content-type"), None)
    boundary = _boundary(content_type)
    if boundary is None:
        return [{"instance": 0}]
    delimiter = re.compile(rb"(?:^|\r\n)--" + re.escape(boundary.encode("latin-1")))
    template: list[str | dict[str, int]] = []
    body = recorded.body
    position = 0
    index = 0
    matches = list(delimiter.finditer(body))
    for current, following in zip(matches, matches[1:], strict=False):
        start = body.index(b"\r\n\r\n", current.end()) + 4
        template.append(_PART_LENGTH_HEADER.sub(r"\g<1>" + PART_LENGTH, body[position:start].decode("latin-1")))
        template.append({"instance": index})
        index += 1
        position = following.start()
    template.append(body[position:].decode("latin-1"))
    return template


def to_fixture(recorded: Recorded, about: Mapping[str, Any], replacements: Mapping[str, str]) -> dict[str, Any]:
    """A fixture from one recording: ``replacements`` maps literal text (authority, UIDs) to placeholder names."""

    def generalize(text: str) -> str:
        for literal, name in sorted(replacements.items(), key=lambda item: -len(item[0])):
            text = text.replace(literal, "{" + name + "}")
        return text

    headers = [f"{name}: " + ("{content_length}" if name.lower() == "content-length" else generalize(value))
               for name, value in recorded.headers]
    fixture: dict[str, Any] = {
        **about,
        "request": {"line": generalize(recorded.request_line), "headers": headers},
        "body": body_template(recorded),
        "expect": {"status": recorded.status, "content_type": _without_boundary(recorded.content_type)},
    }
    if recorded.chunks is not None:
        fixture["chunk_sizes"] = [len(chunk) for chunk in recorded.chunks]
    return fixture


def write(name: str, fixture: Mapping[str, Any]) -> Path:
    """Write ``fixture`` as tests/clients/wire_fixtures/<name>.json."""
    FIXTURES.mkdir(exist_ok=True)
    path = FIXTURES / f"{name}.json"
    path.write_text(json.dumps(fixture, indent=1, ensure_ascii=False) + "\n")  # one header line per JSON line
    return path
