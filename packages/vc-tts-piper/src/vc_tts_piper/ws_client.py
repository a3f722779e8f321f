"""``piper-websocket``: the existing Piper WebSocket service (protocols.md §5) as a TTS provider.

One request per clause on a connection the call keeps; requests are sequential. Connections
come from a small pool opened in ``start()`` and topped up in the background, so a call never
waits for a handshake. On barge-in the interrupted request's connection is dropped at once:
the protocol has no cancel message and no request ids, so the rest of that answer is never
read, and the next clause goes out on a spare connection instead of waiting behind the old
answer. A connection found closed (the service restarted) is replaced and the request sent
again, within ``connect_timeout``; a connection refused outright (nothing listens: the service
is stopped) fails the request at once, so the caller hears core's apology without a wait.

Authentication (``auth``): none, or a Google-signed ID token from the metadata server for a
service behind Cloud Run IAM (:mod:`vc_tts_piper.idtoken`), sent on each WebSocket upgrade as
``Authorization: Bearer``. The shared ``token`` of ``vc-piper-ws-server --token`` also travels
as ``Authorization: Bearer``; with both, the ID token goes in ``X-Serverless-Authorization``
(which Cloud Run's IAM check reads in preference to ``Authorization``, leaving that header to the
service) and the shared token in ``Authorization``. A refused upgrade (401/403) fails at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import attrs
from pipecat.frames.frames import CancelFrame, EndFrame, ErrorFrame, Frame
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)
from websockets.protocol import State

from vc.profiles import Profile
from vc.providers import AudioClip, CallContext, ProviderError, TTSProvider
from vc.reconnect import RemoteProvider, RemoteService, ServiceUnavailable
from vc.settings import setting
from vc.wsauth import auth_headers
from vc_tts_piper import protocol
from vc_tts_piper.idtoken import (
    AUTH_CHOICES,
    AUTH_GOOGLE_ID_TOKEN,
    IdTokenError,
    IdTokenSource,
    default_audience,
)
from vc_tts_piper.normalize import normalize
from vc_tts_piper.service import ClauseStreamingTTSService, without_leading_silence
from vc_tts_piper.voices import voice_language


class PiperServiceError(ProviderError):
    """The Piper service could not be reached or failed a request."""


class PiperRequestError(PiperServiceError):
    """The service answered a request with an error message (the connection is still fine)."""


def _rate(instance: Any, attribute: Any, value: int) -> None:
    if not 4000 <= value <= 192000:
        raise ValueError("sample_rate must be between 4000 and 192000")


def _pcm16(instance: Any, attribute: Any, value: str) -> None:
    if value != "pcm16":
        raise ValueError("format must be pcm16 (the only format the service streams)")


@attrs.define
class PiperWebSocketSettings:
    url: str = setting("ws://127.0.0.1:8000/tts", help="the Piper WebSocket service's URL")
    token: str = setting(
        "", secret=True,
        help="shared token the service wants (vc-piper-ws-server --token), sent as "
        "Authorization: Bearer; $env:NAME or $file:/path to keep it out of the file")
    auth: str = setting(
        "none", choices=AUTH_CHOICES,
        help="identity sent on the upgrade: none, or google-id-token (an ID token of the "
        "instance's service account from the metadata server, for a service behind Cloud Run "
        "IAM; with a token too, it goes in X-Serverless-Authorization)")
    audience: str = setting(
        "", help="audience of the ID token (auth = google-id-token); empty: https:// and the "
        "url's host, the Cloud Run service URL")
    voice: str = setting(
        "tr_TR-dfki-medium", help="voice the service should speak with (a profile's voice wins)")
    sample_rate: int = setting(
        22050, min=8000, max=48000, validator=_rate,
        help="rate asked of the service; its audio is resampled to the call's rate")
    format: str = setting("pcm16", validator=_pcm16, help="audio format asked of the service")
    connect_timeout: float = setting(
        5.0, min=0.1, max=600, help="seconds to keep trying to (re)connect before a request fails")
    response_timeout: float = setting(
        10.0, min=0.1, max=600, help="seconds the service may stay silent during an answer")
    spare_connections: int = setting(
        1, min=0, max=64, help="connections kept open and ready for the next call or after a barge-in")
    min_clause_words: int = setting(
        4, min=0, max=100, help="words a clause needs before a comma, colon or dash ends it and it is sent")
    first_piece_words: int = setting(
        5, min=0, max=100,
        help="a reply's first piece is also cut before a word such as and, for, because once it "
        "has this many words, so its first audio comes sooner (0: first clause or sentence)")
    first_piece_late_words: int = setting(
        7, min=0, max=100,
        help="a first piece with no such word yet is also cut before to, of, the, that (and "
        "other prepositions and articles) once it has this many words (0: never)")
    normalize: bool = setting(
        True, help="spell out numbers, currency, times, URLs; drop markdown and emoji")
    prefetch: bool = setting(
        True,
        help="ask the service for the first piece of a reply held back until the caller's turn "
        "ends ([turn] speculate) while the turn is still being waited out")


_CONNECT_ERRORS = (OSError, TimeoutError, InvalidHandshake, ConnectionClosed)


class ConnectionPool:
    """Open connections to one service: handed to calls, topped up in the background.

    A keeper task holds ``spare`` connections open (checked every second and after each
    hand-out), so ``healthy`` also turns false when the service goes away between calls.
    Reachability is reported to ``service``; while the service is unreachable the keeper
    leaves the retrying to the provider's shared retry loop (:mod:`vc.reconnect`).
    """

    def __init__(self, url: str, *, connect_timeout: float, spare: int, log: Any,
                 service: RemoteService | None = None, token: str = "",
                 id_tokens: IdTokenSource | None = None) -> None:
        self.url = url
        self.token = token
        self.id_tokens = id_tokens
        self.service = service
        self.connect_timeout = connect_timeout
        self.spare = max(0, spare)
        self.log = log
        self.healthy = False
        self.closed = False
        self.connects = 0  # successful handshakes (diagnostics, tests)
        self.check_every = 1.0  # seconds between checks of the spare connections
        self._idle: list[ClientConnection] = []
        self._keeper: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closing: set[asyncio.Task[None]] = set()

    async def headers(self) -> dict[str, str]:
        """The upgrade's authentication headers (raises IdTokenError)."""
        if self.id_tokens is None:
            return auth_headers(self.token)
        bearer = f"Bearer {await self.id_tokens.token()}"
        if self.token:
            return {"X-Serverless-Authorization": bearer, **auth_headers(self.token)}
        return {"Authorization": bearer}

    def _fail(self, message: str) -> PiperServiceError:
        self.healthy = False
        error = PiperServiceError(message)
        if self.service is not None:
            self.service.lost(message)
        return error

    def _auth_hint(self) -> str:
        if self.id_tokens is not None:
            sent = f"sent a Google ID token for audience {self.id_tokens.audience}"
            if self.token:
                sent += " in X-Serverless-Authorization, and the shared [tts] token"
            return (f"{sent}: does vc's service account hold roles/run.invoker on the service, "
                    "and is the audience its URL ([tts] audience)?")
        if self.token:
            return "sent the shared [tts] token: is it the service's --token?"
        return ("sent no credentials: [tts] token for vc-piper-ws-server --token, or "
                "[tts] auth = google-id-token for a service behind Cloud Run IAM")

    async def connect(self, deadline: float, *, retry: bool = True) -> ClientConnection:
        """A new connection, retrying with backoff until ``deadline`` (loop time), or trying
        once (``retry=False``: the handshake may take until ``deadline``)."""
        loop = asyncio.get_running_loop()
        delay = 0.05
        while True:
            try:
                headers = await self.headers()
            except IdTokenError as e:
                raise self._fail(f"{e}; it is needed for the Piper WebSocket service at "
                                 f"{self.url} ([tts] auth = google-id-token)") from e
            remaining = deadline - loop.time()
            try:
                conn = await connect(self.url, additional_headers=headers,
                                     open_timeout=max(0.2, remaining), max_size=None,
                                     compression=None, close_timeout=1, ping_interval=20,
                                     ping_timeout=20)
            except InvalidURI as e:
                raise PiperServiceError(
                    f"[tts] url {self.url!r} is not a WebSocket URL: {e}") from e
            except _CONNECT_ERRORS as e:
                if isinstance(e, InvalidStatus) and e.response.status_code in (401, 403):
                    # Not let in: trying again with the same credentials will not help.
                    if self.id_tokens is not None:
                        self.id_tokens.forget()  # the next attempt fetches a fresh one
                    raise self._fail(
                        f"the Piper WebSocket service at {self.url} refused the connection: "
                        f"HTTP {e.response.status_code} ({self._auth_hint()})") from e
                self.healthy = False
                # Refused at once: nothing listens there (a stopped or crashed service). Waiting
                # out the deadline would only make the caller sit through seconds of silence
                # before the apology; fail now (the pool's keeper notices when it is back).
                refused = isinstance(e, ConnectionRefusedError)
                if not retry or refused or loop.time() + delay >= deadline:
                    error = PiperServiceError(
                        f"cannot reach the Piper WebSocket service at {self.url}: "
                        f"{type(e).__name__}: {e}")
                    if self.service is not None:
                        self.service.lost(str(error))
                    raise error from e
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            self.healthy = True
            self.connects += 1
            if self.service is not None:
                self.service.reached()
            return conn

    async def start(self) -> None:
        """One connection attempt now, kept as a spare (raises PiperServiceError); then the
        keeper tops up the spares."""
        loop = asyncio.get_running_loop()
        conn = await self.connect(loop.time() + self.connect_timeout, retry=False)
        if self.closed:
            self.discard(conn)
            return
        self._idle.append(conn)
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.ensure_future(self._keep())

    async def acquire(self, deadline: float) -> ClientConnection:
        while self._idle:
            conn = self._idle.pop()
            if conn.state is State.OPEN:
                self._wake.set()
                return conn
            self.discard(conn)
        conn = await self.connect(deadline)
        self._wake.set()
        return conn

    def release(self, conn: ClientConnection) -> None:
        """Give back a connection with no answer in flight."""
        if not self.closed and conn.state is State.OPEN and len(self._idle) < self.spare:
            self._idle.append(conn)
        else:
            self.discard(conn)

    def discard(self, conn: ClientConnection) -> None:
        """Close a connection without waiting (nothing more is ever read from it)."""
        task = asyncio.ensure_future(conn.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _keep(self) -> None:
        """Keep ``spare`` connections open; notice a service that went away (readiness)."""
        loop = asyncio.get_running_loop()
        while not self.closed:
            self._idle = [c for c in self._idle if c.state is State.OPEN]
            # While the service is unreachable the shared retry loop is in charge.
            if len(self._idle) < self.spare and (self.healthy or self.service is None):
                try:
                    conn = await self.connect(loop.time() + self.connect_timeout)
                except PiperServiceError as e:
                    if self.service is None:
                        self.log.warning("Piper service unavailable: %s", e)
                else:
                    if self.closed:
                        await conn.close()
                        return
                    self._idle.append(conn)
                    continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.check_every):
                    await self._wake.wait()

    async def close(self) -> None:
        self.closed = True
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._keeper
        for conn in self._idle:
            self.discard(conn)
        self._idle.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


