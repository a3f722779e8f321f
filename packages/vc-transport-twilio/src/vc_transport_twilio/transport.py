"""The ``twilio`` transport provider: settings, security state, REST client and routes."""

from __future__ import annotations

import ipaddress
import secrets
import time
from typing import TYPE_CHECKING, Any

from vc.call import CallInfo
from vc.profiles import select_profile
from vc.providers import CallHost, ProviderContext, ProviderError, TransportProvider
from vc_transport_twilio import twiml
from vc_transport_twilio.rest import TwilioREST
from vc_transport_twilio.security import (
    ExpiringSet,
    SignatureChecker,
    StreamTokens,
    derive_stream_secret,
)
from vc_transport_twilio.settings import TwilioSettings

if TYPE_CHECKING:
    from fastapi import APIRouter

    from vc_transport_twilio.stream import StreamHandler

#: How long a signature stays remembered to detect replayed webhook requests.
REPLAY_WINDOW_S = 3600.0
#: How long the TwiML for a call's ``<Connect action>`` is kept.
ACTION_TTL_S = 600.0

INSECURE_WARNING = (
    "\n"
    "************************************************************************\n"
    "*  [transport.twilio] validate_signatures = false                      *\n"
    "*  Twilio signatures and stream tokens are NOT checked: anyone who can *\n"
    "*  reach this server can start calls on your AI stack. Use this only   *\n"
    "*  for local development, never in production.                        *\n"
    "************************************************************************"
)


LOCAL_MODE_WARNING = (
    "\n"
    "************************************************************************\n"
    "*  Twilio transport in LOCAL DEVELOPMENT MODE: no public_url and no    *\n"
    "*  auth_token are configured and vc listens on %-24s*\n"
    "*  Twilio signatures and stream tokens are NOT checked. Only programs  *\n"
    "*  on this machine can call in (vc demo, the Twilio simulator); any    *\n"
    "*  request that came through a proxy or tunnel is refused.             *\n"
    "*  Real Twilio calls need [transport.twilio] public_url and auth_token *\n"
    "*  (see docs/twilio.md).                                               *\n"
    "************************************************************************"
)
#: Headers a reverse proxy or tunnel (nginx, ngrok, cloudflared) adds to what it forwards.
PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-real-ip",
                 "cf-connecting-ip", "true-client-ip", "ngrok-trace-id")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a listen address or a peer address) is this machine only."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ActionStore:
    """TwiML each call's ``<Connect action>`` request gets (a transfer's ``<Dial>``...)."""

    def __init__(self) -> None:
        self._docs: dict[str, tuple[float, str]] = {}

    def set(self, call_sid: str, twiml: str) -> None:
        now = time.monotonic()
        self._docs = {k: v for k, v in self._docs.items() if v[0] > now}
        self._docs[call_sid] = (now + ACTION_TTL_S, twiml)

    def pop(self, call_sid: str) -> str | None:
        entry = self._docs.pop(call_sid, None)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]


class TwilioTransport(TransportProvider):
    name = "twilio"
    Settings = TwilioSettings
    description = "Twilio Media Streams: signed webhooks, real-time µ-law streams, marks, barge-in"
    languages = ("*",)

    def __init__(self, settings: TwilioSettings, context: ProviderContext) -> None:
        super().__init__(settings, context)
        self.settings: TwilioSettings = settings
        self.rest = TwilioREST(settings) if settings.has_rest_credentials() else None
        self.signatures = SignatureChecker(settings.auth_token) if settings.auth_token else None
        if settings.stream_secret:
            key = settings.stream_secret.encode()
        elif settings.auth_token:
            key = derive_stream_secret(settings.auth_token)
        else:
            key = secrets.token_bytes(32)  # only possible without validation: per process
        self.tokens = StreamTokens(key, settings.stream_ttl)
        self.seen_signatures = ExpiringSet()
        self.actions = ActionStore()
        self.streams: dict[str, StreamHandler] = {}
        self._started = False
        #: Whether signatures and stream tokens are checked (off in local development mode).
        self.validating = settings.validate_signatures
        #: Local development mode: only unproxied requests from this machine are served.
        self.local_only = False

    def busy_reply(self, info: CallInfo) -> str:
        """TwiML for a call that cannot be served: ``busy_message`` where set, else the busy
        message of the call's profile in its language (vc.phrases), then hang up."""
        text = self.settings.busy_message
        if text:
            return twiml.hangup(text)
        profile = select_profile(self.context.profiles, info)
        return twiml.hangup(profile.busy_message, profile.language)

    def has_credentials(self) -> bool:
        s = self.settings
        return any((s.public_url, s.auth_token, s.account_sid, s.api_key, s.api_secret,
                    s.stream_secret))

    async def start(self, host: CallHost) -> None:
        s = self.settings
        bound = host.listen_host
        if s.validate_signatures and not self.has_credentials() and bound and is_loopback(bound):
            # Nothing configured and nobody else can reach us: the embedded default stack
            # (`vc serve` with no configuration, `vc demo`) runs without Twilio credentials.
            self.validating = False
            self.local_only = True
            self.log.warning(LOCAL_MODE_WARNING, bound)
        elif s.validate_signatures:
            missing = [k for k in ("public_url", "auth_token") if not getattr(s, k)]
            if missing:
                where = f" and vc listens on {bound}" if bound and not is_loopback(bound) else ""
                raise ProviderError(
                    f"[transport.twilio] {' and '.join(missing)} must be set to validate Twilio "
                    f"signatures{where} (public_url: the https URL Twilio reaches this server "
                    "at, e.g. https://vc.example.com; auth_token: from the Twilio console). "
                    "Without any Twilio credentials vc only serves callers on this machine, "
                    "and only while [server] host is 127.0.0.1; for local development "
                    "validate_signatures = false turns the checks off."
                )
        else:
            self.log.warning(INSECURE_WARNING)
        if not s.public_url and not self.local_only:
            self.log.warning(
                "[transport.twilio] public_url is not set: URLs in TwiML are built "
                "from each request's Host header (development only)"
            )
        if self.rest is None and not self.local_only:
            self.log.info(
                "no Twilio REST credentials: hang-ups and transfers end the stream and "
                "answer the <Connect action> request; outbound calls are unavailable"
            )
        await super().start(host)
        self._started = True

    async def stop(self) -> None:
        self._started = False
        for handler in list(self.streams.values()):
            await handler.end_stream("server shutting down")
        if self.rest is not None:
            await self.rest.close()

    def ready(self) -> bool:
        return self._started

    def refuse_remote(self, client_host: str | None, headers: Any) -> str | None:
        """In local development mode, why a request may not be served (None: it may)."""
        if not self.local_only:
            return None
        if not client_host or not is_loopback(client_host):
            return f"request from {client_host or 'an unknown peer'} (local development mode " \
                "serves this machine only)"
        proxied = [h for h in PROXY_HEADERS if h in headers]
        if proxied:
            return f"request came through a proxy or tunnel ({proxied[0]} header) and no " \
                "Twilio credentials are configured (local development mode)"
        return None

    def routes(self) -> APIRouter:
        from vc_transport_twilio.routes import build_router

        return build_router(self)

    def status(self) -> dict[str, Any]:
        return {"active_streams": len(self.streams)}
