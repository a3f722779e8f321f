"""vc's Silero VAD: a per-window volume gate (no smoothing lag) and the speech-onset signal.

Real Silero (shipped with pipecat) on real espeak-ng speech; times are audio time, so the
comparisons are exact whatever the machine's load.
"""

from __future__ import annotations

import numpy as np
import pytest
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams, VADState
from pipecat.frames.frames import VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame

from vc.testing.calls import speech
from vc.testing.services import ServiceHarness
from vc.turns import SpeechPausedFrame, SpeechResumedFrame
from vc.vad import CallVAD, CallVADProcessor, window_level

RATE = 16000
PARAMS = VADParams(confidence=0.7, start_secs=0.15, stop_secs=0.4, min_volume=0.5)


def padded(text: str, gain: float = 1.0) -> tuple[bytes, float]:
    """``text`` spoken after 1 s of silence and followed by 1 s; returns (pcm, speech onset)."""
    x = np.frombuffer(speech(text, RATE), dtype="<i2").astype(np.float32) * gain
    x = np.concatenate([np.zeros(RATE), x, np.zeros(RATE)]).astype("<i2")
    frames = x[: len(x) // 160 * 160].reshape(-1, 160).astype(np.float32)
    loud = np.sqrt((frames**2).mean(axis=1)) > 300
    return x.tobytes(), float(np.argmax(loud)) * 0.01


async def speaking_at(vad, pcm: bytes) -> float | None:
    """Audio time at which ``vad`` first says SPEAKING, fed 20 ms at a time."""
    vad.set_sample_rate(RATE)
    step = RATE // 50 * 2
    for i in range(0, len(pcm) - step + 1, step):
        if await vad.analyze_audio(pcm[i : i + step]) == VADState.SPEAKING:
            return (i + step) / 2 / RATE
    return None


def test_window_level_uses_pipecats_volume_scale() -> None:
    assert window_level(bytes(640)) == 0.0
    full = (np.ones(512) * 32767).astype("<i2").tobytes()
    assert window_level(full) == pytest.approx(1.0)
    quiet = (np.ones(512) * 32767 * 10 ** (-60 / 20)).astype("<i2").tobytes()  # -60 dBFS
    assert window_level(quiet) == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("text", ["Wait, stop please.", "Hello there, how are you?", "No."])
async def test_turns_start_sooner_than_with_pipecats_smoothed_volume_gate(text: str) -> None:
    pcm, onset = padded(text)
    plain = SileroVADAnalyzer(sample_rate=RATE, params=PARAMS)
    ours = CallVAD(sample_rate=RATE)
    ours.configure(PARAMS)
    t_plain, t_ours = await speaking_at(plain, pcm), await speaking_at(ours, pcm)
    assert t_plain is not None and t_ours is not None
    # start_secs (0.15 s) plus Silero's own rise is all that is left: the volume lag is gone.
    assert t_ours <= t_plain - 0.04, (t_ours - onset, t_plain - onset)
    assert t_ours - onset < 0.25


async def test_quiet_speech_under_min_volume_never_counts() -> None:
    pcm, _ = padded("Hello there, how are you?", gain=10 ** (-50 / 20))  # about -75 dBFS
    vad = CallVAD(sample_rate=RATE)
    vad.configure(PARAMS)
    assert await speaking_at(vad, pcm) is None
    assert vad.windows and not any(passed for _, _, passed in vad.windows)


async def test_the_processor_reports_onset_early_and_quiet_after_the_sound() -> None:
    pcm, onset_at = padded("uh")
    calls, _ = await onsets(pcm, margin_db=0, onset_windows=2)
    assert [name for name, _ in calls] == ["onset", "quiet"]
    assert calls[0][1] - onset_at < 0.1  # two 32 ms windows after the sound starts
    assert calls[1][1] > calls[0][1] + 0.15


def test_call_vads_share_one_onnx_session_but_not_the_model_state() -> None:
    a, b = CallVAD(sample_rate=RATE), CallVAD(sample_rate=RATE)
    assert a._model.session is b._model.session  # ~10 MiB once, not once per call
    assert a._model._state is not b._model._state


def test_call_vad_sets_everything_pipecats_silero_analyzer_sets() -> None:
    """CallVAD skips SileroVADAnalyzer.__init__ (its model load): a pipecat upgrade that adds
    state there must show up here."""
    assert set(vars(SileroVADAnalyzer(sample_rate=RATE))) <= set(vars(CallVAD(sample_rate=RATE)))


async def test_concurrent_calls_on_the_shared_session_hear_what_separate_ones_do() -> None:
    import asyncio

    pcms = [padded(t)[0] for t in ("Wait, stop please.", "No.", "Hello there, how are you?")]

    def vad() -> CallVAD:
        v = CallVAD(sample_rate=RATE)
        v.configure(PARAMS)
        return v

    alone = [await speaking_at(vad(), pcm) for pcm in pcms]
    together = await asyncio.gather(*(speaking_at(vad(), pcm) for pcm in pcms))
    assert list(together) == alone and None not in alone


# -- sudden sounds: the level sign of speech --------------------------------------------------

FLOOR_DBFS = -70.0  # a quiet phone line's hiss


def hiss(seconds: float, dbfs: float = FLOOR_DBFS, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(int(RATE * seconds))
    return x / np.sqrt((x**2).mean()) * 32768 * 10 ** (dbfs / 20)


def cough(seconds: float = 0.25, seed: int = 1) -> np.ndarray:
    """A burst of low-passed noise that rises fast and decays (not speech), at about -12 dBFS."""
    n = int(RATE * seconds)
    noise = np.convolve(np.random.default_rng(seed).standard_normal(n), np.ones(4) / 4, "same")
    envelope = np.minimum(np.arange(n) / 160, 1.0) * np.exp(-np.arange(n) / (n / 3))
    return noise * envelope / np.abs(noise).max() * 0.5 * 32767


def on_line(*parts: np.ndarray) -> bytes:
    """``parts`` one after the other, over the line's hiss."""
    x = np.concatenate(parts)
    return np.clip(x + hiss(len(x) / RATE, seed=9), -32768, 32767).astype("<i2").tobytes()


async def onsets(pcm: bytes, margin_db: float, onset_windows: int = 1
                 ) -> tuple[list[tuple[str, float]], CallVADProcessor]:
    """(event, audio time) of the onsets and quiets a processor reports for ``pcm``."""
    calls: list[tuple[str, float]] = []
    fed = 0.0

    async def onset() -> None:
        calls.append(("onset", fed))

    async def quiet() -> None:
        calls.append(("quiet", fed))

    vad = CallVAD(sample_rate=RATE)
    vad.configure(PARAMS)
    proc = CallVADProcessor(vad_analyzer=vad, onset_windows=onset_windows, on_onset=onset,
                            on_quiet=quiet, level_margin_db=margin_db)
    vad.set_sample_rate(RATE)
    step = RATE // 50 * 2
    for i in range(0, len(pcm) - step + 1, step):
        fed = (i + step) / 2 / RATE
        await vad.analyze_audio(pcm[i : i + step])
        await proc._watch()
    return calls, proc


def spoken(text: str) -> np.ndarray:
    return np.frombuffer(speech(text, RATE), dtype="<i2").astype(np.float64)


async def test_a_word_starting_with_s_is_noticed_before_silero_hears_its_vowel() -> None:
    words = spoken("Sorry, hold on a second.")
    pcm = on_line(np.zeros(RATE), words, np.zeros(RATE))
    start = 1.0 + float(np.argmax(np.abs(words) > 300)) / RATE
    by_vad, _ = await onsets(pcm, 0)
    by_level, proc = await onsets(pcm, 25)
    assert [e for e, _ in by_vad][:1] == ["onset"] and [e for e, _ in by_level][:1] == ["onset"]
    assert by_level[0][1] - start < 0.07  # two 20 ms frames and the window they complete
    assert by_vad[0][1] - by_level[0][1] >= 0.06, (by_vad[0][1] - start, by_level[0][1] - start)
    # The "s" kept the onset open until Silero heard the vowel: the same word, no quiet between.
    assert by_level[1][0] == "quiet" and by_level[1][1] >= by_vad[1][1] - 0.001
    assert not proc.noise_only and proc.level.unconfirmed == 0


async def test_a_cough_pauses_briefly_and_three_in_a_row_end_the_level_sign() -> None:
    gap = np.zeros(RATE)
    pcm = on_line(gap, cough(), gap, cough(seed=2), gap, cough(seed=3), gap, cough(seed=4), gap)
    calls, proc = await onsets(pcm, 25)
    coughs_at = [1.0, 2.25, 3.5]
    assert [e for e, _ in calls] == ["onset", "quiet"] * 3  # the fourth cough: none
    for (_, opened), (_, quiet), at in zip(calls[::2], calls[1::2], coughs_at, strict=True):
        assert 0 <= opened - at < 0.07
        assert quiet - at < 0.25 + 0.2  # the cough, its decay and 96 ms of quiet
    assert proc.level.unconfirmed == 3 and not proc.level.enabled
    assert (await onsets(pcm, 0))[0] == []  # Silero alone never took a cough for speech


async def test_the_lines_own_noise_is_its_floor_and_a_new_noise_becomes_it() -> None:
    # A steady hiss 30 dB over the line's from the start: the floor, never a sudden sound.
    steady = on_line(hiss(4.0, FLOOR_DBFS + 30, seed=5))
    assert (await onsets(steady, 25))[0] == []
    # The same hiss starting mid-call is sudden once, then the floor starts again from it.
    calls, proc = await onsets(on_line(np.zeros(RATE), hiss(4.0, FLOOR_DBFS + 30, seed=5)), 25)
    assert [e for e, _ in calls] == ["onset", "quiet"]
    assert calls[1][1] - calls[0][1] < 0.4 + 0.05
    assert proc.level.unconfirmed == 1


async def pause_events(pcm: bytes, pause_windows: int) -> list[str]:
    """The speech and pause frames a processor pushes for ``pcm`` (segments end after 0.6 s)."""

    async def nothing() -> None:
        pass

    vad = CallVAD(sample_rate=RATE)
    vad.configure(VADParams(confidence=0.7, start_secs=0.15, stop_secs=0.6, min_volume=0.5))
    proc = CallVADProcessor(vad_analyzer=vad, onset_windows=1, on_onset=nothing,
                            on_quiet=nothing, pause_windows=pause_windows)
    names = {VADUserStartedSpeakingFrame: "started", VADUserStoppedSpeakingFrame: "stopped",
             SpeechPausedFrame: "paused", SpeechResumedFrame: "resumed"}
    async with ServiceHarness(proc, RATE) as h:
        await h.audio(pcm)
        await h.wait_for(lambda: any(isinstance(f, VADUserStoppedSpeakingFrame)
                                     for _, f in h.down.frames), 30)
    return [names[type(f)] for _, f in h.down.frames if type(f) in names]


async def test_a_pause_inside_a_segment_is_told_and_so_is_the_speech_after_it() -> None:
    """0.33 s of silence inside a sentence (espeak-ng's after "table"; shorter than the
    segment's 0.6 s): the STT hears that the speech paused, then that it went on, then that it
    paused again before the segment ended."""
    pcm = np.concatenate([np.zeros(RATE), spoken("I would like a table"),
                          spoken("for two people"), np.zeros(RATE)]).astype("<i2").tobytes()
    assert await pause_events(pcm, 3) == ["started", "paused", "resumed", "paused", "stopped"]
    assert await pause_events(pcm, 0) == ["started", "stopped"]  # off
