"""Silero VAD for calls: a speech gate without lag, and an early sign that the caller talks.

pipecat's VADAnalyzer counts a window as speech only when the loudness of the last 400 ms,
smoothed again, is above ``min_volume``. After silence that loudness takes about 160 ms to
rise, so every turn start and every barge-in waited for it on top of ``start_secs``.
:class:`CallVAD` gates each 32 ms window on its own level instead (same 0..1 scale: -110 to
-10 dBFS) and hands pipecat a zero ``min_volume``.

:class:`CallVADProcessor` also watches the windows for the first sign of speech (a few
voiced windows in a row, long before ``start_secs`` confirms a turn) and for the quiet after
it, so core can pause the bot's audio at once and resume it if it was only a noise. With a
``level_margin_db``, a window that much louder than the line's noise floor is such a sign
too (:class:`LevelOnset`): Silero hears a word that starts with a fricative ("sorry", "so")
only at its vowel, ~100 ms after the caller started it. A call whose sudden sounds keep not
turning out to be speech (a noisy line, an echo of the bot) loses the level sign.

With ``pause_windows``, it also tells the STT when the caller's speech pauses
(:class:`vc.turns.SpeechPausedFrame`: that many unvoiced windows while pipecat's VAD still counts the
caller as speaking) and when it goes on before the VAD stopped (``SpeechResumedFrame``),
so a segmented STT can transcribe the speech so far while the rest of the segment's silence is
waited out, and use that transcript when the segment ends with no more speech in it.

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
from vc.turns import SpeechPausedFrame, SpeechResumedFrame

#: Silero's analysis window at 16 kHz (512 samples).
WINDOW_S = 0.032
#: Consecutive unvoiced windows that end a tentative onset (160 ms: a dip inside a word is shorter).
QUIET_WINDOWS = 5
#: ... and those that end one that was only a sudden sound, with no speech in it (96 ms).
NOISE_QUIET_WINDOWS = 3
#: The longest a sudden sound with no speech in it keeps an onset open (384 ms: a cough);
#: a longer one is the line's new noise, and the floor starts again from it.
NOISE_MAX_WINDOWS = 12
#: Recent windows the line's noise floor is taken from (3 s), and how many it needs first.
FLOOR_WINDOWS = 94
FLOOR_MIN_WINDOWS = 16
#: Level onsets in a row that were never speech, after which a call has no more of them.
UNCONFIRMED_LIMIT = 3


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


class LevelOnset:
    """Whether a window is a sudden sound: ``margin_db`` above the line's noise floor (the
    10th percentile of the last 3 s) and above ``min_level``. Off after UNCONFIRMED_LIMIT
    of them in a row were not speech."""

    def __init__(self, margin_db: float, min_level: float) -> None:
        self.margin = margin_db / 100  # the level scale has 100 dB
        self.min_level = min_level
        self.levels: deque[float] = deque(maxlen=FLOOR_WINDOWS)
        self.unconfirmed = 0

    @property
    def enabled(self) -> bool:
        return self.margin > 0 and self.unconfirmed < UNCONFIRMED_LIMIT

    def floor(self) -> float | None:
        if len(self.levels) < FLOOR_MIN_WINDOWS:
            return None
        return sorted(self.levels)[len(self.levels) // 10]

    def loud(self, level: float) -> bool:
        """Whether ``level`` is a sudden sound (and remember it for the floor)."""
        floor = self.floor()
        self.levels.append(level)
        return (self.enabled and floor is not None and level >= self.min_level
                and level >= floor + self.margin)

    def settled(self, speech: bool) -> None:
        """A level onset ended: it was ``speech`` (Silero heard some) or not."""
        self.unconfirmed = 0 if speech else self.unconfirmed + 1

    def restart_floor(self) -> None:
        """The line got louder for good (a new noise): measure its floor again."""
        self.levels.clear()


class CallVADProcessor(VADProcessor):
    """pipecat's VAD processor, also reporting a tentative speech onset and the quiet after it."""

    def __init__(
        self,
        *,
        vad_analyzer: CallVAD,
        onset_windows: int,
        on_onset: Callable[[], Awaitable[None]],
        on_quiet: Callable[[], Awaitable[None]],
        level_margin_db: float = 0.0,
        pause_windows: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(vad_analyzer=vad_analyzer, **kwargs)
        #: Unvoiced windows of a segment after which SpeechPausedFrame is pushed (0: never).
        self.pause_windows = pause_windows
        self._paused = False
        self._vad = vad_analyzer
        self._onset_windows = max(1, onset_windows)
        self.level = LevelOnset(level_margin_db, vad_analyzer.min_level)
        self._by_level = False  # the open onset came from a sudden sound...
        self._heard_speech = False  # ...and Silero has heard speech in it since
        self._open_windows = 0
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
                self.user_speaking = self._paused = False
        await super().push_frame(frame, direction)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            await self._watch()

    async def _watch(self) -> None:
        windows = self._vad.windows
        while windows:
            _, level, passed = windows.popleft()
            loud = self.level.loud(level)
            self._count(passed, loud)
            await self._tell_pause(passed)
            if self.onset_at is None and (self._voiced >= self._onset_windows or loud):
                await self._open(by_level=self._voiced < self._onset_windows)
            elif self.onset_at is not None:
                self._open_windows += 1
                if self.noise_only and self._open_windows >= NOISE_MAX_WINDOWS:
                    self.level.restart_floor()
                    await self._close()
                elif self._unvoiced >= self._quiet_windows():
                    await self._close()

    async def _tell_pause(self, passed: bool) -> None:
        """SpeechPausedFrame after ``pause_windows`` unvoiced windows of a segment,
        SpeechResumedFrame at the next voiced one."""
        if not self.pause_windows or not self.user_speaking:
            return
        if passed and self._paused:
            self._paused = False
            await self.push_frame(SpeechResumedFrame())
        elif not passed and not self._paused and self._unvoiced >= self.pause_windows:
            self._paused = True
            await self.push_frame(SpeechPausedFrame())

    @property
    def noise_only(self) -> bool:
        """The onset (open, or the one that just closed) is a sudden sound with no speech in it."""
        return self._by_level and not self._heard_speech

    def _quiet_windows(self) -> int:
        return NOISE_QUIET_WINDOWS if self.noise_only else QUIET_WINDOWS

    def _count(self, passed: bool, loud: bool) -> None:
        if passed:
            self._voiced += 1
            self._unvoiced = 0
            self._heard_speech = True
        elif loud and (self.onset_at is None or self.noise_only):
            # a sudden sound Silero does not call speech (yet: "s..."): the onset stays open
            self._voiced = self._unvoiced = 0
        else:
            self._unvoiced += 1
            self._voiced = 0

    async def _open(self, *, by_level: bool) -> None:
        self.onset_at = time.monotonic()
        self.speech_from = self.onset_at - max(self._voiced, 1) * WINDOW_S
        self._by_level, self._heard_speech = by_level, not by_level
        self._open_windows = 0
        await self._on_onset()

    async def _close(self) -> None:
        if self._by_level:
            self.level.settled(self._heard_speech)
        self.onset_at = None
        await self._on_quiet()
