"""Silero VAD for calls: a speech gate without lag, and an early sign that the caller talks.

pipecat's VADAnalyzer counts a window as speech only when the loudness of the last 400 ms,
smoothed again, is above ``min_volume``. After silence that loudness takes about 160 ms to
rise, so every turn start and every barge-in waited for it on top of ``start_secs``.
:class:`CallVAD` gates each 32 ms window on its own level instead (same 0..1 scale: -110 to
-10 dBFS) and hands pipecat a zero ``min_volume``.

:class:`CallVADProcessor` also watches the windows for the first sign of speech (a few
voiced windows in a row, long before ``start_secs`` confirms a turn) and for the quiet after
it, so core can pause the bot's audio at once and resume it if it was only a noise.

Every :class:`CallVAD` runs on one shared ONNX Runtime session
(:func:`vc.pipecat_adapter.shared_silero_model`): a session
costs ~10 MiB and loading one per call churned that much native memory per call (issue 12). The
model's recurrent state lives in Python (per call); ONNX Runtime allows concurrent ``run`` on one
session, and pipecat's Silero session runs each inference in the calling thread.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

import numpy as np
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection

from vc.pipecat_adapter import init_silero_analyzer

#: Silero's analysis window at 16 kHz (512 samples).
WINDOW_S = 0.032
#: Consecutive unvoiced windows that end a tentative onset (160 ms: a dip inside a word is shorter).
QUIET_WINDOWS = 5


def window_level(pcm: bytes) -> float:
    """The level of PCM16 audio on pipecat's volume scale: -110 dBFS is 0, -10 dBFS is 1."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    if not len(x):
        return 0.0
    rms = math.sqrt(float(np.dot(x, x)) / len(x)) / 32768
    db = 20 * math.log10(rms) if rms > 0 else -120.0
    return min(1.0, max(0.0, (db + 110) / 100))


class CallVAD(SileroVADAnalyzer):
    """Silero VAD whose volume gate looks at each window alone (no 400 ms smoothing lag)."""

    def __init__(self, *, sample_rate: int | None = None, params: VADParams | None = None) -> None:
        # SileroVADAnalyzer.__init__ without its model load: the session is shared.
        init_silero_analyzer(self, sample_rate=sample_rate, params=params)
        self.min_level = 0.0
        #: (confidence, level, passed) of each analysed window, newest last; read by the processor.
        self.windows: deque[tuple[float, float, bool]] = deque(maxlen=64)

    def configure(self, params: VADParams) -> None:
        """Use ``params`` for the next call; its ``min_volume`` becomes this per-window gate."""
        self.min_level = params.min_volume
        # Applied by set_sample_rate() when the pipeline starts.
        self._params = params.model_copy(update={"min_volume": 0.0})
        self.windows.clear()

    def voice_confidence(self, buffer: bytes) -> float:
        scores = np.asarray(super().voice_confidence(buffer)).ravel()  # Silero gives shape (1,)
        confidence = float(scores[0]) if scores.size else 0.0
        level = window_level(buffer)
        passed = confidence >= self.params.confidence and level >= self.min_level
        self.windows.append((confidence, level, passed))
        return confidence if level >= self.min_level else 0.0


class CallVADProcessor(VADProcessor):
    """pipecat's VAD processor, also reporting a tentative speech onset and the quiet after it."""

    def __init__(
        self,
        *,
        vad_analyzer: CallVAD,
        onset_windows: int,
        on_onset: Callable[[], Awaitable[None]],
        on_quiet: Callable[[], Awaitable[None]],
        **kwargs,
    ) -> None:
        super().__init__(vad_analyzer=vad_analyzer, **kwargs)
        self._vad = vad_analyzer
        self._onset_windows = max(1, onset_windows)
        self._on_onset = on_onset
        self._on_quiet = on_quiet
        self._voiced = 0
        self._unvoiced = 0
        self.onset_at: float | None = None
        #: When the voiced windows of the current onset began to arrive (onset_at less them).
        self.speech_from: float | None = None
        #: pipecat's VAD confirmed speech (``start_secs`` of it) that has not stopped yet.
        self.user_speaking = False

    async def push_frame(self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM
                         ) -> None:
        if direction == FrameDirection.DOWNSTREAM:
            if isinstance(frame, VADUserStartedSpeakingFrame):
                self.user_speaking = True
            elif isinstance(frame, VADUserStoppedSpeakingFrame):
                self.user_speaking = False
        await super().push_frame(frame, direction)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            await self._watch()

    async def _watch(self) -> None:
        windows = self._vad.windows
        while windows:
            _, _, passed = windows.popleft()
            if passed:
                self._voiced += 1
                self._unvoiced = 0
            else:
                self._unvoiced += 1
                self._voiced = 0
            if self.onset_at is None and self._voiced >= self._onset_windows:
                self.onset_at = time.monotonic()
                self.speech_from = self.onset_at - self._voiced * WINDOW_S
                await self._on_onset()
            elif self.onset_at is not None and self._unvoiced >= QUIET_WINDOWS:
                self.onset_at = None
                await self._on_quiet()
