"""What a browser page did on the network and said on its console, recorded from Playwright's events."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from playwright.sync_api import BrowserContext, ConsoleMessage, Page, Request, Response, Route

REQUEST_ID_HEADER = "x-request-id"
# How long no request to the server may be in flight before the page counts as settled.
QUIET_SECONDS = 1.5


@dataclass(frozen=True)
class SeenResponse:
    """A response the page received."""

    method: str
    url: str
    status: int
    request_id: str
    accept: str

    @property
    def path(self) -> str:
        """The URL's path (what the server logs)."""
        return urlsplit(self.url).path


@dataclass(frozen=True)
class FailedRequest:
    """A request that got no response (refused, aborted, blocked by CORS)."""

    method: str
    url: str
    failure: str


@dataclass
class BrowserRecord:
    """Everything the page asked for and what it got, plus its console errors and warnings."""

    origins: tuple[str, ...]  # the viewer's and the DICOMweb server's: anything else is external
    responses: list[SeenResponse] = field(default_factory=list)
    failures: list[FailedRequest] = field(default_factory=list)
    external: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    in_flight: set[Request] = field(default_factory=set)

    def attach(self, context: BrowserContext, page: Page) -> None:
        """Listen to ``page`` and refuse (and note) every request ``context`` makes outside the two origins."""
        context.route(self._is_external, self._refuse_external)
        page.on("request", self._on_request)
        page.on("response", self._on_response)
        page.on("requestfailed", self._on_failure)
        page.on("requestfinished", self._on_finished)
        page.on("console", self._on_console)

    def responses_from(self, origin: str) -> list[SeenResponse]:
        """Return the responses that came from ``origin``."""
        return [response for response in self.responses if response.url.startswith(origin)]

    def wait_until_quiet(self, page: Page, timeout_seconds: float) -> None:
        """Return once no request has been in flight for QUIET_SECONDS (or when the timeout passes)."""
        deadline = time.monotonic() + timeout_seconds
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            if self.in_flight:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= QUIET_SECONDS:
                return
            page.wait_for_timeout(100)

    def _is_external(self, url: str) -> bool:
        return url.startswith(("http:", "https:")) and not url.startswith(self.origins)

    def _refuse_external(self, route: Route) -> None:
        self.external.append(route.request.url)
        route.abort("blockedbyclient")

    def _on_request(self, request: Request) -> None:
        self.in_flight.add(request)

    def _on_finished(self, request: Request) -> None:
        self.in_flight.discard(request)

    def _on_response(self, response: Response) -> None:
        request = response.request
        headers = response.headers
        self.responses.append(SeenResponse(request.method, response.url, response.status,
                                           headers.get(REQUEST_ID_HEADER, ""), request.headers.get("accept", "")))

    def _on_failure(self, request: Request) -> None:
        self.in_flight.discard(request)
        self.failures.append(FailedRequest(request.method, request.url, request.failure or ""))

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.console.append(f"{message.type}: {message.text}")
