"""Issue 15 item 6: ``piper-websocket`` with ``auth = google-id-token``, for the Piper service
behind Cloud Run IAM.

Two stand-ins on 127.0.0.1: a metadata server that issues JWT-shaped ID tokens (it checks
``Metadata-Flavor: Google`` and the audience, as the real one's identity endpoint takes them),
and Cloud Run's front end in front of the real vc-piper-ws-server (the default voice, in
process): the upgrade is refused (401 without a token, 403 with one it did not issue or that
expired) unless ``X-Serverless-Authorization`` or else ``Authorization`` carries a live token;
``Authorization`` then reaches the service as it is, as on Cloud Run.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest
from piper_helpers import profile, provider_context
from vc_tts_piper.idtoken import IDENTITY_PATH, default_audience, token_expiry
from vc_tts_piper.server import PiperWebSocketServer
from vc_tts_piper.ws_client import PiperServiceError, PiperWebSocketProvider, PiperWebSocketSettings
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from vc.settings import build
from vc.testing import until

VOICE = "en_US-joe-medium"


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


class Metadata:
    """The metadata server's identity endpoint: what it was asked, and the tokens it issued."""

    def __init__(self, audience: str, lifetime: float = 3600) -> None:
        self.audience = audience
        self.lifetime = lifetime
        self.requests: list[dict[str, Any]] = []
        self.issued: dict[str, float] = {}  # token -> exp (the front end's view of validity)
        self.lock = threading.Lock()

    def issue(self) -> str:
        with self.lock:
            n = len(self.issued) + 1
            exp = int(time.time() + self.lifetime)
            token = ".".join((_b64({"alg": "RS256", "typ": "JWT"}),
                              _b64({"aud": self.audience, "exp": exp, "iat": int(time.time()),
                                    "sub": f"vc-runtime-{n}"}),
                              "c2lnbmF0dXJl"))
            self.issued[token] = exp
            return token

    def valid(self, token: str) -> bool:
        with self.lock:
            return self.issued.get(token, 0) > time.time()

    def revoke_all(self) -> None:
        with self.lock:
            self.issued = dict.fromkeys(self.issued, 0.0)

    @property
    def fetches(self) -> int:
        return sum(1 for r in self.requests if r["status"] == 200)


