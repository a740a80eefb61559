"""The Azure Functions app: one HTTP-triggered function per DICOMweb resource path.

Each function only translates HTTP into a call of `dicom_core` and the `ServiceResult` it returns back into HTTP
(`_http`, the one adapter); errors from `dicom_core` become responses in `dicomweb_edge`, the one place that does so.
"""

from __future__ import annotations

import gc

# Importing the app creates ~1,300 modules' objects that live as long as the process: collections during the import
# would walk that growing heap and free nothing (~15 % of the import's CPU). Collection resumes at the end, where
# what the import made is frozen out of every later full collection.
gc.disable()
YOUNG_COLLECTION_ALLOCATIONS = 10_000  # the young generation's threshold once the app serves (see the end)

import functools
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

import azure.functions as func
from azurefunctions.extensions.http.fastapi import (  # type: ignore[import-untyped]
    PlainTextResponse,
    Request,
    Response,
    StreamingResponse,
)

from dicom_core.changefeed import service as changefeed_service
from dicom_core.changefeed.query import parse_feed_query, parse_latest_query
from dicom_core.delete import service as delete_service
from dicom_core.edge import auth, cors, health, openapi
from dicom_core.edge.public_url import public_base_url
from dicom_core.edge.request_limits import RequestLimits, check_request_head, limited_body
from dicom_core.edge.request_log import log_requests
from dicom_core.edge.streamed_answer import cut_short_on_failure
from dicom_core.extended_tags import service as tags_service
from dicom_core.maintenance.repair import run_repair
from dicom_core.maintenance.routine import run_maintenance
from dicom_core.model.errors import DicomWebError
from dicom_core.model.identifiers import InstanceIdentifiers
from dicom_core.model.uids import require_valid_uid
from dicom_core.operations import service as operations_service
from dicom_core.operations.runner import run_in_background, run_operations
from dicom_core.qido import service as qido_service
from dicom_core.qido.query import QidoResource
from dicom_core.settings import Settings
from dicom_core.storage.clients import Storage, shared_storage
from dicom_core.storage.faults import storage_unavailable
from dicom_core.stow import service as stow_service
from dicom_core.wado import bulkdata, bulkdata_scope, frames, metadata, retrieve, thumbnails
from dicom_core.wado.rendering_parameters import RenderingParameters
from dicom_core.wire.api_version import parse_api_version
from dicom_core.wire.service_result import ServiceResult

LOGGER = logging.getLogger("dicomweb")
# Authentication and CORS are fixed at start-up: an unknown DICOMWEB_AUTH_MODE or incomplete entra settings
# stop the app from starting rather than leave it open. In mode function the Functions host checks keys on
# every route not marked anonymous.
_STARTUP_SETTINGS = Settings.from_environment()
AUTH_MODE = auth.mode_of(_STARTUP_SETTINGS)
AUTHENTICATOR = auth.authenticator_for(_STARTUP_SETTINGS)
CORS_POLICY = cors.CorsPolicy.from_origins(_STARTUP_SETTINGS.cors_allowed_origins)
REQUEST_LIMITS = RequestLimits.of(_STARTUP_SETTINGS)
app = func.FunctionApp(
    http_auth_level=func.AuthLevel.FUNCTION if AUTH_MODE is auth.AuthMode.FUNCTION else func.AuthLevel.ANONYMOUS)

Handler = Callable[[Request], Awaitable[Response]]


# --- The edge: checks and errors around every route, and a service's result as the HTTP response -------------

