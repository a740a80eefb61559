"""Settings of the DIMSE gateway, read from DICOMWEB_DIMSE_* environment variables beside the app's own."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from dicom_core.settings import Settings, int_setting, list_setting

MAX_AE_TITLE_LENGTH = 16


@dataclass(frozen=True)
class Destination:
    """A C-MOVE destination: the AE title's host and port."""

    host: str
    port: int


@dataclass(frozen=True)
class GatewaySettings:
    """Every setting the gateway reads; docs/dimse.md lists them."""

    core: Settings
    ae_title: str = "DICOMWEB"
    host: str = "0.0.0.0"  # noqa: S104 - a DICOM archive listens on the network by design
    port: int = 11112
    # Calling AE titles allowed to associate; empty: any.
    allowed_calling_ae_titles: tuple[str, ...] = ()
    move_destinations: dict[str, Destination] = field(default_factory=dict)
    max_associations: int = 16
    # Largest P-DATA PDU received (and offered to peers); a peer's larger PDU aborts its association.
    max_pdu_bytes: int = 262_144
    acse_timeout_seconds: int = 30
    dimse_timeout_seconds: int = 60
    network_timeout_seconds: int = 60
    tls_certificate: str = ""
    tls_key: str = ""
    # Processes serving associations on the one port (python -m dimse_gateway starts the others). One by default:
    # C-STOREs into one study over several associations share their commits within a process; across two processes
    # they race for the study's rows (8 associations into one series: 4.1 storage requests per C-STORE, not 1.8).
    workers: int = 1

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> GatewaySettings:
        """Read the settings from ``environ`` (default: the process environment)."""
        env = os.environ if environ is None else environ
        defaults = cls(core=Settings.from_environment(env))
        settings = cls(
            core=defaults.core,
            ae_title=(env.get("DICOMWEB_DIMSE_AE_TITLE") or defaults.ae_title).strip(),
            host=(env.get("DICOMWEB_DIMSE_HOST") or defaults.host).strip(),
            port=int_setting(env, "DICOMWEB_DIMSE_PORT", defaults.port),
            allowed_calling_ae_titles=list_setting(env, "DICOMWEB_DIMSE_ALLOWED_CALLING_AE_TITLES"),
            move_destinations=_destinations(env.get("DICOMWEB_DIMSE_MOVE_DESTINATIONS") or ""),
            max_associations=int_setting(env, "DICOMWEB_DIMSE_MAX_ASSOCIATIONS", defaults.max_associations),
            max_pdu_bytes=int_setting(env, "DICOMWEB_DIMSE_MAX_PDU_BYTES", defaults.max_pdu_bytes),
            acse_timeout_seconds=int_setting(env, "DICOMWEB_DIMSE_ACSE_TIMEOUT_SECONDS",
                                             defaults.acse_timeout_seconds),
            dimse_timeout_seconds=int_setting(env, "DICOMWEB_DIMSE_DIMSE_TIMEOUT_SECONDS",
                                              defaults.dimse_timeout_seconds),
            network_timeout_seconds=int_setting(env, "DICOMWEB_DIMSE_NETWORK_TIMEOUT_SECONDS",
                                                defaults.network_timeout_seconds),
            tls_certificate=(env.get("DICOMWEB_DIMSE_TLS_CERTIFICATE") or "").strip(),
            tls_key=(env.get("DICOMWEB_DIMSE_TLS_KEY") or "").strip(),
            workers=int_setting(env, "DICOMWEB_DIMSE_WORKERS", defaults.workers),
        )
        for title in (settings.ae_title, *settings.allowed_calling_ae_titles, *settings.move_destinations):
            _check_ae_title(title)
        if bool(settings.tls_certificate) != bool(settings.tls_key):
            raise ValueError("Settings DICOMWEB_DIMSE_TLS_CERTIFICATE and DICOMWEB_DIMSE_TLS_KEY go together")
        return settings


def _check_ae_title(title: str) -> None:
    if not title or len(title) > MAX_AE_TITLE_LENGTH or "\\" in title or not title.isprintable():
        raise ValueError(f"{title!r} is no AE title (1 to 16 printable characters, no backslash)")


def _destinations(raw: str) -> dict[str, Destination]:
    """Parse ``AE=host:port`` items separated by commas."""
    destinations: dict[str, Destination] = {}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        title, _, address = item.partition("=")
        host, _, port = address.strip().rpartition(":")
        if not title.strip() or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"Setting DICOMWEB_DIMSE_MOVE_DESTINATIONS: {item!r} is not AE=host:port")
        destinations[title.strip()] = Destination(host.strip("[]"), int(port))
    return destinations

