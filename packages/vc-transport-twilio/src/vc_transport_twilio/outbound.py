"""Outbound calls: Twilio dials the callee and, on answer, fetches our (signed) voice webhook."""

from __future__ import annotations

from urllib.parse import urlencode

from vc.call import CallControlError
from vc_transport_twilio.rest import TwilioREST
from vc_transport_twilio.settings import TwilioSettings
from vc_transport_twilio.twiml import check_target


def voice_url(settings: TwilioSettings, profile: str = "") -> str:
    """The public voice-webhook URL, selecting ``profile`` when given."""
    return settings.public(settings.voice_path, urlencode({"profile": profile}) if profile else "")


async def place_call(
    rest: TwilioREST, settings: TwilioSettings, to: str, from_: str = "", profile: str = ""
) -> str:
    """Start a call to ``to`` that talks to the bot; returns its CallSid."""
    target = check_target(to)
    caller = (from_ or settings.caller_id).strip()
    if not caller:
        raise CallControlError(
            "no caller ID: pass a From number or set [transport.twilio] caller_id"
        )
    if not settings.public_url:
        raise CallControlError(
            "[transport.twilio] public_url must be set for outbound calls "
            "(Twilio fetches the voice webhook there when the callee answers)"
        )
    return await rest.create_call(target, caller, voice_url(settings, profile))
