"""Record the wire fixtures of the clients that run here, against a running server:

    python -m tests.clients.record_wire --server http://127.0.0.1:7071     # after `make run`

Each client talks to this server through a recording proxy (tests/clients/wire_recorder.py); every request it
sends becomes tests/clients/wire_fixtures/<client>-<what>.json. curl, dicomweb-client (and 3D Slicer's
DICOMweb browser, which drives dicomweb-client), Orthanc's DICOMweb plugin and Weasis's requests (made on the
real JDK as its source makes them) are recorded; OHIF's fixtures are written by hand from the installed OHIF
bundle (quoted in each fixture) and are left as they are.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pydicom
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid

from tests.clients import orthanc as orthanc_process
from tests.clients.wire_fixture import to_fixture, write
from tests.clients.wire_recorder import Recorded, RecordingProxy
from tests.conftest import free_ports
from tests.factories import make_dataset, to_bytes

RECORDED = "recorded from the real client through tests/clients/wire_recorder.py (python -m tests.clients.record_wire)"


class Session:
    """One recording run: a proxy in front of the server, a study of synthetic instances, the fixtures written."""

    def __init__(self, proxy: RecordingProxy) -> None:
        self.proxy = proxy
        self.authority = f"127.0.0.1:{proxy.port}"
        self.root = f"http://{self.authority}/v2"
        self.study = generate_uid()
        self.series = generate_uid()
        self.sops: list[str] = []

    def new_instance(self) -> bytes:
        """A fresh synthetic 64x64 instance of the session's study and series."""
        sop = generate_uid()
        self.sops.append(sop)
        return to_bytes(make_dataset(study=self.study, series=self.series, sop=sop, rows=64, columns=64,
                                     InstanceNumber=len(self.sops)))

    def save(self, name: str, recorded: Recorded, about: dict[str, Any]) -> None:
        """Write one recording as fixture ``name``, the session's authority and UIDs made placeholders."""
        # dicomweb-client sends the host without the port (it overwrites Host on small requests).
        replacements = {self.authority: "authority", "127.0.0.1": "hostname", self.study: "study",
                        self.series: "series"}
        replacements.update({sop: "instance" for sop in self.sops})
        path = write(name, to_fixture(recorded, about, replacements))
        print(f"{path.name}: {recorded.request_line} -> {recorded.status} {recorded.content_type}")


def _only(records: list[Recorded], what: str) -> Recorded:
    if len(records) != 1:
        raise RuntimeError(f"{what}: expected one request, recorded {[r.request_line for r in records]}")
    return records[0]


def record_curl(session: Session) -> None:
    """curl's --form and --data-binary uploads, as docs/api.md shows them."""
    version = subprocess.run(["curl", "--version"], capture_output=True, text=True, check=True).stdout.split()[1]
    with tempfile.TemporaryDirectory() as folder:
        for name, option in (("curl-stow-form", "--form"), ("curl-stow-data-binary", "--data-binary")):
            path = Path(folder) / "instance.dcm"
            path.write_bytes(session.new_instance())
            if option == "--form":
                arguments = ["-H", 'Content-Type: multipart/related; type="application/dicom"',
                             "--form", f"file1=@{path};type=application/dicom"]
            else:
                arguments = ["-H", "Content-Type: application/dicom", "--data-binary", f"@{path}"]
            command = ["curl", "-sS", "-o", "/dev/null", "-X", "POST", f"{session.root}/studies",
                       "-H", "Accept: application/dicom+json", *arguments]
            subprocess.run(command, check=True)
            about = {"client": f"curl {version}", "how": RECORDED,
                     "command": " ".join(command).replace(str(path), "instance.dcm")}
            session.save(name, _only(session.proxy.take(), name), about)


