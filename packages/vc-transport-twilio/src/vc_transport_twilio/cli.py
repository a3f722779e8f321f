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
    from vc.plugins import registry
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


@click.command("demo")
@click.option("--wav", "wavs", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="your own recording of one caller utterance (repeat for several turns); "
                   "default: espeak-ng reads the built-in conversation")
@click.option("--say", "texts", multiple=True,
              help="text the caller says, read by espeak-ng (repeat for several turns)")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="vc-demo",
              show_default=True, help="where call.wav, timeline.png and demo.json are written")
@click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False),
              help="INI file for the server (default: the built-in default stack)")
@click.option("--no-interrupt", is_flag=True, help="let the bot finish every answer")
@click.option("--no-plot", is_flag=True, help="skip the timeline plot")
@click.option("--answer-timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="seconds after the end of speech before a turn counts as unanswered")
@click.option("-v", "--verbose", is_flag=True, help="show the server's log")
@click.option("--language", type=click.Choice(["en", "tr"]), default="en", show_default=True,
              help="tr: a Turkish call on the Turkish stack of docs/turkish.md (Whisper base, "
                   "Qwen2.5-Coder-1.5B, espeak-ng Turkish), the caller speaking Turkish")
def demo_command(wavs: tuple[str, ...], texts: tuple[str, ...], out_dir: str,
                 config_file: str | None, no_interrupt: bool, no_plot: bool,
                 answer_timeout: float, verbose: bool, language: str = "en") -> None:
    """Call vc's embedded default stack as Twilio would and show where the time goes.

    Starts vc, places a simulated Twilio call into it, speaks a short conversation (the last
    utterance over the bot's answer) and prints, per turn, what was said, heard and answered
    and the latency of each stage; writes a stereo WAV, a timeline plot and a JSON summary.
    Exits with status 1 if a turn went unanswered.
    """
    if language == "tr":
        from vc_transport_twilio.demo_tr import main
    else:
        from vc_transport_twilio.demo import main

    sys.exit(main(wavs, texts, out_dir, config_file, not no_interrupt, not no_plot, verbose,
                  answer_timeout))


def add_commands(cli: click.Group) -> None:
    if "demo" not in cli.commands:
        cli.add_command(demo_command)
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
