"""Static checks of the Bicep files with the tree-sitter Bicep grammar (the Bicep compiler is not installable here).

What this proves: every file parses without an ERROR or MISSING node, every module file exists, every parameter a
module is given is declared by it and every parameter it requires is given, and the azd parameters file names
only parameters of main.bicep. What it cannot prove (only `az bicep build` or a deployment can): types, resource
API versions and property names, expressions' values.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tree_sitter

from tests.infra.bicep_tree import BICEP_FILES, INFRA, parse, text, unquote


def syntax_problems(root: tree_sitter.Node) -> list[str]:
    """Return 'line:column kind text' for every ERROR and MISSING node."""
    problems: list[str] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            kind = "missing " + node.type if node.is_missing else "unexpected"
            text = (node.text or b"").decode("utf-8", "replace")[:60]
            problems.append(f"{node.start_point[0] + 1}:{node.start_point[1] + 1} {kind} {text!r}")
        stack.extend(node.children)
    return sorted(problems)


def declared_parameters(root: tree_sitter.Node) -> dict[str, bool]:
    """Parameter name -> whether it has a default value."""
    found = {}
    for node in root.children:
        if node.type == "parameter_declaration":
            name = next(c for c in node.children if c.type == "identifier")
            found[text(name)] = any(c.type == "=" for c in node.children)
    return found


def module_calls(root: tree_sitter.Node) -> list[tuple[str, set[str]]]:
    """(module path, names of the params it is given) of every module declaration."""
    calls = []
    for node in root.children:
        if node.type != "module_declaration":
            continue
        path = unquote(next(c for c in node.children if c.type == "string"))
        body = next(c for c in node.children if c.type in ("object", "if_statement"))
        if body.type == "if_statement":
            body = next(c for c in body.children if c.type == "object")
        params: set[str] = set()
        for prop in body.children:
            if prop.type == "object_property" and text(prop.children[0]) == "params":
                value = next(c for c in prop.children if c.type == "object")
                params = {unquote(p.children[0]) for p in value.children if p.type == "object_property"}
        calls.append((path, params))
    return calls


def test_there_are_bicep_files_to_check() -> None:
    assert INFRA / "main.bicep" in BICEP_FILES and len(BICEP_FILES) > 1


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_bicep_file_parses_without_errors(path: Path) -> None:
    assert syntax_problems(parse(path.read_bytes())) == []


def test_a_syntax_error_is_reported() -> None:
    broken = (b"param name string = \n"
              b"resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {\n  name: name\n")
    assert syntax_problems(parse(broken))


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_modules_exist_and_get_exactly_the_parameters_they_declare(path: Path) -> None:
    for module_path, given in module_calls(parse(path.read_bytes())):
        module_file = path.parent / module_path
        assert module_file.is_file(), f"{path.name}: module {module_path} does not exist"
        declared = declared_parameters(parse(module_file.read_bytes()))
        assert given <= set(declared), f"{path.name} → {module_path}: undeclared {sorted(given - set(declared))}"
        required = {name for name, has_default in declared.items() if not has_default}
        assert required <= given, f"{path.name} → {module_path}: missing {sorted(required - given)}"


def test_the_azd_parameters_file_names_parameters_of_main_bicep() -> None:
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    declared = declared_parameters(parse((INFRA / "main.bicep").read_bytes()))
    assert set(parameters) <= set(declared)
    required = {name for name, has_default in declared.items() if not has_default}
    assert required <= set(parameters)
