"""The Bicep against what Flex Consumption accepts: no deprecated site property or app setting, HTTP concurrency set,
the public base URL defaulting to the app's host name, no queue storage."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tree_sitter

from tests.infra.bicep_tree import (
    BICEP_FILES,
    INFRA,
    find_property,
    object_properties,
    parameter_default,
    parse,
    property_key,
    string_values,
    text,
)

# Microsoft's "Flex Consumption plan deprecations" table, read 2025-12 from
# https://learn.microsoft.com/azure/azure-functions/functions-app-settings#flex-consumption-plan-deprecations
# (source: MicrosoftDocs/azure-docs, articles/azure-functions/functions-app-settings.md). Site properties by their
# last name (the table writes them as properties.x or properties.siteConfig.x), compared case-insensitively.
DEPRECATED_APP_SETTINGS = (
    "ENABLE_ORYX_BUILD", "FUNCTIONS_EXTENSION_VERSION", "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "FUNCTIONS_MAX_HTTP_CONCURRENCY", "FUNCTIONS_WORKER_PROCESS_COUNT", "FUNCTIONS_WORKER_DYNAMIC_CONCURRENCY_ENABLED",
    "SCM_DO_BUILD_DURING_DEPLOYMENT", "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "WEBSITE_CONTENTOVERVNET",
    "WEBSITE_CONTENTSHARE", "WEBSITE_DNS_SERVER", "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
    "WEBSITE_NODE_DEFAULT_VERSION", "WEBSITE_RUN_FROM_PACKAGE", "WEBSITE_SKIP_CONTENTSHARE_VALIDATION",
    "WEBSITE_VNET_ROUTE_ALL",
)
DEPRECATED_SITE_PROPERTIES = (
    "alwaysOn", "containerSize", "dnsConfiguration", "ftpsState", "isReserved", "IsXenon", "javaVersion",
    "LinuxFxVersion", "netFrameworkVersion", "powerShellVersion", "functionAppScaleLimit", "preWarmedInstanceCount",
    "use32BitWorkerProcess", "vnetBackupRestoreEnabled", "vnetContentShareEnabled", "vnetImagePullEnabled",
    "vnetRouteAllEnabled", "windowsFxVersion",
)
FUNCTION_APP = INFRA / "modules" / "functionapp.bicep"
MAIN = INFRA / "main.bicep"


def deprecated_uses(root: tree_sitter.Node) -> list[str]:
    """Every object key or string literal that names a Flex-deprecated app setting or site property."""
    settings = {name.lower() for name in DEPRECATED_APP_SETTINGS}
    properties = {name.lower() for name in DEPRECATED_SITE_PROPERTIES}
    found = [key for key in map(property_key, object_properties(root)) if key.lower() in settings | properties]
    found += [value for value in string_values(root) if value.lower() in settings]
    return sorted(found)


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_no_flex_deprecated_property_or_app_setting_is_set(path: Path) -> None:
    assert deprecated_uses(parse(path.read_bytes())) == []


def test_a_deprecated_site_property_or_app_setting_would_be_caught() -> None:
    source = FUNCTION_APP.read_text()
    with_ftps = source.replace("minTlsVersion: '1.2'", "minTlsVersion: '1.2'\n      ftpsState: 'Disabled'")
    with_worker_count = source.replace("PYTHON_ENABLE_INIT_INDEXING: '1'",
                                       "PYTHON_ENABLE_INIT_INDEXING: '1'\n  FUNCTIONS_WORKER_PROCESS_COUNT: '2'")
    assert with_ftps != source and with_worker_count != source
    assert deprecated_uses(parse(with_ftps.encode())) == ["ftpsState"]
    assert deprecated_uses(parse(with_worker_count.encode())) == ["FUNCTIONS_WORKER_PROCESS_COUNT"]


def test_http_per_instance_concurrency_is_set_from_a_parameter() -> None:
    site = parse(FUNCTION_APP.read_bytes())
    value = find_property(site, "functionAppConfig", "scaleAndConcurrency", "triggers", "http",
                          "perInstanceConcurrency")
    assert value is not None and text(value) == "httpPerInstanceConcurrency"


def test_http_per_instance_concurrency_defaults_to_16_per_core() -> None:
    # Python's default on Flex is 1 request per instance; 2048 MB (one core) must get 16, as the description argues.
    main = parse(MAIN.read_bytes())
    assert parameter_default(main, "httpPerInstanceConcurrency") == "instanceMemoryMB / 128"
    assert parameter_default(main, "instanceMemoryMB") == "2048"
    assert re.search(r"httpPerInstanceConcurrency: httpPerInstanceConcurrency\b", MAIN.read_text())


def test_the_public_base_url_defaults_to_the_apps_host_name() -> None:
    source = MAIN.read_text()
    assert parameter_default(parse(MAIN.read_bytes()), "publicBaseUrl") == "''"
    assert ("var publicBase = empty(publicBaseUrl) ? 'https://${functionAppName}.azurewebsites.net' : publicBaseUrl"
            in source)
    assert "DICOMWEB_PUBLIC_BASE_URL: publicBase\n" in source


def test_the_host_storage_uses_no_queue() -> None:
    # No queue trigger in function_app.py, so neither the host's queue endpoint nor a queue role.
    for path in BICEP_FILES:
        keys = [property_key(node) for node in object_properties(parse(path.read_bytes()))]
        assert [key for key in keys if "queueserviceuri" in key.lower()] == [], path.name
    app_source = (INFRA.parent / "function_app.py").read_text()
    assert "queue_trigger" not in app_source


def test_the_functions_host_body_limit_stays_above_the_apps_request_limit() -> None:
    source = MAIN.read_text()
    assert "var hostBodyLimitBytes = maxRequestBodyBytes + 1048576" in source
    assert "maxRequestBodyBytes: hostBodyLimitBytes" in source
    assert "DICOMWEB_MAX_REQUEST_BYTES: string(maxRequestBodyBytes)" in source
