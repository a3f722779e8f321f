"""A scripted caller on a simulated Twilio call, and what each of its turns measured.

Shared by ``vc demo`` and the benchmarks (bench/). The caller's audio is known exactly, so
the end of each utterance's speech is known to the frame: it is the moment the last µ-law
frame holding speech left the caller. Everything the server reported (ServerProcess events)
and everything the caller received (the simulator's records) share one clock
(``time.monotonic()``, system-wide on Linux).

Per turn:

* ``vad_stop``   end of speech -> Silero VAD decided the caller stopped
* ``stt``        VAD stop -> transcript
* ``llm``        transcript -> first LLM token
* ``tts``        first token -> first synthesised audio
* ``transport``  first synthesised audio -> first bot audio frame received by the caller
* ``total``      end of speech -> first bot audio frame received by the caller (voice to voice)
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import time
import wave
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from vc.audio import resample, rms, ulaw_to_pcm
from vc_transport_twilio.simulator import FRAME_S, SimulatedCall

RATE = 8000
#: A 20 ms frame whose RMS is above this (about -46 dBFS) holds speech.
SPEECH_RMS = 0.005
STAGES = ("vad_stop", "stt", "llm", "tts", "transport")
STAGE_LABELS = {
    "vad_stop": "VAD stop",
    "stt": "transcript",
    "llm": "first token",
    "tts": "first TTS audio",
    "transport": "at the caller",
}


@attrs.define
class Utterance:
    """One thing the caller says: PCM16 8 kHz mono, speech only (silence trimmed)."""

    text: str
    pcm: bytes

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / RATE


def trim(pcm: bytes, level: float = SPEECH_RMS) -> bytes:
    """``pcm`` without its leading and trailing silence (10 ms resolution)."""
    step = RATE // 100 * 2
    frames = [pcm[i : i + step] for i in range(0, len(pcm) - len(pcm) % 2, step)]
    loud = [i for i, f in enumerate(frames) if rms(f) > level]
    if not loud:
        return b""
    return b"".join(frames[loud[0] : loud[-1] + 1])


def espeak(text: str, wpm: int = 160, voice: str = "en-us") -> Utterance:
    """``text`` spoken by espeak-ng."""
    from vc.testing.calls import speech

    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng), "
                           "or pass recordings with --wav")
    return Utterance(text, trim(speech(text, RATE, voice=voice, wpm=wpm)))


def read_wav(path: str | Path) -> Utterance:
    """A WAV file (PCM 8/16/24/32-bit, any rate, mono or stereo) as one utterance."""
    with wave.open(str(path), "rb") as w:
        width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
        raw = w.readframes(w.getnframes())
    if width == 1:
        x = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128) / 128
    elif width == 2:
        x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = np.where(v >= 1 << 23, v - (1 << 24), v).astype(np.float32) / (1 << 23)
    elif width == 4:
        x = np.frombuffer(raw, dtype="<i4").astype(np.float32) / (1 << 31)
    else:
        raise ValueError(f"{path}: unsupported sample width {width}")
    if channels > 1:
        x = x.reshape(-1, channels).mean(axis=1)
    pcm = (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()
    pcm = trim(resample(pcm, rate, RATE))
    if not pcm:
        raise ValueError(f"{path}: no speech found (the recording is silent)")
    return Utterance(Path(path).stem, pcm)


# -- what the caller sent and heard ------------------------------------------------------------


def speech_bounds(call: SimulatedCall, after: float, before: float = float("inf")
                  ) -> tuple[float, float] | None:
    """(onset, end) of the caller's speech sent in (after, before], to 20 ms.

    A frame is sent once its 20 ms have been captured, so speech in a frame sent at ``t``
    started at ``t - 20 ms`` at the earliest and ended by ``t``.
    """
    frames = [(t, f) for t, f in call.sent if after < t <= before and rms(ulaw_to_pcm(f)) > SPEECH_RMS]
    if not frames:
        return None
    return frames[0][0] - FRAME_S, frames[-1][0]


def first_bot_audio(call: SimulatedCall, after: float, before: float = float("inf")) -> float | None:
    """When the first non-silent bot frame after ``after`` reached the caller."""
    for t, pcm in call.media:
        if after < t <= before and rms(pcm) > 0.001:
            return t
    return None


@attrs.define
class Turn:
    """One caller utterance and the bot's answer to it."""

    said: str
    onset: float  # caller speech started (monotonic)
    end: float  # caller speech ended
    heard: str = ""  # what the bot transcribed
    segments: int = 0  # transcripts the VAD cut this utterance into (1 unless it paused)
    answer: str = ""  # what the bot said (what the caller heard of it)
    interrupted_bot: bool = False  # this utterance was spoken over the bot
    #: Absolute times of the stages (monotonic); None where the server reported nothing.
    vad_stop: float | None = None
    transcript: float | None = None
    first_token: float | None = None
    tts_first: float | None = None
    first_audio: float | None = None  # first bot audio frame received by the caller
    #: Barge-in (only when this turn interrupted the bot).
    clear_at: float | None = None
    last_bot_frame: float | None = None

    @property
    def answered(self) -> bool:
        return self.first_audio is not None

    @property
    def total(self) -> float | None:
        return None if self.first_audio is None else self.first_audio - self.end

    def stages(self) -> dict[str, float | None]:
        """Seconds spent in each stage (None where unknown)."""
        points = [self.end, self.vad_stop, self.transcript, self.first_token, self.tts_first,
                  self.first_audio]
        out: dict[str, float | None] = {}
        for name, (a, b) in zip(STAGES, itertools.pairwise(points), strict=True):
            out[name] = None if a is None or b is None else b - a
        return out

    def barge_in(self) -> dict[str, float | None]:
        if not self.interrupted_bot:
            return {}
        return {
            "clear": None if self.clear_at is None else self.clear_at - self.onset,
            "last_bot_frame": None if self.last_bot_frame is None
            else self.last_bot_frame - self.onset,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "said": self.said, "heard": self.heard, "answer": self.answer,
            "answered": self.answered, "interrupted_bot": self.interrupted_bot,
            "segments": self.segments,
            "speech_seconds": round(self.end - self.onset, 3),
            "total": None if self.total is None else round(self.total, 4),
            "stages": {k: None if v is None else round(v, 4) for k, v in self.stages().items()},
            "barge_in": {k: None if v is None else round(v, 4) for k, v in self.barge_in().items()},
        }


