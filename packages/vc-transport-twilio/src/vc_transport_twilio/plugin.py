"""vc plugin entry point for vc-transport-twilio (hook implementations)."""

from __future__ import annotations

from typing import Any

from vc.hookspecs import hookimpl


@hookimpl
def register_transports(register: Any) -> None:
    from vc_transport_twilio.transport import TwilioTransport

    register(TwilioTransport)


@hookimpl
def register_commands(cli: Any) -> None:
    from vc_transport_twilio.cli import add_commands

    add_commands(cli)
