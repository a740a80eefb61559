"""`viewer.serve`: OHIF's dist/ served with the project's app-config.js and a fallback to index.html."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from viewer.serve import (
    APP_CONFIG_TEMPLATE,
    DEFAULT_DICOMWEB_ROOT,
    MissingViewerBuild,
    ViewerSettings,
    build_viewer_app,
    render_app_config,
)

ROOT = "http://127.0.0.1:7999/v2"
INDEX = b"<!doctype html><title>OHIF</title>"


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    """A stand-in for OHIF's dist/: index.html, a script, a WebAssembly module and the dist's own app-config.js."""
    folder = tmp_path / "dist"
    (folder / "assets").mkdir(parents=True)
    (folder / "index.html").write_bytes(INDEX)
    (folder / "app.bundle.js").write_text("console.log('app')")
    (folder / "codec.wasm").write_bytes(b"\0asm\1\0\0\0")
    (folder / "app-config.js").write_text("window.config = {dataSources: ['https://demo.example.org']};")
    (tmp_path / "secret.txt").write_text("outside dist")
    return folder


@pytest.fixture
async def client(dist: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the viewer app, for the stand-in dist and ROOT."""
    transport = httpx.ASGITransport(app=build_viewer_app(ViewerSettings(dist=dist, dicomweb_root=ROOT)))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def test_app_config_is_the_projects_pointing_at_the_given_root(client: httpx.AsyncClient) -> None:
    response = await client.get("/app-config.js")
    assert response.status_code == 200
    assert f"const DICOMWEB_ROOT = '{ROOT}';" in response.text
    assert "demo.example.org" not in response.text and DEFAULT_DICOMWEB_ROOT not in response.text


async def test_app_config_is_javascript_and_never_cached(client: httpx.AsyncClient) -> None:
    response = await client.get("/app-config.js")
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["cache-control"] == "no-cache"


def test_template_names_no_host_but_the_dicomweb_root() -> None:
    template = APP_CONFIG_TEMPLATE.read_text()
    rendered = render_app_config(template, ROOT)
    assert "https://" not in rendered and rendered.count("http://") == 1


def test_trailing_slash_of_the_root_is_dropped() -> None:
    rendered = render_app_config(APP_CONFIG_TEMPLATE.read_text(), ROOT + "/")
    assert f"const DICOMWEB_ROOT = '{ROOT}';" in rendered


def test_quote_in_the_root_cannot_end_the_string() -> None:
    rendered = render_app_config(APP_CONFIG_TEMPLATE.read_text(), "http://x/'+alert(1)+'")
    assert "const DICOMWEB_ROOT = 'http://x/\\'+alert(1)+\\'';" in rendered


def test_template_without_the_root_line_is_refused() -> None:
    with pytest.raises(ValueError):
        render_app_config("window.config = {};", ROOT)


async def test_client_side_route_gets_index_html(client: httpx.AsyncClient) -> None:
    response = await client.get("/viewer?StudyInstanceUIDs=1.2.3")
    assert response.status_code == 200 and response.content == INDEX


async def test_root_gets_index_html(client: httpx.AsyncClient) -> None:
    assert (await client.get("/")).content == INDEX


async def test_missing_asset_is_404_not_index_html(client: httpx.AsyncClient) -> None:
    assert (await client.get("/missing.bundle.js")).status_code == 404


async def test_script_is_served_as_javascript(client: httpx.AsyncClient) -> None:
    response = await client.get("/app.bundle.js")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/javascript")


async def test_webassembly_is_served_as_application_wasm(client: httpx.AsyncClient) -> None:
    assert (await client.get("/codec.wasm")).headers["content-type"] == "application/wasm"


async def test_pages_are_cross_origin_isolated(client: httpx.AsyncClient) -> None:
    headers = (await client.get("/")).headers
    assert headers["cross-origin-opener-policy"] == "same-origin"
    assert headers["cross-origin-embedder-policy"] == "require-corp"


async def test_path_outside_dist_is_not_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/..%2Fsecret.txt")
    assert response.status_code == 404 and b"outside dist" not in response.content


def test_missing_dist_is_reported(tmp_path: Path) -> None:
    with pytest.raises(MissingViewerBuild, match="make install"):
        build_viewer_app(ViewerSettings(dist=tmp_path / "nothing"))
