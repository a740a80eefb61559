"""Command line: ``python -m viewer [--host H] [--port P] [--dicomweb-root URL] [--dist DIR]``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import uvicorn

from viewer.serve import DEFAULT_DICOMWEB_ROOT, DEFAULT_DIST, MissingViewerBuild, ViewerSettings, build_viewer_app

logger = logging.getLogger("viewer")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="python -m viewer",
                                     description="Serve the OHIF Viewer for a DICOMweb server.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=3000, help="port to listen on (default: %(default)s)")
    parser.add_argument("--dicomweb-root", default=DEFAULT_DICOMWEB_ROOT,
                        help="the server's QIDO-RS and WADO-RS root, as the browser reaches it (default: %(default)s)")
    parser.add_argument("--dist", type=Path, default=DEFAULT_DIST, help="OHIF's built dist/ (default: @ohif/app's)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Serve the viewer until interrupted."""
    arguments = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = build_viewer_app(ViewerSettings(dist=arguments.dist, dicomweb_root=arguments.dicomweb_root))
    except MissingViewerBuild as error:
        sys.exit(str(error))
    logger.info("OHIF Viewer for %s on http://%s:%d/", arguments.dicomweb_root, arguments.host, arguments.port)
    uvicorn.run(app, host=arguments.host, port=arguments.port, access_log=False, timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