def record_dicomweb_client(session: Session) -> None:
    """dicomweb-client's STOW (one request, and chunked), searches and retrievals."""
    version = importlib.metadata.version("dicomweb-client")
    about = {"client": f"dicomweb-client {version} (Python)", "how": RECORDED}
    client = DICOMwebClient(url=session.root)
    client.store_instances([pydicom.dcmread(_buffer(session.new_instance()))])
    session.save("dicomweb-client-stow", _only(session.proxy.take(), "stow"), about)
    # Bodies over chunk_size (1 MB by default) go as a generator, so chunked; a small chunk_size shows it.
    chunked = DICOMwebClient(url=session.root, chunk_size=4096)
    chunked.store_instances([pydicom.dcmread(_buffer(session.new_instance())) for _ in range(2)])
    session.save("dicomweb-client-stow-chunked", _only(session.proxy.take(), "stow chunked"),
                 {**about, "note": "chunk_size=4096 so that two small instances go chunked, as bodies over 1 MB do"})
    sop = session.sops[0]
    calls: list[tuple[str, Callable[[], object]]] = [
        ("search-studies", lambda: client.search_for_studies(search_filters={"StudyInstanceUID": session.study})),
        ("search-series", lambda: client.search_for_series(session.study)),
        ("search-instances", lambda: client.search_for_instances(session.study, session.series,
                                                                 fields=["SOPClassUID", "InstanceNumber"])),
        ("retrieve-study", lambda: client.retrieve_study(session.study)),
        ("retrieve-instance", lambda: client.retrieve_instance(session.study, session.series, sop)),
        ("retrieve-metadata", lambda: client.retrieve_series_metadata(session.study, session.series)),
        ("retrieve-frames", lambda: client.retrieve_instance_frames(session.study, session.series, sop, [1])),
        ("retrieve-rendered", lambda: client.retrieve_instance_rendered(session.study, session.series, sop,
                                                                        media_types=("image/png",))),
    ]
    for name, call in calls:
        call()
        session.save(f"dicomweb-client-{name}", _only(session.proxy.take(), name), about)


def record_slicer(session: Session) -> None:
    """3D Slicer's DICOMweb browser: the dicomweb-client calls its DICOMwebBrowser.py makes, in its order."""
    version = importlib.metadata.version("dicomweb-client")
    about = {
        "client": f"3D Slicer DICOMwebBrowser (lassoan/SlicerDICOMwebBrowser), through dicomweb-client {version}",
        "how": RECORDED + ", the calls made as DICOMwebBrowser.py makes them",
        "source": [
            "lassoan/SlicerDICOMwebBrowser DICOMwebBrowser/DICOMwebBrowser.py "
            "(commit 042ee2c06b6442aba5e5e4190fc8ee72a58b7308):",
            "self.DICOMwebClient = DICOMwebClient(url=effectiveServerUrl, session=session, headers=headers)",
            "subset = self.DICOMwebClient.search_for_studies(offset=offset)",
            "series = self.DICOMwebClient.search_for_series(self.selectedStudyInstanceUID)",
            "instances = self.DICOMwebClient.search_for_instances(study_instance_uid=selectedStudy, "
            "series_instance_uid=selectedSeries)",
            "retrievedInstance = self.DICOMwebClient.retrieve_instance(study_instance_uid=selectedStudy, "
            "series_instance_uid=selectedSeries, sop_instance_uid=sopInstanceUid)",
        ],
    }
    client = DICOMwebClient(url=session.root, session=None, headers={})
    sop = session.sops[0]
    calls: list[tuple[str, Callable[[], object]]] = [
        ("search-studies", lambda: client.search_for_studies(offset=0)),
        ("search-series", lambda: client.search_for_series(session.study)),
        ("search-instances", lambda: client.search_for_instances(study_instance_uid=session.study,
                                                                 series_instance_uid=session.series)),
        ("retrieve-instance", lambda: client.retrieve_instance(study_instance_uid=session.study,
                                                               series_instance_uid=session.series,
                                                               sop_instance_uid=sop)),
    ]
    for name, call in calls:
        call()
        session.save(f"slicer-{name}", _only(session.proxy.take(), name), about)