def dicomweb_edge(handler: Handler, *, anonymous: bool = False) -> Handler:
    """Check the caller (unless ``anonymous``); `DicomWebError`s become plain-text responses, anything else a 500."""

    @functools.wraps(handler)
    async def wrapper(req: Request) -> Response:
        try:
            check_request_head(REQUEST_LIMITS, req.url.query, req.headers.raw)
            if not anonymous:
                await AUTHENTICATOR.authorize(req.method, req.headers.get("authorization"))
            return await handler(req)
        except DicomWebError as exc:
            return PlainTextResponse(exc.message, status_code=int(exc.status), headers=exc.headers)
        except Exception as exc:
            if (unavailable := storage_unavailable(exc)) is not None:  # storage down: 503, retry later
                LOGGER.warning("Storage unavailable on %s %s: %r", req.method, req.url.path, exc)
                return PlainTextResponse(unavailable.message, status_code=int(unavailable.status),
                                         headers=unavailable.headers)
            LOGGER.exception("Unhandled error on %s %s", req.method, req.url.path)
            return PlainTextResponse("The server hit an unexpected error.", status_code=500)

    return log_requests(_with_cors(wrapper))


def anonymous_edge(handler: Handler) -> Handler:
    """`dicomweb_edge` for a route anyone may call: the health check, the OpenAPI document, CORS preflights."""
    return dicomweb_edge(handler, anonymous=True)


def _with_cors(handler: Handler) -> Handler:
    """Give every response of ``handler``, errors too, the CORS headers its request's origin is allowed."""

    @functools.wraps(handler)
    async def wrapper(req: Request) -> Response:
        response = await handler(req)
        if CORS_POLICY.enabled:
            response.headers.add_vary_header(cors.VARY_HEADER)
            response.headers.update(cors.response_headers(CORS_POLICY, req.headers.get("origin")))
        return response

    return wrapper


def _http(result: ServiceResult) -> Response:
    """The response of a service's result: a stream of chunks is streamed (its connection dropped if it fails
    part-way), bytes (or no body) sent whole."""
    if result.body is None or isinstance(result.body, bytes):
        return Response(result.body, status_code=result.status, headers=result.headers, media_type=result.media_type)
    return StreamingResponse(cut_short_on_failure(result.body), status_code=result.status,
                             headers=result.headers, media_type=result.media_type)


def _version(req: Request) -> int:
    return parse_api_version(req.path_params["version"])


def _study_uid(req: Request) -> str:
    """The API version checked, then the StudyInstanceUID of the path."""
    _version(req)
    return require_valid_uid(req.path_params["study"], "StudyInstanceUID")


def _series_uid(req: Request) -> str:
    return require_valid_uid(req.path_params["series"], "SeriesInstanceUID")


def _instance_ids(req: Request) -> InstanceIdentifiers:
    return InstanceIdentifiers(_study_uid(req), _series_uid(req),
                               require_valid_uid(req.path_params["instance"], "SOPInstanceUID"))


def _optional_uid(req: Request, parameter: str, name: str) -> str | None:
    """The validated UID of a route parameter that this route may not have."""
    value = req.path_params.get(parameter)
    return require_valid_uid(value, name) if value is not None else None


def _accept(req: Request) -> str | None:
    values = req.headers.getlist("accept")  # a repeated header is one list (RFC 9110 §5.3)
    return ", ".join(values) if values else None


# --- Store (STOW-RS): POST stores new instances, PUT replaces those that exist --------------------------------

async def _store(req: Request) -> Response:
    version = _version(req)
    storage = await shared_storage()
    request = stow_service.StoreRequest(
        api_version=version,
        study_uid=_optional_uid(req, "study", "StudyInstanceUID"),
        content_type=req.headers.get("content-type"),
        accept=req.headers.get("accept"),
        base_url=public_base_url(storage.settings.public_base_url, str(req.base_url), req.headers),
        upsert=req.method == "PUT",
    )
    body = limited_body(req.stream(), REQUEST_LIMITS)  # 413 past the request limit, 408 when it stalls
    return _http(await stow_service.store_instances(storage, request, body))


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


# --- Retrieve (WADO-RS): studies, series, instances, metadata, frames, rendered, thumbnails -------------------

