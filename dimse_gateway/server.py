"""The gateway's Application Entity: the services it accepts, its limits, and the server that runs it."""

from __future__ import annotations

import copy
import gc
import logging
import socket
import ssl
import threading
from typing import Any

from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from dimse_gateway.commitment import handle_n_action
from dimse_gateway.core_loop import CoreLoop
from dimse_gateway.find import handle_find
from dimse_gateway.pdu_limit import PduLimitedRequestHandler
from dimse_gateway.retrieve import handle_get, handle_move
from dimse_gateway.settings import GatewaySettings
from dimse_gateway.shared_stores import SharedStores
from dimse_gateway.store import handle_store

LOGGER = logging.getLogger(__name__)
# pynetdicom accepts the first of its own syntaxes that a peer's presentation context proposes. A modality
# offering its compressed images beside uncompressed ones in one context sends them compressed if lossless (stored
# as received, no work for it); else uncompressed, Explicit VR Little Endian first (also what a C-GET requester
# offering several gets of an uncompressed file, as stored); lossy syntaxes only if nothing else is offered.
_LOSSLESS = [UID(syntax) for syntax in ALL_TRANSFER_SYNTAXES
             if UID(syntax).is_compressed and "Lossless" in UID(syntax).name and "Lossy" not in UID(syntax).name]
_UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian]
SYNTAXES = [*_LOSSLESS, *_UNCOMPRESSED,
            *(syntax for syntax in ALL_TRANSFER_SYNTAXES if syntax not in _LOSSLESS and syntax not in _UNCOMPRESSED)]
QUERY_RETRIEVE = (
    StudyRootQueryRetrieveInformationModelFind, PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove, PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet, PatientRootQueryRetrieveInformationModelGet,
)


def application_entity(settings: GatewaySettings) -> AE:
    """The AE: Verification, Storage of every storage SOP Class in any syntax, Storage Commitment, Query/Retrieve."""
    # A received dataset goes to a temporary file, as it came, rather than into memory (store.handle_store).
    _config.STORE_RECV_CHUNKED_DATASET = True
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_associations = settings.max_associations
    ae.maximum_pdu_size = settings.max_pdu_bytes
    ae.acse_timeout = settings.acse_timeout_seconds
    ae.dimse_timeout = settings.dimse_timeout_seconds
    ae.network_timeout = settings.network_timeout_seconds
    ae.connection_timeout = settings.network_timeout_seconds
    ae.require_calling_aet = list(settings.allowed_calling_ae_titles)
    ae.add_supported_context(Verification, SYNTAXES)
    for context in AllStoragePresentationContexts:
        # Both roles: the SCP role for C-STORE, the SCU role for the C-STORE sub-operations of C-GET.
        ae.add_supported_context(str(context.abstract_syntax), SYNTAXES, scu_role=True,
                                 scp_role=True)
    ae.add_supported_context(StorageCommitmentPushModel, SYNTAXES)
    for sop_class in QUERY_RETRIEVE:
        ae.add_supported_context(sop_class, SYNTAXES)
    # C-MOVE's outgoing associations propose their contexts themselves (retrieve.contexts_for).
    return ae


class _Context(PresentationContext):
    """A supported context whose deep copy shares its transfer syntaxes (immutable UIDs) instead of copying each."""

    def __deepcopy__(self, memo: dict[int, Any]) -> _Context:
        new = copy.copy(self)
        new._transfer_syntax = list(self._transfer_syntax)
        return new


def acceptor_contexts(ae: AE) -> list[PresentationContext]:
    """The AE's supported contexts, cheap to copy: every association starts from a deep copy of them."""
    # pynetdicom deep-copied ~140 contexts x ~40 UIDs per association: about 50 ms of CPU before a first C-ECHO.
    contexts: list[PresentationContext] = []
    for context in ae.supported_contexts:
        shared = _Context()
        shared.__dict__.update(context.__dict__)
        contexts.append(shared)
    return contexts


def _ssl_context(settings: GatewaySettings) -> ssl.SSLContext | None:
    if not settings.tls_certificate:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_certificate, settings.tls_key)
    return context


class _SharedPortServer(ThreadedAssociationServer):
    """An association server whose port other processes listen on too (the kernel spreads the connections)."""

    def server_bind(self) -> None:
        """Bind with SO_REUSEPORT (pynetdicom's own bind sets SO_REUSEADDR only)."""
        assert self.socket is not None
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class Gateway:
    """The running gateway: its storage loop and its association server (started, then stopped once).

    With ``shared_port``, other gateway processes may listen on the same port (``python -m dimse_gateway``'s workers).
    """

    def __init__(self, settings: GatewaySettings, *, shared_port: bool = False) -> None:
        self.settings = settings
        self.core = CoreLoop(settings.core)
        self.stores = SharedStores(self.core.storage)
        try:
            ae = application_entity(settings)
            handlers: list[Any] = [
                (evt.EVT_C_STORE, handle_store, [self.core, self.stores]),
                (evt.EVT_C_FIND, handle_find, [self.core, settings.ae_title]),
                (evt.EVT_C_MOVE, handle_move, [self.core, settings.move_destinations]),
                (evt.EVT_C_GET, handle_get, [self.core]),
                (evt.EVT_N_ACTION, handle_n_action, [self.core, settings.ae_title, settings.move_destinations]),
            ]
            server = _SharedPortServer if shared_port else ThreadedAssociationServer
            self.server = server(
                ae, (settings.host, settings.port), settings.ae_title, acceptor_contexts(ae),
                _ssl_context(settings), evt_handlers=handlers, request_handler=PduLimitedRequestHandler,
            )
            ae._servers.append(self.server)  # as AE.start_server does (it cannot take a request handler)
        except BaseException:
            self.core.close()
            raise
        self._thread = threading.Thread(target=self.server.serve_forever, name="dimse-acceptor", daemon=True)

    @property
    def port(self) -> int:
        """The port the server listens on (the one asked for, or the one given for port 0)."""
        return int(self.server.server_address[1])

    def start(self) -> None:
        """Start accepting associations in a thread of its own."""
        # pynetdicom's server runs a full garbage collection every 30 s, which walked the ~100,000 objects of the
        # imports and the storage clients (0.5 s on a loaded machine, every association stalled): they live as long
        # as the process, so collections leave them out.
        gc.freeze()
        self._thread.start()
        LOGGER.info("DIMSE gateway %s listening on %s:%d", self.settings.ae_title, self.settings.host, self.port)

    def stop(self) -> None:
        """Stop accepting, abort the associations still open, close storage."""
        try:
            self.server.shutdown()  # closes the listening socket too
            for association in self.server.active_associations:
                association.abort()
            self.core.run(self.stores.close())  # the series documents of the last C-STOREs
        finally:
            self.core.close()
