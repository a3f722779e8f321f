"""The faster-whisper provider and its service with the real tiny.en model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fw_helpers import (
    ENGLISH,
    Harness,
    call_context,
    espeak,
    piper,
    profile,
    telephone,
    wer,
    words,
)
from pipecat.frames.frames import (
    MetricsFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import ProcessingMetricsData
from vc_stt_faster_whisper.languages import WHISPER_LANGUAGES, whisper_language
from vc_stt_faster_whisper.models import resolve_model
from vc_stt_faster_whisper.provider import MIN_TTFS, TTFS_FACTOR, FasterWhisperSTT
from vc_stt_faster_whisper.transcriber import Transcriber, Transcript

from vc.audio import resample
from vc.providers import ProviderError
from vc.testing.contracts import STTContract


class TestFasterWhisperContract(STTContract):
    provider = FasterWhisperSTT


def test_language_table_matches_faster_whisper() -> None:
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    assert set(WHISPER_LANGUAGES) == set(_LANGUAGE_CODES)
    assert whisper_language("tr-TR") == "tr" and whisper_language("EN") == "en"
    with pytest.raises(ValueError):
        whisper_language("xx")


# -- configuration errors at startup --------------------------------------------------------


async def test_english_model_with_turkish_profile_fails_at_startup(started) -> None:
    expected = r"English only.*profile 'tr-calls' uses 'tr'.*model = base"
    with pytest.raises(ProviderError, match=expected):
        await started(profiles=[profile("en"), profile("tr", "tr-calls")])
    with pytest.raises(ProviderError, match=r"English only.*language setting uses 'tr'"):
        await started(language="tr")
    with pytest.raises(ProviderError, match="Whisper does not know the language 'xx'"):
        await started(language="xx")


async def test_profiles_of_other_providers_are_not_checked(started) -> None:
    p = await started(profiles=[profile("en"), profile("ko", "korean", stt="vosk")])
    assert p.ready() and p.languages == ("en",)


async def test_english_only_is_read_from_the_model_not_the_name(started, tmp_path: Path) -> None:
    d = tmp_path / "my-whisper"
    d.mkdir()
    for f in resolve_model("tiny.en").path.iterdir():
        (d / f.name).symlink_to(f)
    assert "tr" in FasterWhisperSTT.languages  # the class serves any Whisper language...
    with pytest.raises(ProviderError, match="English only"):  # ...this model does not
        await started(profiles=[profile("tr")], model=str(d))
    ok = await started(profiles=[profile("en")], model=str(d))
    assert ok.languages == ("en",) and ok.language_for("en") == "en"


async def test_damaged_model_directory_is_a_clear_error(started, tmp_path: Path) -> None:
    d = tmp_path / "damaged"
    d.mkdir()
    src = resolve_model("tiny.en").path
    for f in src.iterdir():
        if f.name != "model.bin":
            (d / f.name).symlink_to(f)
    (d / "model.bin").write_bytes((src / "model.bin").read_bytes()[:100_000])
    with pytest.raises(ProviderError, match=r"could not load the Whisper model .* damaged"):
        await started(model=str(d))
    with pytest.raises(ProviderError, match="does not exist"):
        await started(model=str(tmp_path / "missing"))


def test_decoding_never_filters_on_no_speech_prob(tiny) -> None:
    opts = tiny.transcriber.options(3.0)
    assert opts["no_speech_threshold"] is None
    assert opts["beam_size"] == 1 and opts["without_timestamps"] is True
    assert opts["condition_on_previous_text"] is False and opts["vad_filter"] is False
    assert opts["temperature"] == 0.0 and 12 < opts["max_new_tokens"] < 100


# -- transcription ----------------------------------------------------------------------------


async def test_transcribes_an_utterance_and_reports_its_time(tiny) -> None:
    before = len(tiny.observed.values)
    sentence = ENGLISH[3]
    async with Harness(tiny.create_service(call_context())) as h:
        await h.utterance(piper(sentence))
        (text,) = await h.transcript()
        await h.end()
    # One word in seven may go with the short encoder window (docs/stt.md; the WER sweeps
    # are in test_fw_accuracy.py and test_fw_window.py).
    assert wer([sentence], [text]) <= 0.3, text
    frame = h.frames(TranscriptionFrame)[0]
    assert frame.finalized and frame.language == "en"
    result: Transcript = frame.result
    assert result.seconds > 0 and 2.0 < result.audio_seconds < 10
    name, value, labels = tiny.observed.values[before]
    assert name == "stt_transcription_seconds" and value == result.seconds
    assert labels == {"stage": "stt_transcription", "provider": "faster-whisper"}
    processing = [d.value for m in h.frames(MetricsFrame) for d in m.data
                  if isinstance(d, ProcessingMetricsData) and d.model == "tiny.en"]
    assert processing and processing[0] > 0  # pipecat's processing metric per utterance
    assert not h.errors


async def test_short_answers_are_never_dropped(tiny) -> None:
    """The baseline bot ignored 5% of questions: Whisper's no-speech filter ate them."""
    answers = ("yes", "no", "two", "sure", "right", "uh huh")
    async with Harness(tiny.create_service(call_context())) as h:
        for i, word in enumerate(answers):
            quiet = resample(espeak(word), 16000, 16000)
            await h.utterance(bytes(3200) + quiet + bytes(3200))
            await h.transcript(i + 1)
        await h.end()
    results = [f.result for f in h.frames(TranscriptionFrame)]
    assert len(results) == len(answers) and all(r.text for r in results)
    # several of these carry a no_speech_prob pipecat's WhisperSTTService (0.4) would drop
    assert max(r.no_speech_prob for r in results) > 0.4, [r.no_speech_prob for r in results]
    assert words(results[0].text) == ["yes"] and words(results[1].text) == ["no"]


