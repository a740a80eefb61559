"""Entity-group transactions sent without the email package: the same request bytes for a fraction of the CPU.

azure-data-tables writes a transaction's multipart/mixed body with the standard library's email generator and
reads the answer with its email parser, per operation; on a STOW run that was about half of a transaction's CPU
and a tenth of the server's (py-spy). Here the body is written by string formatting, byte for byte what the SDK
sends (its sub-request headers included), and an answer whose every operation succeeded is read by splitting on
its boundaries. Anything else (a refused operation, a body this reader does not follow) is read by the SDK's own
parser from the same response and raised as the SDK raises it, so callers see the same results and exceptions.

The clients come from `TransactionTableService`, whose `get_table_client` makes `TransactionTableClient`s on the
service's pipeline, as the SDK's does. `_batch_send` is a private method of azure-data-tables (pinned in
requirements.txt); tests/dicom_core/storage/test_table_transactions.py holds it to the SDK's behaviour.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast
from uuid import uuid4
from wsgiref.handlers import format_date_time

from azure.core.exceptions import HttpResponseError
from azure.core.pipeline import AsyncPipeline
from azure.core.rest import HttpRequest
from azure.data.tables import _base_client, _error
from azure.data.tables._error import RequestTooLargeError, TableTransactionError
from azure.data.tables._policies import StorageHeadersPolicy
from azure.data.tables.aio import TableClient, TableServiceClient
from azure.data.tables.aio._base_client_async import AsyncTransportWrapper

from dicom_core.storage.client_pipelines import send

# The SDK's own (untyped) helpers, so that errors come out exactly as its transactions raise them.
_decode_error = cast(Callable[..., HttpResponseError], _error._decode_error)
_validate_table_name_error = cast(Callable[[HttpResponseError, str], None], _error._validate_tablename_error)
_part_metadata = cast(Callable[[Any], Mapping[str, Any]], _base_client.extract_batch_part_metadata)
_transport_wrapper = cast(Callable[[Any], Any], AsyncTransportWrapper)

CRLF = b"\r\n"
_ACCEPTED = 202
_TOO_LARGE = 413
_SUCCESS = range(200, 300)


class TransactionTableClient(TableClient):
    """A TableClient whose transactions write and read their multipart bodies directly."""

    async def _batch_send(self, table_name: str, *reqs: HttpRequest, **kwargs: Any) -> list[Mapping[str, Any]]:
        """Submit ``reqs`` as one changeset; the metadata (ETag) of each operation, or the SDK's exception."""
        batch, changeset = f"batch_{uuid4()}", f"changeset_{uuid4()}"
        request = HttpRequest(
            method="POST",
            url=f"{self.scheme}://{self._primary_hostname}/$batch",
            headers={
                "x-ms-version": self.api_version,
                "DataServiceVersion": "3.0",
                "MaxDataServiceVersion": "3.0;NetFx",
                "Content-Type": f"multipart/mixed; boundary={batch}",
                "Accept": "application/json",
            },
            content=changeset_body(reqs, batch, changeset, format_date_time(time.time())),
        )
        response = await send(self, request, stream=True, **kwargs)
        await response.read()
        if response.status_code == _TOO_LARGE:
            raise _decode_error(response, error_message="The transaction request was too large",
                                error_type=RequestTooLargeError)
        if response.status_code != _ACCEPTED:
            decoded = _decode_error(response)
            _validate_table_name_error(decoded, table_name)
            raise decoded
        answers = changeset_answers(response.content, response.headers.get("Content-Type", ""))
        if answers is not None and len(answers) == len(reqs) and all(status in _SUCCESS for status, _ in answers):
            return [{"etag": etag} if etag is not None else {} for _, etag in answers]
        return await _read_by_sdk(request, response, reqs, table_name, changeset)


