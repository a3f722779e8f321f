"""What a transport hands core for each call: identity, audio format and call control.

A transport plugin subclasses :class:`CallConnection` once per call. Core drives it:

* inbound audio, DTMF, played marks and hang-ups go *to* core through ``self.events``;
* outbound audio is *pulled* by the transport from ``self.playout`` on its own clock
  (Twilio: real-time pacing with a small lead; RTP: an absolute 20 ms clock with silence fill);
  :class:`PlayoutPacer` runs such a clock for a transport;
* core calls :meth:`clear` on barge-in, :meth:`hangup`, :meth:`transfer` and :meth:`send_dtmf`
  for call control.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from vc.profiles import Profile


class CallControlError(Exception):
    """A call-control request (hang up, transfer, DTMF) the transport could not carry out."""


@attrs.define
class CallInfo:
    """Who is calling whom, through which transport, and what the transport passed along."""

    call_id: str
    transport: str
    from_: str = ""
    to: str = ""
    user: str = ""
    direction: str = "inbound"
    params: dict[str, str] = attrs.field(factory=dict)
    started_at: float = attrs.field(factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "transport": self.transport,
            "from": self.from_,
            "to": self.to,
            "user": self.user,
            "direction": self.direction,
            "params": dict(self.params),
        }


@attrs.frozen
class Mark:
    """A named point in the outbound audio; reported back once the caller has heard it."""

    name: str


class PlayoutBuffer:
    """Outbound audio queued for one call, in fixed-size frames, with marks in between.

    Core writes (``write``/``mark``/``clear``); the transport reads one frame at a time on its
    own clock. ``write`` applies back-pressure so that at most ``max_ahead_ms`` of audio waits
    here: what the transport has read is what the caller hears, give or take its lead.
    ``hold`` pauses reading (the caller may be starting to talk) and can put back the frames
    the transport read but the caller has not heard yet; ``release`` plays on from there.
    """

    def __init__(self, sample_rate: int, frame_ms: int = 20, max_ahead_ms: int = 60) -> None:
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.frame_bytes = sample_rate * frame_ms // 1000 * 2
        self.max_ahead_frames = max(1, max_ahead_ms // frame_ms)
        self._items: deque[bytes | Mark] = deque()
        self._partial = bytearray()
        self._frames = 0
        self._space = asyncio.Event()
        self._space.set()
        self._generation = 0
        self._held = False
        # What the transport read lately (frames and marks, newest last): what hold puts back.
        self._recent: deque[bytes | Mark] = deque(maxlen=max(1, 1000 // frame_ms))
        self.frames_played = 0

    @property
    def queued_frames(self) -> int:
        return self._frames

    @property
    def held(self) -> bool:
        return self._held

    def is_idle(self) -> bool:
        return self._frames == 0 and not self._partial

    def hold(self, rewind_ms: float = 0.0) -> list[Mark]:
        """Stop handing out audio; put back the last ``rewind_ms`` of audio read.

        Marks read after the first frame put back are put back too, in order; they are
        returned (a transport that passed them on must forget them: they will come again).
        """
        frames = max(0, round(rewind_ms / self.frame_ms))
        marks: list[Mark] = []
        while frames and self._recent:
            item = self._recent.pop()
            self._items.appendleft(item)
            if isinstance(item, Mark):
                marks.append(item)
            else:
                frames -= 1
                self._frames += 1
                self.frames_played -= 1
        self._held = True
        return marks[::-1]

    def release(self) -> None:
        """Hand out audio again after :meth:`hold`, from where it stopped."""
        self._held = False

    async def write(self, pcm: bytes) -> None:
        """Queue PCM16 audio at ``sample_rate``; waits while too much is queued."""
        generation = self._generation
        self._partial += pcm
        while len(self._partial) >= self.frame_bytes:
            while self._frames >= self.max_ahead_frames:
                self._space.clear()
                await self._space.wait()
                if generation != self._generation:
                    return  # cleared while waiting: this audio is no longer wanted
            frame = bytes(self._partial[: self.frame_bytes])
            del self._partial[: self.frame_bytes]
            self._items.append(frame)
            self._frames += 1

    def flush_partial(self) -> None:
        """Pad and queue the last incomplete frame (end of an utterance)."""
        # A write waiting for space may hold more than a frame: queue its whole frames first.
        while len(self._partial) >= self.frame_bytes:
            self._items.append(bytes(self._partial[: self.frame_bytes]))
            del self._partial[: self.frame_bytes]
            self._frames += 1
        if self._partial:
            self._partial += bytes(self.frame_bytes - len(self._partial))
            self._items.append(bytes(self._partial))
            self._frames += 1
            self._partial.clear()

    def mark(self, name: str) -> None:
        """Queue a mark after the audio written so far."""
        self.flush_partial()
        self._items.append(Mark(name))

    def clear(self) -> list[Mark]:
        """Drop all queued audio (barge-in); returns the marks that were dropped with it."""
        dropped = [i for i in self._items if isinstance(i, Mark)]
        self._items.clear()
        self._partial.clear()
        self._frames = 0
        self._generation += 1
        self._held = False
        self._recent.clear()
        self._space.set()
        return dropped

    def read(self) -> bytes | Mark | None:
        """Take the next frame or mark, or None when nothing is queued."""
        if self._held or not self._items:
            return None
        item = self._items.popleft()
        self._recent.append(item)
        if not isinstance(item, Mark):
            self._frames -= 1
            self.frames_played += 1
            if self._frames < self.max_ahead_frames:
                self._space.set()
        return item


class CallEvents(ABC):
    """Core's side of a call, called by the transport. All methods are non-blocking."""

    @abstractmethod
    def audio(self, pcm: bytes) -> None:
        """Caller audio: PCM16 mono at the connection's ``sample_rate``, any length."""

    @abstractmethod
    def dtmf(self, digit: str) -> None:
        """The caller pressed a key (0-9, *, #, A-D)."""

    @abstractmethod
    def mark_played(self, name: str) -> None:
        """The caller has heard everything up to the mark ``name``."""

    @abstractmethod
    def hangup(self, reason: str = "caller hung up") -> None:
        """The call is over on the transport side; core stops the pipeline at once."""


