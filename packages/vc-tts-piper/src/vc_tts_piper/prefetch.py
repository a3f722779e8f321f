"""A held reply's first piece, synthesised while the caller's turn is still being waited out.

With ``[turn] speculate``, core starts the reply before the caller's turn has ended; the LLM
service holds it back until the turn ends, and core announces its words as they come
(:class:`vc.turns.HeldReplyFrame`). The TTS itself only gets the reply when it is released, so
the caller then waited while its first piece was synthesised (~0.25 s on 2 cores).

:class:`FirstPiece` cuts the held words the way the service will cut the released reply (a fresh
copy of its clause aggregator, the same text preparation, the same synthesis pieces) and starts
synthesising the first piece as soon as it is complete. The service's request for the released
reply takes that audio when its first piece has the same text; otherwise it synthesises as
before. A withdrawn reply's audio is dropped unheard: its CPU is the price.

How long the released reply's first request still waited for that audio (0 when it was ready)
is reported to ``waited``: the services publish it as stage ``tts_held_wait``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from pipecat.frames.frames import (
    CancelFrame,
    EagerEndOfTurnCancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
)
from pipecat.utils.text.base_text_aggregator import BaseTextAggregator

from vc.providers import retrieve_failure
from vc.turns import HeldReplyFrame

log = logging.getLogger(__name__)

#: A held reply may yet be withdrawn: a piece another call needs now goes ahead of its
#: first piece if asked for within this many seconds after it.
HELD_PIECE_DELAY_S = 0.2


class FirstPiece:
    """The first piece of the reply being held, and its audio being made.

    ``aggregator`` makes a fresh aggregator like the service's, ``first_piece`` turns an
    aggregated text into the first piece the service would synthesise from it (None: nothing
    to say), ``synthesize(piece, needed_at)`` makes its audio, ``waited(seconds)`` is told how
    long a taken piece's audio was still awaited.
    """

    def __init__(
        self,
        aggregator: Callable[[], BaseTextAggregator],
        first_piece: Callable[[str], str | None],
        synthesize: Callable[[str, float], Awaitable[bytes]],
        waited: Callable[[float], None] = lambda seconds: None,
    ) -> None:
        self._new_aggregator = aggregator
        self._first_piece = first_piece
        self._synthesize = synthesize
        self._waited = waited
        self._aggregator: BaseTextAggregator | None = None
        self._piece: str | None = None
        self._audio: asyncio.Future[bytes] | None = None
        #: First pieces synthesised while held, and how many of them were spoken.
        self.started = 0
        self.used = 0

    async def observe(self, frame: Frame) -> None:
        """Follow the held reply (``HeldReplyFrame``) and forget it where it is withdrawn."""
        if isinstance(frame, HeldReplyFrame):
            await self._held(frame)
        elif isinstance(frame, (EagerEndOfTurnCancelFrame, InterruptionFrame, EndFrame,
                                CancelFrame)):
            self.drop()

    def take(self, piece: str) -> asyncio.Future[bytes] | None:
        """The audio of ``piece`` if it is the held reply's first piece being made."""
        if self._audio is None:
            return None
        if piece != self._piece:
            # Not the held reply's first piece (the released reply is cut alike, so this is
            # another reply's): the held one is stale. Said, since a caller may wait for it.
            log.info("held piece %r dropped unused: the next piece asked for is %r",
                     self._piece, piece)
            self.drop()
            return None
        audio, self._audio, self._piece = self._audio, None, None
        self.used += 1
        self._time_wait(audio)
        return audio

    def drop(self) -> None:
        """Forget the held reply; its audio, if still waiting for the synthesiser, is not made."""
        if self._audio is not None:
            self._audio.cancel()
        self._aggregator = self._audio = self._piece = None

    async def _held(self, frame: HeldReplyFrame) -> None:
        if frame.start:
            self.drop()
            self._aggregator = self._new_aggregator()
        if self._aggregator is None or self._piece is not None:
            return  # not following a reply, or its first piece is already being made
        if frame.text:
            async for aggregation in self._aggregator.aggregate(frame.text):
                if self._piece is None:
                    self._start(aggregation.text)
        if frame.end and self._piece is None:
            rest = await self._aggregator.flush()
            if rest is not None:
                self._start(rest.text)

    def _time_wait(self, audio: asyncio.Future[bytes]) -> None:
        """Tell ``waited`` how long after now ``audio`` is made (0: it is ready)."""
        asked = time.monotonic()

        def made(future: asyncio.Future[bytes]) -> None:
            if not future.cancelled():
                self._waited(time.monotonic() - asked)

        if audio.done():
            made(audio)
        else:
            audio.add_done_callback(made)

    def _start(self, text: str) -> None:
        piece = self._first_piece(text)
        if piece is None:
            return
        self._piece = piece
        audio = asyncio.ensure_future(
            self._synthesize(piece, time.monotonic() + HELD_PIECE_DELAY_S))
        audio.add_done_callback(retrieve_failure)
        self._audio = audio
        self.started += 1
