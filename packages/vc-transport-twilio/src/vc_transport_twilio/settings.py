"""Settings of the Twilio transport (``[transport.twilio]``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import attrs

from vc.settings import setting

TWILIO_API = "https://api.twilio.com"


def _public_url(_: Any, attribute: attrs.Attribute, value: str) -> None:
    if not value:
        return
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise ValueError(f"{attribute.name} must be an http(s) URL such as https://vc.example.com")
    if parts.query or parts.fragment:
        raise ValueError(f"{attribute.name} must not have a query string or fragment")


def _path(_: Any, attribute: attrs.Attribute, value: str) -> None:
    if not value.startswith("/") or "?" in value or "#" in value:
        raise ValueError(f"{attribute.name} must be a URL path starting with '/' (got {value!r})")


def _positive(_: Any, attribute: attrs.Attribute, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be greater than 0")


@attrs.define
class TwilioSettings:
    public_url: str = setting(
        "",
        help="public base URL Twilio reaches this server at, e.g. https://vc.example.com "
        "(required unless validate_signatures = false; the TwiML stream URL and every "
        "signature check are based on it)",
        validator=_public_url,
    )
    account_sid: str = setting("", help="Twilio Account SID (AC...) for call control")
    auth_token: str = setting(
        "",
        help="Twilio Auth Token: verifies X-Twilio-Signature, and authenticates REST calls "
        "unless api_key/api_secret are set",
        secret=True,
    )
    api_key: str = setting("", help="API key SID (SK...) for REST calls instead of the auth token")
    api_secret: str = setting("", help="secret of api_key", secret=True)
    validate_signatures: bool = setting(
        True,
        help="check X-Twilio-Signature on every webhook and stream (false: local "
        "development only, logs a warning at startup)",
    )
    stream_secret: str = setting(
        "",
        help="key of the per-call stream tokens (default: derived from auth_token); every "
        "instance behind one load balancer needs the same value",
        secret=True,
    )
    stream_ttl: float = setting(
        60.0,
        min=1,
        max=86400,
        help="seconds a stream token issued in the TwiML stays valid",
        validator=_positive,
    )
    voice_path: str = setting("/twilio/voice", help="voice webhook path (TwiML)", validator=_path)
    stream_path: str = setting(
        "/twilio/stream", help="Media Streams WebSocket path", validator=_path
    )
    action_path: str = setting(
        "/twilio/connect-action",
        help="<Connect action> path Twilio fetches when a stream ends (transfers, hang-ups)",
        validator=_path,
    )
    calls_path: str = setting(
        "/twilio/calls", help="outbound-call HTTP endpoint (enabled by api_token)", validator=_path
    )
    api_token: str = setting(
        "",
        help="bearer token the outbound-call endpoint requires (empty: endpoint disabled)",
        secret=True,
    )
    caller_id: str = setting("", help="default From number of outbound calls (a Twilio number)")
    busy_message: str = setting(
        "",
        help="said when a stream cannot be served (capacity, shutting down); empty: the call's "
        "profile's busy_message, in its language (vc.phrases)",
    )
    max_message_bytes: int = setting(
        65536,
        min=1024,
        max=16 << 20,
        help="largest stream message accepted; a bigger one closes that stream",
        validator=_positive,
    )
    send_ahead_ms: int = setting(
        100,
        min=0,
        max=10000,
        help="bot audio kept buffered at Twilio beyond real time (absorbs network jitter)",
        validator=attrs.validators.ge(0),
    )
    start_timeout: float = setting(
        10.0,
        min=0.1,
        max=3600,
        help="seconds a new stream may take to send its start message",
        validator=_positive,
    )
    api_base_url: str = setting(
        TWILIO_API,
        help="Twilio REST API base URL (tests point it at a local server)",
        validator=_public_url,
    )
    rest_timeout: float = setting(
        10.0,
        min=0.1,
        max=600,
        help="seconds a Twilio REST request may take",
        validator=_positive,
    )

    def base(self) -> str:
        return self.public_url.rstrip("/")

    def public(self, path: str, query: str = "") -> str:
        """The public https URL of ``path`` (what Twilio requests and signs)."""
        return self.base() + path + (f"?{query}" if query else "")

    def stream_url(self, base: str = "") -> str:
        """The public WebSocket URL of the stream endpoint (wss:// for https)."""
        parts = urlsplit(base or self.base())
        scheme = "wss" if parts.scheme == "https" else "ws"
        return parts._replace(scheme=scheme).geturl() + self.stream_path

    def has_rest_credentials(self) -> bool:
        if not self.account_sid:
            return False
        return bool(self.auth_token) or bool(self.api_key and self.api_secret)
