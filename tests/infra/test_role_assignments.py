"""Every role assignment of the Bicep, read from its source: who gets which role on which resource, exactly."""

from __future__ import annotations

import re

import tree_sitter

from tests.infra.bicep_tree import INFRA, declarations, find_property, parse, resource_type, text, walk

IDENTITY = INFRA / "modules" / "identity.bicep"
ROLE_NAMES = {
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
}
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def role_guids(expression: str, variables: dict[str, str]) -> set[str]:
    """The role definition GUIDs an expression names, through variables (a var may hold a GUID or a list)."""
    found = set(GUID.findall(expression))
    for name in re.findall(r"\b\w+\b", expression):
        if name in variables:
            found |= role_guids(variables[name], {k: v for k, v in variables.items() if k != name})
    return found


def assignments(root: tree_sitter.Node) -> set[tuple[str, str, str]]:
    """(scope, principal, role name) of every roleAssignments resource, loops expanded over their roles."""
    variables = {name: text(node.children[-1]) for name, node in declarations(root, "variable_declaration").items()}
    found = set()
    for node in declarations(root, "resource_declaration").values():
        if resource_type(node) != "Microsoft.Authorization/roleAssignments":
            continue
        loop = next((c for c in walk(node) if c.type == "for_statement"), None)
        iterable = text(loop.children[loop.children.index(next(c for c in loop.children if c.type == "in")) + 1]) \
            if loop is not None else ""
        definition = find_property(node, "properties", "roleDefinitionId")
        scope, principal = find_property(node, "scope"), find_property(node, "properties", "principalId")
        assert definition is not None and scope is not None and principal is not None
        for guid in role_guids(iterable + " " + text(definition), variables):
            found.add((text(scope), text(principal), ROLE_NAMES.get(guid, guid)))
    return found


def test_each_identity_has_only_its_roles_each_on_one_resource() -> None:
    assert assignments(parse(IDENTITY.read_bytes())) == {
        ("dataAccount", "appIdentity.properties.principalId", "Storage Blob Data Contributor"),
        ("dataAccount", "appIdentity.properties.principalId", "Storage Table Data Contributor"),
        ("hostAccount", "hostIdentity.properties.principalId", "Storage Blob Data Owner"),
        ("applicationInsights", "hostIdentity.properties.principalId", "Monitoring Metrics Publisher"),
        ("dataAccount", "deployerPrincipalId", "Storage Blob Data Contributor"),
        ("dataAccount", "deployerPrincipalId", "Storage Table Data Contributor"),
    }


def test_the_data_and_host_accounts_are_different_accounts() -> None:
    main = (INFRA / "main.bicep").read_text()
    assert "dataAccountName: storage.outputs.name" in main
    assert "hostAccountName: hostStorage.outputs.name" in main
    assert "hostBlobEndpoint: hostStorage.outputs.blobEndpoint" in main
    data_prefix, host_prefix = re.findall(r"name: '(st\w+)\$\{take\(resourceToken", main)
    assert data_prefix != host_prefix


def test_the_deployers_data_roles_are_off_by_default() -> None:
    main = parse((INFRA / "main.bicep").read_bytes())
    source = (INFRA / "main.bicep").read_text()
    grant = declarations(main, "parameter_declaration")["grantDeployerDataAccess"]
    assert text(grant).rstrip().endswith("= false")
    assert "deployerPrincipalId: grantDeployerDataAccess ? principalId : ''" in source
    assert "for role in (empty(deployerPrincipalId) ? [] : dataRoles)" in IDENTITY.read_text()


def test_a_role_on_the_wrong_account_would_be_caught() -> None:
    source = IDENTITY.read_text()
    widened = source.replace("  scope: hostAccount\n", "  scope: dataAccount\n")
    assert widened != source
    assert ("dataAccount", "hostIdentity.properties.principalId", "Storage Blob Data Owner") in assignments(
        parse(widened.encode()))