def _versioned_root(req: Request, storage: Storage) -> str:
    return f"{public_base_url(storage.settings.public_base_url, str(req.base_url), req.headers)}/v{_version(req)}"


def _metadata_request(req: Request, storage: Storage) -> metadata.MetadataRequest:
    root = None if storage.settings.metadata_omit_bulk_data else _versioned_root(req, storage)
    return metadata.MetadataRequest(accept=_accept(req), accept_encoding=req.headers.get("accept-encoding"),
                                    if_none_match=req.headers.get("if-none-match"), bulk_root=root)


@app.route(route="v{version}/studies/{study}", methods=["GET"])
@dicomweb_edge
async def retrieve_study(req: Request) -> Response:
    """WADO-RS: every instance of a study, multipart/related."""
    study = _study_uid(req)
    return _http(await retrieve.retrieve_study(await shared_storage(), study, _accept(req)))


@app.route(route="v{version}/studies/{study}/series/{series}", methods=["GET"])
@dicomweb_edge
async def retrieve_series(req: Request) -> Response:
    """WADO-RS: every instance of a series, multipart/related."""
    study, series = _study_uid(req), _series_uid(req)
    return _http(await retrieve.retrieve_series(await shared_storage(), study, series, _accept(req)))


@app.route(route="v{version}/studies/{study}/series/{series}/instances/{instance}", methods=["GET"])
@dicomweb_edge
async def retrieve_instance(req: Request) -> Response:
    """WADO-RS: one instance, single part or multipart/related."""
    ids = _instance_ids(req)
    return _http(await retrieve.retrieve_instance(await shared_storage(), ids, _accept(req)))


@app.route(route="v{version}/studies/{study}/metadata", methods=["GET"])
@dicomweb_edge
async def retrieve_study_metadata(req: Request) -> Response:
    """WADO-RS: the DICOM JSON of every instance of a study."""
    study = _study_uid(req)
    storage = await shared_storage()
    return _http(await metadata.study_metadata(storage, study, _metadata_request(req, storage)))


@app.route(route="v{version}/studies/{study}/series/{series}/metadata", methods=["GET"])
@dicomweb_edge
async def retrieve_series_metadata(req: Request) -> Response:
    """WADO-RS: the DICOM JSON of every instance of a series."""
    study, series = _study_uid(req), _series_uid(req)
    storage = await shared_storage()
    return _http(await metadata.series_metadata(storage, study, series, _metadata_request(req, storage)))


@app.route(route="v{version}/studies/{study}/series/{series}/instances/{instance}/metadata", methods=["GET"])
@dicomweb_edge
async def retrieve_instance_metadata(req: Request) -> Response:
    """WADO-RS: the DICOM JSON of one instance."""
    ids = _instance_ids(req)
    storage = await shared_storage()
    return _http(await metadata.instance_metadata(storage, ids, _metadata_request(req, storage)))


@app.route(route="v{version}/studies/{study}/series/{series}/instances/{instance}/frames/{frames}", methods=["GET"])
@dicomweb_edge
async def retrieve_frames(req: Request) -> Response:
    """WADO-RS: frames of an instance (1-based comma list)."""
    ids = _instance_ids(req)
    return _http(await frames.retrieve_frames(await shared_storage(), ids, req.path_params["frames"], _accept(req)))


@app.route(route="v{version}/studies/{study}/series/{series}/instances/{instance}/bulkdata/{stored}/{location}",
           methods=["GET"])
@dicomweb_edge
async def retrieve_bulk_data(req: Request) -> Response:
    """WADO-RS: the bytes of one binary attribute, as a BulkDataURI in metadata names them (Range honoured)."""
    request = bulkdata.BulkDataRequest(_instance_ids(req), req.path_params["stored"], req.path_params["location"],
                                       accept=_accept(req), range=req.headers.get("range"))
    return _http(await bulkdata.retrieve_bulk_data(await shared_storage(), request))


