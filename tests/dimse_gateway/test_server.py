"""The gateway's server in this process: what starting it does beyond listening."""

from __future__ import annotations

import dataclasses
import gc

from dimse_gateway.server import Gateway
from dimse_gateway.settings import GatewaySettings
from tests.processes import LOOPBACK


def test_starting_leaves_the_objects_of_startup_out_of_garbage_collection(storage_env: dict[str, str]) -> None:
    settings = dataclasses.replace(GatewaySettings.from_environment({**storage_env, "DICOMWEB_DIMSE_HOST": LOOPBACK}),
                                   port=0)
    gc.unfreeze()
    gateway = Gateway(settings)
    try:
        gateway.start()
        # pynetdicom's full collections every 30 s then walk only what came after (imports, storage clients: no)
        assert gc.get_freeze_count() > 10_000
    finally:
        gateway.stop()
        gc.unfreeze()
