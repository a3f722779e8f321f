"""The ``vosk-websocket`` STT provider: a client for an existing Vosk server.

Each call streams its audio over one connection taken from a warm pool. The server answers
every audio frame with exactly one message (a partial or a result), so the client knows which
frames a final result covers: frames not yet covered are kept, and when the server drops the
connection mid-call the client reconnects with backoff and replays them, followed by what
arrived while it was away. The call never notices beyond a delayed transcript. ``{"eof" : 1}``
is sent only when the call ends, never mid-call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import urlparse

from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterimTranscriptionFrame,
    StartFrame,
    TranscriptionFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import STTSettings
from pipecat.services.stt_service import STTService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from vc.pipecat_adapter import stt_user_id
from vc.providers import CallContext, ProviderContext, ProviderError, STTProvider
from vc.reconnect import RemoteProvider, ServiceUnavailable
from vc_stt_vosk.pool import CONNECT_ERRORS, VoskConnectionPool
from vc_stt_vosk.protocol import EOF_MESSAGE, RESET_MESSAGE, parse_message
from vc_stt_vosk.settings import VoskWebSocketSettings

#: How long the end of a call waits for the server's last result after ``{"eof" : 1}``.
EOF_TIMEOUT = 3.0
#: Placeholder in the unfinished-frames queue for a ``{"reset" : 1}`` (answered like a frame).
RESET_MARK = b""


class VoskWebSocketSTT(RemoteProvider, STTProvider):
    """A Vosk server. If it is not reachable at start, vc starts anyway and the shared retry
    loop (:mod:`vc.reconnect`) fills the pool once it is; a call meanwhile keeps its audio and
    replays it when its own connection gets through."""

    name = "vosk-websocket"
    Settings = VoskWebSocketSettings
    #: The server's model decides; vc cannot check it.
    languages = ("*",)
    description = "client for a Vosk server (vosk-server WebSocket protocol), streaming"

    def __init__(self, settings: VoskWebSocketSettings, context: ProviderContext) -> None:
        super().__init__(settings, context)
        self.settings: VoskWebSocketSettings = settings
        self.sample_rate = settings.sample_rate
        self.pool: VoskConnectionPool | None = None
        #: Whether to send ``{"reset" : 1}`` at VAD stop (off once the server proves too old).
        self.reset_enabled = settings.finalize_on_vad_stop

    def reset_unsupported(self) -> None:
        if self.reset_enabled:
            self.reset_enabled = False
            self.log.warning('vosk-websocket: the server at %s dropped the connection on '
                             '{"reset" : 1}; it is too old for finalize_on_vad_stop, now off',
                             self.settings.url)

    async def start(self) -> None:
        s = self.settings
        url = urlparse(s.url)
        if url.scheme not in ("ws", "wss") or not url.hostname:
            raise ProviderError(f"url = {s.url!r}: expected ws://host:port or wss://host:port")
        if s.channels != 1:
            self.log.warning("vosk-websocket: channels = %d ignored (vc sends mono)", s.channels)
        self.pool = VoskConnectionPool(s.url, s.sample_rate, s.pool_size, s.connect_timeout,
                                       self.log, service=self.remote)
        await super().start()  # the server may start after vc: not fatal, retried

    async def probe(self) -> None:
        assert self.pool is not None
        s = self.settings
        t0 = time.monotonic()
        try:
            if s.pool_size:
                await self.pool.fill()
            else:
                await (await self.pool.connect()).close()
        except CONNECT_ERRORS as e:
            raise ServiceUnavailable(
                f"cannot reach the Vosk server at {s.url}: {type(e).__name__}: {e}") from None
        self.log.info("vosk-websocket: %d connection(s) to %s ready in %.3fs (model %s)",
                      self.pool.idle, s.url, time.monotonic() - t0, s.model or "unknown")

    async def stop(self) -> None:
        await super().stop()
        if self.pool is not None:
            await self.pool.close()

    def observe(self, stage: str, seconds: float) -> None:
        self.context.observe(f"{stage}_seconds", seconds, {"stage": stage, "provider": self.name})

    def create_service(self, call: CallContext) -> VoskWebSocketSTTService:
        if self.pool is None:
            raise ProviderError("vosk-websocket is not started")
        return VoskWebSocketSTTService(self, log=call.log, language=call.language,
                                       sample_rate=call.input_sample_rate)


class VoskWebSocketSTTService(STTService):
    """One call's stream to the Vosk server, surviving server restarts."""

    def __init__(
        self,
        provider: VoskWebSocketSTT,
        *,
        log: logging.LoggerAdapter[Any] | logging.Logger,
        language: str = "",
        **kwargs: Any,
    ) -> None:
        s = provider.settings
        super().__init__(
            ttfs_p99_latency=s.ttfs_p99_latency,
            settings=STTSettings(model=s.model or None, language=None),
            **kwargs,
        )
        self._provider = provider
        self._pool = provider.pool
        self._log = log
        try:
            self._language: Language | None = Language(language) if language else None
        except ValueError:
            self._language = None
        self._ws: ClientConnection | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._reconnector: asyncio.Task[None] | None = None
        #: Frames sent on the current connection that no final result has covered yet.
        self._unfinal: deque[bytes] = deque()
        #: Server messages received since the last final result (one per frame sent).
        self._acks = 0
        #: Frames that arrived while there was no connection, to send once there is one.
        self._held: deque[bytes] = deque()
        self._held_bytes = 0
        self._last_partial = ""
        self._closing = False
        self._reset_at = 0.0
        self.reconnects = 0
        self.dropped_bytes = 0
        #: Final transcripts of this call (for tests and debugging).
        self.finals: list[str] = []

    def can_generate_metrics(self) -> bool:
        return True

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        assert self._pool is not None
        try:
            ws = await self._pool.acquire(self.sample_rate)
        except CONNECT_ERRORS as e:
            self._log.warning("vosk-websocket: no connection at call start (%s); reconnecting", e)
            self._connection_lost()
            return
        self._use(ws)

    async def stop(self, frame: EndFrame) -> None:
        await self._finish(eof=self._provider.settings.send_eof)
        await super().stop(frame)

    async def cancel(self, frame: CancelFrame) -> None:
        await self._finish(eof=False)
        await super().cancel(frame)

    async def cleanup(self) -> None:
        await self._finish(eof=False)
        await super().cleanup()

    async def _finish(self, eof: bool) -> None:
        if self._closing:
            return
        self._closing = True
        if self._reconnector is not None:
            await self.cancel_task(self._reconnector)
            self._reconnector = None
        ws = self._ws
        if ws is not None and eof:
            try:
                await ws.send(EOF_MESSAGE)
                if self._receiver is not None:
                    await asyncio.wait_for(asyncio.shield(self._receiver), EOF_TIMEOUT)
            except (ConnectionClosed, TimeoutError):
                pass
        if self._receiver is not None and not self._receiver.done():
            await self.cancel_task(self._receiver)
        self._receiver = None
        self._ws = None
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)

    # -- sending ---------------------------------------------------------------------------

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        if self._closing or not audio:
            return
        ws = self._ws
        if ws is not None and ws.state is not State.OPEN:  # the server is closing it
            self._connection_lost()
            ws = None
        if ws is None:
            self._hold(audio)
            return
        self._unfinal.append(audio)
        try:
            await ws.send(audio)
        except ConnectionClosed:
            if ws is self._ws:
                self._connection_lost()
        yield None

    def _hold(self, audio: bytes) -> None:
        """Keep audio for replay, within ``replay_seconds``."""
        self._held.append(audio)
        self._held_bytes += len(audio)
        limit = int(self._provider.settings.replay_seconds * self.sample_rate * 2)
        while self._held and self._held_bytes > limit:
            dropped = self._held.popleft()
            self._held_bytes -= len(dropped)
            self.dropped_bytes += len(dropped)

    # -- connection ------------------------------------------------------------------------

    def _use(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._acks = 0
        self._receiver = self.create_task(self._receive(ws), name="vosk_receive")

    def _connection_lost(self) -> None:
        """The connection is gone: keep everything unfinished and reconnect in the background."""
        if self._closing:
            return
        self._ws = None
        unanswered = list(self._unfinal)[self._acks:]
        if unanswered and not unanswered[0]:
            # Everything before the reset was answered and the connection died on it.
            self._provider.reset_unsupported()
        pending = [c for c in self._unfinal if c] + list(self._held)
        self._unfinal.clear()
        self._held.clear()
        self._held_bytes = 0
        for chunk in pending:
            self._hold(chunk)
        self._acks = 0
        if self._reconnector is None or self._reconnector.done():
            self._reconnector = self.create_task(self._reconnect(), name="vosk_reconnect")

    async def _reconnect(self) -> None:
        assert self._pool is not None
        delay, t0, attempts = 0.1, time.monotonic(), 0
        max_delay = self._provider.settings.reconnect_max_delay
        while not self._closing:
            attempts += 1
            try:
                ws = await self._pool.connect(self.sample_rate)
            except CONNECT_ERRORS as e:
                if attempts == 1 or delay >= max_delay:
                    self._log.warning("vosk-websocket: reconnect to %s failed (%s); retrying",
                                      self._pool.url, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_delay)
                continue
            receiver = self._receiver = self.create_task(self._receive(ws), name="vosk_receive")
            self._acks = 0
            try:
                # Replay in order; audio arriving meanwhile is held, so it follows the replay.
                while self._held:
                    chunk = self._held.popleft()
                    self._held_bytes -= len(chunk)
                    self._unfinal.append(chunk)
                    await ws.send(chunk)
            except ConnectionClosed:
                await self.cancel_task(receiver)
                self._held.extendleft(reversed(self._unfinal))
                self._held_bytes += sum(len(c) for c in self._unfinal)
                self._unfinal.clear()
                await asyncio.sleep(delay)
                continue
            self._ws = ws
            self.reconnects += 1
            seconds = time.monotonic() - t0
            self._provider.observe("stt_reconnect", seconds)
            self._log.info("vosk-websocket: reconnected after %.2fs (%d attempts), replayed %.2fs "
                           "of audio", seconds, attempts,
                           sum(len(c) for c in self._unfinal) / 2 / self.sample_rate)
            return

    async def _receive(self, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                await self._handle(message)
        except ConnectionClosed:
            pass
        if not self._closing and ws is self._ws:
            self._log.warning("vosk-websocket: the server closed the connection mid-call")
            self._connection_lost()

    async def _handle(self, message: str | bytes) -> None:
        msg = parse_message(message)
        if msg is None:
            return
        self._acks += 1
        if not msg.final:
            if msg.text and msg.text != self._last_partial:
                self._last_partial = msg.text
                await self.push_frame(InterimTranscriptionFrame(
                    msg.text, stt_user_id(self), time_now_iso8601(), self._language, result=msg.raw))
            return
        for _ in range(min(self._acks, len(self._unfinal))):
            if not self._unfinal.popleft() and self._reset_at:  # the reset, answered
                self._provider.observe("stt_finalize", time.monotonic() - self._reset_at)
                self._reset_at = 0.0
        self._acks = 0
        self._last_partial = ""
        if msg.text:
            self.finals.append(msg.text)
            await self.push_frame(TranscriptionFrame(
                msg.text, stt_user_id(self), time_now_iso8601(), self._language, result=msg.raw,
                finalized=True))

    # -- finishing an utterance early ----------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            await self._send_reset()

    async def _send_reset(self) -> None:
        """Ask the server for the final result now (``finalize_on_vad_stop``)."""
        ws = self._ws
        if not self._provider.reset_enabled or ws is None or self._closing:
            return
        if not any(self._unfinal):  # nothing unfinished to finish
            return
        self._unfinal.append(RESET_MARK)
        self._reset_at = time.monotonic()
        try:
            await ws.send(RESET_MESSAGE)
        except ConnectionClosed:
            if ws is self._ws:
                self._connection_lost()
