"""The gateway's settings from DICOMWEB_DIMSE_* variables."""

from __future__ import annotations

import pytest

from dimse_gateway.settings import Destination, GatewaySettings


def test_defaults_are_the_documented_ones() -> None:
    settings = GatewaySettings.from_environment({})
    assert (settings.ae_title, settings.port, settings.allowed_calling_ae_titles, settings.move_destinations) == (
        "DICOMWEB", 11112, (), {})
    assert (settings.max_associations, settings.max_pdu_bytes, settings.tls_certificate) == (16, 262_144, "")
    assert settings.workers == 1


def test_allow_list_and_move_destinations_are_read() -> None:
    settings = GatewaySettings.from_environment({
        "DICOMWEB_DIMSE_ALLOWED_CALLING_AE_TITLES": "CT1, MR1 ,",
        "DICOMWEB_DIMSE_MOVE_DESTINATIONS": "WS=10.0.0.7:104, PACS=[::1]:11113",
        "DICOMWEB_DIMSE_PORT": "4242",
        "DICOMWEB_DIMSE_WORKERS": "3",
    })
    assert settings.allowed_calling_ae_titles == ("CT1", "MR1")
    assert settings.move_destinations == {"WS": Destination("10.0.0.7", 104), "PACS": Destination("::1", 11113)}
    assert (settings.port, settings.workers) == (4242, 3)


@pytest.mark.parametrize("environment", [
    {"DICOMWEB_DIMSE_MOVE_DESTINATIONS": "WS=10.0.0.7"},
    {"DICOMWEB_DIMSE_MOVE_DESTINATIONS": "WS=host:0"},
    {"DICOMWEB_DIMSE_AE_TITLE": "A" * 17},
    {"DICOMWEB_DIMSE_ALLOWED_CALLING_AE_TITLES": "BAD\\AE"},
    {"DICOMWEB_DIMSE_PORT": "-1"},
    {"DICOMWEB_DIMSE_WORKERS": "0"},
    {"DICOMWEB_DIMSE_TLS_CERTIFICATE": "/cert.pem"},
])
def test_an_invalid_setting_stops_the_start(environment: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="DICOMWEB_DIMSE_|AE title"):
        GatewaySettings.from_environment(environment)
