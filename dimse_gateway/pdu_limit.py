"""The largest PDU a peer may send: pynetdicom reads whatever length a PDU header announces, so it is checked here.

A P-DATA-TF PDU longer than the Maximum Length the gateway announced, or any other PDU longer than
`OTHER_PDU_LIMIT`, has its association aborted (A-ABORT, service provider, invalid PDU parameter value)
before its body is read. A connection that closes before its association request frees its association slot at
once (pynetdicom would hold it until the ACSE timeout: each TCP health probe or port scan took a slot for 30 s).
Bytes that are no PDU are aborted by pynetdicom, whose slot is held until the ACSE timeout.
"""

from __future__ import annotations

import logging
import struct
from typing import TYPE_CHECKING, Any, cast

from pynetdicom.transport import AssociationSocket, RequestHandler

from dimse_gateway.reactors import wait_for_work

if TYPE_CHECKING:
    from pynetdicom.association import Association

LOGGER = logging.getLogger(__name__)
PDU_HEADER_BYTES = 6
A_ASSOCIATE_RQ = 0x01
P_DATA_TF = 0x04
# An A-ASSOCIATE-RQ of 128 presentation contexts, each with a few transfer syntaxes, fits well in this.
OTHER_PDU_LIMIT = 1024 * 1024
# PS3.8 9.3.8: A-ABORT, source 2 (service provider), reason 6 (invalid PDU parameter value).
ABORT_INVALID_PDU_PARAMETER = bytes([0x07, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x02, 0x06])


class PduLimit:
    """Stands in for an association socket's ``recv``: every PDU header read is checked against the limits."""

    def __init__(self, association: Association, socket: AssociationSocket, max_pdu_bytes: int) -> None:
        self._association = association
        self._socket = socket
        self._recv = socket.recv
        self._max_pdu_bytes = max_pdu_bytes
        self._header_next = True  # pynetdicom reads a PDU as its 6-byte header, then its body
        self._requested = False  # an A-ASSOCIATE-RQ header was read

    def __call__(self, nr_bytes: int) -> bytearray:
        """Read ``nr_bytes``; a header over the limits aborts the association and reads as nothing (closed)."""
        if not self._header_next:
            self._header_next = True
            return self._read_body(nr_bytes)
        data = self._recv(nr_bytes)
        self._header_next = False
        if not data:
            self._end_before_request()  # the connection closed
            return data
        if len(data) != PDU_HEADER_BYTES:
            return data
        pdu_type, _, length = struct.unpack(">BBL", data)
        limit = self._max_pdu_bytes if pdu_type == P_DATA_TF else OTHER_PDU_LIMIT
        if length > limit:
            LOGGER.warning("Aborting an association: a PDU of type 0x%02X announced %d bytes, over the limit of %d",
                           pdu_type, length, limit)
            self._socket.send(ABORT_INVALID_PDU_PARAMETER)
            return bytearray()  # read as a closed connection: the state machine shuts the socket down
        self._requested = self._requested or pdu_type == A_ASSOCIATE_RQ
        return data

    def _end_before_request(self) -> None:
        """Before any association request, end the acceptor's wait for one (as its ACSE timeout would)."""
        # The acceptor thread takes None from this queue as the end of its wait (pynetdicom's own timeout path).
        if not self._requested:
            self._requested = True
            self._association.dul.to_user_queue.put(cast(Any, None))

    def _read_body(self, nr_bytes: int) -> bytearray:
        """A PDU's body straight into one buffer (pynetdicom's own read copies it 4 KiB at a time)."""
        raw = self._socket.socket
        if raw is None:
            return bytearray()
        body = bytearray(nr_bytes)
        view = memoryview(body)
        read = 0
        while read < nr_bytes:
            count = raw.recv_into(view[read:], nr_bytes - read)
            if not count:  # closed: what was read, as pynetdicom's own read answers
                return body[:read]
            read += count
        return body


class PduLimitedRequestHandler(RequestHandler):
    """pynetdicom's connection handler, with the PDU limit on each association's socket and waiting reactors."""

    def _create_association(self) -> Association:
        association = super()._create_association()
        wait_for_work(association)
        socket = association.dul.socket
        assert socket is not None
        limit = PduLimit(association, socket, self.ae.maximum_pdu_size)
        setattr(socket, "recv", limit)  # noqa: B010 - an instance's method
        return association