@attrs.frozen
class MediaQuality:
    """What the caller's audio went through on the network during one call (RTP transports).

    ``expected`` is the packets the sender's sequence numbers span (RFC 3550 A.3); ``lost``
    the ones that never arrived; ``late`` arrived after their slot was concealed (dropped);
    ``concealed_seconds`` the audio filled in for lost and late packets; ``jitter_seconds``
    the interarrival jitter at the end of the call (RFC 3550 6.4.1) and ``max_jitter_seconds``
    the highest it reached.
    """

    expected: int = 0
    received: int = 0
    lost: int = 0
    late: int = 0
    duplicate: int = 0
    concealed_seconds: float = 0.0
    jitter_seconds: float = 0.0
    max_jitter_seconds: float = 0.0

    @property
    def loss_ratio(self) -> float:
        return self.lost / self.expected if self.expected else 0.0

    def as_event(self) -> dict[str, float]:
        """The :data:`vc.events.MEDIA_QUALITY` payload."""
        return {**attrs.asdict(self), "loss_ratio": round(self.loss_ratio, 6)}


class CallConnection(ABC):
    """One live call on a transport. Subclassed by transport plugins."""

    #: PCM sample rate of the call's audio after codec decoding (8000 for G.711).
    sample_rate: int = 8000
    #: Outbound frame duration the transport reads from :attr:`playout`.
    frame_ms: int = 20
    #: How far ahead of real time core may queue outbound audio.
    max_ahead_ms: int = 60

    def __init__(self, info: CallInfo) -> None:
        self.info = info
        self.events: CallEvents | None = None
        self.profile: Profile | None = None
        self.playout = PlayoutBuffer(self.sample_rate, self.frame_ms, self.max_ahead_ms)

    def attach(self, events: CallEvents) -> None:
        """Called by core before the call starts."""
        self.events = events

    @abstractmethod
    async def clear(self) -> None:
        """Barge-in: drop audio buffered beyond :attr:`playout` (e.g. Twilio ``clear``)."""

    async def pause(self) -> None:
        """The caller may be starting to talk: silence the bot now, losing nothing.

        The default holds :attr:`playout`; a transport that buffers audio further down
        (Twilio) also drops that buffer and puts its unheard frames back into ``playout``.
        Core calls :meth:`resume` if it was only a noise, or :meth:`clear` if it was a barge-in.
        """
        self.playout.hold()

    async def resume(self) -> None:
        """Play on from where :meth:`pause` stopped."""
        self.playout.release()

    @abstractmethod
    async def hangup(self) -> None:
        """End the call from the bot's side. Hanging up an ended call is not an error."""

    async def transfer(self, target: str) -> None:
        """Blind-transfer the caller to ``target`` (a number or SIP URI)."""
        raise CallControlError(f"{self.info.transport} calls cannot be transferred")

    async def send_dtmf(self, digits: str) -> None:
        """Send DTMF digits to the caller's side."""
        raise CallControlError(f"{self.info.transport} calls cannot send DTMF")

    def media_quality(self) -> MediaQuality | None:
        """The caller's audio's network statistics so far; None where the transport has none
        (Twilio's WebSocket carries no packet loss). Core reads it once, when the call ends,
        for the ``vc_rtp_*`` metrics and the :data:`vc.events.MEDIA_QUALITY` event."""
        return None