def record_orthanc(session: Session) -> None:
    """Orthanc's DICOMweb plugin: STOW, QIDO through /get, metadata and rendered through /get, /retrieve."""
    if not orthanc_process.installed():
        print(f"Orthanc is not recorded: {orthanc_process.MISSING}")
        return
    http_port, dicom_port = free_ports(2)
    with tempfile.TemporaryDirectory() as folder, orthanc_process.run_orthanc(
        http_port, dicom_port, Path(folder), f"{session.root}/"
    ) as orthanc, orthanc.client() as client:
        version = client.get("/system").json()["Version"]
        plugin = client.get("/plugins/dicom-web").json()["Version"]
        about = {"client": f"Orthanc {version} with its DICOMweb plugin {plugin} (Debian packages)", "how": RECORDED}
        peer = f"/dicom-web/servers/{orthanc.peer}"
        study = ""
        for _ in range(2):
            study = client.post("/instances", content=session.new_instance()).json()["ParentStudy"]
        client.post(f"{peer}/stow", json={"Resources": [study]}).raise_for_status()
        session.save("orthanc-stow", _only(session.proxy.take(), "stow"), about)
        sop = session.sops[-1]
        base = f"/studies/{session.study}/series/{session.series}"
        gets: list[tuple[str, dict[str, object]]] = [
            ("search-studies", {"Uri": "/studies", "Arguments": {"StudyInstanceUID": session.study}}),
            ("search-series", {"Uri": f"/studies/{session.study}/series"}),
            ("search-instances", {"Uri": f"{base}/instances"}),
            ("retrieve-metadata", {"Uri": f"/studies/{session.study}/metadata"}),
            ("retrieve-rendered", {"Uri": f"{base}/instances/{sop}/rendered"}),
        ]
        for name, request in gets:
            client.post(f"{peer}/get", json=request).raise_for_status()
            session.save(f"orthanc-{name}", _only(session.proxy.take(), name), about)
        client.delete(f"/studies/{study}").raise_for_status()
        client.post(f"{peer}/retrieve", json={"Resources": [{"Study": session.study}]}).raise_for_status()
        for recorded in session.proxy.take():
            path = urlsplit(recorded.request_line.split()[1]).path
            name = "retrieve-study" if path.endswith(session.study) else f"retrieve-step-{len(path.split('/'))}"
            session.save(f"orthanc-{name}", recorded, about)


WEASIS_SOURCE = [
    "nroduit/Weasis weasis-dicom/weasis-dicom-explorer/src/main/java/org/weasis/dicom/explorer/rs/RsQueryResult.java:",
    'public static final String STUDY_QUERY = multiParams("&includefield=00080020,00080030,00080050,00080061,'
    '00080090,00081030,00100010,00100020,00100021,00100030,00100040,0020000D,00200010");',
    'public static final String SERIES_QUERY = multiParams("0008103E,00080060,0020000E,00200011,00081190");',
    'public static final String INSTANCE_QUERY = multiParams("00080018,00200013,00081190");',
    'buf.append("/studies?0020000D="); buf.append(studyInstanceUID); buf.append(STUDY_QUERY);',
    'buf.append("/series?includefield="); buf.append(SERIES_QUERY);',
    'buf.append("/instances?includefield="); buf.append(INSTANCE_QUERY);',
    'wadoParameters.addHttpTag("Accept", Multipart.MULTIPART_RELATED + ";type=\\"" + Multipart.ContentType.DICOM '
    '+ "\\";" + rsQueryParams.getProperties().getProperty(RsQueryParams.P_ACCEPT_EXT));',
    'DicomModel: if (!StringUtil.hasText(acceptExt)) { acceptExt = "transfer-syntax=*"; }',
    "weasis-core/src/main/java/org/weasis/core/api/util/NetworkUtil.java: prepareConnection sets the query "
    "headers (none by default), then",
    'urlConnection.setRequestProperty("User-Agent", AppProperties.WEASIS_USER_AGENT); '
    'urlConnection.setRequestProperty("Weasis-User", AppProperties.WEASIS_USER);',
    "nroduit/weasis-dicom-tools src/main/java/org/weasis/dicom/web/DicomStowRS.java and MultipartBody.java:",
    'protected static final String MULTIPART_BOUNDARY = "mimeTypeBoundary";',
    'private final Multipart.ContentType type = Multipart.ContentType.XML;  builder.header("Accept", type.toString());',
    'builder.header("User-Agent", agentName == null ? "Weasis STOWRS" : agentName);',
    'return "multipart/related;type=\\"" + contentType.type + "\\";boundary=" + boundary;',
    'new StringBuilder(256).append("\\r\\n--").append(boundary).append("\\r\\nContent-Type: ").append(type);',
    'if (payload.size() < 0) { sb.append("\\r\\nContent-Encoding: ").append("gzip, identity"); }',
    'String closeDelimiter() { return "\\r\\n--" + boundary + "--"; }',
    "return HttpRequest.BodyPublishers.ofInputStream(streamSupplier);",
]


