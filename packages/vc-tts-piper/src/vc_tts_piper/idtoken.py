"""Google-signed ID tokens from the metadata server, for a Piper service behind Cloud Run IAM.

A Cloud Run service that requires authentication (the default; ``vc-piper`` in
deploy/cloudrun/piper-service.yaml) admits a request only with an ID token of a principal that
holds ``roles/run.invoker`` on it, whose audience is the service's URL. On Cloud Run, GKE
(Workload Identity) and Compute Engine the metadata server issues one for the instance's
service account::

    GET http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/
        identity?audience=AUDIENCE&format=full
    Metadata-Flavor: Google

``GCE_METADATA_HOST`` points it elsewhere, as Google's client libraries (and vc-gcp) honour it.
The token is a JWT; its payload's ``exp`` says until when it is good. It is kept and reused
until :attr:`IdTokenSource.refresh_before` seconds before that (the signature is not checked:
the token is only passed on, the service's front end checks it).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping

from vc.providers import ProviderError

METADATA_HOST = "metadata.google.internal"
IDENTITY_PATH = "/computeMetadata/v1/instance/service-accounts/default/identity"
#: values of the ``auth`` setting
AUTH_NONE = "none"
AUTH_GOOGLE_ID_TOKEN = "google-id-token"
AUTH_CHOICES = (AUTH_NONE, AUTH_GOOGLE_ID_TOKEN)


class IdTokenError(ProviderError):
    """No ID token could be had from the metadata server."""


def metadata_host(env: Mapping[str, str]) -> str:
    return env.get("GCE_METADATA_HOST", "").strip() or METADATA_HOST


def default_audience(url: str) -> str:
    """Cloud Run's audience for a service URL: ``https://`` and its host (and port, if any).

    ``wss://vc-piper-123.europe-west1.run.app/tts`` -> ``https://vc-piper-123.europe-west1.run.app``.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"https://{host}" if host else ""


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim (seconds since the epoch) of a JWT, unverified; None if unreadable."""
    pieces = token.split(".")
    if len(pieces) != 3:
        return None
    payload = pieces[1] + "=" * (-len(pieces[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)


class IdTokenSource:
    """ID tokens for one audience: fetched when needed, reused until shortly before ``exp``."""

    #: seconds before ``exp`` at which a token is replaced (Google's last an hour)
    refresh_before = 300.0

    def __init__(self, audience: str, *, timeout: float = 5.0,
                 env: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.audience = audience
        self.timeout = timeout
        self.env = os.environ if env is None else env
        self.clock = clock
        self.fetches = 0  # tokens fetched (diagnostics, tests)
        self._token = ""
        self._expires = 0.0
        self._lock = asyncio.Lock()

    def forget(self) -> None:
        """Drop the kept token (the service refused it): the next :meth:`token` fetches one."""
        self._token, self._expires = "", 0.0

    @property
    def url(self) -> str:
        query = urllib.parse.urlencode({"audience": self.audience, "format": "full"})
        return f"http://{metadata_host(self.env)}{IDENTITY_PATH}?{query}"

    async def token(self) -> str:
        """A token good for a while yet (raises :class:`IdTokenError`)."""
        async with self._lock:
            if self._token and self.clock() < self._expires - self.refresh_before:
                return self._token
            token = await asyncio.to_thread(self._fetch)
            self.fetches += 1
            exp = token_expiry(token)
            # A token without a readable exp is used once and not kept.
            self._token, self._expires = (token, exp) if exp is not None else ("", 0.0)
            return token

    def _fetch(self) -> str:
        url = self.url
        what = f"cannot get a Google ID token (audience {self.audience}) from the metadata server"
        request = urllib.request.Request(url, headers={"Metadata-Flavor": "Google"})
        try:
            # Straight to the metadata server: never through an HTTP(S)_PROXY.
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(request, timeout=self.timeout) as response:
                if response.headers.get("Metadata-Flavor") != "Google":
                    raise IdTokenError(f"{what}: {url.split('?')[0]} answered without "
                                       "Metadata-Flavor: Google (not a metadata server)")
                body = response.read(64 * 1024).decode("ascii", "replace").strip()
        except urllib.error.HTTPError as e:
            detail = e.read(300).decode("utf-8", "replace").strip()
            raise IdTokenError(f"{what} at {metadata_host(self.env)}: HTTP {e.code}"
                               f"{': ' + detail if detail else ''}") from e
        except (OSError, ValueError) as e:
            reason = e.reason if isinstance(e, urllib.error.URLError) else e
            raise IdTokenError(f"{what} at {metadata_host(self.env)} (not on Google Cloud? "
                               f"GCE_METADATA_HOST?): {type(reason).__name__}: {reason}") from e
        if not body or any(c.isspace() for c in body):
            raise IdTokenError(f"{what}: the answer is not a token")
        return body
