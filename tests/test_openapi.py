"""The OpenAPI document: valid, true to the registered routes both ways, served, and fuzzed without a 500."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from openapi_spec_validator import validate

from dicom_core.edge.openapi import DOCUMENT_PATH, MEDIA_TYPE

HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
HOOKS_MODULE = "tests.schemathesis_hooks"
SCHEMATHESIS_EXAMPLES_PER_OPERATION = 8
SCHEMATHESIS_TIMEOUT_SECONDS = 240  # a guard against a hang, far above the usual run

_PARAMETER = re.compile(r"\{[^{}]*\}")


def route_shape(method: str, template: str) -> tuple[str, str]:
    """Compare routes by method and shape: parameter names are internal, e.g. {frame} and {frames}."""
    return method.upper(), _PARAMETER.sub("{}", template.strip("/")).lower()


def shapes(routes: frozenset[tuple[str, str]]) -> set[tuple[str, str]]:
    return {route_shape(method, template) for method, template in routes}


@pytest.fixture(scope="module")
def document() -> dict:
    return yaml.safe_load(DOCUMENT_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def documented_routes(document: dict) -> frozenset[tuple[str, str]]:
    return frozenset(
        (method.upper(), path) for path, item in document["paths"].items() for method in item if method in HTTP_METHODS
    )


def test_document_is_valid_openapi_3(document: dict) -> None:
    validate(document)
    assert document["openapi"].startswith("3.")


def test_every_registered_route_is_documented(
    registered_routes: frozenset[tuple[str, str]], documented_routes: frozenset[tuple[str, str]]
) -> None:
    undocumented = shapes(registered_routes) - shapes(documented_routes)
    assert not undocumented, f"registered but not in {DOCUMENT_PATH.name}: {sorted(undocumented)}"


def test_every_documented_route_is_registered(
    registered_routes: frozenset[tuple[str, str]], documented_routes: frozenset[tuple[str, str]]
) -> None:
    unregistered = shapes(documented_routes) - shapes(registered_routes)
    assert not unregistered, f"documented but no function serves it: {sorted(unregistered)}"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_document_is_served_under_each_version(server: str, version: str) -> None:
    response = httpx.get(f"{server}/{version}/api.yaml", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(MEDIA_TYPE)
    assert response.content == DOCUMENT_PATH.read_bytes()


def test_document_under_an_unsupported_version_is_a_bad_request(server: str) -> None:
    response = httpx.get(f"{server}/v3/api.yaml", timeout=30)
    assert response.status_code == 400
    assert "Supported versions: v1, v2" in response.text


def test_schemathesis_finds_no_server_error_on_any_operation(server: str, tmp_path: Path) -> None:
    """Generated requests to every documented operation, a bounded number each: none may get a 500."""
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{server}/v2/api.yaml", "--url", server,
        "--checks", "not_a_server_error", "--max-examples", str(SCHEMATHESIS_EXAMPLES_PER_OPERATION),
        "--phases", "examples,fuzzing", "--seed", "20240101", "--workers", "1",
        "--request-timeout", "30", "--no-shrink", "--suppress-health-check", "all",
        "--report", "junit", "--report-dir", str(tmp_path),
    ]  # fmt: skip
    # One worker: with two threads, Hypothesis parsing sources at once hit CPython 3.11's AST recursion-depth check
    # ("AST constructor recursion depth mismatch"), a runtime error of the tool, not of the server.
    environment = {"SCHEMATHESIS_HOOKS": HOOKS_MODULE, "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
                   "NO_COLOR": "1", "PATH": ""}
    completed = subprocess.run(command, capture_output=True, text=True, timeout=SCHEMATHESIS_TIMEOUT_SECONDS,
                               env=environment, check=False, cwd=tmp_path)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert re.search(r"\b\d+ passed\b|\bpassed\b", output), output