@contextlib.contextmanager
def metadata_server(metadata: Metadata) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            status = 200
            if self.headers.get("Metadata-Flavor") != "Google":
                status = 403
            elif parts.path != IDENTITY_PATH:
                status = 404
            elif query.get("audience") != [metadata.audience] or query.get("format") != ["full"]:
                status = 400
            metadata.requests.append({"path": self.path, "status": status})
            body = metadata.issue().encode() if status == 200 else b"refused\n"
            self.send_response(status)
            self.send_header("Metadata-Flavor", "Google")
            self.send_header("Content-Type", "application/text")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class CloudRunPiper(PiperWebSocketServer):
    """vc-piper-ws-server behind a stand-in for Cloud Run's IAM check."""

    def __init__(self, metadata: Metadata, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.metadata = metadata
        self.refused: list[int] = []
        self.admitted: list[str] = []  # the header the ID token came in

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?", 1)[0] == "/tts":
            header = ("X-Serverless-Authorization"
                      if "X-Serverless-Authorization" in request.headers else "Authorization")
            scheme, _, token = request.headers.get(header, "").partition(" ")
            if scheme != "Bearer" or not token:
                self.refused.append(401)
                return connection.respond(401, "Unauthorized\n")
            if not self.metadata.valid(token):
                self.refused.append(403)
                return connection.respond(403, "Forbidden\n")
            self.admitted.append(header)
        return super()._http(connection, request)


@asynccontextmanager
async def cloud_run(piper: Any, **kw: Any) -> AsyncIterator[tuple[CloudRunPiper, Metadata, str]]:
    loaded = piper.voice_for(profile())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    metadata = Metadata(audience=f"https://127.0.0.1:{port}", lifetime=kw.pop("lifetime", 3600))
    server = CloudRunPiper(metadata, {loaded.name: loaded}, loaded.name, **kw)
    await server.start("127.0.0.1", port)
    try:
        yield server, metadata, f"ws://127.0.0.1:{port}/tts"
    finally:
        await server.stop()


class FastRetry(PiperWebSocketProvider):
    retry_initial: ClassVar[float] = 0.05
    retry_max: ClassVar[float] = 0.2


def make(url: str, **kw: Any) -> FastRetry:
    kw.setdefault("connect_timeout", 2.0)
    return FastRetry(PiperWebSocketSettings(url=url, voice=VOICE, **kw), provider_context())


async def speak(provider: PiperWebSocketProvider, text: str = "Hello there.") -> bytes:
    clip = await provider.synthesize(text, profile())
    return clip.pcm


# -- pure parts ---------------------------------------------------------------------------------


def test_default_audience_is_the_service_url() -> None:
    assert (default_audience("wss://vc-piper-123.europe-west1.run.app/tts")
            == "https://vc-piper-123.europe-west1.run.app")
    assert default_audience("ws://127.0.0.1:8000/tts?x=1") == "https://127.0.0.1:8000"


def test_token_expiry_reads_the_unverified_payload() -> None:
    token = f"{_b64({'alg': 'RS256'})}.{_b64({'exp': 1700000000, 'aud': 'x'})}.sig"
    assert token_expiry(token) == 1700000000.0
    for bad in ("", "a.b", "a.!!!.c", f"a.{_b64({'aud': 'x'})}.c", f"a.{_b64({'exp': 'soon'})}.c"):
        assert token_expiry(bad) is None


def test_auth_setting_is_checked() -> None:
    settings, errors = build(PiperWebSocketSettings,
                             {"auth": ("google-id-token", "t"),
                              "audience": ("https://piper.example", "t")}, "tts.piper-websocket")
    assert not errors and settings.auth == "google-id-token"
    assert settings.audience == "https://piper.example"
    assert PiperWebSocketSettings().auth == "none"
    _, errors = build(PiperWebSocketSettings, {"auth": ("iam", "t")}, "tts.piper-websocket")
    assert errors and "auth" in str(errors)


# -- against the stand-ins ----------------------------------------------------------------------


async def test_synthesis_with_an_id_token_and_the_token_is_kept(
        piper: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async with cloud_run(piper) as (server, metadata, url):
        with metadata_server(metadata) as host:
            monkeypatch.setenv("GCE_METADATA_HOST", host)
            provider = make(url, auth="google-id-token")
            await provider.start()
            try:
                assert provider.ready(), provider.not_ready_reason()
                for _ in range(3):
                    assert len(await speak(provider)) > 10000
                # each synthesis took the spare and the keeper opened another: new handshakes
                await until(lambda: provider.pool.connects >= 4)
                assert metadata.fetches == 1  # one token for every handshake
                assert metadata.requests[0]["status"] == 200
                assert set(server.admitted) == {"Authorization"}
                assert len(server.admitted) == provider.pool.connects
                assert not server.refused
            finally:
                await provider.stop()


async def test_without_the_token_it_is_refused_clearly(piper: Any) -> None:
    async with cloud_run(piper) as (server, _, url):
        provider = make(url)
        await provider.start()
        try:
            assert not provider.ready()
            reason = provider.not_ready_reason()
            assert "refused the connection: HTTP 401" in reason, reason
            assert "auth = google-id-token" in reason
            with pytest.raises(PiperServiceError, match="HTTP 401"):
                await speak(provider)
            assert set(server.refused) == {401}
        finally:
            await provider.stop()


async def test_a_token_for_the_wrong_audience_is_not_issued(
        piper: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async with cloud_run(piper) as (_, metadata, url):
        with metadata_server(metadata) as host:
            monkeypatch.setenv("GCE_METADATA_HOST", host)
            provider = make(url, auth="google-id-token", audience="https://elsewhere.run.app")
            await provider.start()
            try:
                assert not provider.ready()
                reason = provider.not_ready_reason()
                assert "cannot get a Google ID token (audience https://elsewhere.run.app)" in reason
                assert "HTTP 400" in reason, reason
            finally:
                await provider.stop()


async def test_the_token_is_refreshed_before_it_expires(
        piper: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async with cloud_run(piper) as (server, metadata, url):
        with metadata_server(metadata) as host:
            monkeypatch.setenv("GCE_METADATA_HOST", host)
            provider = make(url, auth="google-id-token")
            await provider.start()
            try:
                assert provider.ready(), provider.not_ready_reason()
                assert len(await speak(provider)) > 10000
                await until(lambda: provider.pool.connects >= 2)
                assert metadata.fetches == 1
                source = provider.pool.id_tokens
                assert source is not None
                # An hour on (the token's lifetime): the old one is dead at the front end, and
                # the client's clock says it is within refresh_before of its exp.
                metadata.revoke_all()
                source.clock = lambda: time.time() + 3600 - source.refresh_before + 1
                before = provider.pool.connects
                assert len(await speak(provider)) > 10000  # the spare opened with the old one
                await until(lambda: provider.pool.connects > before)  # keeper: a new one
                assert metadata.fetches == 2
                assert len(await speak(provider)) > 10000  # on the connection the new one opened
                assert not server.refused
                assert provider.ready()
            finally:
                await provider.stop()


async def test_metadata_server_down_is_a_clear_not_ready_reason(
        piper: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    dead = f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()  # nothing listens there
    async with cloud_run(piper) as (_, metadata, url):
        monkeypatch.setenv("GCE_METADATA_HOST", dead)
        provider = make(url, auth="google-id-token")
        await provider.start()
        try:
            assert not provider.ready()
            reason = provider.not_ready_reason()
            assert f"cannot get a Google ID token (audience {metadata.audience}) from the " \
                   f"metadata server at {dead}" in reason, reason
            assert "ConnectionRefusedError" in reason
            assert f"needed for the Piper WebSocket service at {url}" in reason
            with pytest.raises(PiperServiceError, match="cannot get a Google ID token"):
                await speak(provider)
            # the metadata server comes back: the shared retry loop makes the provider ready
            with metadata_server(metadata) as host:
                monkeypatch.setenv("GCE_METADATA_HOST", host)
                await until(provider.ready)
                assert len(await speak(provider)) > 10000
        finally:
            await provider.stop()


async def test_with_a_shared_token_too_the_id_token_goes_in_x_serverless_authorization(
        piper: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async with cloud_run(piper, token="pip3r-shared") as (server, metadata, url):
        with metadata_server(metadata) as host:
            monkeypatch.setenv("GCE_METADATA_HOST", host)
            provider = make(url, auth="google-id-token", token="pip3r-shared")
            await provider.start()
            try:
                assert provider.ready(), provider.not_ready_reason()
                assert len(await speak(provider)) > 10000
                assert set(server.admitted) == {"X-Serverless-Authorization"}
            finally:
                await provider.stop()
            # The ID token alone in Authorization gets past IAM but not the shared-token check
            wrong = make(url, auth="google-id-token")
            await wrong.start()
            try:
                assert not wrong.ready()
                assert "HTTP 401" in wrong.not_ready_reason()
            finally:
                await wrong.stop()
