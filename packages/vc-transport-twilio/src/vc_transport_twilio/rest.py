"""Call control through Twilio's REST API, with the twilio library's asynchronous client.

Requests never block the event loop (aiohttp underneath). ``api_base_url`` replaces
``https://api.twilio.com`` in every request, so tests (and regional proxies) can point the
real client at another server. The client and its HTTP layer (``requests`` among them) are
imported when the first request is made: a transport without REST credentials never needs
them, and every ``vc`` command imports this module.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException

from vc.call import CallControlError
from vc_transport_twilio.settings import TWILIO_API, TwilioSettings

if TYPE_CHECKING:
    from twilio.http.async_http_client import AsyncTwilioHttpClient
    from twilio.rest import Client

log = logging.getLogger("vc.transport.twilio")
_NETWORK_ERRORS = (TwilioException, aiohttp.ClientError, OSError, TimeoutError)


class _QuietLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The twilio client logs every request at INFO (ten lines each): demote that to DEBUG."""

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.debug(msg, *args, **kwargs)


def rebased_http_client(base_url: str, **kwargs: Any) -> AsyncTwilioHttpClient:
    """The twilio library's async HTTP client, sending requests to ``base_url`` instead of
    Twilio's (unless they are the same)."""
    from twilio.http.async_http_client import AsyncTwilioHttpClient

    class RebasedHttpClient(AsyncTwilioHttpClient):
        def __init__(self) -> None:
            super().__init__(logger=_QuietLog(logging.getLogger("vc.transport.twilio.http")),
                             **kwargs)
            self._base = base_url.rstrip("/")

        async def request(self, method: str, url: str, *args: Any, **kw: Any):  # type: ignore[override]
            if self._base != TWILIO_API and url.startswith(TWILIO_API):
                url = self._base + url[len(TWILIO_API) :]
            return await super().request(method, url, *args, **kw)

    return RebasedHttpClient()


class CallEnded(CallControlError):
    """The call is no longer in progress at Twilio."""


def already_ended(error: Exception) -> bool:
    """Twilio's answer for a call that no longer exists or is no longer in progress."""
    if isinstance(error, TwilioRestException):
        return error.status == 404 or error.code in (20404, 21220)
    return False


class TwilioREST:
    """Hang up, redirect and create calls."""

    def __init__(self, settings: TwilioSettings) -> None:
        self.settings = settings
        self._http: AsyncTwilioHttpClient | None = None
        self._client: Client | None = None

    def _make_client(self) -> Client:
        from twilio.rest import Client

        s = self.settings
        if not s.has_rest_credentials():
            raise CallControlError(
                "Twilio REST credentials are not configured ([transport.twilio] account_sid and "
                "auth_token, or api_key and api_secret)"
            )
        self._http = rebased_http_client(s.api_base_url, timeout=s.rest_timeout)
        if s.api_key and s.api_secret:
            return Client(s.api_key, s.api_secret, s.account_sid, http_client=self._http)
        return Client(s.account_sid, s.auth_token, s.account_sid, http_client=self._http)

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = self._make_client()
        return self._client

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
        self._http = self._client = None

    async def hangup(self, call_sid: str) -> bool:
        """End the call; False if it had already ended (not an error)."""
        try:
            await self.client.calls(call_sid).update_async(status="completed")
        except TwilioRestException as e:
            if already_ended(e):
                log.info(
                    "hang-up of %s: the call had already ended",
                    call_sid,
                    extra={"call_id": call_sid},
                )
                return False
            raise CallControlError(f"Twilio refused to hang up {call_sid}: {e.msg}") from e
        except _NETWORK_ERRORS as e:
            raise CallControlError(f"Twilio hang-up of {call_sid} failed: {e}") from e
        return True

    async def redirect(self, call_sid: str, twiml: str) -> None:
        """Replace the call's TwiML (ends the stream; used for transfers)."""
        try:
            await self.client.calls(call_sid).update_async(twiml=twiml)
        except TwilioRestException as e:
            if already_ended(e):
                raise CallEnded(f"call {call_sid} has already ended") from e
            raise CallControlError(f"Twilio refused to update {call_sid}: {e.msg}") from e
        except _NETWORK_ERRORS as e:
            raise CallControlError(f"Twilio update of {call_sid} failed: {e}") from e

    async def create_call(self, to: str, from_: str, url: str, status_callback: str = "") -> str:
        """Place an outbound call whose answer fetches ``url`` (our voice webhook)."""
        kwargs: dict[str, Any] = {"to": to, "from_": from_, "url": url, "method": "POST"}
        if status_callback:
            kwargs["status_callback"] = status_callback
        try:
            call = await self.client.calls.create_async(**kwargs)
        except TwilioRestException as e:
            raise CallControlError(f"Twilio refused the call to {to}: {e.msg}") from e
        except _NETWORK_ERRORS as e:
            raise CallControlError(f"Twilio call to {to} failed: {e}") from e
        return str(call.sid)
