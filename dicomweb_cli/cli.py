"""The `dicomweb` command line: `upload`, `search`, `download` and `tags` against any DICOMweb service."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import tags
from .download import DownloadError, download
from .search import LEVELS, SearchError, SearchQuery, format_json, format_table, search
from .transport import Endpoint, TransientError
from .upload import MIB, AuthorizationError, UploadOptions, UploadSummary, upload

URL_VARIABLE = "DICOMWEB_URL"
TOKEN_VARIABLE = "DICOMWEB_TOKEN"
EXIT_FAILED = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the command and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="dicomweb", description="Upload, search and download DICOM with any DICOMweb service.")
    parser.add_argument("--url", default=os.environ.get(URL_VARIABLE),
                        help=f"the service root, with its version, e.g. https://host/v2 (default: ${URL_VARIABLE})")
    parser.add_argument("--token", default=os.environ.get(TOKEN_VARIABLE),
                        help=f"bearer token sent as Authorization (default: ${TOKEN_VARIABLE})")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per request (default: %(default)s)")
    parser.add_argument("--retries", type=int, default=5,
                        help="tries again after a transient error (429, 5xx, network) (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("upload", help="store every DICOM file under the given files and folders (STOW-RS)")
    up.add_argument("paths", nargs="+", type=Path, help="files and folders (walked recursively)")
    up.add_argument("--batch-files", type=_positive, default=20, help="files per request (default: %(default)s)")
    up.add_argument("--batch-mib", type=_positive, default=64, help="MiB per request (default: %(default)s)")
    up.add_argument("--concurrency", type=_positive, default=4, help="requests at once (default: %(default)s)")
    up.add_argument("--no-skip-existing", action="store_true",
                    help="do not ask the service (QIDO-RS) which instances it has already")

    find = commands.add_parser("search", help="search with QIDO-RS and print a table or DICOM JSON")
    find.add_argument("level", choices=LEVELS)
    find.add_argument("--study", help="search within this study")
    find.add_argument("--series", help="search within this series (with --study)")
    find.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE",
                      help="match an attribute, e.g. -f PatientID=123 -f StudyDate=20240101-20241231")
    find.add_argument("-i", "--include", action="append", default=[], metavar="FIELD",
                      help="an attribute to add to each result (includefield), or 'all'")
    find.add_argument("--limit", type=_positive, help="at most this many results")
    find.add_argument("--offset", type=int, default=0, help="skip this many results")
    find.add_argument("--fuzzy", action="store_true", help="fuzzy matching of person names")
    find.add_argument("--all", action="store_true", help="follow every page (offset) to the last result")
    find.add_argument("--page-size", type=_positive, default=100,
                      help="results per page with --all (default: %(default)s)")
    find.add_argument("--format", choices=("table", "json"), default="table")

    down = commands.add_parser("download", help="retrieve a study or series (WADO-RS) into a folder tree")
    down.add_argument("study", help="StudyInstanceUID")
    down.add_argument("--series", help="only this SeriesInstanceUID")
    down.add_argument("-o", "--out", type=Path, default=Path("."),
                      help="folder receiving {study}/{series}/{instance}.dcm (default: the current one)")
    _add_tags_parser(commands)
    return parser


def _add_tags_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("tags", help="manage extended query tags (searchable extra attributes)")
    actions = parser.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="make attributes searchable; stored data is reindexed in the background")
    add.add_argument("paths", nargs="+", help="tags as 8 hex digits or keywords, e.g. StudyTime 00200013")
    add.add_argument("--level", required=True, choices=("Study", "Series", "Instance"))
    add.add_argument("--vr", help="the VR (required for a private tag)")
    add.add_argument("--private-creator", help="the private creator (required for a private tag)")
    add.add_argument("--wait", action="store_true", help="follow the reindex to its end with a progress bar")
    listing = actions.add_parser("list", help="list the extended query tags")
    errors = actions.add_parser("errors", help="list the instances whose value of a tag failed validation")
    errors.add_argument("path")
    for paged in (listing, errors):
        paged.add_argument("--limit", type=_positive, default=100, help="at most this many (default: %(default)s)")
        paged.add_argument("--offset", type=int, default=0, help="skip this many")
    for name, text in (("show", "show one tag"), ("delete", "stop indexing a tag and remove its entries"),
                       ("enable", "enable searches on a tag"), ("disable", "disable searches on a tag")):
        actions.add_parser(name, help=text).add_argument("path")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit code (0 success, 1 something failed, 2 usage)."""
    parser = build_parser()
    arguments = parser.parse_args(argv)
    if not arguments.url:
        parser.error(f"the service URL is missing: pass --url or set {URL_VARIABLE}")
    endpoint = Endpoint(url=arguments.url.rstrip("/"), token=arguments.token or None,
                        timeout_seconds=arguments.timeout, retries=arguments.retries)
    try:
        if arguments.command == "upload":
            return _upload(endpoint, arguments)
        if arguments.command == "search":
            return _search(endpoint, arguments, parser)
        if arguments.command == "tags":
            return _tags(endpoint, arguments)
        return _download(endpoint, arguments)
    except (AuthorizationError, TransientError, SearchError, DownloadError, tags.TagsError) as exc:
        print(f"dicomweb {arguments.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"dicomweb {arguments.command}: interrupted", file=sys.stderr)
        return 130


def _upload(endpoint: Endpoint, arguments: argparse.Namespace) -> int:
    missing = [str(path) for path in arguments.paths if not path.exists()]
    if missing:
        print(f"dicomweb upload: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    options = UploadOptions(batch_files=arguments.batch_files, batch_bytes=arguments.batch_mib * MIB,
                            concurrency=arguments.concurrency, progress=not arguments.no_progress,
                            skip_existing=not arguments.no_skip_existing)
    summary = asyncio.run(upload(endpoint, arguments.paths, options))
    print(format_upload_summary(summary))
    return summary.exit_code


def format_upload_summary(summary: UploadSummary) -> str:
    """Return the closing report of an upload."""
    size = sum(i.size for i in summary.found)
    lines = [f"Found {len(summary.found)} DICOM files ({_mib(size)}); skipped {len(summary.not_dicom)} other files."]
    lines.append(f"Already on the server: {len(summary.already_by_search) + len(summary.already_by_server)} "
                 f"({len(summary.already_by_search)} found by search, "
                 f"{len(summary.already_by_server)} answered 45070).")
    lines.append(f"Stored: {len(summary.stored)}. Failed: {len(summary.failed)}.")
    rate = summary.bytes_sent / summary.seconds if summary.seconds > 0 else 0.0
    lines.append(f"Sent {_mib(summary.bytes_sent)} in {summary.seconds:.1f} s ({_mib(rate)}/s).")
    for path, reason in sorted(summary.failed.items()):
        lines.append(f"FAILED {path}: {reason}")
    return "\n".join(lines)


def _search(endpoint: Endpoint, arguments: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    filters = []
    for item in arguments.filter:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"a filter must be KEY=VALUE, not {item!r}")
        filters.append((key, value))
    includes = tuple(field.strip() for item in arguments.include for field in item.split(",") if field.strip())
    query = SearchQuery(level=arguments.level, study=arguments.study, series=arguments.series,
                        filters=tuple(filters), include_fields=includes, limit=arguments.limit,
                        offset=arguments.offset, fuzzy=arguments.fuzzy, all_pages=arguments.all,
                        page_size=arguments.page_size)
    try:
        query.path()
    except ValueError as exc:
        parser.error(str(exc))
    result = asyncio.run(search(endpoint, query))
    rows = result.rows[: arguments.limit] if arguments.all and arguments.limit else result.rows
    print(format_json(rows) if arguments.format == "json" else format_table(rows, arguments.level, includes))
    return 0


def _download(endpoint: Endpoint, arguments: argparse.Namespace) -> int:
    summary = asyncio.run(download(endpoint, arguments.study, arguments.series, arguments.out,
                                   progress=not arguments.no_progress))
    print(f"Wrote {len(summary.files)} files ({_mib(summary.bytes_received)} received) under {arguments.out}.")
    if summary.unreadable_parts:
        print(f"FAILED: {summary.unreadable_parts} parts were not DICOM files with valid UIDs.")
        return EXIT_FAILED
    return 0


def _tags(endpoint: Endpoint, arguments: argparse.Namespace) -> int:
    action = arguments.action
    if action == "add":
        requests = [tags.TagRequest(path, arguments.level, arguments.vr, arguments.private_creator)
                    for path in arguments.paths]
        done = asyncio.run(tags.add_tags(endpoint, requests, wait=arguments.wait, progress=not arguments.no_progress))
        print(tags.format_json(done))
        return EXIT_FAILED if done.get("status") == "failed" else 0
    if action == "list":
        print(tags.format_tags(asyncio.run(tags.list_tags(endpoint, arguments.limit, arguments.offset))))
    elif action == "errors":
        print(tags.format_json(asyncio.run(tags.tag_errors(endpoint, arguments.path, arguments.limit,
                                                           arguments.offset))))
    elif action == "show":
        print(tags.format_json(asyncio.run(tags.show_tag(endpoint, arguments.path))))
    elif action == "delete":
        asyncio.run(tags.delete_tag(endpoint, arguments.path))
        print(f"Deleting {arguments.path}: its index entries are removed in the background.")
    else:
        updated = asyncio.run(tags.set_query_status(endpoint, arguments.path, action == "enable"))
        print(tags.format_json(updated))
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {value}")
    return value


def _mib(size: float) -> str:
    return f"{size / MIB:.1f} MiB"
