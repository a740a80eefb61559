"""The Azure Functions app: one HTTP-triggered function per DICOMweb resource path.

Each function only translates HTTP into a call of `dicom_core` and its result back into HTTP; errors
from `dicom_core` become responses in `dicomweb_edge`, the one place that does so.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import azure.functions as func
from azurefunctions.extensions.http.fastapi import PlainTextResponse, Request, Response

from dicom_core.api_version import parse_api_version
from dicom_core.errors import DicomWebError
from dicom_core.storage import shared_storage
from dicom_core import stow
from dicom_core.uids import require_valid_uid

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
LOGGER = logging.getLogger("dicomweb")

Handler = Callable[[Request], Awaitable[Response]]


def dicomweb_edge(handler: Handler) -> Handler:
    """Turn `DicomWebError`s into plain-text responses with their status, and anything else into a 500."""

    @functools.wraps(handler)
    async def wrapper(req: Request) -> Response:
        try:
            return await handler(req)
        except DicomWebError as exc:
            return PlainTextResponse(exc.message, status_code=int(exc.status))
        except Exception:
            LOGGER.exception("Unhandled error on %s %s", req.method, req.url.path)
            return PlainTextResponse("The server hit an unexpected error.", status_code=500)

    return wrapper


def _base_url(req: Request, public_base_url: str) -> str:
    return public_base_url or str(req.base_url).rstrip("/")


async def _body(req: Request) -> AsyncIterator[bytes]:
    async for chunk in req.stream():
        if chunk:
            yield chunk


async def _store(req: Request) -> Response:
    version = parse_api_version(req.path_params["version"])
    study = req.path_params.get("study")
    storage = await shared_storage()
    result = await stow.store_instances(
        storage,
        stow.StoreRequest(
            api_version=version,
            study_uid=require_valid_uid(study, "StudyInstanceUID") if study is not None else None,
            content_type=req.headers.get("content-type"),
            accept=req.headers.get("accept"),
            base_url=_base_url(req, storage.settings.public_base_url),
            upsert=req.method == "PUT",
        ),
        _body(req),
    )
    headers = {"Warning": result.warning} if result.warning else None
    if result.body is None:
        return Response(status_code=result.status, headers=headers)
    return Response(json.dumps(result.body), status_code=result.status, headers=headers,
                    media_type="application/dicom+json")


@app.route(route="v{version}/studies", methods=["POST", "PUT"])
@dicomweb_edge
async def store_instances(req: Request) -> Response:
    """STOW-RS: POST /v{n}/studies stores new instances; PUT replaces those that exist."""
    return await _store(req)


@app.route(route="v{version}/studies/{study}", methods=["POST", "PUT"])
@dicomweb_edge
async def store_study_instances(req: Request) -> Response:
    """STOW-RS into one study: every instance must belong to the study of the URL."""
    return await _store(req)
