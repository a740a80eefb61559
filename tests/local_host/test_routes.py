"""The local host: route-template translation, the Starlette app it builds, and local settings loading."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import azure.functions as func
import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from local_host.functions import http_functions
from local_host.routes import RouteTemplateError, build_app, translate_template
from local_host.settings import apply_local_settings, find_settings_file, load_settings_files, read_route_prefix


def paths(template: str, prefix: str = "") -> list[str]:
    """Return the Starlette paths of ``template``, in the order translate_template gives them."""
    return [route.path for route in translate_template(template, prefix)]


# --- template translation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("studies", ["/studies"]),
        ("/studies/", ["/studies"]),
        ("studies/{study}", ["/studies/{study}"]),
        ("v{version}/studies", ["/v{version}/studies"]),
        ("files/{name}.{ext}", ["/files/{name}.{ext}"]),
        ("items/{id:int}", ["/items/{id:functions_int}"]),
        ("items/{code:alpha}", ["/items/{code:functions_alpha}"]),
        ("studies/{study?}", ["/studies/{study}", "/studies"]),
        ("a/{b?}/{c:int?}", ["/a/{b}/{c:functions_int}", "/a/{b}", "/a"]),
        ("files/{*rest}", ["/files/{rest:path}", "/files"]),
        ("files/{**rest}", ["/files/{rest:path}", "/files"]),
        ("", ["/"]),
    ],
)
def test_translate_template(template: str, expected: list[str]) -> None:
    assert paths(template) == expected


def test_route_prefix_comes_first() -> None:
    assert paths("studies/{study}", "api") == ["/api/studies/{study}"]
    assert paths("studies/{study}", "/my/api/") == ["/my/api/studies/{study}"]
    assert paths("", "api") == ["/api"]


@pytest.mark.parametrize(
    "template",
    [
        "items/{id:guid}",  # constraint other than int and alpha
        "items/{id:int:min(1)}",  # several constraints
        "items/{id=5}",  # default value
        "items/{{literal}}",  # escaped braces
        "items/{id",  # unbalanced
        "items/{}",  # no name
        "items/{a-b}",  # name Starlette cannot hold
        "{a}{b}",  # consecutive parameters
        "{a}/{a}",  # repeated name
        "{*rest}/more",  # catch-all not last
        "{a?}/b",  # required segment after an optional one
        "x{a?}",  # optional inside a segment
        "{*rest?}",  # optional catch-all
        "a//b",  # empty segment
    ],
)
def test_unsupported_templates_raise(template: str) -> None:
    with pytest.raises(RouteTemplateError, match=re.escape(repr(template))):
        translate_template(template)


def test_literal_segments_sort_before_parameters() -> None:
    templates = ["{*rest}", "studies/{study}", "studies/{study:int}", "studies/latest", "v{v}/studies", "{x}/studies"]
    ordered = sorted(route for template in templates for route in translate_template(template))
    assert [route.path for route in ordered] == [
        "/",  # the root only ever matches itself; where it sorts does not matter
        "/studies/latest",
        "/studies/{study:functions_int}",
        "/studies/{study}",
        "/v{v}/studies",
        "/{x}/studies",
        "/{rest:path}",
    ]


# --- the built app ----------------------------------------------------------------------------------------------

def make_demo_app() -> func.FunctionApp:
    """Return a fresh demo FunctionApp (azure-functions allows get_functions() only once per app)."""
    demo = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @demo.function_name("list_studies")
    @demo.route(route="v{version}/studies", methods=["GET"])
    async def list_studies(req: Request) -> Response:
        """Echo the route parameters and the path."""
        return JSONResponse({"function": "list_studies", "params": dict(req.path_params), "path": req.url.path})

    @demo.function_name("store_studies")
    @demo.route(route="v{version}/studies", methods=[func.HttpMethod.POST])
    async def store_studies(req: Request) -> Response:
        """Stream the request body back in chunks, with the route parameters in headers."""
        body = await req.body()

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 3):
                yield body[start : start + 3]

        headers = {"x-version": req.path_params["version"]}
        return StreamingResponse(chunks(), media_type="application/octet-stream", headers=headers)

    @demo.function_name("study_by_literal")
    @demo.route(route="v{version}/studies/latest", methods=["GET"])
    async def study_by_literal(req: Request) -> Response:
        """Answer the literal route, which must win over the parameter route below."""
        return JSONResponse({"function": "study_by_literal", "params": dict(req.path_params)})

    @demo.function_name("study_by_uid")
    @demo.route(route="v{version}/studies/{study}", methods=["GET", "DELETE"])
    async def study_by_uid(req: Request) -> Response:
        """Echo the route parameters."""
        return JSONResponse({"function": "study_by_uid", "params": dict(req.path_params)})

    @demo.function_name("item")
    @demo.route(route="items/{id:int}/{part:alpha?}")
    async def item(req: Request) -> Response:
        """Answer any method on a constrained route with an optional segment."""
        return JSONResponse({"method": req.method, "params": dict(req.path_params)})

    @demo.function_name("default_route")
    @demo.route(methods=["GET"])
    def default_route(req: Request) -> Response:
        """Serve the function-name route that a function without a route gets (a sync handler)."""
        return Response("default")

    @demo.function_name("nightly")
    @demo.timer_trigger(schedule="0 0 3 * * *", arg_name="timer")
    async def nightly(timer: func.TimerRequest) -> None:
        """Stand in for a non-HTTP function, which the local host skips."""

    return demo


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the demo app built with the "api" route prefix."""
    transport = httpx.ASGITransport(app=build_app(make_demo_app(), "api"))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def test_only_http_functions_are_served() -> None:
    names = {function.name for function in http_functions(make_demo_app())}
    assert names == {"list_studies", "store_studies", "study_by_literal", "study_by_uid", "item", "default_route"}


