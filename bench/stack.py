"""What every benchmark module gets: the running stack, its storage clients and the run's options."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from azure.storage.blob.aio import ContainerClient

from .environment import Azurite, Server

PREFIX = "bench"


@dataclass
class Stack:
    """Azurite, the server in front of it, and the options of this run."""

    azurite: Azurite
    server: Server
    options: argparse.Namespace

    @property
    def url(self) -> str:
        """The service root of the /v2 API."""
        return f"{self.server.url}/v2"

    def files(self) -> ContainerClient:
        """The server's instance-file container (async client; close it)."""
        return ContainerClient.from_connection_string(self.azurite.connection_string, f"{PREFIX}-files")

    def metadata(self) -> ContainerClient:
        """The server's metadata container (async client; close it)."""
        return ContainerClient.from_connection_string(self.azurite.connection_string, f"{PREFIX}-metadata")

    def scratch(self) -> ContainerClient:
        """A container of the benchmark's own, for the raw-SDK baselines."""
        return ContainerClient.from_connection_string(self.azurite.connection_string, "bench-baseline")


@dataclass
class StoredStudy:
    """A study the STOW benchmark left behind for the retrieve benchmarks."""

    study: str
    series: str
    instances: int
    total_bytes: int