class PiperClient:
    """One user of the service (a call, or the greeting renderer): sequential requests."""

    def __init__(self, pool: ConnectionPool, settings: PiperWebSocketSettings, voice: str) -> None:
        self.pool = pool
        self.settings = settings
        self.voice = voice
        self._conn: ClientConnection | None = None
        self.requests = 0

    async def speak(self, text: str) -> AsyncIterator[bytes]:
        """PCM16 at ``settings.sample_rate`` for ``text``, as it arrives."""
        s = self.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.connect_timeout
        request = protocol.request(text, self.voice, s.sample_rate, s.format)
        self.requests += 1
        while True:
            conn = self._conn or await self.pool.acquire(deadline)
            self._conn = conn
            received = clean = False
            try:
                await conn.send(request)
                async for chunk in self._answer(conn, text):
                    received = True
                    yield chunk
                clean = True
                return
            except PiperRequestError:
                clean = True
                raise
            except ConnectionClosed as e:
                if received and isinstance(e, ConnectionClosedOK):
                    return  # a service that closes after each answer
                if received:
                    raise PiperServiceError(
                        f"the Piper service dropped the connection mid-answer ({e})") from e
                if loop.time() >= deadline:
                    raise PiperServiceError(
                        f"the Piper service at {s.url} keeps closing the connection ({e})") from e
                # A connection that died while idle (e.g. the service restarted): retry.
            finally:
                if not clean:
                    # Cancelled (barge-in) or broken mid-answer: never read from it again.
                    self._drop(conn)

    async def _answer(self, conn: ClientConnection, text: str) -> AsyncIterator[bytes]:
        timeout = self.settings.response_timeout
        while True:
            try:
                async with asyncio.timeout(timeout):
                    message = await conn.recv()
            except TimeoutError:
                raise PiperServiceError(
                    f"the Piper service sent nothing for {timeout:g}s while speaking "
                    f"{text[:40]!r}") from None
            if isinstance(message, bytes):
                if message:
                    yield message
                continue
            kind, detail = protocol.classify(message)
            if kind == "end":
                return
            if kind == "error":
                raise PiperRequestError(
                    f"the Piper service could not speak {text[:40]!r}: {detail}")

    def _drop(self, conn: ClientConnection) -> None:
        if self._conn is conn:
            self._conn = None
        self.pool.discard(conn)

    def close(self) -> None:
        if self._conn is not None:
            self.pool.release(self._conn)
            self._conn = None


