"""vc's Silero VAD: a per-window volume gate (no smoothing lag) and the speech-onset signal.

Real Silero (shipped with pipecat) on real espeak-ng speech; times are audio time, so the
comparisons are exact whatever the machine's load.
"""

from __future__ import annotations

import numpy as np
import pytest
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams, VADState

from vc.testing.calls import speech
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
    calls: list[tuple[str, float]] = []
    fed = 0.0

    async def onset() -> None:
        calls.append(("onset", fed))

    async def quiet() -> None:
        calls.append(("quiet", fed))

    vad = CallVAD(sample_rate=RATE)
    vad.configure(PARAMS)
    proc = CallVADProcessor(vad_analyzer=vad, onset_windows=2, on_onset=onset, on_quiet=quiet)
    vad.set_sample_rate(RATE)
    pcm, onset_at = padded("uh")
    step = RATE // 50 * 2
    for i in range(0, len(pcm) - step + 1, step):
        fed = (i + step) / 2 / RATE
        await vad.analyze_audio(pcm[i : i + step])
        await proc._watch()
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