async def test_empty_and_silent_segments_yield_nothing(tiny) -> None:
    service = tiny.create_service(call_context())
    assert [f async for f in service.run_stt(b"")] == []
    async with Harness(service) as h:
        await h.task.queue_frame(VADUserStartedSpeakingFrame())
        await h.task.queue_frame(VADUserStoppedSpeakingFrame())  # zero-length utterance
        await h.utterance(bytes(32000))  # a second of digital silence
        await h.utterance(piper(ENGLISH[6]))
        await h.transcript(1)
        await h.end()
    assert len(h.transcripts) == 1 and len(service.transcripts) == 1  # silence never ran
    assert not h.errors


@pytest.mark.parametrize("rate", [8000, 48000])
async def test_input_at_other_rates_is_resampled(tiny, rate: int) -> None:
    sentence = ENGLISH[8]
    audio = piper(sentence) if rate > 16000 else telephone(piper(sentence))
    async with Harness(tiny.create_service(call_context(rate=rate)), rate=rate) as h:
        await h.utterance(resample(audio, 16000, rate))
        (text,) = await h.transcript()
        await h.end()
    assert wer([sentence], [text]) <= 0.1, text


async def test_forty_second_monologue(tiny) -> None:
    sentences, pcm = [], b""
    while len(pcm) < 40 * 32000:
        s = ENGLISH[len(sentences) % len(ENGLISH)]
        sentences.append(s)
        pcm += piper(s) + bytes(6400)
    async with Harness(tiny.create_service(call_context())) as h:
        await h.utterance(pcm)
        (text,) = await h.transcript(within=120)
        await h.end()
    result = h.frames(TranscriptionFrame)[0].result
    assert result.audio_seconds > 40
    error = wer([" ".join(sentences)], [text])
    print(f"40 s monologue ({result.audio_seconds:.1f}s): WER {error:.3f} in {result.seconds:.2f}s")
    assert error <= 0.2, text
    # both 30 s windows were transcribed: the first and the last sentence are there
    assert set(words(sentences[0])) <= set(words(text))
    assert set(words(sentences[-1])) - set(words(text)) <= {"please"}


async def test_concurrent_calls_share_the_model_safely(tiny) -> None:
    chosen = (ENGLISH[0], ENGLISH[4], ENGLISH[9])
    services = [tiny.create_service(call_context()) for _ in chosen]

    async def call(service, sentence: str) -> str:
        async with Harness(service) as h:
            await h.utterance(piper(sentence))
            (text,) = await h.transcript()
            await h.end()
        return text

    texts = await asyncio.gather(*(call(s, t) for s, t in zip(services, chosen, strict=True)))
    assert wer(list(chosen), list(texts)) <= 0.1, texts
    queued = [s.transcripts[0].queued for s in services]
    assert tiny.settings.num_workers < len(chosen)
    assert max(queued) > 0.05, queued  # more utterances than workers: one waited its turn


async def test_a_failing_transcription_does_not_end_the_call(started) -> None:
    p = await started()
    service = p.create_service(call_context())
    p.transcriber.close()  # the model goes away under the call
    async with Harness(service) as h:
        await h.utterance(piper(ENGLISH[2]))
        await h.wait_for(lambda: bool(h.errors), 30)
        await h.end()
    assert "transcription failed" in h.errors[0].error and not h.errors[0].fatal


async def test_the_warm_up_follows_start_and_sets_the_transcript_timeout(started) -> None:
    """vc is ready once the model is loaded; the warm-up transcription runs after it (the
    engine calls warm() once vc is ready: a call's first utterance comes after its greeting)
    and measures the model on this machine."""
    p = await started()
    assert p.ready() and p.not_ready_reason() == ""
    assert p.warmup_seconds == 0  # not before warm()
    await p.warm()
    assert p.warmup_seconds > 0
    assert p.ttfs_p99_latency == round(max(MIN_TTFS, TTFS_FACTOR * p.warmup_seconds), 2)
    assert p.ready()


async def test_a_model_that_cannot_transcribe_makes_the_provider_not_ready(
    started, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(self: Transcriber, pcm: bytes, language: str | None) -> Transcript:
        raise RuntimeError("ctranslate2 failed")

    monkeypatch.setattr(Transcriber, "transcribe", broken)
    p = await started()
    assert p.ready()
    await p.warm()
    assert not p.ready()
    assert "warm-up transcription failed" in p.not_ready_reason()
    assert "ctranslate2 failed" in p.not_ready_reason()