async def test_route_params_arrive_in_path_params(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v2/studies/1.2.3")
    assert response.status_code == 200
    assert response.json() == {"function": "study_by_uid", "params": {"version": "2", "study": "1.2.3"}}


async def test_functions_share_a_template_by_method(client: httpx.AsyncClient) -> None:
    listed = await client.get("/api/v1/studies")
    assert listed.json() == {"function": "list_studies", "params": {"version": "1"}, "path": "/api/v1/studies"}
    stored = await client.post("/api/v1/studies", content=b"0123456789")
    assert stored.status_code == 200
    assert stored.headers["x-version"] == "1"


async def test_streaming_body_passes_through(client: httpx.AsyncClient) -> None:
    body = bytes(range(256)) * 40
    async with client.stream("POST", "/api/v9/studies", content=body) as response:
        assert response.status_code == 200
        received = b"".join([chunk async for chunk in response.aiter_raw()])
    assert received == body


async def test_literal_segment_beats_parameter(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v2/studies/latest")
    assert response.json()["function"] == "study_by_literal"
    deleted = await client.delete("/api/v2/studies/latest")  # the literal route has no DELETE; the parameter one has
    assert deleted.json()["function"] == "study_by_uid"


async def test_wrong_method_is_405_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.put("/api/v2/studies")
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == {"GET", "POST"}
    assert (await client.head("/api/v2/studies/1.2")).status_code == 405  # GET does not imply HEAD on Functions


async def test_unknown_path_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v2/nothing-here")).status_code == 404
    assert (await client.get("/v2/studies")).status_code == 404  # without the route prefix


async def test_constraints_and_optional_segment(client: httpx.AsyncClient) -> None:
    assert (await client.patch("/api/items/-7")).json() == {"method": "PATCH", "params": {"id": "-7"}}
    assert (await client.get("/api/items/7/Front")).json()["params"] == {"id": "7", "part": "Front"}
    assert (await client.get("/api/items/seven")).status_code == 404
    assert (await client.get("/api/items/7/front2")).status_code == 404


async def test_function_name_is_the_default_route(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/default_route")).text == "default"


async def test_literals_match_case_insensitively(client: httpx.AsyncClient) -> None:
    assert (await client.get("/API/V3/Studies")).json()["params"] == {"version": "3"}


async def test_empty_route_prefix() -> None:
    transport = httpx.ASGITransport(app=build_app(make_demo_app(), ""))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.get("/v2/studies")).status_code == 200
        assert (await client.get("/api/v2/studies")).status_code == 404


def test_one_method_served_twice_is_refused() -> None:
    clash = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @clash.function_name("first")
    @clash.route(route="same", methods=["GET"])
    async def first(req: Request) -> Response:
        return Response()

    @clash.function_name("second")
    @clash.route(route="same", methods=["GET", "POST"])
    async def second(req: Request) -> Response:
        return Response()

    with pytest.raises(ValueError, match="GET /same is served by both first and second"):
        build_app(clash, "")


# --- a catch-all OPTIONS function (the CORS preflight) ------------------------------------------------------------

def make_preflight_app() -> func.FunctionApp:
    """A FunctionApp with one GET route and a catch-all OPTIONS function, as function_app has."""
    demo = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @demo.function_name("studies")
    @demo.route(route="v{version}/studies", methods=["GET"])
    async def studies(req: Request) -> Response:
        """Answer GET."""
        return Response("studies")

    @demo.function_name("preflight")
    @demo.route(route="{*path}", methods=["OPTIONS"])
    async def preflight(req: Request) -> Response:
        """Answer OPTIONS on any path."""
        return Response(status_code=204, headers={"x-path": req.path_params.get("path", "")})

    return demo


@pytest.fixture
async def preflight_client() -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the preflight demo app, with no route prefix."""
    transport = httpx.ASGITransport(app=build_app(make_preflight_app(), ""))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def test_catch_all_options_answers_preflight_on_a_known_path(preflight_client: httpx.AsyncClient) -> None:
    response = await preflight_client.options("/v2/studies")
    assert response.status_code == 204
    assert response.headers["x-path"] == "v2/studies"


async def test_catch_all_options_keeps_405_of_a_known_path(preflight_client: httpx.AsyncClient) -> None:
    response = await preflight_client.delete("/v2/studies")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"


async def test_catch_all_options_keeps_404_of_an_unknown_path(preflight_client: httpx.AsyncClient) -> None:
    assert (await preflight_client.get("/v2/nothing-here")).status_code == 404
    assert (await preflight_client.options("/v2/nothing-here")).status_code == 204


# --- settings files ---------------------------------------------------------------------------------------------


def write_settings(path: Path, values: dict[str, object]) -> None:
    """Write a local.settings-style file with these Values."""
    path.write_text(json.dumps({"IsEncrypted": False, "Values": values}), encoding="utf-8")


def test_environment_wins_over_local_settings_over_sample(tmp_path: Path) -> None:
    write_settings(tmp_path / "local.settings.sample.json", {"A": "sample", "B": "sample", "C": "sample"})
    assert find_settings_file(tmp_path) == tmp_path / "local.settings.sample.json"
    write_settings(tmp_path / "local.settings.json", {"A": "local", "B": "local", "N": 5, "T": True})
    settings_file = find_settings_file(tmp_path)
    assert settings_file == tmp_path / "local.settings.json"
    environ = {"A": "env"}
    applied = apply_local_settings(settings_file, environ)
    assert environ == {"A": "env", "B": "local", "N": "5", "T": "true"}  # the sample is not read once local exists
    assert sorted(applied) == ["B", "N", "T"]


def test_sample_is_used_without_local_settings(tmp_path: Path) -> None:
    write_settings(tmp_path / "local.settings.sample.json", {"A": "sample", "EMPTY": ""})
    environ = {"EMPTY": "set"}
    apply_local_settings(find_settings_file(tmp_path), environ)
    assert environ == {"A": "sample", "EMPTY": "set"}
    assert find_settings_file(tmp_path / "nowhere") is None


def test_settings_a_local_file_lacks_come_from_the_sample(tmp_path: Path) -> None:
    write_settings(tmp_path / "local.settings.sample.json", {"A": "sample", "NEW": "sample"})
    write_settings(tmp_path / "local.settings.json", {"A": "local"})
    environ: dict[str, str] = {}
    loaded = load_settings_files(tmp_path, environ)
    assert environ == {"A": "local", "NEW": "sample"}
    assert (loaded.applied, loaded.from_sample) == (["A"], ["NEW"])


def test_a_local_file_without_a_sample_is_read_alone(tmp_path: Path) -> None:
    write_settings(tmp_path / "local.settings.json", {"A": "local"})
    environ: dict[str, str] = {}
    assert load_settings_files(tmp_path, environ).from_sample == [] and environ == {"A": "local"}


def test_encrypted_settings_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": True, "Values": {"A": "x"}}), encoding="utf-8")
    with pytest.raises(ValueError, match="encrypted"):
        apply_local_settings(path, {})


def test_route_prefix_from_host_json(tmp_path: Path) -> None:
    assert read_route_prefix(tmp_path) == "api"
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0"}), encoding="utf-8")
    assert read_route_prefix(tmp_path) == "api"
    (tmp_path / "host.json").write_text(json.dumps({"extensions": {"http": {"routePrefix": ""}}}), encoding="utf-8")
    assert read_route_prefix(tmp_path) == ""
    (tmp_path / "host.json").write_text(json.dumps({"extensions": {"http": {"routePrefix": "/x/"}}}), encoding="utf-8")
    assert read_route_prefix(tmp_path) == "x"
