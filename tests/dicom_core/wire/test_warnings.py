"""The Warning header of DICOMweb answers (PS3.18 §8.3: `Warning: 299 <service>: <text>`)."""

from __future__ import annotations

from dicom_core.wire.warnings import warning_header


def test_every_text_is_one_warning_value_from_the_service_host() -> None:
    assert warning_header("https://dicom.example.org:8443/api", ["one", "two"]) == (
        '299 dicom.example.org:8443: "one", 299 dicom.example.org:8443: "two"')


def test_client_text_cannot_break_the_header() -> None:
    """A parameter name a client sent: quotes escaped, line breaks and non-Latin characters made plain ASCII."""
    value = warning_header("http://h", ['ignored: 山田, a"b\r\nX-Evil: 1'])
    assert value == '299 h: "ignored: \\u5c71\\u7530, a\\"b  X-Evil: 1"'
    assert value.isascii() and "\r" not in value and "\n" not in value


def test_without_a_base_url_the_agent_is_a_dash() -> None:
    assert warning_header("", ["x"]) == '299 -: "x"'
