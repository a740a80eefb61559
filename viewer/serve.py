"""An ASGI app serving OHIF's prebuilt dist/ with the project's app-config.js and a fallback to index.html."""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIST = REPO_ROOT / "node_modules" / "@ohif" / "app" / "dist"
APP_CONFIG_TEMPLATE = Path(__file__).resolve().parent / "app-config.js"
APP_CONFIG_PATH = "app-config.js"
INDEX_HTML = "index.html"
DEFAULT_DICOMWEB_ROOT = "http://localhost:7071/v2"
# The one line of the template that names the server; replaced whole.
ROOT_LINE_PREFIX = "const DICOMWEB_ROOT = "

# Set explicitly: some platforms' MIME tables (the Windows registry) map .js to text/plain, and
# WebAssembly.instantiateStreaming refuses anything but application/wasm.
MEDIA_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".wasm": "application/wasm",
               ".json": "application/json", ".jsonc": "application/json", ".svg": "image/svg+xml",
               ".woff2": "font/woff2", ".html": "text/html"}
NO_CACHE = {"Cache-Control": "no-cache"}
# Cross-origin isolation lets cornerstone use SharedArrayBuffer (volume viewports, faster decoding). Requests to
# the DICOMweb server are CORS requests, which require-corp lets through.
ISOLATION_HEADERS = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}


@dataclass(frozen=True)
class ViewerSettings:
    """Where the viewer's files are and which DICOMweb server it is configured for."""

    dist: Path = DEFAULT_DIST
    dicomweb_root: str = DEFAULT_DICOMWEB_ROOT


class MissingViewerBuild(RuntimeError):
    """The OHIF dist/ folder is not there (node_modules not installed)."""


def render_app_config(template: str, dicomweb_root: str) -> str:
    """Return the app-config.js template with its DICOMWEB_ROOT line pointing at ``dicomweb_root``."""
    literal = "'" + dicomweb_root.rstrip("/").replace("\\", "\\\\").replace("'", "\\'") + "'"
    lines = template.splitlines(keepends=True)
    for number, line in enumerate(lines):
        if line.startswith(ROOT_LINE_PREFIX):
            lines[number] = f"{ROOT_LINE_PREFIX}{literal};\n"
            return "".join(lines)
    raise ValueError(f"the app-config template has no line starting {ROOT_LINE_PREFIX!r}")


def resolve_static(dist: Path, url_path: str) -> Path | None:
    """Return the file of dist/ that ``url_path`` names, or None (missing, a folder, or outside dist/)."""
    candidate = (dist / url_path.lstrip("/")).resolve()
    if not candidate.is_relative_to(dist) or not candidate.is_file():
        return None
    return candidate


def looks_like_a_file(url_path: str) -> bool:
    """Return whether the last segment of ``url_path`` has an extension (an asset, not a client-side route)."""
    return "." in url_path.rstrip("/").rsplit("/", 1)[-1]


def build_viewer_app(settings: ViewerSettings) -> Starlette:
    """Return the ASGI app serving ``settings.dist`` with the rendered app-config.js."""
    dist = settings.dist.resolve()
    if not (dist / INDEX_HTML).is_file():
        raise MissingViewerBuild(f"{dist / INDEX_HTML} is missing: run `make install` (npm ci installs @ohif/app)")
    app_config = render_app_config(APP_CONFIG_TEMPLATE.read_text(encoding="utf-8"), settings.dicomweb_root)

    async def serve(request: Request) -> Response:
        path = request.url.path
        if path.lstrip("/") == APP_CONFIG_PATH:
            return Response(app_config, media_type="text/javascript", headers={**NO_CACHE, **ISOLATION_HEADERS})
        found = resolve_static(dist, path)
        if found is None and looks_like_a_file(path):
            return PlainTextResponse("Not Found", status_code=404)
        # Client-side routes (/viewer, /segmentation, ...) all load the single-page app.
        file = found or dist / INDEX_HTML
        headers = {**ISOLATION_HEADERS, **(NO_CACHE if file.name == INDEX_HTML else {})}
        media_type = MEDIA_TYPES.get(file.suffix) or mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        return FileResponse(file, media_type=media_type, headers=headers)

    return Starlette(routes=[Route("/{path:path}", serve, methods=["GET", "HEAD"])])
