"""Who may start what: Twilio request signatures, per-call stream tokens, replay detection.

* Webhooks (voice, Connect action) carry ``X-Twilio-Signature``: HMAC-SHA1 over the public
  URL Twilio requested plus the sorted POST parameters, keyed with the auth token. It is
  checked against the configured public URL, never the URL this process sees behind a proxy.
* The WebSocket upgrade is signed the same way over the ``wss://`` URL. That signature covers
  no per-call data (it is the same for every call), so the stream must also present a token
  issued in that call's TwiML: an HMAC over the CallSid, an expiry and a nonce. Tokens are
  single use and expire after ``stream_ttl``.
* A webhook request whose signature was already seen is a replay and is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping

from twilio.request_validator import RequestValidator

_STREAM_KEY_LABEL = b"vc-transport-twilio stream token v1"


def derive_stream_secret(auth_token: str) -> bytes:
    """The stream-token key derived from the auth token (same on every instance)."""
    return hmac.new(auth_token.encode(), _STREAM_KEY_LABEL, hashlib.sha256).digest()


class SignatureChecker:
    """Validates ``X-Twilio-Signature`` with the twilio library's RequestValidator."""

    def __init__(self, auth_token: str) -> None:
        self._validator = RequestValidator(auth_token)

    def valid(self, url: str, params: Mapping[str, str], signature: str | None) -> bool:
        if not signature:
            return False
        return bool(self._validator.validate(url, dict(params), signature))

    def sign(self, url: str, params: Mapping[str, str]) -> str:
        """What Twilio would send for this request (used by the simulator)."""
        return self._validator.compute_signature(url, dict(params))


class ExpiringSet:
    """Keys remembered until they expire; bounded so a flood cannot exhaust memory."""

    def __init__(self, limit: int = 100_000) -> None:
        self._items: OrderedDict[str, float] = OrderedDict()
        self._limit = limit

    def _purge(self, now: float) -> None:
        while self._items:
            key, expires = next(iter(self._items.items()))
            if expires > now and len(self._items) <= self._limit:
                break
            del self._items[key]

    def add(self, key: str, ttl: float) -> bool:
        """Remember ``key``; False if it was already there (and not expired)."""
        now = time.monotonic()
        self._purge(now)
        if key in self._items:
            return False
        self._items[key] = now + ttl
        return True

    def __contains__(self, key: str) -> bool:
        expires = self._items.get(key)
        return expires is not None and expires > time.monotonic()

    def __len__(self) -> int:
        return len(self._items)


class StreamTokens:
    """Per-call, single-use, expiring tokens binding a stream to the call whose TwiML issued it."""

    def __init__(self, key: bytes, ttl: float) -> None:
        self._key = key
        self.ttl = ttl
        self._used = ExpiringSet()

    def _mac(self, call_sid: str, expires: int, nonce: str) -> str:
        msg = f"{call_sid}.{expires}.{nonce}".encode()
        digest = hmac.new(self._key, msg, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def issue(self, call_sid: str, now: float | None = None) -> str:
        expires = int((now if now is not None else time.time()) + self.ttl)
        nonce = secrets.token_urlsafe(12)
        return f"{expires}.{nonce}.{self._mac(call_sid, expires, nonce)}"

    def check(self, token: str, call_sid: str, now: float | None = None) -> str | None:
        """None if ``token`` is valid for ``call_sid`` (and consumes it); else the reason."""
        parts = token.split(".") if isinstance(token, str) and token.isascii() else []
        # ASCII only: str.isdigit() accepts '²' (which int() refuses) and compare_digest
        # raises TypeError for non-ASCII str.
        if len(parts) != 3 or not parts[0].isdigit() or len(parts[0]) > 12:
            return "missing or malformed stream token"
        expires, nonce, mac = int(parts[0]), parts[1], parts[2]
        if not hmac.compare_digest(mac, self._mac(call_sid, expires, nonce)):
            return "stream token does not match this call"
        if expires < (now if now is not None else time.time()):
            return "stream token expired"
        if not self._used.add(nonce, self.ttl + 60):
            return "stream token already used (replayed stream)"
        return None