def record_weasis(session: Session) -> None:
    """Weasis: its QIDO, WADO and STOW requests made by tests/clients/weasis/WeasisRequests.java on the real JDK."""
    program = Path(__file__).resolve().parent / "weasis" / "WeasisRequests.java"
    java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=True).stderr.splitlines()[0]
    about = {"client": "Weasis 4 (its DICOMweb requests, from its source)",
             "how": f"made by tests/clients/weasis/WeasisRequests.java with the JDK's HTTP classes ({java}) as "
                    f"Weasis's source makes them, and {RECORDED}", "source": WEASIS_SOURCE}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "instance.dcm"
        path.write_bytes(session.new_instance())
        subprocess.run(["java", str(program), session.root, session.study, session.series, session.sops[0],
                        str(path)], check=True)
    names = ["search-studies", "search-series", "search-instances", "retrieve-instance", "stow"]
    records = session.proxy.take()
    if len(records) != len(names):
        raise RuntimeError(f"Weasis: expected {names}, recorded {[r.request_line for r in records]}")
    for name, recorded in zip(names, records, strict=True):
        session.save(f"weasis-{name}", recorded, about)


OHIF_ORIGIN = "http://localhost:3000"
OHIF_VERSION = "@ohif/app 3.13.2 (node_modules, package-lock.json)"
# What Chromium adds to a cross-origin fetch or XHR from the viewer (representative; the Accept lines are OHIF's).
_BROWSER_BEFORE = ["Host: {authority}", "Connection: keep-alive"]
_BROWSER_AFTER = [
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
    "Safari/537.36",
    f"Origin: {OHIF_ORIGIN}", "Sec-Fetch-Site: cross-site", "Sec-Fetch-Mode: cors", "Sec-Fetch-Dest: empty",
    f"Referer: {OHIF_ORIGIN}/", "Accept-Encoding: gzip, deflate, br, zstd", "Accept-Language: en-US,en;q=0.9",
]
_OHIF_SEARCH = ["dicomweb-client (bundled, 8478.bundle.js) _httpGetApplicationJson: "
                "var headers = { Accept: MEDIATYPES.DICOM_JSON };",
                "_parseQueryParameters: queryString += "
                "\"\".concat(key, \"=\").concat(encodeURIComponent(params[key]));"]
OHIF_REQUESTS: dict[str, tuple[str, str, int, str | None, list[str]]] = {
    # name: (target, Accept, status, Content-Type expected, source lines)
    "search-studies": (
        "/v2/studies?limit=101&offset=0&fuzzymatching=false&includefield=00081030%2C00080060%2C00080090%2C00100030"
        "&StudyInstanceUID={study}", "application/dicom+json", 200, "application/dicom+json",
        ["89.bundle.js mapParams: const commaSeparatedFields = ['00081030', '00080060', '00080090', '00100030']"
         ".join(',');", "limit: params.limit || 101, offset: params.offset || 0, fuzzymatching: "
         "options.supportsFuzzyMatching === true, includefield: commaSeparatedFields",
         "if (params.studyInstanceUid) { ... parameters.StudyInstanceUID = studyUids; }", *_OHIF_SEARCH]),
    "search-series": (
        "/v2/studies/{study}/series?includefield=0008103E%2C00080021", "application/dicom+json", 200,
        "application/dicom+json",
        ["89.bundle.js seriesInStudy: const commaSeparatedFields = ['0008103E', '00080021'].join(',');",
         *_OHIF_SEARCH]),
    "retrieve-series-metadata": (
        "/v2/studies/{study}/series/{series}/metadata", "application/dicom+json", 200, "application/dicom+json",
        ["retrieveMetadataLoaderAsync: one GET .../series/{uid}/metadata per series (lazy load)", *_OHIF_SEARCH]),
    "frames-cornerstone": (
        "/v2/studies/{study}/series/{series}/instances/{instance}/frames/1",
        "multipart/related; type=application/octet-stream; transfer-syntax=*", 200,
        "multipart/related; type=\"application/octet-stream\"; transfer-syntax=1.2.840.10008.1.2.1",
        ["app.bundle.js (cornerstone dicom-image-loader): const loadImage_mediaType = "
         "'multipart/related; type=application/octet-stream; transfer-syntax=*';",
         "viewer/app-config.js: omitQuotationForMultipartRequest: true"]),
    "frames-quoted": (
        "/v2/studies/{study}/series/{series}/instances/{instance}/frames/1",
        "multipart/related; type=\"application/octet-stream\"; transfer-syntax=\"*\"", 200,
        "multipart/related; type=\"application/octet-stream\"; transfer-syntax=1.2.840.10008.1.2.1",
        ["app.bundle.js generateAcceptHeader: let acceptHeader = ['multipart/related']; ... "
         "acceptHeader.push('type=application/octet-stream'); ... acceptHeader.push('transfer-syntax=*');",
         "if (!omitQuotationForMultipartRequest) { ... 'type=\"' + ... + '\"' ... 'transfer-syntax=\"' + ... + '\"' }",
         "return [acceptHeader.join('; ')];"]),
    "thumbnail-rendered-series": (
        "/v2/studies/{study}/series/{series}/rendered?viewport=256%2C256", "image/jpeg", 404, None,
        ["89.bundle.js buildThumbnailEndpointPath: SeriesInstanceUID && SOPInstanceUID ? `/studies/${...}/series/"
         "${...}/instances/${...}/${thumbnailRendering}` : SeriesInstanceUID ? `/studies/${...}/series/${...}/"
         "${thumbnailRendering}` : ...",
         "new URLSearchParams({ viewport: '256,256' })", "const headers = { ...getAuthorizationHeader(), "
         "Accept: 'image/jpeg' };",
         "fetchThumbnailWithQidoFallbackForSeries: if (!response.ok) ... qidoClient.searchForInstances({ ... "
         "queryParams: { limit: 1, includefield: sopInstanceUidTag } }) then the instance's thumbnail",
         "(series-level rendered is not a route here, as in Azure's service: OHIF falls back to the instance;",
         "the host's 404 carries no CORS headers, so the browser reports a failed fetch, which "
         "fetchThumbnailObjectURL's catch also turns into that fallback)"]),
    "thumbnail-qido-fallback": (
        "/v2/studies/{study}/series/{series}/instances?limit=1&includefield=00080018", "application/dicom+json",
        200, "application/dicom+json",
        ["89.bundle.js fetchThumbnailWithQidoFallbackForSeries: queryParams: { limit: 1, includefield: "
         "sopInstanceUidTag }  (sopInstanceUidTag = '00080018')", *_OHIF_SEARCH]),
    "thumbnail-rendered-instance": (
        "/v2/studies/{study}/series/{series}/instances/{instance}/rendered?viewport=256%2C256", "image/jpeg", 200,
        "image/jpeg",
        ["89.bundle.js getThumbnailFetchRequest (thumbnailRendering: 'rendered', thumbnailRequestStrategy: "
         "'fetch'): url: `${wadoRoot}${endpointPath}`, headers: { Accept: 'image/jpeg' }"]),
}


