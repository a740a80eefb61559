"""`dicomweb tags`: manage extended query tags, and wait for their reindex with a progress bar."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httpx
from tqdm import tqdm

from .transport import Endpoint, open_client, send_with_retries

POLL_SECONDS = 2.0


class TagsError(Exception):
    """The service refused a request (its status and plain-text reason)."""


@dataclass(frozen=True)
class TagRequest:
    """One tag to add: its path (hex or keyword), level, and for a private tag its VR and creator."""

    path: str
    level: str
    vr: str | None = None
    private_creator: str | None = None

    def body(self) -> dict[str, str]:
        """The tag as `POST /extendedquerytags` takes it."""
        item = {"path": self.path, "level": self.level}
        if self.vr:
            item["vr"] = self.vr
        if self.private_creator:
            item["privateCreator"] = self.private_creator
        return item


async def _call(endpoint: Endpoint, method: str, path: str, body: Any = None,
                params: dict[str, int] | None = None) -> httpx.Response:
    async with open_client(endpoint) as client:
        response = await send_with_retries(client, lambda: client.build_request(
            method, f"{endpoint.url}/{path}", json=body, params=params), endpoint)
        await response.aread()
    if response.status_code >= 400:
        raise TagsError(f"HTTP {response.status_code}: {response.text.strip()}")
    return response


async def add_tags(endpoint: Endpoint, tags: list[TagRequest], *, wait: bool, progress: bool) -> dict[str, Any]:
    """Add tags; with ``wait``, follow the reindex operation until it is done. The reference or the operation."""
    response = await _call(endpoint, "POST", "extendedquerytags", [tag.body() for tag in tags])
    reference: dict[str, Any] = response.json()
    if not wait:
        return reference
    return await wait_for_operation(endpoint, str(reference["href"]), progress=progress)


async def wait_for_operation(endpoint: Endpoint, href: str, *, progress: bool) -> dict[str, Any]:
    """Poll an operation until it is done (not 202), showing its percentComplete; the final description."""
    bar = tqdm(total=100, unit="%", desc="reindex", disable=not progress)
    try:
        async with open_client(endpoint) as client:
            while True:
                response = await send_with_retries(client, lambda: client.build_request("GET", href), endpoint)
                await response.aread()
                if response.status_code >= 400:
                    raise TagsError(f"HTTP {response.status_code}: {response.text.strip()}")
                described: dict[str, Any] = response.json()
                bar.update(int(described.get("percentComplete", 0)) - bar.n)
                if response.status_code != 202:
                    return described
                await asyncio.sleep(POLL_SECONDS)
    finally:
        bar.close()


async def list_tags(endpoint: Endpoint, limit: int, offset: int) -> list[dict[str, Any]]:
    """A page of the extended query tags."""
    response = await _call(endpoint, "GET", "extendedquerytags", params={"limit": limit, "offset": offset})
    tags: list[dict[str, Any]] = response.json()
    return tags


async def show_tag(endpoint: Endpoint, path: str) -> dict[str, Any]:
    """One extended query tag."""
    tag: dict[str, Any] = (await _call(endpoint, "GET", f"extendedquerytags/{path}")).json()
    return tag


async def tag_errors(endpoint: Endpoint, path: str, limit: int, offset: int) -> list[dict[str, Any]]:
    """A page of a tag's indexing errors."""
    response = await _call(endpoint, "GET", f"extendedquerytags/{path}/errors",
                           params={"limit": limit, "offset": offset})
    errors: list[dict[str, Any]] = response.json()
    return errors


async def delete_tag(endpoint: Endpoint, path: str) -> None:
    """Delete a tag (its entries are removed in the background)."""
    await _call(endpoint, "DELETE", f"extendedquerytags/{path}")


async def set_query_status(endpoint: Endpoint, path: str, enabled: bool) -> dict[str, Any]:
    """Enable or disable searches on a tag; the tag as updated."""
    body = {"queryStatus": "enabled" if enabled else "disabled"}
    tag: dict[str, Any] = (await _call(endpoint, "PATCH", f"extendedquerytags/{path}", body)).json()
    return tag


def format_tags(tags: list[dict[str, Any]]) -> str:
    """A table of tags: path, VR, level, status, query status, errors."""
    lines = [f"{'PATH':<10} {'VR':<3} {'LEVEL':<9} {'STATUS':<9} {'QUERY':<9} ERRORS"]
    for tag in tags:
        lines.append(f"{tag['path']:<10} {tag['vr']:<3} {tag['level']:<9} {tag['status']:<9} "
                     f"{tag['queryStatus']:<9} {tag.get('errors', {}).get('count', 0)}")
    return "\n".join(lines)


def format_json(value: Any) -> str:
    """Indented JSON."""
    return json.dumps(value, indent=2)
