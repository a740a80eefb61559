"""Bad peers: garbage, a refused AE, an oversized PDU, an abort mid-C-STORE, an invalid dataset; others still served."""

from __future__ import annotations

import contextlib
import io
import socket
import subprocess
import time
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import evt
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.pdu import A_ABORT_RQ

from tests.dimse_gateway.conftest import GATEWAY_AE, MAX_PDU_BYTES, Gateway, running_gateway
from tests.dimse_gateway.scu import associated, qido, study_counts
from tests.factories import make_dataset

WAIT_SECONDS = 10.0


def still_serves(gateway: Gateway) -> bool:
    """Whether a new association is accepted and answers C-ECHO."""
    with associated(gateway) as association:
        return association.is_established and association.send_c_echo().Status == 0x0000


def wait_for(condition: Any) -> bool:
    """Poll ``condition`` for up to WAIT_SECONDS."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_garbage_bytes_are_aborted_and_the_gateway_serves_on(gateway: Gateway) -> None:
    with socket.create_connection((gateway.host, gateway.port), timeout=WAIT_SECONDS) as peer:
        peer.sendall(b"\x55GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(256)))
        answer = b""
        while chunk := peer.recv(4096):
            answer += chunk
    assert answer[:1] == b"\x07"  # A-ABORT, then the connection is closed
    assert still_serves(gateway)


def test_a_calling_ae_not_allowed_is_rejected(gateway: Gateway) -> None:
    result = subprocess.run(["echoscu", "-aet", "INTRUDER", "-aec", GATEWAY_AE, gateway.host, str(gateway.port)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "Calling AE Title Not Recognized" in result.stdout + result.stderr
    assert still_serves(gateway)


def test_a_pdu_over_the_limit_aborts_the_association(gateway: Gateway) -> None:
    aborts: list[A_ABORT_RQ] = []

    def on_pdu(event: evt.Event) -> None:
        if isinstance(event.pdu, A_ABORT_RQ):
            aborts.append(event.pdu)

    with associated(gateway, evt_handlers=[(evt.EVT_PDU_RECV, on_pdu)]) as association:
        assert association.is_established
        raw = association.dul.socket.socket
        oversized = MAX_PDU_BYTES + 1
        raw.sendall(bytes([0x04, 0x00]) + oversized.to_bytes(4, "big") + bytes(1024))
        assert wait_for(lambda: association.is_aborted)
    assert [(pdu.source, pdu.reason_diagnostic) for pdu in aborts] == [(2, 6)]  # provider: invalid PDU parameter
    assert still_serves(gateway)


def test_an_abort_mid_c_store_stores_nothing(gateway: Gateway, server: str) -> None:
    study = generate_uid()
    dataset = make_dataset(study=study, rows=256, columns=256)  # 128 KiB of pixels: several PDUs
    with associated(gateway) as association:
        context = association._get_valid_context(dataset.SOPClassUID, ExplicitVRLittleEndian, "scu")
        request = C_STORE()
        request.MessageID = 1
        request.AffectedSOPClassUID = dataset.SOPClassUID
        request.AffectedSOPInstanceUID = dataset.SOPInstanceUID
        request.Priority = 2
        request.DataSet = io.BytesIO(encode(dataset, False, True))
        message = C_STORE_RQ()
        message.primitive_to_message(request)
        fragments = list(message.encode_msg(context.context_id, MAX_PDU_BYTES))
        assert len(fragments) > 2
        for fragment in fragments[:-1]:
            association.dul.send_pdu(fragment)
        association.abort()
    assert still_serves(gateway)
    assert study_counts(server, study) == (0, 0)


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_a_dataset_failing_validation_is_refused_and_not_stored(gateway: Gateway, server: str) -> None:
    dataset = make_dataset(StudyInstanceUID="1.2.840.not-a-uid")
    with associated(gateway) as association:
        status = association.send_c_store(dataset)
    assert status.Status == 0xA900
    assert "StudyInstanceUID" in status.ErrorComment
    assert qido(server, f"instances?SOPInstanceUID={dataset.SOPInstanceUID}") == []
    assert still_serves(gateway)


def test_associations_over_the_maximum_are_rejected_until_one_ends(
    storage_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    with running_gateway(storage_env, tmp_path_factory.mktemp("one-association"),
                         DICOMWEB_DIMSE_MAX_ASSOCIATIONS="1") as gateway:
        for _ in range(3):  # connections closed before an association request (the start-up probe's too)
            socket.create_connection((gateway.host, gateway.port), timeout=WAIT_SECONDS).close()
        started = time.monotonic()
        with contextlib.ExitStack() as first:
            assert wait_for(lambda: first.enter_context(associated(gateway)).is_established)
            assert time.monotonic() - started < WAIT_SECONDS  # their slots were free well before the ACSE timeout
            with associated(gateway) as second:
                assert second.is_rejected
        assert wait_for(lambda: still_serves(gateway))


def test_an_instance_over_the_size_limit_is_refused_and_not_stored(
    storage_env: dict[str, str], server: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with running_gateway(storage_env, tmp_path_factory.mktemp("small-parts"),
                         DICOMWEB_MAX_PART_BYTES="4096") as gateway:
        dataset = make_dataset(rows=64, columns=64)  # 8 KiB of pixels
        with associated(gateway) as association:
            status = association.send_c_store(dataset)
    assert status.Status == 0xA700
    assert qido(server, f"instances?SOPInstanceUID={dataset.SOPInstanceUID}") == []