def write_ohif() -> None:
    """OHIF's requests, written from the installed bundle's source lines (a browser is not recorded here)."""
    for name, (target, accept, status, content_type, source) in OHIF_REQUESTS.items():
        fixture = {
            "client": f"OHIF Viewer {OHIF_VERSION} in Chromium",
            "how": "written by hand from the installed OHIF bundle's source (quoted); the header lines other than "
                   "Accept are what Chromium adds to a cross-origin request (representative)",
            "source": source,
            "request": {"line": f"GET {target} HTTP/1.1",
                        "headers": [*_BROWSER_BEFORE, f"Accept: {accept}", *_BROWSER_AFTER]},
            "body": None,
            "expect": {"status": status, "content_type": content_type},
        }
        print(write(f"ohif-{name}", fixture).name)


def _buffer(data: bytes) -> Any:
    import io

    return io.BytesIO(data)


def main() -> None:
    """Record every client that runs here against ``--server``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", required=True, help="the server's base URL, e.g. http://127.0.0.1:7071")
    parser.add_argument("--only", nargs="*", choices=["curl", "dicomweb-client", "slicer", "orthanc", "weasis", "ohif"])
    arguments = parser.parse_args()
    chosen = arguments.only or ["curl", "dicomweb-client", "slicer", "orthanc", "weasis", "ohif"]
    if "ohif" in chosen:
        write_ohif()
    httpx.get(f"{arguments.server}/health/check", timeout=10, trust_env=False).raise_for_status()
    with RecordingProxy(urlsplit(arguments.server).port or 80) as proxy:
        session = Session(proxy)
        if "curl" in chosen:
            record_curl(session)
        if {"dicomweb-client", "slicer", "weasis"} & set(chosen):
            record_dicomweb_client(session)  # Slicer's and Weasis's calls read what these store
        if "slicer" in chosen:
            record_slicer(session)
        if "orthanc" in chosen:
            record_orthanc(session)
        if "weasis" in chosen:
            record_weasis(session)


if __name__ == "__main__":
    main()
