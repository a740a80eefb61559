"""The `/extendedquerytags` routes: add (202 and a reindex operation), list, get, delete, patch, errors."""

from __future__ import annotations

from dataclasses import replace
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from azure.core.exceptions import ResourceModifiedError
from azure.data.tables import TableTransactionError

from dicom_core.extended_tags.registry import (
    MAX_TAGS,
    ExtendedTag,
    TagStatus,
    all_tags,
    create_tags,
    error_count,
    get_tag,
    save_tag,
    tag_errors,
)
from dicom_core.extended_tags.reindex import DELETE_TAG, REINDEX, delete_checkpoint, reindex_checkpoint
from dicom_core.extended_tags.validation import parse_add_body, parse_query_status, parse_tag_path, tag_path
from dicom_core.model.errors import BadRequestError, DicomWebError, NotFoundError
from dicom_core.operations.records import create_operation, get_operation, new_operation_id
from dicom_core.operations.service import json_result, operation_href, operation_reference
from dicom_core.storage.clients import Storage
from dicom_core.storage.faults import error_code
from dicom_core.wire.service_result import ServiceResult

MAX_LIMIT = 200
DEFAULT_LIMIT = 100


class ConflictError(DicomWebError):
    """The tag exists already, or a reindex is running (409)."""

    status = HTTPStatus.CONFLICT


def _base(base_url: str, api_version: int) -> str:
    return f"{base_url}/v{api_version}"


def describe_tag(tag: ExtendedTag, errors: int, base_url: str, api_version: int) -> dict[str, Any]:
    """A tag as Azure writes it (camelCase names and values; errors and operation only when there are some)."""
    described: dict[str, Any] = {"path": tag.path, "vr": tag.vr}
    if tag.private_creator:
        described["privateCreator"] = tag.private_creator
    described |= {"level": tag.level.value, "status": tag.status.value, "queryStatus": tag.query_status.value}
    if errors:
        described["errors"] = {"count": errors,
                               "href": f"{_base(base_url, api_version)}/extendedquerytags/{tag.path}/errors"}
    if tag.status is not TagStatus.READY and tag.operation_id:
        described["operation"] = {"id": tag.operation_id,
                                  "href": operation_href(base_url, api_version, tag.operation_id)}
    return described


async def add_tags(storage: Storage, body: bytes, base_url: str, api_version: int) -> ServiceResult:
    """Register new tags (status adding) and start their reindex: 202 with the operation's reference."""
    tags = parse_add_body(body)
    existing = {tag.path: tag for tag in await all_tags(storage)}
    taken = [tag.path for tag in tags if tag.path in existing]
    if taken:
        raise ConflictError(f"The extended query tag(s) '{', '.join(taken)}' already exist.")
    for tag in existing.values():
        if tag.status is TagStatus.ADDING and (running := await get_operation(storage, tag.operation_id)) \
                and not running.status.terminal:
            raise ConflictError(f"There is already an active re-index operation with ID '{running.id}'.",
                                headers={"Location": operation_href(base_url, api_version, running.id)})
    if len(existing) + len(tags) > MAX_TAGS:
        raise BadRequestError(f"The total number of extended query tags cannot exceed {MAX_TAGS}.")
    operation_id = new_operation_id()
    # The operation first: tags never wait for an operation that does not exist.
    await create_operation(storage, REINDEX, [f"extendedquerytags/{tag.path}" for tag in tags],
                           reindex_checkpoint([tag.path for tag in tags]), operation_id=operation_id)
    try:
        await create_tags(storage, [replace(tag, operation_id=operation_id) for tag in tags])
    except TableTransactionError as exc:
        if error_code(exc) != "EntityAlreadyExists":
            raise
        raise ConflictError("The extended query tag(s) already exist.") from exc
    return operation_reference(base_url, api_version, operation_id)


def parse_page(query_string: str) -> tuple[int, int]:
    """The limit (1..200, default 100) and offset (≥ 0) of a list request; 400 otherwise."""
    limit, offset = DEFAULT_LIMIT, 0
    for name, value in parse_qsl(query_string, keep_blank_values=True):
        key = name.lower()
        if key not in ("limit", "offset"):
            raise BadRequestError(f"The query parameter '{name}' is not supported.")
        try:
            number = int(value)
        except ValueError:
            number = -1
        if key == "limit":
            if not 1 <= number <= MAX_LIMIT:
                raise BadRequestError(f"The query parameter 'Limit' is invalid. The field Limit must be between 1 "
                                      f"and {MAX_LIMIT}.")
            limit = number
        else:
            if number < 0:
                raise BadRequestError("The query parameter 'Offset' is invalid. The field Offset must be between 0 "
                                      "and 9223372036854775807.")
            offset = number
    return limit, offset


async def list_tags(storage: Storage, query_string: str, base_url: str, api_version: int) -> ServiceResult:
    """A page of the registered tags, by path."""
    limit, offset = parse_page(query_string)
    page = sorted(await all_tags(storage), key=lambda tag: tag.path)[offset:offset + limit]
    return json_result([describe_tag(tag, await error_count(storage, tag.path), base_url, api_version)
                        for tag in page])


async def _require_tag(storage: Storage, path_text: str) -> ExtendedTag:
    path = tag_path(parse_tag_path(path_text))
    tag = await get_tag(storage, path)
    if tag is None:
        raise NotFoundError(f"The specified extended query tag with tag path {path_text} cannot be found.")
    return tag


async def show_tag(storage: Storage, path_text: str, base_url: str, api_version: int) -> ServiceResult:
    """One tag; 404 when it is not registered."""
    tag = await _require_tag(storage, path_text)
    return json_result(describe_tag(tag, await error_count(storage, tag.path), base_url, api_version))


async def delete_tag(storage: Storage, path_text: str) -> ServiceResult:
    """Mark a tag deleting and remove its entries in the background: 204; 404 when it is not registered."""
    tag = await _require_tag(storage, path_text)
    if tag.status is not TagStatus.DELETING:
        operation = await create_operation(storage, DELETE_TAG, [], delete_checkpoint(tag))
        try:
            await save_tag(storage, replace(tag, status=TagStatus.DELETING, operation_id=operation.id))
        except ResourceModifiedError:
            return await delete_tag(storage, path_text)  # changed meanwhile: decide again on what it is now
    return ServiceResult(HTTPStatus.NO_CONTENT)


async def patch_tag(storage: Storage, path_text: str, body: bytes, base_url: str, api_version: int) -> ServiceResult:
    """Set a tag's QueryStatus: 200 with the tag; 404 when it is not registered."""
    query_status = parse_query_status(body)
    while True:
        tag = await _require_tag(storage, path_text)
        try:
            tag = await save_tag(storage, replace(tag, query_status=query_status))
            break
        except ResourceModifiedError:
            continue  # the reindex finished meanwhile: apply the change to the tag as it is now
    return json_result(describe_tag(tag, await error_count(storage, tag.path), base_url, api_version))


async def list_errors(storage: Storage, path_text: str, query_string: str) -> ServiceResult:
    """A page of the instances whose value of the tag failed validation; 404 when the tag is not registered."""
    limit, offset = parse_page(query_string)
    tag = await _require_tag(storage, path_text)
    errors = (await tag_errors(storage, tag.path))[offset:offset + limit]
    return json_result([{"studyInstanceUid": e.ids.study, "seriesInstanceUid": e.ids.series,
                         "sopInstanceUid": e.ids.instance, "createdTime": e.created.isoformat(),
                         "errorMessage": e.message} for e in errors])
