"""Finding a FunctionApp and reading the HTTP functions registered on it."""

from __future__ import annotations

import importlib
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from azure.functions.decorators.http import HttpTrigger
from azure.functions.decorators.timer import TimerTrigger

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpFunction:
    """One HTTP-triggered function: name, route template, methods (None = any), handler and its request argument."""

    name: str
    route: str
    methods: frozenset[str] | None
    handler: Callable[..., Any]
    argument: str = "req"


def load_function_app(spec: str) -> Any:
    """Import ``module:attribute`` (e.g. ``function_app:app``) and return that FunctionApp."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"--app must look like module:attribute, not {spec!r}")
    module = importlib.import_module(module_name)
    try:
        function_app = getattr(module, attribute)
    except AttributeError as exc:
        raise ValueError(f"module {module_name!r} has no attribute {attribute!r}") from exc
    if not callable(getattr(function_app, "get_functions", None)):
        raise TypeError(f"{spec} is not a FunctionApp (it has no get_functions())")
    return function_app


def registered_functions(function_app: Any) -> list[Any]:
    """Return ``function_app.get_functions()``, asked once per app (azure-functions allows only one call)."""
    functions = _registered.get(function_app)
    if functions is None:
        functions = _registered[function_app] = list(function_app.get_functions())
    return functions


_registered: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()


def http_functions(function_app: Any) -> list[HttpFunction]:
    """Return the HTTP-triggered functions of ``function_app``, logging and skipping the others."""
    found = []
    for function in registered_functions(function_app):
        name = function.get_function_name()
        trigger = function.get_trigger()
        if not isinstance(trigger, HttpTrigger):
            kind = type(trigger).__name__ if trigger is not None else "no trigger"
            if not isinstance(trigger, TimerTrigger):  # timers run on their schedule (local_host.timers)
                logger.info("Skipping function %s: %s is not served by the local host", name, kind)
            continue
        methods = frozenset(str(getattr(m, "value", m)).upper() for m in trigger.methods or ()) or None
        route = trigger.route if trigger.route is not None else name
        handler = function.get_user_function()
        found.append(HttpFunction(name=name, route=route, methods=methods, handler=handler, argument=trigger.name))
    return found