async def _scope_bulk_data(req: Request, pixel_data_only: bool) -> Response:
    storage = await shared_storage()
    scope = bulkdata_scope.Scope(_study_uid(req), _optional_uid(req, "series", "SeriesInstanceUID"),
                                 _optional_uid(req, "instance", "SOPInstanceUID"))
    return _http(await bulkdata_scope.scope_bulk_data(storage, scope, _versioned_root(req, storage), _accept(req),
                                                      pixel_data_only=pixel_data_only))


@app.route(route="v{version}/studies/{study}/bulkdata", methods=["GET"])
@dicomweb_edge
async def retrieve_study_bulk_data(req: Request) -> Response:
    """WADO-RS: every bulk data value of a study, multipart/related, each part at its BulkDataURI."""
    return await _scope_bulk_data(req, pixel_data_only=False)


@app.route(route="v{version}/studies/{study}/series/{series}/bulkdata", methods=["GET"])
@dicomweb_edge
async def retrieve_series_bulk_data(req: Request) -> Response:
    """WADO-RS: every bulk data value of a series, multipart/related."""
    return await _scope_bulk_data(req, pixel_data_only=False)


@app.route(route="v{version}/studies/{study}/series/{series}/instances/{instance}/bulkdata", methods=["GET"])
@dicomweb_edge
async def retrieve_instance_bulk_data(req: Request) -> Response:
    """WADO-RS: every bulk data value of an instance, multipart/related."""
    return await _scope_bulk_data(req, pixel_data_only=False)


@app.route(route="v{version}/studies/{study}/pixeldata", methods=["GET"])
@dicomweb_edge
async def retrieve_study_pixel_data(req: Request) -> Response:
    """WADO-RS: the pixel data of each instance of a study, multipart/related."""
    return await _scope_bulk_data(req, pixel_data_only=True)


@app.route(route="v{version}/studies/{study}/series/{series}/pixeldata", methods=["GET"])
@dicomweb_edge
async def retrieve_series_pixel_data(req: Request) -> Response:
    """WADO-RS: the pixel data of each instance of a series, multipart/related."""
    return await _scope_bulk_data(req, pixel_data_only=True)


@app.route(route="v{version}/studies/{study}/series/{series}/instances/{instance}/pixeldata", methods=["GET"])
@dicomweb_edge
async def retrieve_instance_pixel_data(req: Request) -> Response:
    """WADO-RS: the pixel data of an instance, multipart/related."""
    return await _scope_bulk_data(req, pixel_data_only=True)


async def _rendered(req: Request) -> Response:
    ids = _instance_ids(req)
    parameters = RenderingParameters.from_query(req.query_params)
    return _http(await frames.retrieve_rendered(await shared_storage(), ids, req.path_params.get("frame"),
                                                _accept(req), parameters))


@app.route(route="v{version}/studies/{study}/series/{series}/instances/{instance}/rendered", methods=["GET"])
@dicomweb_edge
async def retrieve_rendered_instance(req: Request) -> Response:
    """WADO-RS: the first frame of an instance as image/jpeg or image/png."""
    return await _rendered(req)


@app.route(route="v{version}/studies/{study}/series/{series}/instances/{instance}/frames/{frame}/rendered",
           methods=["GET"])
@dicomweb_edge
async def retrieve_rendered_frame(req: Request) -> Response:
    """WADO-RS: one frame of an instance as image/jpeg or image/png."""
    return await _rendered(req)


def _thumbnail_request(req: Request) -> tuple[str | None, str | None]:
    return _accept(req), req.query_params.get("viewport")


@app.route(route="v{version}/studies/{study}/thumbnail", methods=["GET"])
@dicomweb_edge
async def retrieve_study_thumbnail(req: Request) -> Response:
    """WADO-RS: a small image of a study's middle series (beyond Azure)."""
    study = _study_uid(req)
    return _http(await thumbnails.study_thumbnail(await shared_storage(), study, *_thumbnail_request(req)))


