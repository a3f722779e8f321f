"""The TwiML documents the transport answers with (built with the twilio library, so escaped)."""

from __future__ import annotations

import re

from twilio.twiml.voice_response import Connect, Dial, VoiceResponse

from vc.call import CallControlError

_NUMBER = re.compile(r"\+?[0-9][0-9*#w]{1,31}")
_SIP = re.compile(r"sips?:[^\s<>\"]+", re.IGNORECASE)
_CLIENT = re.compile(r"client:[A-Za-z0-9_.-]{1,120}")


def connect_stream(stream_url: str, action_url: str, parameters: dict[str, str]) -> str:
    """``<Connect action><Stream url>`` with one ``<Parameter>`` per entry."""
    response = VoiceResponse()
    connect = Connect(action=action_url, method="POST")
    stream = connect.stream(url=stream_url)
    for name, value in parameters.items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    return str(response)


def reject(reason: str = "busy") -> str:
    response = VoiceResponse()
    response.reject(reason=reason)
    return str(response)


#: <Say language> for a profile language without a region (Twilio wants one).
SAY_LANGUAGES = {"tr": "tr-TR", "az": "az-AZ", "de": "de-DE", "fr": "fr-FR", "es": "es-ES"}


def say_language(language: str) -> str:
    """Twilio's ``<Say language>`` for a profile language ("" for plain English: Twilio's
    default)."""
    tag = language.strip().replace("_", "-")
    primary = tag.split("-")[0].lower()
    if not tag or tag.lower() == "en":
        return ""
    if "-" in tag:
        return f"{primary}-{tag.split('-', 1)[1].upper()}"
    return SAY_LANGUAGES.get(primary, primary)


def hangup(message: str = "", language: str = "") -> str:
    """``<Say>`` the message (in ``language``, a profile language), then ``<Hangup>``."""
    response = VoiceResponse()
    if message:
        lang = say_language(language)
        if lang:
            response.say(message, language=lang)
        else:
            response.say(message)
    response.hangup()
    return str(response)


def check_target(target: str) -> str:
    """Normalise a transfer destination; CallControlError if it is not a number or SIP URI."""
    t = target.strip()
    if not t.lower().startswith(("sip:", "sips:", "client:")):
        t = re.sub(r"[\s().-]", "", t)  # "+1 (555) 123-4567" -> "+15551234567"
    if _NUMBER.fullmatch(t) or _SIP.fullmatch(t) or _CLIENT.fullmatch(t):
        return t
    raise CallControlError(
        f"cannot transfer to {target!r}: expected a phone number (+15551234567), "
        "a SIP URI (sip:agent@example.com) or client:<identity>"
    )


def dial(target: str) -> str:
    """``<Dial>`` to a number, SIP URI or Twilio Client identity (blind transfer)."""
    t = check_target(target)
    response = VoiceResponse()
    d = Dial()
    if t.lower().startswith(("sip:", "sips:")):
        d.sip(t)
    elif t.startswith("client:"):
        d.client(t[len("client:") :])
    else:
        d.number(t)
    response.append(d)
    return str(response)
