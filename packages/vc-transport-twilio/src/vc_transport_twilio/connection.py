"""One Twilio call as core sees it: a CallConnection fed by a Media Stream.

Outbound audio is pulled from ``playout`` by a sender task on an absolute 20 ms clock
(``start + n * 20 ms``, so it never drifts). At every tick it sends frames until Twilio holds
``send_ahead_ms`` of audio beyond real time, then waits: Twilio plays what it has, ``clear``
drops at most that much, and the caller never gets audio faster than real time. Marks read
from ``playout`` go out as Twilio ``mark`` messages in order with the audio; Twilio echoes
each once the audio before it has played, and only then is core told (``mark_played``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from vc.audio import pcm_to_ulaw
from vc.call import CallConnection, CallControlError, CallInfo, Mark
from vc.logs import LogThrottle
from vc_transport_twilio import twiml
from vc_transport_twilio.rest import CallEnded, TwilioREST

#: After a ``clear``, audio the pipeline had already produced before the barge-in may still
#: trickle into the playout buffer while pipecat drains its queues; it is dropped for this long.
CLEAR_GUARD_S = 0.25


@attrs.define
class StreamControl:
    """What a call needs from its transport to end or redirect itself."""

    rest: TwilioREST | None
    #: Close this call's WebSocket (Twilio then fetches the ``<Connect action>`` URL).
    end_stream: Callable[[str], Awaitable[None]]
    #: Set the TwiML the ``<Connect action>`` URL answers for this call.
    set_action: Callable[[str], None]


@attrs.define
class StreamStats:
    media_sent: int = 0
    marks_sent: int = 0
    marks_echoed: int = 0
    clears_sent: int = 0
    pauses: int = 0
    dropped_after_clear: int = 0
    media_received: int = 0
    late_ticks: int = 0


class TwilioCall(CallConnection):
    """A call on a Twilio Media Stream."""

    sample_rate = 8000
    frame_ms = 20
    max_ahead_ms = 60

    def __init__(
        self,
        info: CallInfo,
        stream_sid: str,
        send_text: Callable[[str], Awaitable[None]],
        control: StreamControl,
        *,
        send_ahead_ms: int = 100,
        log: logging.LoggerAdapter[Any] | None = None,
    ) -> None:
        super().__init__(info)
        self.stream_sid = stream_sid
        self._send_text = send_text
        self._control = control
        self._ahead = send_ahead_ms / 1000
        self.log = log or logging.LoggerAdapter(
            logging.getLogger("vc.transport.twilio"), {"call_id": info.call_id}
        )
        self._lock = asyncio.Lock()
        self._sent_until = 0.0  # monotonic time at which Twilio runs out of our audio
        self._guard_until = 0.0
        self._outstanding: list[str] = []  # marks sent, not yet echoed
        self._cleared: set[str] = set()  # marks dropped by a clear (Twilio echoes them too)
        #: Warnings about echoes of marks never sent: 5 per 10 s, then counted.
        self.unknown_marks = LogThrottle(burst=5, interval=10.0)
        self.stats = StreamStats()
        self.closed = False
        #: Why the call is ending from our side ("" while it is not): hung up / transferred.
        self.ending = ""

    # -- sending -----------------------------------------------------------------------------

    async def _send(self, message: dict[str, Any]) -> None:
        if self.closed:
            return
        try:
            await self._send_text(json.dumps(message, separators=(",", ":")))
        except Exception as e:  # the socket went away under us
            self.closed = True
            self.log.debug("stream send failed: %s", e)

    async def run_sender(self) -> None:
        """Drain ``playout`` to Twilio in real time until the stream closes."""
        period = self.frame_ms / 1000
        start = time.monotonic()
        n = 0
        while not self.closed:
            n += 1
            tick = start + n * period
            delay = tick - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -period:
                self.stats.late_ticks += 1
            async with self._lock:
                await self._send_due(time.monotonic(), period, tick)

    async def _send_due(self, now: float, period: float, tick: float | None = None) -> None:
        # The lead is judged on the tick's own time while the tick is on time: the loop wakes
        # a little early or late, and measuring on the wake-up time made the sender alternate
        # two frames and none around the send-ahead boundary (20 ms of needless jitter).
        clock = tick if tick is not None and abs(now - tick) < period / 2 else now
        while not self.closed and self._sent_until - clock < self._ahead + 1e-6:
            item = self.playout.read()
            if item is None:
                return
            if now < self._guard_until:
                self.stats.dropped_after_clear += 1
                continue
            if isinstance(item, Mark):
                self._outstanding.append(item.name)
                self.stats.marks_sent += 1
                await self._send(
                    {"event": "mark", "streamSid": self.stream_sid, "mark": {"name": item.name}}
                )
                continue
            payload = base64.b64encode(pcm_to_ulaw(item)).decode("ascii")
            await self._send(
                {"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload}}
            )
            self.stats.media_sent += 1
            self._sent_until = max(self._sent_until, clock) + period

    # -- what Twilio tells us ------------------------------------------------------------------

    def mark_echoed(self, name: str) -> None:
        if name in self._cleared:
            self._cleared.discard(name)  # its audio was dropped by a clear: not heard
        elif name in self._outstanding:
            # Twilio plays in order: every mark before this one has been heard too.
            while self._outstanding:
                done = self._outstanding.pop(0)
                self.stats.marks_echoed += 1
                if self.events is not None:
                    self.events.mark_played(done)
                if done == name:
                    break
        else:  # a peer can send any number of these: rate-limited
            self.unknown_marks.log(
                self.log, logging.WARNING, "Twilio echoed a mark this call never sent: %r",
                name[:64],
            )

    # -- CallConnection --------------------------------------------------------------------------

    async def clear(self) -> None:
        async with self._lock:
            self._cleared.update(self._outstanding)
            if self._sent_until > time.monotonic() or self._outstanding:
                # (After a pause Twilio holds nothing of ours: no need to tell it again.)
                await self._send({"event": "clear", "streamSid": self.stream_sid})
                self.stats.clears_sent += 1
            self._outstanding.clear()
            # Audio written while the clear was on its way is stale too.
            self.playout.clear()
            self._sent_until = now = time.monotonic()
            self._guard_until = now + CLEAR_GUARD_S

    async def pause(self) -> None:
        async with self._lock:
            # Twilio holds up to the send-ahead lead: drop it there and keep it here.
            unheard = max(0.0, self._sent_until - time.monotonic())
            for mark in self.playout.hold(unheard * 1000):
                # Sent again after the audio before it: this copy's echo means nothing.
                if mark.name in self._outstanding:
                    self._outstanding.remove(mark.name)
                    self._cleared.add(mark.name)
            if unheard > 0:
                await self._send({"event": "clear", "streamSid": self.stream_sid})
                self.stats.clears_sent += 1
                self.stats.pauses += 1
            self._sent_until = time.monotonic()

    async def hangup(self) -> None:
        if self.ending or self.closed:
            return
        self.ending = "the bot hung up"
        rest = self._control.rest
        if rest is not None:
            try:
                await rest.hangup(self.info.call_id)
                return
            except CallControlError as e:
                self.log.warning("%s; closing the stream instead", e)
        self._control.set_action(twiml.hangup())
        await self._control.end_stream("the bot hung up")

    async def transfer(self, target: str) -> None:
        document = twiml.dial(target)  # CallControlError for a bad destination
        if self.closed:
            raise CallControlError("the call has already ended")
        self.ending = f"transferred to {target}"
        self.log.info("transferring the caller to %s", target)
        rest = self._control.rest
        if rest is not None:
            try:
                await rest.redirect(self.info.call_id, document)
                return
            except CallEnded:
                raise
            except CallControlError as e:
                self.log.warning("%s; transferring through the Connect action instead", e)
        self._control.set_action(document)
        await self._control.end_stream(self.ending)