@app.route(route="v{version}/studies/{study}/series/{series}/thumbnail", methods=["GET"])
@dicomweb_edge
async def retrieve_series_thumbnail(req: Request) -> Response:
    """WADO-RS: a small image of a series' middle instance (beyond Azure)."""
    study, series = _study_uid(req), _series_uid(req)
    return _http(await thumbnails.series_thumbnail(await shared_storage(), study, series, *_thumbnail_request(req)))


@app.route(route="v{version}/studies/{study}/series/{series}/instances/{instance}/thumbnail", methods=["GET"])
@dicomweb_edge
async def retrieve_instance_thumbnail(req: Request) -> Response:
    """WADO-RS: a small image of an instance's middle frame (beyond Azure)."""
    ids = _instance_ids(req)
    return _http(await thumbnails.instance_thumbnail(await shared_storage(), ids, None, *_thumbnail_request(req)))


@app.route(route="v{version}/studies/{study}/series/{series}/instances/{instance}/frames/{frame}/thumbnail",
           methods=["GET"])
@dicomweb_edge
async def retrieve_frame_thumbnail(req: Request) -> Response:
    """WADO-RS: a small image of one frame (beyond Azure)."""
    ids = _instance_ids(req)
    return _http(await thumbnails.instance_thumbnail(await shared_storage(), ids, req.path_params["frame"],
                                                     *_thumbnail_request(req)))


# --- Search (QIDO-RS): studies, series and instances, across the archive or in one study ---------------------

async def _search(req: Request, resource: QidoResource) -> Response:
    version = _version(req)
    storage = await shared_storage()
    return _http(await qido_service.search(storage, qido_service.SearchRequest(
        resource=resource, api_version=version, query_string=req.url.query, accept=_accept(req),
        study_uid=_optional_uid(req, "study", "StudyInstanceUID"),
        series_uid=_optional_uid(req, "series", "SeriesInstanceUID"),
        base_url=storage.settings.public_base_url or str(req.base_url).rstrip("/"),
    )))


@app.route(route="v{version}/studies", methods=["GET"])
@dicomweb_edge
async def search_studies(req: Request) -> Response:
    """QIDO-RS: search for studies."""
    return await _search(req, QidoResource.ALL_STUDIES)


@app.route(route="v{version}/series", methods=["GET"])
@dicomweb_edge
async def search_series(req: Request) -> Response:
    """QIDO-RS: search for series in every study."""
    return await _search(req, QidoResource.ALL_SERIES)


@app.route(route="v{version}/instances", methods=["GET"])
@dicomweb_edge
async def search_instances(req: Request) -> Response:
    """QIDO-RS: search for instances in every study."""
    return await _search(req, QidoResource.ALL_INSTANCES)


@app.route(route="v{version}/studies/{study}/series", methods=["GET"])
@dicomweb_edge
async def search_study_series(req: Request) -> Response:
    """QIDO-RS: search for the series of one study."""
    return await _search(req, QidoResource.STUDY_SERIES)


@app.route(route="v{version}/studies/{study}/instances", methods=["GET"])
@dicomweb_edge
async def search_study_instances(req: Request) -> Response:
    """QIDO-RS: search for the instances of one study."""
    return await _search(req, QidoResource.STUDY_INSTANCES)


@app.route(route="v{version}/studies/{study}/series/{series}/instances", methods=["GET"])
@dicomweb_edge
async def search_series_instances(req: Request) -> Response:
    """QIDO-RS: search for the instances of one series."""
    return await _search(req, QidoResource.STUDY_SERIES_INSTANCES)


# --- Delete: a study, a series or an instance; 204, or 404 when absent ----------------------------------------

@app.route(route="v{version}/studies/{study}", methods=["DELETE"])
@dicomweb_edge
async def delete_study(req: Request) -> Response:
    """DELETE a study: 204 (empty body), 404 when it holds no instance."""
    study = _study_uid(req)
    return _http(await delete_service.delete_study(await shared_storage(), study))