class UnconnectedCall(CallConnection):
    """A call with no far end: what the engine builds a throw-away pipeline on at start-up."""

    def __init__(self) -> None:
        super().__init__(CallInfo(call_id="warm-up", transport="none"))

    async def clear(self) -> None:
        pass

    async def hangup(self) -> None:
        pass


class PlayoutPacer:
    """Sends a call's outbound audio in real time: one frame per tick of an absolute clock.

    Tick ``n`` is due at ``start + n * frame_ms``, whatever the earlier ticks cost, so the
    stream never drifts: a tick that wakes late is caught up at once (frames go out back to
    back), and after a stall of more than ``max_burst`` ticks the clock skips the lost ticks
    instead of bursting them (``on_skip(ticks, late_s)`` tells the transport, e.g. to
    advance its RTP timestamps).

    At each tick the pacer reads :attr:`CallConnection.playout`: every :class:`Mark` before
    the next frame goes to ``on_mark(name)`` (the audio before it has been sent), then
    ``send(frame)`` gets the frame, or ``send(None)`` when nothing is queued (send silence
    or nothing, as the wire wants). When a mark counts as heard is the transport's call:
    RTP reports ``events.mark_played`` from ``on_mark`` (the audio before it went out in
    real time); Twilio forwards the mark and reports it when Twilio echoes it.
    ``send`` and ``on_mark`` may be plain functions or coroutine functions; an exception in
    one is logged and the clock goes on. :meth:`run` returns after :meth:`stop`.

        pacer = PlayoutPacer(conn.playout, send_frame, on_mark=report)
        task = asyncio.create_task(pacer.run())
        ...
        pacer.stop()
    """

    def __init__(
        self,
        playout: PlayoutBuffer,
        send: Callable[[bytes | None], Awaitable[None] | None],
        on_mark: Callable[[str], Awaitable[None] | None] | None = None,
        *,
        frame_ms: int | None = None,
        max_burst: int = 5,
        on_skip: Callable[[int, float], None] | None = None,
        log: logging.Logger | logging.LoggerAdapter[Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.playout = playout
        self._send = send
        self._on_mark = on_mark
        self._frame_ms = frame_ms or playout.frame_ms
        self.max_burst = max_burst
        self._on_skip = on_skip
        self.log = log or logging.getLogger("vc.call")
        self._clock = clock
        self._sleep = sleep
        self._stopped = False
        self._start = 0.0
        self._n = 0
        #: Ticks run, ticks that ran more than a tick late, ticks skipped after stalls.
        self.ticks = 0
        self.late_ticks = 0
        self.skipped_ticks = 0

    @property
    def frame_ms(self) -> int:
        return self._frame_ms

    @frame_ms.setter
    def frame_ms(self, value: int) -> None:
        """A new tick length (an RTP re-INVITE with another ptime): counted from the last tick."""
        if value != self._frame_ms and self._n:
            self._start += self._n * self._frame_ms / 1000
            self._n = 0
        self._frame_ms = value

    @property
    def running(self) -> bool:
        return not self._stopped

    def stop(self) -> None:
        """End :meth:`run` (before its next tick)."""
        self._stopped = True

    async def run(self) -> None:
        """Tick until :meth:`stop` (or until the task is cancelled)."""
        self._start = self._clock()
        self._n = 0
        while not self._stopped:
            self._n += 1
            period = self._frame_ms / 1000
            delay = self._start + self._n * period - self._clock()
            if delay > 0:
                await self._sleep(delay)
                if self._stopped:
                    break
            elif delay < -period:
                self.late_ticks += 1
                if delay < -self.max_burst * period:
                    skipped = int(-delay / period + 1e-9)  # all the ticks already due
                    self._n += skipped
                    self.skipped_ticks += skipped
                    if self._on_skip is not None:
                        self._on_skip(skipped, -delay)
            await self.tick()

    async def tick(self) -> None:
        """One tick's work, without the clock: marks up to the next frame, then the frame."""
        self.ticks += 1
        try:
            item = self.playout.read()
            while isinstance(item, Mark):
                if self._on_mark is not None:
                    await _maybe_await(self._on_mark(item.name))
                item = self.playout.read()
            await _maybe_await(self._send(item))
        except Exception:
            self.log.exception("playout tick failed")


async def _maybe_await(result: Awaitable[None] | None) -> None:
    if inspect.isawaitable(result):
        await result