class PiperWebSocketTTSService(ClauseStreamingTTSService):
    """One call's TTS through the Piper WebSocket service."""

    def __init__(self, provider: PiperWebSocketProvider, voice: str, language: str,
                 **kwargs: Any) -> None:
        s: PiperWebSocketSettings = provider.settings
        super().__init__(voice=voice, language=language, model=None,
                         min_clause_words=s.min_clause_words,
                         first_piece_words=s.first_piece_words,
                         first_piece_late_words=s.first_piece_late_words,
                         normalize_text=s.normalize,
                         prefetch=s.prefetch,
                         observe=provider.context.observe,
                         **kwargs)
        self._provider = provider
        self._voice = voice
        self.client = PiperClient(provider.pool, s, voice)

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        if not self.sayable(text):
            return
        self.spoken.append(text)
        await self.start_tts_usage_metrics(text)
        made = self.held.take(text.strip())
        pcm = _made(made) if made is not None else self.client.speak(text)
        try:
            async for frame in self.stream_pcm(pcm, self._provider.settings.sample_rate,
                                               context_id):
                yield frame
        except PiperServiceError as e:
            yield ErrorFrame(error=str(e))

    async def synthesize_held(self, piece: str, needed_at: float) -> bytes:
        """The held piece through a connection of its own (the call's may be speaking)."""
        client = PiperClient(self._provider.pool, self._provider.settings, self._voice)
        try:
            return b"".join([chunk async for chunk in client.speak(piece)])
        finally:
            client.close()

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)
        self.client.close()

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        self.client.close()