@app.route(route="v{version}/studies/{study}/series/{series}", methods=["DELETE"])
@dicomweb_edge
async def delete_series(req: Request) -> Response:
    """DELETE a series: 204 (empty body), 404 when it holds no instance."""
    study, series = _study_uid(req), _series_uid(req)
    return _http(await delete_service.delete_series(await shared_storage(), study, series))


@app.route(route="v{version}/studies/{study}/series/{series}/instances/{instance}", methods=["DELETE"])
@dicomweb_edge
async def delete_instance(req: Request) -> Response:
    """DELETE an instance: 204 (empty body), 404 when it is not stored."""
    ids = _instance_ids(req)
    return _http(await delete_service.delete_instance(await shared_storage(), ids))


# --- Change feed: every change in order, by sequence (v1) or time window (v2) ---------------------------------

@app.route(route="v{version}/changefeed", methods=["GET"])
@dicomweb_edge
async def read_change_feed(req: Request) -> Response:
    """Change feed: v1 the entries after sequence `offset`; v2 the entries of a time window, `offset` into it."""
    query = parse_feed_query(req.url.query, api_version=_version(req))
    return _http(await changefeed_service.read_change_feed(await shared_storage(), query))


@app.route(route="v{version}/changefeed/latest", methods=["GET"])
@dicomweb_edge
async def read_latest_change(req: Request) -> Response:
    """Change feed: the latest entry (204 while the feed is empty)."""
    _version(req)
    include_metadata = parse_latest_query(req.url.query)
    return _http(await changefeed_service.read_latest(await shared_storage(), include_metadata=include_metadata))


# --- Extended query tags and long-running operations: the tag registry, operation status, the runner ---------

def _base_url(req: Request, storage: Storage) -> str:
    return storage.settings.public_base_url or str(req.base_url).rstrip("/")


@app.route(route="v{version}/extendedquerytags", methods=["GET", "POST"])
@dicomweb_edge
async def extended_query_tags(req: Request) -> Response:
    """GET lists the extended query tags (limit, offset); POST adds tags and answers 202 with their reindex."""
    version, storage = _version(req), await shared_storage()
    if req.method == "POST":
        added = await tags_service.add_tags(storage, await req.body(), _base_url(req, storage), version)
        if added.status == HTTPStatus.ACCEPTED:
            run_in_background(storage)  # the reindex starts now; the operations timer resumes what this run leaves
        return _http(added)
    return _http(await tags_service.list_tags(storage, req.url.query, _base_url(req, storage), version))


@app.route(route="v{version}/extendedquerytags/{tag}", methods=["GET", "DELETE", "PATCH"])
@dicomweb_edge
async def extended_query_tag(req: Request) -> Response:
    """One extended query tag: GET it, DELETE it (204, entries removed in the background), PATCH its QueryStatus."""
    version, storage, tag = _version(req), await shared_storage(), req.path_params["tag"]
    if req.method == "DELETE":
        deleted = await tags_service.delete_tag(storage, tag)
        if deleted.status == HTTPStatus.NO_CONTENT:
            run_in_background(storage)  # the tag's entries are removed now
        return _http(deleted)
    if req.method == "PATCH":
        return _http(await tags_service.patch_tag(storage, tag, await req.body(), _base_url(req, storage), version))
    return _http(await tags_service.show_tag(storage, tag, _base_url(req, storage), version))


@app.route(route="v{version}/extendedquerytags/{tag}/errors", methods=["GET"])
@dicomweb_edge
async def extended_query_tag_errors(req: Request) -> Response:
    """The instances whose value of an extended query tag failed validation (limit, offset)."""
    _version(req)
    return _http(await tags_service.list_errors(await shared_storage(), req.path_params["tag"], req.url.query))


