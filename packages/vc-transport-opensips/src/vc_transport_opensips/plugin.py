"""vc plugin entry point for vc-transport-opensips (hook implementations)."""

from __future__ import annotations

from vc.hookspecs import hookimpl


@hookimpl
def register_transports(register):
    from vc_transport_opensips.transport import OpenSIPSTransport

    register(OpenSIPSTransport)
