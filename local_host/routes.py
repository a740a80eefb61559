"""Translating Azure Functions (ASP.NET Core) route templates to Starlette routes, and building the app."""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from azure.functions.decorators.http import HttpMethod
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from local_host.access_log import AccessLogMiddleware
from local_host.functions import HttpFunction, http_functions
from local_host.settings import DEFAULT_ROUTE_PREFIX

ALL_METHODS: frozenset[str] = frozenset(method.value for method in HttpMethod)

# Segment kinds in ASP.NET Core's inbound precedence order: a lower rank is more specific and matches first.
LITERAL, COMPLEX, CONSTRAINED, PARAMETER, CATCH_ALL = range(5)

_PARAMETER_TOKEN = re.compile(r"\{([^{}]*)\}")
_PARAMETER = re.compile(
    r"(?P<catch_all>\*{1,2})?(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<constraint>[A-Za-z]+))?(?P<optional>\?)?"
)
_SUPPORTED = "{name}, {name:int}, {name:alpha}, {name?}, {name:int?}, {*name}"


class RouteTemplateError(ValueError):
    """A route template that the local host cannot translate."""


class _IntConvertor(Convertor[str]):
    """ASP.NET's ``int`` constraint; the value stays a string, as the Functions host passes it."""

    regex = "-?[0-9]+"

    def convert(self, value: str) -> str:
        """Return the matched text unchanged."""
        return value

    def to_string(self, value: str) -> str:
        """Render a value for url_path_for."""
        return str(int(value))


class _AlphaConvertor(Convertor[str]):
    """ASP.NET's ``alpha`` constraint (ASCII letters only)."""

    regex = "[A-Za-z]+"

    def convert(self, value: str) -> str:
        """Return the matched text unchanged."""
        return value

    def to_string(self, value: str) -> str:
        """Render a value for url_path_for."""
        return str(value)


_CONVERTORS: dict[str, str] = {"int": "functions_int", "alpha": "functions_alpha"}
register_url_convertor(_CONVERTORS["int"], _IntConvertor())
register_url_convertor(_CONVERTORS["alpha"], _AlphaConvertor())


@dataclass(frozen=True)
class _Segment:
    """One path segment in Starlette syntax, with its precedence rank and parameter names."""

    path: str
    rank: int
    optional: bool = False
    names: tuple[str, ...] = ()


@dataclass(frozen=True, order=True)
class RoutePath:
    """A Starlette path and its ASP.NET Core precedence (routes sort by precedence, then path)."""

    precedence: tuple[int, ...]
    path: str


def translate_template(template: str, prefix: str = "") -> list[RoutePath]:
    """Translate an ASP.NET Core route template under ``prefix`` into Starlette paths (several if optional)."""
    segments = [_Segment(path=_literal(part, prefix), rank=LITERAL) for part in _split(prefix)]
    segments += [_parse_segment(part, template) for part in _split(template)]
    _check_template(segments, template)
    required = len(segments)
    while required and segments[required - 1].optional:
        required -= 1
    variants = [segments[:end] for end in range(len(segments), required - 1, -1)]
    return [
        RoutePath(precedence=tuple(s.rank for s in variant), path="/" + "/".join(s.path for s in variant))
        for variant in variants
    ]


def _split(template: str) -> list[str]:
    """Split a template into its segments, rejecting empty ones."""
    stripped = template.strip("/")
    if not stripped:
        return []
    parts = stripped.split("/")
    if "" in parts:
        raise RouteTemplateError(f"route template {template!r} has an empty segment")
    return parts


def _parse_segment(text: str, template: str) -> _Segment:
    """Translate one template segment: a literal, a parameter, or literals and parameters mixed."""
    pieces: list[str] = []
    parameters: list[re.Match[str]] = []
    position = 0
    for token in _PARAMETER_TOKEN.finditer(text):
        if parameters and token.start() == position:
            raise RouteTemplateError(f"route template {template!r}: parameters must be separated by literal text")
        parameter = _PARAMETER.fullmatch(token.group(1))
        if parameter is None:
            raise RouteTemplateError(
                f"route template {template!r}: unsupported parameter {token.group(0)!r} (supported: {_SUPPORTED})"
            )
        pieces += [_literal(text[position : token.start()], template), _parameter_path(parameter, template)]
        parameters.append(parameter)
        position = token.end()
    pieces.append(_literal(text[position:], template))
    path, names = "".join(pieces), tuple(p["name"] for p in parameters)
    if not parameters:
        return _Segment(path=path, rank=LITERAL)
    if len(parameters) == 1 and _PARAMETER_TOKEN.fullmatch(text):
        (parameter,) = parameters
        if parameter["catch_all"]:
            return _Segment(path=path, rank=CATCH_ALL, optional=True, names=names)
        rank = CONSTRAINED if parameter["constraint"] else PARAMETER
        return _Segment(path=path, rank=rank, optional=bool(parameter["optional"]), names=names)
    if any(p["catch_all"] or p["optional"] for p in parameters):
        raise RouteTemplateError(f"route template {template!r}: optional and catch-all parameters need a whole segment")
    return _Segment(path=path, rank=COMPLEX, names=names)


def _literal(text: str, template: str) -> str:
    """Return literal template text, rejecting stray or escaped braces."""
    if "{" in text or "}" in text:
        raise RouteTemplateError(
            f"route template {template!r}: unsupported brace in {text!r} (supported: {_SUPPORTED})"
        )
    return text