def fill_from_server(turn: Turn, events: list[dict[str, Any]], until: float,
                     replies_until: float | None = None) -> None:
    """Stage times, transcript and reply of ``turn`` from the server's events of its call.

    Events between the turn's onset and ``until`` (the next turn's onset) count; replies
    until ``replies_until`` (an interrupted answer is added when it is cut, after the next
    onset). The ``turn`` event is sent when the answer's first audio is handed to the
    transport; its stages are durations, anchored at that moment (its ``t``).
    """
    replies_until = until if replies_until is None else replies_until
    window = [e for e in events if turn.onset < e["t"] <= until]
    heard = [e["data"].get("text", "") for e in window if e["event"] == "transcript"]
    turn.heard = " ".join(h.strip() for h in heard if h.strip())
    turn.segments = len(heard)
    replies = [e["text"] for e in events
               if e["event"] == "reply" and turn.onset < e["t"] <= replies_until]
    turn.answer = " ".join(r.strip() for r in replies)
    done = next((e for e in window if e["event"] == "turn"), None)
    if done is None:
        return
    d = done["data"]
    if "voice_to_voice" not in d:
        return
    speech_end = done["t"] - d["voice_to_voice"]
    t = speech_end
    points = []
    for key in ("vad_stop", "stt", "llm_first_token", "tts_first_audio"):
        if key not in d:
            break
        t += d[key]
        points.append(t)
    turn.vad_stop, turn.transcript, turn.first_token, turn.tts_first = (
        points + [None] * (4 - len(points))
    )


async def wait_quiet(call: SimulatedCall, quiet: float = 0.8, within: float = 60.0) -> None:
    """Until the bot has said nothing for ``quiet`` seconds and its audio has been played."""
    try:
        await call.wait_for_bot_silence(quiet=quiet, within=within)
    except TimeoutError:
        pass


async def speak(call: SimulatedCall, utterance: Utterance) -> tuple[float, float]:
    """Say ``utterance`` now; returns (onset, end) of its speech once it has been sent."""
    before = call.sent[-1][0] if call.sent else 0.0
    done = call.say(utterance.pcm)
    await asyncio.sleep(max(0.0, done - time.monotonic()) + 2 * FRAME_S)
    while True:  # the microphone sends on its own clock: wait for the last frame to leave
        bounds = speech_bounds(call, before)
        if bounds is not None and not call._pending:
            return bounds
        if call.closed_at is not None:  # the call ended while speaking: nothing more leaves
            return bounds or (call.closed_at, call.closed_at)
        await asyncio.sleep(FRAME_S)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.array(values), q))
