"""The deployment package carries the app's bytecode: its files are read-only where it runs."""

from __future__ import annotations

import importlib.util
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHECKED_HASH_FLAGS = 0b11  # PEP 552: hash-based, checked against the source


def _prepackage_command() -> list[str]:
    """The azd prepackage hook's POSIX command, as argv."""
    service = yaml.safe_load((ROOT / "azure.yaml").read_text())["services"]["api"]
    return shlex.split(service["hooks"]["prepackage"]["posix"]["run"])


def test_funcignore_keeps_bytecode_in_the_package() -> None:
    lines = [line.strip() for line in (ROOT / ".funcignore").read_text().splitlines()]
    assert not [line for line in lines if "__pycache__" in line or line.endswith(".pyc")]


def test_the_prepackage_hook_compiles_every_app_module_with_checked_hashes(tmp_path: Path) -> None:
    shutil.copy2(ROOT / "function_app.py", tmp_path / "function_app.py")
    shutil.copytree(ROOT / "dicom_core", tmp_path / "dicom_core", ignore=shutil.ignore_patterns("__pycache__"))
    command = _prepackage_command()
    assert command[:3] == ["python3", "-m", "compileall"]
    subprocess.run([sys.executable, *command[1:]], cwd=tmp_path, check=True)
    sources = [tmp_path / "function_app.py", *sorted((tmp_path / "dicom_core").rglob("*.py"))]
    for source in sources:
        compiled = Path(importlib.util.cache_from_source(str(source)))
        assert compiled.exists(), f"no bytecode for {source.relative_to(tmp_path)}"
        assert int.from_bytes(compiled.read_bytes()[4:8], "little") == CHECKED_HASH_FLAGS, compiled
