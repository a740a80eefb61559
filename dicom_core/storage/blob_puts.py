"""Whole-blob uploads sent through the container's pipeline: no BlobClient built per blob.

`ContainerClient.upload_blob` builds a `BlobClient`, and with it a generated client, its configuration and its
policies, for every blob it uploads, then walks the SDK's general upload helper: on a STOW run that was a fifth
of each instance file upload's CPU (py-spy). A store's blobs are new names every time, so no client can be kept.
Here the request is the one the SDK's generated `upload` operation builds (its own builder), sent through the
container's pipeline (the same policies: authentication, retries, headers), and a refusal is raised as the SDK
raises it (`process_storage_error`: ResourceNotFoundError for a missing container, with its error code).

`build_upload_request` is internal to azure-storage-blob (pinned in requirements.txt); test_blob_puts.py holds
this to the SDK's behaviour.
"""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import quote

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError, map_error
from azure.storage.blob import ContentSettings
from azure.storage.blob._generated.operations._block_blob_operations import build_upload_request
from azure.storage.blob._shared.response_handlers import process_storage_error
from azure.storage.blob.aio import ContainerClient

from dicom_core.storage.client_pipelines import send

_CREATED = 201
_BODY_TYPE = "application/octet-stream"  # the request's own Content-Type, as the SDK sends it (it is signed)
_ERRORS: dict[int, type[HttpResponseError]] = {404: ResourceNotFoundError, 409: ResourceExistsError}


async def put_blob(container: ContainerClient, name: str, body: bytes, content: ContentSettings) -> None:
    """Upload ``body`` as the block blob ``name`` (replacing one that exists), with ``content``'s Content-Type."""
    generated = cast(Any, container)._client
    request = build_upload_request(
        url=blob_url(container, name), content_length=len(body), version=generated._config.version,
        blob_content_type=content.content_type, blob_type="BlockBlob", content_type=_BODY_TYPE,
        content=cast(Any, body))
    response = await send(container, request, stream=False)
    if response.status_code != _CREATED:
        try:
            map_error(status_code=response.status_code, response=response, error_map=_ERRORS)
            raise HttpResponseError(response=response)
        except HttpResponseError as error:
            process_storage_error(error)


def blob_url(container: ContainerClient, name: str) -> str:
    """The URL of blob ``name`` in ``container`` (with the container's query string), as a BlobClient forms it."""
    query = cast(Any, container)._query_str
    return (f"{container.scheme}://{container.primary_hostname}/{quote(container.container_name.encode())}/"
            f"{quote(name, safe='~/')}{query}")