async def _made(audio: asyncio.Future[bytes]) -> AsyncIterator[bytes]:
    """Audio made while the reply was held, as the one chunk of its request."""
    yield await audio


class PiperWebSocketProvider(RemoteProvider, TTSProvider):
    """The Piper WebSocket service. If it is not reachable at start, vc starts anyway and the
    shared retry loop (:mod:`vc.reconnect`) connects once it is; until then calls are refused
    (nothing could be said to the caller) and greetings wait."""

    name = "piper-websocket"
    Settings = PiperWebSocketSettings
    languages = ("*",)
    description = "the Piper WebSocket service (existing deployments, or vc-piper-ws-server)"

    def __init__(self, settings: PiperWebSocketSettings, context: Any) -> None:
        super().__init__(settings, context)
        id_tokens = None
        if settings.auth == AUTH_GOOGLE_ID_TOKEN:
            id_tokens = IdTokenSource(settings.audience or default_audience(settings.url),
                                      timeout=min(5.0, settings.connect_timeout))
        self.pool = ConnectionPool(settings.url, connect_timeout=settings.connect_timeout,
                                   spare=max(1, settings.spare_connections), log=self.log,
                                   service=self.remote, token=settings.token,
                                   id_tokens=id_tokens)

    async def probe(self) -> None:
        try:
            await self.pool.start()
        except PiperServiceError as e:
            if isinstance(e.__cause__, InvalidURI):
                raise
            if isinstance(e.__cause__, IdTokenError | InvalidStatus):
                raise ServiceUnavailable(str(e)) from e
            raise ServiceUnavailable(f"{e} (start the service, e.g. vc-piper-ws-server, or fix "
                                     "[tts] url)") from e

    async def stop(self) -> None:
        await super().stop()
        await self.pool.close()

    def ready(self) -> bool:
        return super().ready() and not self.pool.closed

    def voice_for(self, profile: Profile) -> str:
        return profile.voice or self.settings.voice

    def voice_name(self, profile: Profile) -> str:
        return self.voice_for(profile)

    def voice_language(self, profile: Profile) -> str:
        """The language of the voice the service is asked for (from Piper's voice naming
        scheme, ``tr_TR-dfki-medium`` -> ``tr``; the files are on the server)."""
        return voice_language(self.voice_for(profile))

    def create_service(self, call: CallContext) -> PiperWebSocketTTSService:
        return PiperWebSocketTTSService(self, self.voice_for(call.profile), call.language,
                                        sample_rate=call.output_sample_rate)

    async def synthesize(self, text: str, profile: Profile) -> AudioClip:
        if self.settings.normalize:
            text = normalize(text, profile.language)
        client = PiperClient(self.pool, self.settings, self.voice_for(profile))
        try:
            pcm = b"".join([chunk async for chunk in client.speak(text)]) if text else b""
        finally:
            client.close()
        rate = self.settings.sample_rate
        return AudioClip(without_leading_silence(pcm[: len(pcm) & ~1], rate), rate)
