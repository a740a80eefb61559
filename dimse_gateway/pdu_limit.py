"""The largest PDU a peer may send: pynetdicom reads whatever length a PDU header announces, so it is checked here.

A P-DATA-TF PDU longer than the Maximum Length the gateway announced, or any other PDU longer than
`OTHER_PDU_LIMIT`, has its association aborted (A-ABORT, service provider, invalid PDU parameter value)
before its body is read.
"""

from __future__ import annotations

import logging
import struct
from typing import TYPE_CHECKING

from pynetdicom.transport import AssociationSocket, RequestHandler

if TYPE_CHECKING:
    from pynetdicom.association import Association

LOGGER = logging.getLogger(__name__)
PDU_HEADER_BYTES = 6
P_DATA_TF = 0x04
# An A-ASSOCIATE-RQ of 128 presentation contexts, each with a few transfer syntaxes, fits well in this.
OTHER_PDU_LIMIT = 1024 * 1024
# PS3.8 9.3.8: A-ABORT, source 2 (service provider), reason 6 (invalid PDU parameter value).
ABORT_INVALID_PDU_PARAMETER = bytes([0x07, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x02, 0x06])


class PduLimit:
    """Stands in for an association socket's ``recv``: every PDU header read is checked against the limits."""

    def __init__(self, socket: AssociationSocket, max_pdu_bytes: int) -> None:
        self._socket = socket
        self._recv = socket.recv
        self._max_pdu_bytes = max_pdu_bytes
        self._header_next = True  # pynetdicom reads a PDU as its 6-byte header, then its body

    def __call__(self, nr_bytes: int) -> bytearray:
        """Read ``nr_bytes``; a header over the limits aborts the association and reads as nothing (closed)."""
        if not self._header_next:
            self._header_next = True
            return self._read_body(nr_bytes)
        data = self._recv(nr_bytes)
        self._header_next = False
        if len(data) == PDU_HEADER_BYTES:
            pdu_type, _, length = struct.unpack(">BBL", data)
            limit = self._max_pdu_bytes if pdu_type == P_DATA_TF else OTHER_PDU_LIMIT
            if length > limit:
                LOGGER.warning("Aborting an association: a PDU of type 0x%02X announced %d bytes, over the limit "
                               "of %d", pdu_type, length, limit)
                self._socket.send(ABORT_INVALID_PDU_PARAMETER)
                return bytearray()  # read as a closed connection: the state machine shuts the socket down
        return data


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
    """pynetdicom's connection handler, with the PDU limit on each association's socket."""

    def _create_association(self) -> Association:
        association = super()._create_association()
        socket = association.dul.socket
        assert socket is not None
        setattr(socket, "recv", PduLimit(socket, self.ae.maximum_pdu_size))  # noqa: B010 - an instance's method
        return association
