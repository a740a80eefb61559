"""The Bicep files of infra/ as tree-sitter syntax trees, and the few queries the infra tests make of them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import tree_sitter
import tree_sitter_bicep

INFRA = Path(__file__).resolve().parents[2] / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_bicep.language()))


def parse(source: bytes) -> tree_sitter.Node:
    """Return the root node of ``source``."""
    return PARSER.parse(source).root_node


def text(node: tree_sitter.Node) -> str:
    """Return the source text of ``node``."""
    return (node.text or b"").decode("utf-8")


def unquote(node: tree_sitter.Node) -> str:
    """Return the text of a string node without its quotes."""
    return text(node).strip("'")


def walk(node: tree_sitter.Node) -> Iterator[tree_sitter.Node]:
    """Yield ``node`` and every node below it."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.children))


def property_key(node: tree_sitter.Node) -> str:
    """Return the key of an object_property node, unquoted."""
    return unquote(node.children[0])


def property_value(node: tree_sitter.Node) -> tree_sitter.Node:
    """Return the value node of an object_property node."""
    return node.children[-1]


def object_properties(root: tree_sitter.Node) -> Iterator[tree_sitter.Node]:
    """Yield every object_property node below ``root``."""
    return (node for node in walk(root) if node.type == "object_property")


def string_values(root: tree_sitter.Node) -> Iterator[str]:
    """Yield the text of every string literal below ``root``, unquoted."""
    return (unquote(node) for node in walk(root) if node.type == "string")


def find_property(root: tree_sitter.Node, *path: str) -> tree_sitter.Node | None:
    """Return the value node at the key path ``path`` below ``root``, searching nested objects; None if absent."""
    if not path:
        return root
    for node in object_properties(root):
        if property_key(node) == path[0]:
            found = find_property(property_value(node), *path[1:])
            if found is not None:
                return found
    return None


def declarations(root: tree_sitter.Node, kind: str) -> dict[str, tree_sitter.Node]:
    """Symbolic name -> node of every top-level declaration of ``kind`` (e.g. 'resource_declaration')."""
    found = {}
    for node in root.children:
        if node.type == kind:
            name = next(c for c in node.children if c.type == "identifier")
            found[text(name)] = node
    return found


def resource_type(node: tree_sitter.Node) -> str:
    """Return the type of a resource declaration, without its API version."""
    return re.sub(r"@.*$", "", unquote(next(c for c in node.children if c.type == "string")))


def parameter_default(root: tree_sitter.Node, name: str) -> str | None:
    """Return the source text of parameter ``name``'s default value; None without one."""
    node = declarations(root, "parameter_declaration")[name]
    children = node.children
    for index, child in enumerate(children):
        if child.type == "=":
            return text(children[index + 1])
    return None
