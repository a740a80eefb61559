"""Reading the files that `func start` reads: local.settings.json (or its sample) and host.json."""

from __future__ import annotations

import json
import logging
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SETTINGS_FILE = "local.settings.json"
SAMPLE_SETTINGS_FILE = "local.settings.sample.json"
HOST_FILE = "host.json"
DEFAULT_ROUTE_PREFIX = "api"


def find_settings_file(root: Path) -> Path | None:
    """Return local.settings.json under ``root``, else the sample, else None."""
    for name in (SETTINGS_FILE, SAMPLE_SETTINGS_FILE):
        path = root / name
        if path.is_file():
            return path
    return None


@dataclass(frozen=True)
class LoadedSettings:
    """Which settings file was read, the names it set, and those the sample set because the file lacks them."""

    file: Path | None
    applied: list[str]
    from_sample: list[str]


def load_settings_files(root: Path, environ: MutableMapping[str, str]) -> LoadedSettings:
    """Apply local.settings.json (else the sample) under ``root``; then the sample's values it lacks.

    A local.settings.json copied before a setting was added (a timer's `%NAME%` schedule) keeps working.
    """
    path = find_settings_file(root)
    applied = [] if path is None else apply_local_settings(path, environ)
    sample = root / SAMPLE_SETTINGS_FILE
    from_sample = apply_local_settings(sample, environ) if path not in (None, sample) and sample.is_file() else []
    return LoadedSettings(path, applied, from_sample)


def apply_local_settings(path: Path, environ: MutableMapping[str, str]) -> list[str]:
    """Put the file's ``Values`` into ``environ`` for names not already set; return the names set."""
    document = _read_json(path)
    if document.get("IsEncrypted"):
        raise ValueError(f"{path} is encrypted; the local host reads plain values only (set IsEncrypted to false)")
    values = document.get("Values") or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: 'Values' must be an object")
    applied = []
    for name, value in values.items():
        if name not in environ:
            environ[name] = _setting_text(value)
            applied.append(name)
    return applied


def read_route_prefix(root: Path) -> str:
    """Return ``extensions.http.routePrefix`` of host.json under ``root`` ("api" when absent), without slashes."""
    path = root / HOST_FILE
    document = _read_json(path) if path.is_file() else {}
    prefix = document.get("extensions", {}).get("http", {}).get("routePrefix", DEFAULT_ROUTE_PREFIX)
    return str(prefix).strip("/")


def _read_json(path: Path) -> dict[str, Any]:
    """Parse a JSON object from ``path`` (UTF-8, a BOM allowed), naming the file on error."""
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return document


def _setting_text(value: Any) -> str:
    """Render a settings value as environment text (JSON spelling for numbers and booleans)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)
