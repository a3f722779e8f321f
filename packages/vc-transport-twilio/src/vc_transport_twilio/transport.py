"""The ``twilio`` transport provider: settings, security state, REST client and routes."""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any

from vc.providers import CallHost, ProviderContext, ProviderError, TransportProvider
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

    async def start(self, host: CallHost) -> None:  # type: ignore[override]
        s = self.settings
        if s.validate_signatures:
            missing = [k for k in ("public_url", "auth_token") if not getattr(s, k)]
            if missing:
                raise ProviderError(
                    f"[transport.twilio] {' and '.join(missing)} must be set to validate Twilio "
                    "signatures (public_url: the https URL Twilio reaches this server at, e.g. "
                    "https://vc.example.com; auth_token: from the Twilio console). For local "
                    "development only, validate_signatures = false turns the checks off."
                )
        else:
            self.log.warning(INSECURE_WARNING)
        if not s.public_url:
            self.log.warning(
                "[transport.twilio] public_url is not set: URLs in TwiML are built "
                "from each request's Host header (development only)"
            )
        if self.rest is None:
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

    def routes(self) -> APIRouter:
        from vc_transport_twilio.routes import build_router

        return build_router(self)

    def status(self) -> dict[str, Any]:
        return {"active_streams": len(self.streams)}
