"""Whole-blob uploads through the container's pipeline: what the SDK's upload_blob stores and raises."""

from __future__ import annotations

import uuid

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContentSettings

from dicom_core.storage.blob_puts import blob_url, put_blob
from dicom_core.storage.clients import Storage
from dicom_core.storage.faults import error_code

_DICOM = ContentSettings(content_type="application/dicom")


async def test_a_blob_is_stored_with_its_content_type_and_replaced(storage: Storage) -> None:
    name = f"puts/{uuid.uuid4().hex}/1.dcm"
    await put_blob(storage.files, name, b"first", _DICOM)
    await put_blob(storage.files, name, b"second body", _DICOM)

    blob = storage.files.get_blob_client(name)
    properties = await blob.get_blob_properties()
    assert await (await blob.download_blob()).readall() == b"second body"
    assert (properties.size, properties.content_settings.content_type, properties.blob_type) == (
        11, "application/dicom", "BlockBlob")


async def test_a_missing_container_raises_what_the_sdk_raises(storage: Storage) -> None:
    missing = storage.blob_service.get_container_client(f"gone-{uuid.uuid4().hex[:12]}")
    with pytest.raises(ResourceNotFoundError) as from_sdk:
        await missing.upload_blob("a.dcm", b"x", overwrite=True)
    with pytest.raises(ResourceNotFoundError) as from_ours:
        await put_blob(missing, "a.dcm", b"x", _DICOM)
    assert error_code(from_ours.value) == error_code(from_sdk.value) == "ContainerNotFound"


@pytest.mark.parametrize("name", ["a/b/c.dcm", "with space/ü+%/x y.json", "~tilde/(1);=.dcm"])
def test_a_blob_url_is_the_one_a_blob_client_has(storage: Storage, name: str) -> None:
    assert blob_url(storage.files, name) == storage.files.get_blob_client(name).url
