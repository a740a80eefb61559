"""WADO-RS end to end: real HTTP over loopback to the local host, real Azurite behind it."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, generate_uid

from dicom_core.wire.media_types import DICOM_JSON, parse_media_type
from tests.factories import make_dataset, multipart_body, to_bytes
from tests.seed_files import SEED, SEED_STUDY

STORE_TYPE = 'multipart/related; type="application/dicom"; boundary=test-boundary'
DICOM_PARTS = 'multipart/related; type="application/dicom"'
AS_STORED = DICOM_PARTS + "; transfer-syntax=*"
OHIF_FRAMES = 'multipart/related; type="application/octet-stream"; transfer-syntax="*"'
CORNERSTONE_FRAMES = "multipart/related; type=application/octet-stream; transfer-syntax=*"
DICOMWEB_CLIENT_METADATA = "application/dicom+json, application/json"
SOP_INSTANCE_UID = "00080018"
STUDY_DESCRIPTION = "00081030"
PIXEL_DATA = "7FE00010"
# One file per encapsulated (and otherwise non-default) transfer syntax among pydicom's bundled files.
SYNTAX_SAMPLES = [
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG Baseline, YBR_FULL
    "JPGExtended.dcm",  # JPEG Extended, 12-bit
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG Lossless SV1
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS Lossless
    "JPEGLSNearLossless_16.dcm",  # JPEG-LS Near-Lossless
    "MR_small_jp2klossless.dcm",  # JPEG 2000 Lossless
    "JPEG2000.dcm",  # JPEG 2000
    "SC_rgb_rle_2frame.dcm",  # RLE Lossless, 2 frames
    "image_dfl.dcm",  # Deflated Explicit VR Little Endian
    "MR_small_bigendian.dcm",  # Explicit VR Big Endian
    "MR_small_implicit.dcm",  # Implicit VR Little Endian
]


# --- helpers -------------------------------------------------------------------------------------------

def _store(server: str, *instances: bytes) -> None:
    response = httpx.post(f"{server}/v2/studies", content=multipart_body(list(instances)),
                          headers={"Content-Type": STORE_TYPE, "Accept": DICOM_JSON}, timeout=60)
    assert response.status_code in (200, 202), response.text


def _get(server: str, path: str, accept: str | None = None, **headers: str) -> httpx.Response:
    if accept is not None:
        headers["Accept"] = accept
    return httpx.get(server + path, headers=headers, timeout=60)


def _parts(response: httpx.Response) -> list[tuple[str, bytes]]:
    """Split a multipart/related answer into (Content-Type, body) pairs."""
    media = parse_media_type(response.headers["content-type"])
    assert media.type == "multipart/related", response.headers["content-type"]
    delimiter = b"--" + media.params["boundary"].encode()
    pieces = response.content.split(delimiter)
    assert pieces[0] == b"" and pieces[-1] == b"--\r\n"
    parts = []
    for piece in pieces[1:-1]:
        head, _, body = piece.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        parts.append((headers["Content-Type"], body.removesuffix(b"\r\n")))
    return parts


def _sample(name: str, **attributes: object) -> tuple[Dataset, bytes]:
    """A pydicom bundled file with fresh UIDs (and a PatientID when it has none), as stored bytes."""
    ds = dcmread(get_testdata_file(name))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientID = ds.get("PatientID") or "SAMPLE"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return ds, buffer.getvalue()


def _instance_path(ds: Dataset) -> str:
    return f"/v2/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def _syntax_of(content_type: str) -> str:
    return parse_media_type(content_type).params["transfer-syntax"]


# --- studies, series, instances --------------------------------------------------------------------------

def test_walkthrough_curl_retrieves_the_seed_study_byte_exact(isolated_server: str, tmp_path: Path) -> None:
    server = isolated_server  # the walkthrough's fixed UIDs stay out of the shared server's storage
    files = [(SEED / f"{name}.dcm").read_bytes() for name in ("red-triangle", "green-square", "blue-circle")]
    _store(server, *files)
    headers, body = tmp_path / "headers", tmp_path / "body"
    status = subprocess.run(
        ["curl", "--silent", "--show-error", "--dump-header", str(headers), "--output", str(body),
         "--write-out", "%{http_code}", "--header", f"Accept: {AS_STORED}", f"{server}/v2/studies/{SEED_STUDY}"],
        check=True, capture_output=True, text=True,
    ).stdout
    assert status == "200"
    content_type = next(line.split(":", 1)[1].strip() for line in headers.read_text().splitlines()
                        if line.lower().startswith("content-type:"))
    parts = _parts(httpx.Response(200, headers={"content-type": content_type}, content=body.read_bytes()))
    assert sorted(hashlib.sha256(b).hexdigest() for _, b in parts) == sorted(
        hashlib.sha256(f).hexdigest() for f in files)


def test_series_as_stored_is_byte_exact_with_stored_syntax_per_part(server: str) -> None:
    study, series = generate_uid(), generate_uid()
    instances = [to_bytes(make_dataset(study=study, series=series)) for _ in range(5)]
    _store(server, *instances)
    response = _get(server, f"/v2/studies/{study}/series/{series}", AS_STORED)
    assert response.status_code == 200
    parts = _parts(response)
    assert sorted(body for _, body in parts) == sorted(instances)
    assert {content_type for content_type, _ in parts} == {
        f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"}


def test_study_without_transfer_syntax_passes_explicit_vr_little_endian_through(server: str) -> None:
    study = generate_uid()
    instances = [to_bytes(make_dataset(study=study)) for _ in range(3)]  # three series
    _store(server, *instances)
    response = _get(server, f"/v2/studies/{study}", DICOM_PARTS)
    assert response.status_code == 200
    assert sorted(body for _, body in _parts(response)) == sorted(instances)


def test_study_of_mixed_syntaxes_is_transcoded_instance_by_instance(server: str) -> None:
    native = make_dataset(rows=16, columns=16)
    rle, rle_bytes = _sample("SC_rgb_rle_2frame.dcm", StudyInstanceUID=native.StudyInstanceUID)
    _store(server, to_bytes(native), rle_bytes)
    response = _get(server, f"/v2/studies/{native.StudyInstanceUID}", DICOM_PARTS)
    assert response.status_code == 200
    parts = {dcmread(io.BytesIO(body)).SOPInstanceUID: (ct, body) for ct, body in _parts(response)}
    assert {_syntax_of(ct) for ct, _ in parts.values()} == {ExplicitVRLittleEndian}
    assert parts[native.SOPInstanceUID][1] == to_bytes(native)
    transcoded = dcmread(io.BytesIO(parts[rle.SOPInstanceUID][1]))
    assert transcoded.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(transcoded.pixel_array, dcmread(get_testdata_file("SC_rgb_rle_2frame.dcm")).pixel_array)


def test_bare_star_accept_on_a_study_answers_as_stored(server: str) -> None:
    rle, data = _sample("SC_rgb_rle.dcm")
    _store(server, data)
    response = _get(server, f"/v2/studies/{rle.StudyInstanceUID}", "*/*")
    assert response.status_code == 200
    [(content_type, body)] = _parts(response)
    assert (_syntax_of(content_type), body) == (RLELossless, data)


@pytest.mark.parametrize("accept", [
    "application/dicom",  # single part for a study: Azure refuses it too
    "application/octet-stream",
    DICOM_PARTS + "; transfer-syntax=1.2.840.10008.1.2.4.100",  # MPEG2: not something we can produce
])
def test_study_refuses_with_406(server: str, accept: str) -> None:
    ds = make_dataset()
    _store(server, to_bytes(ds))
    assert _get(server, f"/v2/studies/{ds.StudyInstanceUID}", accept).status_code == 406


def test_unknown_study_series_and_instance_are_404(server: str) -> None:
    ds = make_dataset()
    _store(server, to_bytes(ds))
    study, series = ds.StudyInstanceUID, ds.SeriesInstanceUID
    for path in (f"/v2/studies/{generate_uid()}", f"/v2/studies/{study}/series/{generate_uid()}",
                 f"/v2/studies/{study}/series/{series}/instances/{generate_uid()}"):
        assert _get(server, path, AS_STORED).status_code == 404, path


def test_invalid_uid_in_retrieve_url_is_400(server: str) -> None:
    assert _get(server, "/v2/studies/1.2.abc", AS_STORED).status_code == 400


def test_instance_as_single_part_application_dicom(server: str) -> None:
    ds = make_dataset()
    data = to_bytes(ds)
    _store(server, data)
    response = _get(server, _instance_path(ds), "application/dicom")
    assert response.status_code == 200
    assert response.headers["content-type"] == f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"
    assert response.content == data


def test_instance_as_one_multipart_part(server: str) -> None:
    ds = make_dataset()
    data = to_bytes(ds)
    _store(server, data)
    response = _get(server, _instance_path(ds), AS_STORED)
    assert _parts(response) == [(f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}", data)]


def _retrieve_sample(server: str, name: str, accept: str) -> tuple[Dataset, bytes, httpx.Response]:
    """Store a bundled file and retrieve it as one single-part instance."""
    ds, data = _sample(name)
    _store(server, data)
    response = _get(server, _instance_path(ds), accept)
    assert response.status_code == 200
    return ds, data, response


def _assert_pixel_equal(response: httpx.Response, syntax: str, name: str) -> None:
    assert _syntax_of(response.headers["content-type"]) == syntax
    transcoded = dcmread(io.BytesIO(response.content))
    assert transcoded.file_meta.TransferSyntaxUID == syntax
    assert np.array_equal(transcoded.pixel_array, dcmread(get_testdata_file(name)).pixel_array)


@pytest.mark.parametrize("name", SYNTAX_SAMPLES)
def test_every_stored_syntax_round_trips_byte_exact(server: str, name: str) -> None:
    ds, data, response = _retrieve_sample(server, name, "application/dicom; transfer-syntax=*")
    assert _syntax_of(response.headers["content-type"]) == ds.file_meta.TransferSyntaxUID
    assert response.content == data


@pytest.mark.parametrize("name", SYNTAX_SAMPLES)
def test_every_decodable_syntax_transcodes_to_explicit_vr_little_endian_pixel_equal(server: str, name: str) -> None:
    _, _, response = _retrieve_sample(server, name, "application/dicom")
    _assert_pixel_equal(response, ExplicitVRLittleEndian, name)


@pytest.mark.parametrize("name", ["MR_small.dcm", "SC_rgb_rle_2frame.dcm", "SC_rgb_jpeg_dcmtk.dcm"])
def test_transcodes_to_jpeg_2000_lossless_pixel_equal(server: str, name: str) -> None:
    _, _, response = _retrieve_sample(server, name, f"application/dicom; transfer-syntax={JPEG2000Lossless}")
    _assert_pixel_equal(response, JPEG2000Lossless, name)


# --- frames ----------------------------------------------------------------------------------------------

def test_native_frames_equal_pydicoms_frames(server: str) -> None:
    ds = make_dataset(rows=16, columns=12, frames=5)
    _store(server, to_bytes(ds))
    response = _get(server, _instance_path(ds) + "/frames/1,3,5", 'multipart/related; type="application/octet-stream"')
    assert response.status_code == 200
    parts = _parts(response)
    assert [ct for ct, _ in parts] == [f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"] * 3
    assert [body for _, body in parts] == [ds.pixel_array[i].tobytes() for i in (0, 2, 4)]


@pytest.mark.parametrize("accept", [OHIF_FRAMES, CORNERSTONE_FRAMES,
                                    'multipart/related; type="image/jpeg"; transfer-syntax=*'])
def test_encapsulated_frames_as_stored_equal_pydicoms_fragments(server: str, accept: str) -> None:
    ds, data = _sample("examples_ybr_color.dcm")  # JPEG Baseline, 30 frames
    _store(server, data)
    response = _get(server, _instance_path(ds) + "/frames/2,30", accept)
    assert response.status_code == 200
    expected = list(generate_frames(ds.PixelData, number_of_frames=30))
    parts = _parts(response)
    assert [body for _, body in parts] == [expected[1], expected[29]]
    assert {_syntax_of(ct) for ct, _ in parts} == {ds.file_meta.TransferSyntaxUID}


def test_rle_frames_as_stored_equal_pydicoms_fragments(server: str) -> None:
    ds, data = _sample("rtdose_rle.dcm")  # 15 frames
    _store(server, data)
    response = _get(server, _instance_path(ds) + "/frames/15,1", "multipart/related; type=image/dicom-rle")
    expected = list(generate_frames(ds.PixelData, number_of_frames=15))
    assert [body for _, body in _parts(response)] == [expected[14], expected[0]]


def test_encapsulated_frames_decoded_to_octet_stream_equal_pydicoms_pixels(server: str) -> None:
    ds, data = _sample("examples_ybr_color.dcm")
    _store(server, data)
    response = _get(server, _instance_path(ds) + "/frames/3", 'multipart/related; type="application/octet-stream"')
    [(content_type, body)] = _parts(response)
    assert _syntax_of(content_type) == ExplicitVRLittleEndian
    assert body == dcmread(get_testdata_file("examples_ybr_color.dcm")).pixel_array[2].tobytes()


def test_native_frame_as_jpeg_2000_decodes_to_the_same_pixels(server: str) -> None:
    from openjpeg import decode

    ds = make_dataset(rows=40, columns=48, frames=2)
    _store(server, to_bytes(ds))
    response = _get(server, _instance_path(ds) + "/frames/2", 'multipart/related; type="image/jp2"')
    [(content_type, body)] = _parts(response)
    assert content_type == f"image/jp2; transfer-syntax={JPEG2000Lossless}"
    assert np.array_equal(decode(body), ds.pixel_array[1])


@pytest.mark.parametrize("name", SYNTAX_SAMPLES)
def test_first_frame_of_every_syntax_as_octet_stream_equals_pydicoms_pixels(server: str, name: str) -> None:
    ds, data = _sample(name)
    _store(server, data)
    response = _get(server, _instance_path(ds) + "/frames/1", "application/octet-stream")
    assert response.status_code == 200
    assert _syntax_of(response.headers["content-type"]) == ExplicitVRLittleEndian
    pixels = dcmread(get_testdata_file(name)).pixel_array
    first = pixels[0] if int(ds.get("NumberOfFrames") or 1) > 1 else pixels
    assert response.content == first.astype(first.dtype.newbyteorder("<")).tobytes()


def test_single_frame_single_part_octet_stream(server: str) -> None:
    ds = make_dataset(rows=8, columns=8, frames=3)
    _store(server, to_bytes(ds))
    response = _get(server, _instance_path(ds) + "/frames/2", "application/octet-stream")
    assert response.status_code == 200
    assert response.headers["content-type"] == f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"
    assert response.content == ds.pixel_array[1].tobytes()


@pytest.mark.parametrize("frames", ["0", "-1", "1,-1", "0,1", "a", "1,,2"])
def test_invalid_frame_list_is_400(server: str, frames: str) -> None:
    ds = make_dataset(frames=2)
    _store(server, to_bytes(ds))
    assert _get(server, _instance_path(ds) + f"/frames/{frames}", CORNERSTONE_FRAMES).status_code == 400


def test_frame_beyond_number_of_frames_is_404(server: str) -> None:
    ds = make_dataset(frames=2)
    _store(server, to_bytes(ds))
    assert _get(server, _instance_path(ds) + "/frames/1,3", CORNERSTONE_FRAMES).status_code == 404


def test_several_frames_as_single_part_is_400(server: str) -> None:
    ds = make_dataset(frames=2)
    _store(server, to_bytes(ds))
    assert _get(server, _instance_path(ds) + "/frames/1,2", "application/octet-stream").status_code == 400


def test_compressed_media_type_of_another_syntax_is_406(server: str) -> None:
    ds = make_dataset()
    _store(server, to_bytes(ds))
    response = _get(server, _instance_path(ds) + "/frames/1", "multipart/related; type=image/jpeg; transfer-syntax=*")
    assert response.status_code == 406


# --- metadata --------------------------------------------------------------------------------------------

def test_series_metadata_lists_every_instance_small_pixel_data_inline(server: str) -> None:
    study, series = generate_uid(), generate_uid()
    datasets = [make_dataset(study=study, series=series) for _ in range(4)]
    _store(server, *map(to_bytes, datasets))
    response = _get(server, f"/v2/studies/{study}/series/{series}/metadata", DICOM_JSON)
    assert response.status_code == 200
    assert response.headers["content-type"] == DICOM_JSON
    body = response.json()
    assert sorted(item[SOP_INSTANCE_UID]["Value"][0] for item in body) == sorted(d.SOPInstanceUID for d in datasets)
    assert all(set(item[PIXEL_DATA]) == {"vr", "InlineBinary"} for item in body)  # 128 bytes each


def test_study_metadata_streams_every_series(server: str) -> None:
    study = generate_uid()
    datasets = [make_dataset(study=study, series=series) for series in (generate_uid(), generate_uid())
                for _ in range(2)]
    _store(server, *map(to_bytes, datasets))
    body = _get(server, f"/v2/studies/{study}/metadata", DICOM_JSON).json()
    assert sorted(item[SOP_INSTANCE_UID]["Value"][0] for item in body) == sorted(d.SOPInstanceUID for d in datasets)


def test_instance_metadata_is_an_array_of_one(server: str) -> None:
    ds = make_dataset(StudyDescription="one")
    _store(server, to_bytes(ds))
    [item] = _get(server, _instance_path(ds) + "/metadata", DICOMWEB_CLIENT_METADATA).json()
    assert item[STUDY_DESCRIPTION]["Value"] == ["one"]


@pytest.mark.parametrize("level", ["study", "series", "instance"])
def test_metadata_if_none_match_gets_304(server: str, level: str) -> None:
    ds = make_dataset()
    _store(server, to_bytes(ds))
    path = {"study": f"/v2/studies/{ds.StudyInstanceUID}",
            "series": f"/v2/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}",
            "instance": _instance_path(ds)}[level] + "/metadata"
    first = _get(server, path, DICOM_JSON)
    etag = first.headers["etag"]
    again = _get(server, path, DICOM_JSON, **{"If-None-Match": etag})
    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
    assert _get(server, path, DICOM_JSON, **{"If-None-Match": '"other"'}).status_code == 200


def test_series_metadata_is_fresh_after_a_new_instance_is_stored(server: str) -> None:
    first = make_dataset()
    _store(server, to_bytes(first))
    path = f"/v2/studies/{first.StudyInstanceUID}/series/{first.SeriesInstanceUID}/metadata"
    before = _get(server, path, DICOM_JSON)
    second = make_dataset(study=first.StudyInstanceUID, series=first.SeriesInstanceUID)
    _store(server, to_bytes(second))
    after = _get(server, path, DICOM_JSON, **{"If-None-Match": before.headers["etag"]})
    assert after.status_code == 200
    assert after.headers["etag"] != before.headers["etag"]
    assert {item[SOP_INSTANCE_UID]["Value"][0] for item in after.json()} == {first.SOPInstanceUID,
                                                                              second.SOPInstanceUID}


def test_series_metadata_shows_the_upserted_version(server: str) -> None:
    ds = make_dataset(StudyDescription="before")
    _store(server, to_bytes(ds))
    ds.StudyDescription = "after"
    response = httpx.put(f"{server}/v2/studies", content=to_bytes(ds),
                         headers={"Content-Type": "application/dicom", "Accept": DICOM_JSON})
    assert response.status_code == 200
    metadata_url = f"/v2/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/metadata"
    [item] = _get(server, metadata_url, DICOM_JSON).json()
    assert item[STUDY_DESCRIPTION]["Value"] == ["after"]


def test_metadata_is_gzipped_when_asked(server: str) -> None:
    study, series = generate_uid(), generate_uid()
    _store(server, *(to_bytes(make_dataset(study=study, series=series)) for _ in range(3)))
    path = f"{server}/v2/studies/{study}/series/{series}/metadata"
    plain = _get(server, path.removeprefix(server), DICOM_JSON, **{"Accept-Encoding": "identity"})
    with httpx.stream("GET", path, headers={"Accept": DICOM_JSON, "Accept-Encoding": "gzip"}) as response:
        raw = b"".join(response.iter_raw())
        assert response.headers["content-encoding"] == "gzip"
    assert "content-encoding" not in plain.headers
    assert json.loads(gzip.decompress(raw)) == plain.json()


def test_metadata_refuses_application_dicom_with_406(server: str) -> None:
    ds = make_dataset()
    _store(server, to_bytes(ds))
    assert _get(server, _instance_path(ds) + "/metadata", "application/dicom").status_code == 406


def test_metadata_of_unknown_series_is_404(server: str) -> None:
    ds = make_dataset()
    _store(server, to_bytes(ds))
    path = f"/v2/studies/{ds.StudyInstanceUID}/series/{generate_uid()}/metadata"
    assert _get(server, path, DICOM_JSON).status_code == 404


# --- rendered --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "accept", "image_format", "mode"), [
    ("CT_small.dcm", None, "JPEG", "L"),  # 16-bit signed, rescaled; no Accept gets JPEG
    ("MR_small.dcm", "image/png", "PNG", "L"),  # 16-bit with a window
    ("examples_rgb_color.dcm", "image/jpeg", "JPEG", "RGB"),
    ("SC_rgb_rle.dcm", "image/png", "PNG", "RGB"),
])
def test_rendered_decodes_to_the_right_size_and_mode(server: str, name: str, accept: str | None,
                                                     image_format: str, mode: str) -> None:
    ds, data = _sample(name)
    _store(server, data)
    response = _get(server, _instance_path(ds) + "/rendered", accept)
    assert response.status_code == 200
    assert response.headers["content-type"] == f"image/{image_format.lower()}"
    image = Image.open(io.BytesIO(response.content))
    assert (image.format, image.size, image.mode) == (image_format, (ds.Columns, ds.Rows), mode)


def test_rendered_frame_of_a_multi_frame_instance(server: str) -> None:
    ds, data = _sample("examples_ybr_color.dcm")
    _store(server, data)
    response = _get(server, _instance_path(ds) + "/frames/30/rendered?quality=50", "image/jpeg")
    assert response.status_code == 200
    assert Image.open(io.BytesIO(response.content)).size == (ds.Columns, ds.Rows)


def test_rendered_lower_quality_is_smaller(server: str) -> None:
    ds, data = _sample("examples_rgb_color.dcm")
    _store(server, data)
    sizes = [len(_get(server, _instance_path(ds) + f"/rendered?quality={q}", "image/jpeg").content) for q in (10, 100)]
    assert sizes[0] < sizes[1]


@pytest.mark.parametrize(("suffix", "accept", "status"), [
    ("/rendered?quality=0", "image/jpeg", 400),
    ("/rendered?quality=abc", "image/jpeg", 400),
    ("/rendered", "image/webp", 406),
    ("/frames/2/rendered", "image/jpeg", 404),
])
def test_rendered_refuses(server: str, suffix: str, accept: str, status: int) -> None:
    ds = make_dataset()
    _store(server, to_bytes(ds))
    assert _get(server, _instance_path(ds) + suffix, accept).status_code == status


# --- real clients ----------------------------------------------------------------------------------------

def test_dicomweb_client_retrieves_what_it_stored(server: str) -> None:
    study, series = generate_uid(), generate_uid()
    datasets = [make_dataset(study=study, series=series, rows=16, columns=16, frames=2) for _ in range(2)]
    client = DICOMwebClient(url=f"{server}/v2")
    client.store_instances(datasets)
    retrieved = client.retrieve_series(study, series)
    assert sorted(d.SOPInstanceUID for d in retrieved) == sorted(d.SOPInstanceUID for d in datasets)
    instance = client.retrieve_instance(study, series, datasets[0].SOPInstanceUID)
    assert instance.PixelData == datasets[0].PixelData
    metadata = client.retrieve_series_metadata(study, series)
    assert len(metadata) == 2
    frames = client.retrieve_instance_frames(study, series, datasets[0].SOPInstanceUID, frame_numbers=[2])
    assert frames == [datasets[0].pixel_array[1].tobytes()]
    rendered = client.retrieve_instance_rendered(study, series, datasets[0].SOPInstanceUID, media_types=("image/png",))
    assert Image.open(io.BytesIO(rendered)).size == (16, 16)
