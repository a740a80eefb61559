"""Requests sent through an Azure SDK client's own pipeline, past the SDK's operation layer.

The pipeline keeps the client's credential, retries, logging and connection pool; what is skipped is the work of
the generated operation around it (building downloaders and clients, parsing every response header, decoding
entities), measured as a third of a hot read's or upload's CPU (docs/storage.md, "Requests the server forms
itself"). A client's pipeline is a private attribute of the pinned azure-storage-blob and azure-data-tables:
every request the server forms itself is sent here; re-check it on every SDK upgrade.
"""

from __future__ import annotations

from typing import Any, cast

from azure.core.rest import AsyncHttpResponse, HttpRequest


async def send(client: Any, request: HttpRequest, *, stream: bool, **kwargs: Any) -> AsyncHttpResponse:
    """Send ``request`` through ``client``'s pipeline (a blob, container or table client); no error handling."""
    return cast(AsyncHttpResponse, await client._client._client.send_request(request, stream=stream, **kwargs))
