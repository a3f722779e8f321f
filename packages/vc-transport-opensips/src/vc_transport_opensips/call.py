"""The CallConnection both modes hand to core, and the signalling side it controls.

A :class:`SipCall` owns one :class:`~.media.RtpStream`; its call control (hang up, transfer)
is delegated to a :class:`Signalling` object: the proxy-mode SIP dialog or the B2B session.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any

from vc.call import CallConnection, CallInfo, MediaQuality
from vc_transport_opensips.media import RtpStream


class Signalling(ABC):
    """What a call needs from its signalling layer."""

    @abstractmethod
    async def hangup(self) -> None:
        """Bot-side hang-up: BYE (proxy) or ua_session_terminate (B2B)."""

    @abstractmethod
    async def transfer(self, target: str) -> None:
        """Blind transfer with REFER; raises CallControlError when refused."""


class SipCall(CallConnection):
    def __init__(
        self,
        info: CallInfo,
        stream: RtpStream,
        signalling: Signalling,
        log: logging.LoggerAdapter[Any],
    ) -> None:
        self.sample_rate = stream.neg.clock_rate
        self.frame_ms = stream.neg.ptime
        super().__init__(info)
        self.stream = stream
        self.signalling = signalling
        self.log = log
        self.ended = False
        self.hangup_reason = ""
        stream.on_audio = self._audio
        stream.on_dtmf = self._dtmf

    def _audio(self, pcm: bytes) -> None:
        if self.events is not None and not self.ended:
            self.events.audio(pcm)

    def _dtmf(self, digit: str) -> None:
        if self.events is not None and not self.ended:
            self.events.dtmf(digit)

    def _mark(self, name: str) -> None:
        if self.events is not None:
            self.events.mark_played(name)

    def attach(self, events: Any) -> None:
        super().attach(events)
        self.stream.start(self.playout, self._mark)

    def remote_hangup(self, reason: str) -> None:
        """The caller's side ended the call (BYE, CANCEL, TERMINATED): stop at once."""
        if self.ended:
            return
        self.ended = True
        self.hangup_reason = reason
        self.log.info("call ended by the far end: %s", reason)
        self.playout.clear()
        if self.events is not None:
            self.events.hangup(reason)

    # -- CallConnection ----------------------------------------------------------------------

    async def clear(self) -> None:
        # Audio is sent in real time straight from the playout buffer: nothing else to drop.
        self.stream.talk_spurt_reset()

    async def hangup(self) -> None:
        if self.ended:
            return
        self.ended = True
        self.hangup_reason = "bot hung up"
        await self.signalling.hangup()

    async def transfer(self, target: str) -> None:
        await self.signalling.transfer(target)

    def media_quality(self) -> MediaQuality:
        return self.stream.quality()
