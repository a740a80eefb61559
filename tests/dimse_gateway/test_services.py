"""The gateway's services with a pynetdicom SCU: echo, store (and replace), find with PS3.4 matching, move errors."""

from __future__ import annotations

from pydicom.uid import generate_uid
from pynetdicom.sop_class import PatientRootQueryRetrieveInformationModelFind

from tests.dimse_gateway.conftest import Gateway
from tests.dimse_gateway.scu import associated, find, identifier, qido, study_counts
from tests.factories import make_dataset


def test_c_echo_succeeds(gateway: Gateway) -> None:
    with associated(gateway) as association:
        assert association.is_established
        assert association.send_c_echo().Status == 0x0000


def test_c_store_is_searchable_by_qido_at_once(gateway: Gateway, server: str) -> None:
    study = generate_uid()
    with associated(gateway) as association:
        status = association.send_c_store(make_dataset(study=study))
    assert status.Status == 0x0000
    assert study_counts(server, study) == (1, 1)
