"""``vc demo``: the command end to end, with the fake AI stack and (slow) the real default stack.

The demo runs ``vc`` in a child process, calls it through the Twilio simulator with espeak-ng
speech, and writes call.wav, timeline.png, demo.json and events.jsonl. These tests run the
real command (``python -m vc.cli demo``) and read what it wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from vc_transport_twilio.conversation import read_wav, trim
from vc_transport_twilio.demo import CONVERSATION

from vc.config import KINDS
from vc.testing.calls import speech

FAKE_INI = """
[vc]
transports = twilio
[stt]
provider = fake
[stt.fake]
script = {script}
[llm]
provider = fake
[llm.fake]
{llm}
[tts]
provider = fake
[tts.fake]
; the long answer's first sentence (1.2 s) is heard before the caller talks over it (1.5 s)
ms_per_char = 25
[turn]
; the scripted STT hears one line per segment: "Hello, ... France?" must stay one segment
end = silence
"""


def run_demo(tmp_path: Path, *args: str, script: str = "", llm: str = "", timeout: float = 600
             ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VC_", "OAVC_"))}
    cmd = [sys.executable, "-m", "vc.cli", "demo", "--out", str(tmp_path / "out"), *args]
    if script:
        ini = tmp_path / "fake.ini"
        ini.write_text(FAKE_INI.format(script=script, llm=llm), encoding="utf-8")
        env["VC_PLUGIN_MODULES"] = "vc.testing.fakes"
        cmd += ["-c", str(ini)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                          check=False)


def channels(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        assert w.getnchannels() == 2 and w.getsampwidth() == 2
        rate = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    return x[:, 0], x[:, 1], rate


def loud_seconds(x: np.ndarray, rate: int) -> float:
    frames = x[: len(x) // 160 * 160].reshape(-1, 160).astype(np.float32) / 32768
    return float((np.sqrt((frames**2).mean(axis=1)) > 0.01).sum() * 160 / rate)


def test_demo_with_the_fake_stack_reports_every_turn_and_writes_the_call(tmp_path):
    lines = ["what is the capital of france", "tell me a long story about everything",
             "goodbye"]
    done = run_demo(tmp_path, script=", ".join(lines))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "local development mode" in out
    for heard in lines:
        assert f"bot heard     {heard}" in out
    assert "bot answered  You said: what is the capital of france." in out
    assert "(spoken over the bot)" in out and "barge-in      caller started speaking -> clear" in out
    summary = json.loads((tmp_path / "out" / "demo.json").read_text())
    turns = summary["turns"]
    assert [t["heard"] for t in turns] == lines
    assert all(t["answered"] for t in turns)
    assert [t["interrupted_bot"] for t in turns] == [False, False, True]
    for t in turns:
        stages = t["stages"]
        assert all(stages[s] is not None and stages[s] >= 0 for s in stages), t
        # The stages add up to the voice-to-voice time the caller measured.
        assert abs(sum(stages.values()) - t["total"]) < 0.005
    barge = turns[2]["barge_in"]
    assert barge["clear"] is not None and barge["last_bot_frame"] is not None
    # The interrupted answer was cut: the caller heard only part of "Here is more..."
    assert "You said: tell me a long story about everything" in turns[1]["answer"]
    assert summary["greeting_after_connect"] is not None
    assert summary["ended_by"] == "server"  # the bot said goodbye and hung up
    left, right, rate = channels(tmp_path / "out" / "call.wav")
    assert rate == 8000
    said = sum(loud_seconds(np.frombuffer(trim(speech(line, 8000, wpm=160)), dtype="<i2"), 8000)
               for line in CONVERSATION)
    assert loud_seconds(left, rate) > 0.9 * said  # the caller's three lines, on the left
    assert loud_seconds(right, rate) > 2.0  # greeting and answers (440 Hz tone), on the right
    assert (tmp_path / "out" / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = [json.loads(x) for x in (tmp_path / "out" / "events.jsonl").read_text().splitlines()]
    assert {"transcript", "turn", "barge_in", "reply"} <= {e["event"] for e in events}


def test_an_unanswered_turn_fails_the_demo(tmp_path):
    # The fake model takes 8 s to its first token; the caller waits 2 s for an answer.
    done = run_demo(tmp_path, "--say", "Hello there, how are you?", "--no-plot",
                    "--answer-timeout", "2", script="hello there",
                    llm="first_token_delay = 8\nfirst_token_timeout = 20")
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "UNANSWERED: no bot audio within 2 s" in done.stdout
    assert "FAILED: turn(s) 1 went unanswered" in done.stdout
    assert not (tmp_path / "out" / "timeline.png").exists()


def test_own_recordings_are_the_callers_turns(tmp_path):
    wav = tmp_path / "question.wav"
    pcm = speech("Could you help me with my order please?", 22050)
    with wave.open(str(wav), "wb") as w:  # 22 kHz stereo, as a recorder might save it
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(22050)
        x = np.frombuffer(pcm, dtype="<i2")
        w.writeframes(np.stack([x, x], axis=1).tobytes())
    assert read_wav(wav).seconds > 1.0
    done = run_demo(tmp_path, "--wav", str(wav), "--no-plot", script="help with my order")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "demo.json").read_text())
    assert [t["said"] for t in summary["turns"]] == ["question"]
    assert summary["turns"][0]["answer"] == "You said: help with my order."


def test_unreadable_recording_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    done = run_demo(tmp_path, "--wav", str(bad))
    assert done.returncode == 2
    assert "error:" in done.stderr
    silent = tmp_path / "silent.wav"
    with wave.open(str(silent), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(16000))
    done = run_demo(tmp_path, "--wav", str(silent))
    assert done.returncode == 2 and "no speech found" in done.stderr


def test_a_server_that_cannot_start_is_reported(tmp_path):
    ini = tmp_path / "broken.ini"
    ini.write_text("[vc]\ntransports = twilio\n[stt]\nprovider = no-such-stt\n", encoding="utf-8")
    done = run_demo(tmp_path, "-c", str(ini), timeout=300)
    assert done.returncode == 2
    assert "vc did not start" in done.stdout and "no-such-stt" in done.stdout


def test_timings_line_up_with_the_callers_clock():
    """The server's event times are on the caller's clock: a monotonic clock shared by
    processes (the demo anchors the server's stages on them)."""
    import time

    other = subprocess.run([sys.executable, "-c", "import time; print(time.monotonic())"],
                           capture_output=True, text=True, check=True)
    here = time.monotonic()
    assert 0 <= here - float(other.stdout) < 5


def _default_stack_missing() -> list[str]:
    from vc.plugins import load_plugins

    reg = load_plugins()  # the default stack is what the installed plugins declare (vc-stack)
    defaults = {kind: reg.default_provider(kind) for kind in KINDS}
    return [f"{k} provider {n!r}" if n else f"a default {k} provider (pip install vc-stack)"
            for k, n in defaults.items() if n is None or reg.provider(k, n) is None]


@pytest.mark.slow
@pytest.mark.e2e
def test_demo_with_the_real_default_stack(tmp_path):
    missing = _default_stack_missing()
    if missing:
        pytest.skip("the default AI stack is not installed: no " + ", ".join(missing))
    done = run_demo(tmp_path, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "demo.json").read_text())
    first = summary["turns"][0]
    assert "capital" in first["heard"].lower() and first["answer"]
    assert all(t["answered"] for t in summary["turns"])
    assert summary["turns"][-1]["barge_in"]["clear"] is not None
    assert summary["greeting_after_connect"] < 1.0
    assert (tmp_path / "out" / "timeline.png").exists()
