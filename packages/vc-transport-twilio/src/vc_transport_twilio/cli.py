"""``vc call twilio --to +15551234567``: place an outbound call that talks to the bot.

The call is created through Twilio's REST API with this machine's configuration; when the
callee answers, Twilio fetches the voice webhook of the running ``vc serve`` (at
``public_url``), exactly like an inbound call.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import click

from vc.call import CallControlError


def _settings(config_file: str | None) -> Any:
    from vc import config as vcconfig
    from vc.cli import registry
    from vc.settings import build
    from vc_transport_twilio.settings import TwilioSettings

    raw = vcconfig.read(config_file)
    cfg, errors = vcconfig.resolve(raw, registry())  # also applies VC_TRANSPORT_TWILIO__* overrides
    if cfg is not None and "twilio" in cfg.transports:
        return cfg.transports["twilio"].settings
    settings, own_errors = build(TwilioSettings, raw.get("transport.twilio"), "transport.twilio")
    if settings is None:
        for e in [*errors, *own_errors]:
            click.echo(f"  {e}", err=True)
        sys.exit(1)
    return settings


async def _place(settings: Any, to: str, from_: str, profile: str) -> str:
    from vc_transport_twilio.outbound import place_call
    from vc_transport_twilio.rest import TwilioREST

    rest = TwilioREST(settings)
    try:
        return await place_call(rest, settings, to, from_, profile)
    finally:
        await rest.close()


def add_commands(cli: click.Group) -> None:
    group = cli.commands.get("call")
    if not isinstance(group, click.Group):

        @cli.group("call")
        def call_group() -> None:
            """Place an outbound call through a transport."""

        group = call_group

    @group.command("twilio")
    @click.option("--to", "to", required=True, help="number (+15551234567) or SIP URI to call")
    @click.option(
        "--from", "from_", default="", help="caller ID (default: [transport.twilio] caller_id)"
    )
    @click.option("--profile", default="", help="profile the bot uses for this call")
    @click.option(
        "-c",
        "--config",
        "config_file",
        type=click.Path(dir_okay=False),
        help="INI file (default: $VC_CONFIG_FILE)",
    )
    def call_twilio(to: str, from_: str, profile: str, config_file: str | None) -> None:
        """Call TO through Twilio and connect the answer to the bot of the running vc serve."""
        settings = _settings(config_file)
        try:
            sid = asyncio.run(_place(settings, to, from_, profile))
        except CallControlError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        click.echo(sid)