@app.route(route="v{version}/operations/{operation}", methods=["GET"])
@dicomweb_edge
async def operation_status(req: Request) -> Response:
    """A long-running operation: 202 while it runs, 200 once done, 404 unknown."""
    version, storage = _version(req), await shared_storage()
    return _http(await operations_service.operation_status(storage, req.path_params["operation"],
                                                           _base_url(req, storage), version))


# Work the unfinished operations in paced chunks (a run ends within its budget, minutes). The schedule is an app
# setting (docs/configuration.md; default every 5 minutes, with the maintenance timer): the request that creates
# an operation starts it at once, so the timer only resumes work a run left, and never wakes an idle app often.
OPERATIONS_SCHEDULE = "%DICOMWEB_OPERATIONS_SCHEDULE%"


@app.timer_trigger(schedule=OPERATIONS_SCHEDULE, arg_name="timer", run_on_startup=False, use_monitor=False)
async def operations(timer: func.TimerRequest) -> None:
    """Timer: advance every unfinished long-running operation (reindex, tag deletion) from its checkpoint."""
    await run_operations(await shared_storage())


# --- Operations: health check, OpenAPI document, CORS preflight, maintenance timer ----------------------------

@app.route(route="health/check", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@anonymous_edge
async def health_check(req: Request) -> Response:
    """GET /health/check (unversioned, like Azure's): 200 Healthy when Blob and Table Storage answer, else 503."""
    return _http(await health.report_health(shared_storage, Settings.from_environment().health_timeout_seconds))


@app.route(route="v{version}/api.yaml", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@anonymous_edge
async def openapi_document(req: Request) -> Response:
    """GET /v{n}/api.yaml: the OpenAPI 3 document of the whole API (the same for every version)."""
    _version(req)
    return _http(openapi.serve_document())


# OPTIONS only: other methods on unknown paths still get 404, and known paths keep their 405.
@app.route(route="{*path}", methods=["OPTIONS"], auth_level=func.AuthLevel.ANONYMOUS)
@anonymous_edge
async def cors_preflight(req: Request) -> Response:
    """OPTIONS on any path: a CORS preflight, 204 with the Access-Control-* headers when the origin is allowed."""
    headers = cors.preflight_headers(CORS_POLICY, req.headers.get("origin"),
                                     req.headers.get("access-control-request-headers"))
    return _http(ServiceResult(HTTPStatus.NO_CONTENT, headers))


# Every 5 minutes: delete the blobs nothing references any more, sequence the change feed, prune what it no
# longer needs. Every hour: check the next window of the archive and repair what it finds (docs/storage.md).
MAINTENANCE_SCHEDULE = "0 */5 * * * *"  # NCRONTAB: second minute hour day month day-of-week
REPAIR_SCHEDULE = "0 17 * * * *"


@app.timer_trigger(schedule=MAINTENANCE_SCHEDULE, arg_name="timer", run_on_startup=False, use_monitor=True)
async def maintenance(timer: func.TimerRequest) -> None:
    """Timer: due blob cleanup, then the change feed's sequencer, then pruning of done rows and stale entries."""
    await run_maintenance(await shared_storage())


@app.timer_trigger(schedule=REPAIR_SCHEDULE, arg_name="timer", run_on_startup=False, use_monitor=True)
async def repair(timer: func.TimerRequest) -> None:
    """Timer: check the next window of the archive (a durable cursor) and repair its findings (bounded per run)."""
    await run_repair(await shared_storage())


# The end of the import (see gc.disable above): what it made is permanent; collect what requests make from now on.
# Young collections every 700 objects (the default) cost a STOW ~0.5 ms of CPU per stored instance (0.53 MB CT, 10 per
# request, 16 in flight: ~4 collections per request); every 10,000, ~0.15 ms.
gc.freeze()
gc.set_threshold(YOUNG_COLLECTION_ALLOCATIONS)
gc.enable()
