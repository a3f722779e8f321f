"""vc plugin entry point for vc-gcp (hook implementations)."""

from __future__ import annotations

from vc.hookspecs import hookimpl
from vc_gcp.observer import CloudLoggingObserver


@hookimpl
def register_observers(register):
    register(CloudLoggingObserver)


@hookimpl
def register_commands(cli):
    from vc_gcp.cli import gcp

    cli.add_command(gcp)