class TransactionTableService(TableServiceClient):
    """A TableServiceClient whose table clients are TransactionTableClients."""

    def get_table_client(self, table_name: str, **kwargs: Any) -> TableClient:
        """A client of ``table_name`` on this service's pipeline (as the SDK's own method makes it)."""
        pipeline: AsyncPipeline[Any, Any] = AsyncPipeline(
            transport=_transport_wrapper(self._client._client._pipeline._transport), policies=self._policies)
        return TransactionTableClient(
            self.url, table_name=table_name, credential=self.credential, api_version=self.api_version,
            pipeline=pipeline, location_mode=self._location_mode, _hosts=self._hosts, **kwargs,
        )


def changeset_body(reqs: Sequence[HttpRequest], batch: str, changeset: str, date: str) -> bytes:
    """The multipart/mixed body of one changeset holding ``reqs``, with the date headers the SDK adds to each."""
    lines = [f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n".encode()]
    for index, req in enumerate(reqs):
        headers = "".join(f"{name}: {value}\r\n" for name, value in req.headers.items())
        lines.append(
            f"--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
            f"Content-ID: {index}\r\n\r\n{req.method} {req.url} HTTP/1.1\r\n{headers}x-ms-date: {date}\r\n"
            f"Date: {date}\r\n\r\n".encode())
        content = req.content
        if content:
            lines.append(content.encode() if isinstance(content, str) else bytes(content))
        lines.append(CRLF)
    lines.append(f"--{changeset}--\r\n\r\n--{batch}--\r\n".encode())
    return b"".join(lines)


def changeset_answers(body: bytes, content_type: str) -> list[tuple[int, str | None]] | None:
    """The status and ETag of each operation's answer in a changeset response; None if the body is not one."""
    outer = _boundary(content_type)
    if outer is None:
        return None
    parts = body.split(b"--" + outer.encode())
    if len(parts) != 3 or not parts[2].startswith(b"--"):
        return None  # one part between the opening and the closing delimiter
    head, _, changeset = parts[1].partition(CRLF + CRLF)
    inner = _boundary(_header(head, "content-type") or "")
    if inner is None:
        return None
    pieces = changeset.split(b"--" + inner.encode())
    if len(pieces) < 3 or pieces[-1][:2] != b"--" or pieces[0].strip():
        return None
    answers = []
    for piece in pieces[1:-1]:
        mime, _, http = piece.removeprefix(CRLF).partition(CRLF + CRLF)
        if (_header(mime, "content-type") or "").lower() != "application/http":
            return None
        status_line, _, rest = http.partition(CRLF)
        fields = status_line.split(b" ", 2)
        if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
            return None
        answers.append((int(fields[1]), _header(rest.partition(CRLF + CRLF)[0], "etag")))
    return answers


def _boundary(content_type: str) -> str | None:
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/mixed":
        return None
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "boundary":
            return value.strip().strip('"') or None
    return None


def _header(block: bytes, name: str) -> str | None:
    """The value of header ``name`` (lower case) in a CRLF-separated header block, if present."""
    for line in block.split(CRLF):
        key, colon, value = line.partition(b":")
        if colon and key.strip().lower() == name.encode():
            return value.strip().decode("latin-1")
    return None


async def _read_by_sdk(request: HttpRequest, response: Any, reqs: Sequence[HttpRequest], table_name: str,
                       changeset: str) -> list[Mapping[str, Any]]:
    """Read the answer as the SDK does, with its parser: its results, or the exception it raises (a refusal)."""
    # The SDK reads parts against the multipart description of the request they answer; give it that description.
    policies = [StorageHeadersPolicy()]
    described = HttpRequest("POST", "")
    described.set_multipart_mixed(*reqs, policies=policies, boundary=changeset)
    response.request.set_multipart_mixed(described, policies=policies, enforce_https=False,
                                         boundary=_boundary(request.headers["Content-Type"]))
    parts = [part async for part in response.parts()]
    for part in parts:
        await part.read()
    refused = [part for part in parts if part.status_code not in _SUCCESS]
    if not refused:
        return [_part_metadata(part) for part in parts]
    if refused[0].status_code == _TOO_LARGE:
        raise _decode_error(response, error_message="The transaction request was too large",
                            error_type=RequestTooLargeError)
    decoded = _decode_error(response=refused[0], error_type=TableTransactionError)
    _validate_table_name_error(decoded, table_name)
    raise decoded
