"""Proxy mode against pjsua2 (PJSIP), a real softphone that plays and records WAV files."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from opensips_kit import VC

from vc.testing import until
from vc.testing.calls import speech

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("pjsua2") is None, reason="pjsua2-python is not installed"
)
RATE = 8000


def write_wav(path: Path, pcm: bytes) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm)


def tone_seconds(samples: np.ndarray, rate: int, freq: float = 440.0) -> list[float]:
    """Start times (s) of 100 ms windows dominated by ``freq`` (the fake TTS voice)."""
    n = rate // 10
    out = []
    for i in range(0, len(samples) - n, n):
        w = samples[i : i + n].astype(np.float64)
        if np.sqrt(np.mean(w * w)) < 300:
            continue
        spectrum = np.abs(np.fft.rfft(w * np.hanning(n)))
        peak = np.fft.rfftfreq(n, 1 / rate)[int(np.argmax(spectrum))]
        if abs(peak - freq) < 30:
            out.append(i / rate)
    return out


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
async def test_pjsua_softphone_call(tmp_path: Path, codec: str) -> None:
    question = speech("What time is it now, please?")
    lead = 3.0  # the greeting plays first
    play = tmp_path / "question.wav"
    write_wav(play, bytes(int(lead * RATE) * 2) + question + bytes(RATE * 2))
    record = tmp_path / "heard.wav"
    async with VC(script="what time is it", greeting="Hello there, how can I help you?") as vc:
        host, port = vc.sip_addr
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).parent / "pjsua_caller.py"),
            f"sip:bot@{host}:{port}",
            str(play),
            str(record),
            "14",
            codec,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
        await until(lambda: vc.recorder.ended, what="call end")
        info, _ = vc.recorder.started[0]
        assert info.from_ == "+15550003333"
        assert vc.recorder.named("transcript") or vc.recorder.named("turn")
    with wave.open(str(record)) as w:
        rate = w.getframerate()
        heard = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    windows = tone_seconds(heard, rate)
    asked_until = lead + len(question) / 2 / RATE
    # The greeting was heard at the start, and the answer after the question.
    assert any(t < lead for t in windows), windows
    assert any(t > asked_until for t in windows), windows
