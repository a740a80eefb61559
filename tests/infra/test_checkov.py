"""checkov on infra/: no finding that is neither fixed nor skipped with a reason in infra/.checkov.yaml."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA = REPO_ROOT / "infra"
CONFIG = INFRA / ".checkov.yaml"
# Installed by `make test` from infra/requirements-checkov.txt, apart from the app's venv (its pins differ).
CHECKOV = REPO_ROOT / ".venv" / "checkov" / "bin" / "checkov"
TIMEOUT_SECONDS = 300


def run_checkov(directory: Path) -> tuple[int, list[dict[str, Any]], str]:
    """Run checkov with the project's configuration on ``directory``; return exit code, reports and stderr."""
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} is missing: run `make test` (it installs infra/requirements-checkov.txt)",
                    pytrace=False)
    completed = subprocess.run(
        [str(CHECKOV), "--config-file", str(CONFIG), "-d", str(directory), "-o", "json"],
        capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False, cwd=directory,
    )
    reports = json.loads(completed.stdout) if completed.stdout.strip() else []
    return completed.returncode, reports if isinstance(reports, list) else [reports], completed.stderr


def failures(reports: list[dict[str, Any]]) -> list[str]:
    return [f"{c['check_id']} {c['resource']} ({c['file_path']})"
            for report in reports for c in report.get("results", {}).get("failed_checks", [])]


def test_checkov_reports_no_unhandled_finding_on_infra() -> None:
    code, reports, stderr = run_checkov(INFRA)
    assert failures(reports) == [], stderr
    assert code == 0, stderr
    summaries = [report["summary"] for report in reports]
    assert sum(s["passed"] for s in summaries) > 0, "checkov checked nothing"
    assert sum(s["parsing_errors"] for s in summaries) == 0, stderr


def test_every_skipped_check_is_justified_in_a_comment() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    comments = "\n".join(line for line in CONFIG.read_text().splitlines() if line.lstrip().startswith("#"))
    unexplained = [check for check in config["skip-check"] if not re.search(rf"\b{check}\b", comments)]
    assert config["skip-check"] and unexplained == []


def test_checkov_would_catch_a_storage_account_allowing_old_tls(tmp_path: Path) -> None:
    (tmp_path / "modules").mkdir()
    storage = (INFRA / "modules" / "storage.bicep").read_text()
    weakened = storage.replace("minimumTlsVersion: 'TLS1_2'", "minimumTlsVersion: 'TLS1_0'")
    assert weakened != storage
    (tmp_path / "modules" / "storage.bicep").write_text(weakened)
    shutil.copy(CONFIG, tmp_path / ".checkov.yaml")
    code, reports, _ = run_checkov(tmp_path)
    assert code != 0
    assert "CKV_AZURE_44" in {f.split()[0] for f in failures(reports)}
