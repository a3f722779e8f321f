"""The pipecat transport that connects a call's pipeline to a transport plugin's CallConnection.

Inbound: caller PCM at the wire rate is resampled (streaming, frame by frame) to the
pipeline's input rate and queued as ``InputAudioRawFrame``; DTMF becomes ``InputDTMFFrame``.
Each frame holds whole VAD windows (32 ms: Silero decides nothing on less), so the pipeline
handles ~31 caller frames a second instead of 50, and the caller's audio goes no further than
the STT (:class:`CallerAudioEnd`).
Outbound: bot audio arrives at the wire rate and is written into the connection's
:class:`~vc.call.PlayoutBuffer`, which the transport drains on its own clock. Writing blocks
while the buffer is full, so pipecat's idea of "played" follows what the caller hears.
Barge-in (``InterruptionFrame``) empties the buffer and tells the connection to ``clear``
whatever it buffered further down - only when there was bot audio to stop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.frames.frames import (
    ControlFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    StartFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

from vc.audio import StreamResampler
from vc.call import CallConnection
from vc.pipecat_adapter import queue_input_audio
from vc.vad import WINDOW_S

_KEYS = {k.value: k for k in KeypadEntry}


@dataclass
class SpeechWrittenFrame(ControlFrame):
    """Queued into a call's pipeline behind what the bot is saying: it travels in order with
    the text through the LLM and the TTS (pipecat's TTS queues it behind the audio of text
    it received before it), and the output transport resolves ``written`` once every audio
    frame ahead of it is in the playout buffer - the bot has said all it had to say up to here.
    A barge-in drops it with the audio (its waiter must not rely on it arriving)."""

    written: asyncio.Future[None] | None = None


class CallerAudioEnd(FrameProcessor):
    """Where the caller's audio stops: right after the STT. Nothing further down reads it
    (vc's turn strategies go by the VAD's frames and transcripts), and each processor an
    audio frame passes costs the event loop time 50 times a second per call: 4 idle calls
    took 36 % of a core with the audio passing all nine processors (bench/README.md)."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not (isinstance(frame, InputAudioRawFrame) and direction == FrameDirection.DOWNSTREAM):
            await self.push_frame(frame, direction)


class CallInputTransport(BaseInputTransport):
    def __init__(self, connection: CallConnection, params: TransportParams, **kwargs) -> None:
        super().__init__(params, **kwargs)
        self._connection = connection
        self._resampler: StreamResampler | None = None
        self._window = 0  # bytes of one VAD window at the pipeline's rate
        self._partial = b""  # resampled audio short of a whole window
        self.last_audio_at = 0.0

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        self._resampler = StreamResampler(self._connection.sample_rate, self.sample_rate, "HQ")
        self._window = 2 * round(WINDOW_S * self.sample_rate)
        await self.set_transport_ready(frame)

    def feed_audio(self, pcm: bytes) -> None:
        """Called (synchronously) by the transport for every chunk of caller audio; the audio
        is queued as soon as it completes a VAD window."""
        if self._resampler is None:
            return
        pending = self._partial + self._resampler.process(pcm)
        whole = len(pending) - len(pending) % self._window
        audio, self._partial = pending[:whole], pending[whole:]
        if audio:
            frame = InputAudioRawFrame(audio=audio, sample_rate=self.sample_rate, num_channels=1)
            if queue_input_audio(self, frame):
                self.last_audio_at = time.monotonic()

    async def feed_dtmf(self, digit: str) -> None:
        key = _KEYS.get(digit)
        if key is not None:
            await self.push_frame(InputDTMFFrame(button=key))


class CallOutputTransport(BaseOutputTransport):
    def __init__(
        self,
        connection: CallConnection,
        params: TransportParams,
        on_barge_in: Callable[[bool], None],
        on_utterance_written: Callable[[], None],
        on_first_audio: Callable[[], None],
        **kwargs,
    ) -> None:
        super().__init__(params, **kwargs)
        self._connection = connection
        self._on_barge_in = on_barge_in
        self._on_utterance_written = on_utterance_written
        self._on_first_audio = on_first_audio
        self.last_audio_written_at = 0.0

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)

    def bot_audio_pending(self) -> bool:
        """Whether the caller may still hear bot audio (queued here or at the transport)."""
        lead = (self._connection.max_ahead_ms + 2 * self._connection.frame_ms) / 1000
        recent = time.monotonic() - self.last_audio_written_at < lead
        return not self._connection.playout.is_idle() or recent

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, InterruptionFrame):
            # Stop the audio first, then let pipecat drain its own queues.
            had_audio = self.bot_audio_pending()
            self._connection.playout.clear()
            if had_audio:
                await self._connection.clear()
            self._on_barge_in(had_audio)
            await super().process_frame(frame, direction)
            # pipecat's audio task may have written one more chunk before its queue was reset.
            self._connection.playout.clear()
            return
        await super().process_frame(frame, direction)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        self._on_first_audio()
        await self._connection.playout.write(frame.audio)
        self.last_audio_written_at = time.monotonic()
        return True

    async def push_frame(self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM):
        # TTSStoppedFrame leaves the media queue after all of its utterance's audio was written.
        if isinstance(frame, TTSStoppedFrame) and direction == FrameDirection.DOWNSTREAM:
            self._on_utterance_written()
        if isinstance(frame, SpeechWrittenFrame):  # so does this one: it ends here
            if frame.written is not None and not frame.written.done():
                frame.written.set_result(None)
            return
        await super().push_frame(frame, direction)


class CallTransport(BaseTransport):
    """One call's pipecat transport."""

    def __init__(
        self,
        connection: CallConnection,
        *,
        on_barge_in: Callable[[bool], None],
        on_utterance_written: Callable[[], None],
        on_first_audio: Callable[[], None],
    ) -> None:
        super().__init__(name=f"call-{connection.info.call_id}")
        self.connection = connection
        params = TransportParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            audio_out_sample_rate=connection.sample_rate,
            audio_out_10ms_chunks=max(1, connection.frame_ms // 10),
            audio_out_end_silence_secs=0,
        )
        self._input = CallInputTransport(connection, params, name="call-input")
        self._output = CallOutputTransport(
            connection,
            params,
            on_barge_in=on_barge_in,
            on_utterance_written=on_utterance_written,
            on_first_audio=on_first_audio,
            name="call-output",
        )

    def input(self) -> CallInputTransport:
        return self._input

    def output(self) -> CallOutputTransport:
        return self._output
