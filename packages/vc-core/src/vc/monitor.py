"""Per-call turn timing: where each turn's time goes, reported to the observers.

For every caller turn, measured from the caller's estimated end of speech (VAD stop time
minus the VAD's stop delay):

* ``vad_stop``        - end of speech -> VAD decides the caller stopped
* ``stt``             - VAD stop -> transcript
* ``llm_first_token`` - transcript -> first LLM text of a reply started after it
* ``tts_first_audio`` - first LLM text -> first synthesised audio
* ``voice_to_voice``  - end of speech -> first bot audio handed to the transport
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pipecat.clocks.system_clock import SystemClock
from pipecat.frames.frames import (
    InterimTranscriptionFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed

from vc import events


class MonotonicClock(SystemClock):
    """pipecat's clock, remembering where it started on ``time.monotonic``."""

    def start(self) -> None:
        super().start()
        self.origin = time.monotonic() - super().get_time() / 1e9

    def at(self, ns: int) -> float:
        return getattr(self, "origin", 0.0) + ns / 1e9


class Turn:
    __slots__ = (
        "answering", "first_audio", "llm_first", "speech_end", "started", "text", "transcript",
        "tts_first", "vad_stop",
    )

    def __init__(self, started: float) -> None:
        self.started = started
        self.speech_end: float | None = None
        self.vad_stop: float | None = None
        self.transcript: float | None = None
        self.text = ""
        #: A reply was started after the transcript (text of an older reply still streaming
        #: while the caller says "mm-hmm" over it answers nothing).
        self.answering = False
        self.llm_first: float | None = None
        self.tts_first: float | None = None
        self.first_audio: float | None = None


class TurnMonitor(BaseObserver):
    """Watches a call's frames and reports each turn's stage latencies."""

    def __init__(
        self,
        clock: MonotonicClock,
        report: Callable[[str, float], None],
        event: Callable[[str, dict[str, Any]], None],
    ) -> None:
        super().__init__(observe_every_push=False)
        self._clock = clock
        self._report = report
        self._event = event
        self.turn: Turn | None = None
        self.turns: list[dict[str, float]] = []

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        now = self._clock.at(data.timestamp)
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self.turn = Turn(now - getattr(frame, "start_secs", 0.0))
        elif isinstance(frame, VADUserStoppedSpeakingFrame) and self.turn:
            self.turn.vad_stop = now
            self.turn.speech_end = now - (frame.stop_secs or 0.0)
        elif isinstance(frame, TranscriptionFrame) and not isinstance(frame, InterimTranscriptionFrame):
            if self.turn and self.turn.transcript is None:
                self.turn.transcript = now
                self.turn.text = frame.text
            self._event(events.TRANSCRIPT, {"text": frame.text})
        elif isinstance(frame, LLMFullResponseStartFrame):
            if self.turn and self.turn.transcript is not None:
                self.turn.answering = True
        elif isinstance(frame, LLMTextFrame):
            if self.turn and self.turn.answering and self.turn.llm_first is None:
                self.turn.llm_first = now
        elif isinstance(frame, TTSAudioRawFrame):
            if self.turn and self.turn.llm_first is not None and self.turn.tts_first is None:
                self.turn.tts_first = now

    def first_audio_written(self) -> None:
        """Called by the output transport when bot audio reaches the playout buffer."""
        t = self.turn
        if t is None or t.first_audio is not None or t.tts_first is None or t.speech_end is None:
            return
        t.first_audio = time.monotonic()
        stages = {"voice_to_voice": t.first_audio - t.speech_end}
        if t.vad_stop is not None:
            stages["vad_stop"] = t.vad_stop - t.speech_end
            if t.transcript is not None:
                # A streaming STT may finalise before the VAD decides: no STT wait then.
                stages["stt"] = max(0.0, t.transcript - t.vad_stop)
                if t.llm_first is not None:
                    stages["llm_first_token"] = t.llm_first - max(t.transcript, t.vad_stop)
                    stages["tts_first_audio"] = t.tts_first - t.llm_first
        for stage, seconds in stages.items():
            self._report(stage, seconds)
        self.turns.append(stages)
        self._event(events.TURN, {"text": t.text, **{k: round(v, 4) for k, v in stages.items()}})