def _parameter_path(parameter: re.Match[str], template: str) -> str:
    """Return the Starlette spelling of one parsed parameter."""
    name, constraint = parameter["name"], parameter["constraint"]
    if parameter["catch_all"]:
        if constraint or parameter["optional"]:
            raise RouteTemplateError(f"route template {template!r}: a catch-all parameter takes no constraint or '?'")
        return f"{{{name}:path}}"
    if constraint is None:
        return f"{{{name}}}"
    if constraint not in _CONVERTORS:
        raise RouteTemplateError(
            f"route template {template!r}: unsupported constraint {constraint!r} (supported: int, alpha)"
        )
    return f"{{{name}:{_CONVERTORS[constraint]}}}"


def _check_template(segments: list[_Segment], template: str) -> None:
    """Reject duplicate names, a catch-all before the end, and a required segment after an optional one."""
    names = [name for segment in segments for name in segment.names]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise RouteTemplateError(f"route template {template!r} repeats parameter(s) {', '.join(duplicates)}")
    for index, segment in enumerate(segments):
        later = segments[index + 1 :]
        if segment.rank == CATCH_ALL and later:
            raise RouteTemplateError(f"route template {template!r}: a catch-all parameter must be the last segment")
        if segment.optional and not all(s.optional for s in later):
            raise RouteTemplateError(f"route template {template!r}: only trailing segments may be optional")


@dataclass
class _PathHandlers:
    """The functions serving one Starlette path: by method, plus one that takes any other method."""

    precedence: tuple[int, ...]
    by_method: dict[str, HttpFunction] = field(default_factory=dict)
    any_method: HttpFunction | None = None
    only_catch_all: bool = True  # every function here comes from a template with a catch-all parameter

    def add(self, function: HttpFunction, path: str, catch_all: bool) -> None:
        """Register ``function``, refusing a method that another function already serves here."""
        self.only_catch_all = self.only_catch_all and catch_all
        if function.methods is None:
            if self.any_method is not None:
                raise ValueError(f"{path}: functions {self.any_method.name} and {function.name} both take any method")
            self.any_method = function
            return
        for method in sorted(function.methods):
            other = self.by_method.setdefault(method, function)
            if other is not function:
                raise ValueError(f"{method} {path} is served by both {other.name} and {function.name}")

    def methods(self) -> set[str]:
        """Return the methods this path accepts."""
        return set(ALL_METHODS if self.any_method else ()) | set(self.by_method)

    def names(self) -> list[str]:
        """Return the names of the functions serving this path."""
        functions = list(self.by_method.values()) + ([self.any_method] if self.any_method else [])
        return sorted({f.name for f in functions})


def build_routes(functions: Iterable[HttpFunction], route_prefix: str) -> list[Route]:
    """Return one Starlette route per distinct path of ``functions``, most specific first."""
    table: dict[str, _PathHandlers] = {}
    for function in functions:
        route_paths = translate_template(function.route, route_prefix)
        catch_all = any(CATCH_ALL in route_path.precedence for route_path in route_paths)
        for route_path in route_paths:
            handlers = table.setdefault(route_path.path, _PathHandlers(route_path.precedence))
            handlers.add(function, route_path.path, catch_all)
    routes = []
    for path, handlers in sorted(table.items(), key=lambda item: (item[1].precedence, item[0])):
        methods = handlers.methods()
        route_class = _FallThroughRoute if handlers.only_catch_all else Route
        route = route_class(path, _endpoint(handlers.by_method, handlers.any_method), methods=methods)
        route.name = "+".join(handlers.names())
        route.methods = methods  # Starlette adds HEAD to GET routes; the Functions host does not
        route.path_regex = re.compile(route.path_regex.pattern, re.IGNORECASE)  # ASP.NET matches case-insensitively
        routes.append(route)
    return routes


class _FallThroughRoute(Route):
    """A catch-all route that does not claim requests of other methods: they go on to later routes, else 404.

    Without it, a catch-all OPTIONS function (a CORS preflight) would turn every unknown path into a 405.
    """

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """Match as a Route does, except that a path match with another method is no match."""
        match, child_scope = super().matches(scope)
        return (Match.NONE, {}) if match is Match.PARTIAL else (match, child_scope)


def build_app(function_app: Any, route_prefix: str = DEFAULT_ROUTE_PREFIX) -> Starlette:
    """Build the Starlette app serving the HTTP functions of ``function_app`` under ``route_prefix``."""
    return Starlette(
        routes=build_routes(http_functions(function_app), route_prefix),
        middleware=[Middleware(AccessLogMiddleware)],
    )


def _endpoint(
    by_method: Mapping[str, HttpFunction], any_method: HttpFunction | None
) -> Callable[[Request], Awaitable[Response]]:
    """Return a Starlette endpoint that calls the function registered for the request's method."""

    async def endpoint(request: Request) -> Response:
        function = by_method.get(request.method, any_method)
        assert function is not None, "the route's methods admit only registered methods"
        return await _call(function, request)

    return endpoint


async def _call(function: HttpFunction, request: Request) -> Response:
    """Call a function's handler with the request (by its trigger's argument name) and return its response as is."""
    arguments = {function.argument: request}
    if inspect.iscoroutinefunction(function.handler):
        result = await function.handler(**arguments)
    else:
        result = await run_in_threadpool(function.handler, **arguments)
        if inspect.isawaitable(result):
            result = await result
    if not isinstance(result, Response):
        raise TypeError(f"function {function.name} returned {type(result).__name__}, not a Starlette Response")
    return result
