"""``piper``: Piper voices in-process (piper-tts on onnxruntime, CPU).

Every voice the configuration can need (``[tts] voice`` and each profile's ``voice``) is
loaded and warmed once in ``start()``; one loaded voice serves every call. Synthesis runs in
the provider's thread pool, one short piece at a time, so the event loop never blocks and a
cancelled request (barge-in) stops after the piece in flight instead of finishing its text.
Waiting pieces start in the order their audio is needed (:mod:`vc_tts_piper.schedule`): a
reply's first piece before other calls' later ones.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import attrs
from pipecat.frames.frames import ErrorFrame, Frame, InterruptionFrame, TTSAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection

from vc.cpu import usable_cores
from vc.profiles import Profile
from vc.providers import AudioClip, CallContext, ProviderError, TTSProvider, retrieve_failure
from vc.settings import setting
from vc_tts_piper import __version__
from vc_tts_piper.clauses import split_for_synthesis
from vc_tts_piper.normalize import normalize
from vc_tts_piper.schedule import DeadlineGate, Playout
from vc_tts_piper.service import ClauseStreamingTTSService, without_leading_silence
from vc_tts_piper.voices import DEFAULT_VOICE, LoadedVoice, Synthesis, resolve, voice_language

T = TypeVar("T")


def synthesis_threads() -> int:
    """onnxruntime threads per synthesis by default: half the usable cores, at least one.

    Piper speaks a reply's first clause while the LLM is still generating the next ones, in
    the same process: a thread per core made the two fight over the CPU. Measured on 2 shared
    cores (bench/, 20 turns each, interleaved, twice): first token -> first audio 431 -> 322
    ms and 398 -> 314 ms with one thread instead of two.
    """
    return max(1, usable_cores() // 2)


def _positive(instance: Any, attribute: Any, value: float | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be greater than 0")


def _not_negative(instance: Any, attribute: Any, value: float | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must not be negative")


@attrs.define
class PiperSettings:
    voice: str = setting(
        DEFAULT_VOICE,
        help="voice: a name (from a voice package or voices_dir) or the path of a .onnx file "
        "with its .onnx.json next to it")
    voices_dir: list[Path] = setting(
        factory=list, help="folders of NAME.onnx + NAME.onnx.json voices, comma separated")
    speaker: str = setting("", help="speaker name or number, for multi-speaker voices")
    length_scale: float | None = setting(
        None, min=0.1, max=10, validator=_positive,
        help="speaking time scale: below 1 faster, above 1 slower (empty: the voice's default)")
    noise_scale: float | None = setting(
        None, min=0, max=10, validator=_not_negative,
        help="generator noise (empty: the voice's default, ~0.667)")
    noise_w: float | None = setting(
        None, min=0, max=10, validator=_not_negative,
        help="phoneme duration noise (empty: the voice's default, ~0.8)")
    sentence_silence: float = setting(
        0.0, min=0, max=10, validator=_not_negative, help="seconds of silence added after each sentence")
    threads: int = setting(
        0, min=0, max=1024, validator=_not_negative,
        help="onnxruntime threads per synthesis (0: half the cores, at least one: a reply's "
        "first clause is synthesised while the LLM is still writing the rest)")
    parallel: int = setting(
        2, min=1, max=64, validator=_positive, help="syntheses that may run at once, across all calls")
    min_clause_words: int = setting(
        4, min=0, max=100, help="words a clause needs before a comma, colon or dash ends it and it is spoken")
    first_piece_words: int = setting(
        5, min=0, max=100,
        help="a reply's first piece is also cut before a word such as and, for, because once it "
        "has this many words, so its first audio comes sooner (0: first clause or sentence)")
    first_piece_late_words: int = setting(
        7, min=0, max=100,
        help="a first piece with no such word yet is also cut before to, of, the, that (and "
        "other prepositions and articles) once it has this many words (0: never)")
    max_piece_words: int = setting(
        16, min=1, max=1000, validator=_positive,
        help="longest piece synthesised in one go (bounds how late barge-in stops synthesis)")
    normalize: bool = setting(
        True, help="spell out numbers, currency, times, URLs; drop markdown and emoji")
    first_audio_seconds: float = setting(
        0.3, min=0, max=10, validator=_not_negative,
        help="a piece the caller is waiting for is decoded this many seconds first and the "
        "rest while that plays (Piper's decoder run in parts, prepared once per voice in vc's "
        "cache directory; 0: every piece decoded whole)")
    prefetch: bool = setting(
        True,
        help="synthesise the first piece of a reply held back until the caller's turn ends "
        "([turn] speculate) while the turn is still being waited out")


class PiperTTSService(ClauseStreamingTTSService):
    """One call's Piper TTS: clause by clause, piece by piece, resampled to the call's rate."""

    def __init__(self, provider: PiperProvider, voice: LoadedVoice, language: str,
                 **kwargs: Any) -> None:
        s: PiperSettings = provider.settings
        super().__init__(
            voice=voice.name,
            language=language,
            model=str(voice.file.model),
            min_clause_words=s.min_clause_words,
            first_piece_words=s.first_piece_words,
            first_piece_late_words=s.first_piece_late_words,
            normalize_text=s.normalize,
            speakable=voice.speakable,
            prefetch=s.prefetch,
            observe=provider.context.observe,
            **kwargs,
        )
        self._provider = provider
        self._voice = voice
        self._playout = Playout()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, InterruptionFrame):
            self._playout.reset()
        await super().process_frame(frame, direction)

    def held_piece(self, text: str) -> str | None:
        """The first piece ``run_tts`` will synthesise of the aggregated ``text``."""
        request = super().held_piece(text)
        if request is None:
            return None
        pieces = split_for_synthesis(request, self._provider.settings.max_piece_words)
        return pieces[0] if pieces else None

    async def synthesize_held(self, piece: str, needed_at: float) -> bytes:
        return await self._provider.synthesize_piece(self._voice, piece, needed_at)

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        if not self.sayable(text):
            return
        self.spoken.append(text)
        await self.start_tts_usage_metrics(text)
        pieces = split_for_synthesis(text, self._provider.settings.max_piece_words)

        made = self.held.take(pieces[0]) if pieces else None

        async def pcm() -> AsyncIterator[bytes]:
            for i, piece in enumerate(pieces):
                if i == 0 and made is not None:
                    yield await made  # synthesised while the reply was held
                    continue
                now = time.monotonic()
                needed_at = self._playout.needed_at(context_id, now)
                if needed_at > now:  # audio of this reply is still playing: no hurry
                    yield await self._provider.synthesize_piece(self._voice, piece, needed_at)
                    continue
                async for audio in self._provider.stream_piece(self._voice, piece):
                    yield audio

        try:
            async for frame in self.stream_pcm(pcm(), self._voice.sample_rate, context_id):
                if isinstance(frame, TTSAudioRawFrame):
                    self._playout.sent(context_id, len(frame.audio) / (2 * frame.sample_rate))
                yield frame
        except (ProviderError, RuntimeError, ValueError, OSError) as e:
            yield ErrorFrame(error=f"Piper could not speak {text[:60]!r}: {e}")


class PiperProvider(TTSProvider):
    name = "piper"
    Settings = PiperSettings
    languages = ("*",)
    description = "Piper voices in-process (piper-tts, CPU); never downloads"

    def __init__(self, settings: PiperSettings, context: Any) -> None:
        super().__init__(settings, context)
        self.voices: dict[str, LoadedVoice] = {}
        self.synthesis = Synthesis(
            speaker=settings.speaker, length_scale=settings.length_scale,
            noise_scale=settings.noise_scale, noise_w=settings.noise_w,
            sentence_silence=settings.sentence_silence)
        self._configs: dict[str, Any] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._gate: DeadlineGate | None = None
        self._preparing: set[asyncio.Task[None]] = set()

    def _specs(self) -> list[str]:
        specs = [self.settings.voice]
        for p in self.context.profiles:
            if p.voice and p.voice not in specs and (not p.tts or p.tts == self.name):
                specs.append(p.voice)
        return specs

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(self.settings.parallel, thread_name_prefix="piper")
        self._gate = DeadlineGate(self._executor, self.settings.parallel)
        loop = asyncio.get_running_loop()
        for spec in self._specs():
            # resolving checks a packaged voice's files (sha256 on a verification-cache miss)
            file = await loop.run_in_executor(self._executor, resolve, spec,
                                              self.settings.voices_dir)
            voice = self.voices.get(file.name)
            if voice is None:
                voice = await loop.run_in_executor(
                    self._executor, LoadedVoice, file,
                    self.settings.threads or synthesis_threads())
            self._configs[voice.name] = voice.config_for(self.synthesis)  # checks the speaker
            self.voices[spec] = self.voices[voice.name] = voice
            self.log.info("piper voice %s loaded from %s (%d Hz%s)", voice.name, file.source,
                          voice.sample_rate, ", decoded in parts" if voice.parts else "")
        if self.settings.first_audio_seconds > 0:
            for voice in {v.name: v for v in self.voices.values()}.values():
                if voice.parts is None:
                    task = asyncio.create_task(self._prepare_parts(voice))
                    self._preparing.add(task)
                    task.add_done_callback(self._preparing.discard)

    async def _prepare_parts(self, voice: LoadedVoice) -> None:
        """Cut ``voice`` into its parts in a separate, low-priority process, then use them."""
        why = await voice.switch_to_parts()
        if not why:
            self.log.info("piper voice %s is decoded in parts from now on (a piece's first "
                          "audio before the rest)", voice.name)
            return
        self.log.warning("piper voice %s stays decoded whole: %s", voice.name, why)

    async def stop(self) -> None:
        for task in list(self._preparing):
            task.cancel()
        await asyncio.gather(*self._preparing, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._gate = None
        self.voices.clear()

    def ready(self) -> bool:
        return bool(self.voices) and self._executor is not None

    def voice_name(self, profile: Profile) -> str:
        mine = profile.voice if not profile.tts or profile.tts == self.name else ""
        return mine or self.settings.voice or DEFAULT_VOICE

    def voice_language(self, profile: Profile) -> str:
        """The language of ``profile``'s voice, told without loading it (``vc config
        check`` compares it with the profile's language)."""
        return voice_language(self.voice_name(profile), self.settings.voices_dir)

    def voice_for(self, profile: Profile) -> LoadedVoice:
        spec = profile.voice or self.settings.voice
        voice = self.voices.get(spec) or self.voices.get(self.settings.voice)
        if voice is None:
            raise ProviderError("the piper provider was not started")
        return voice

    async def _run(self, needed_at: float | None, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the pool, started in order of ``needed_at`` (default: now); how
        long work needed at once waited for the pool is published as stage ``tts_queue``."""
        if self._gate is None:
            raise ProviderError("the piper provider is stopped")
        asked = time.monotonic()
        urgent = needed_at is None or needed_at <= asked

        def started() -> None:
            if urgent:
                waited = time.monotonic() - asked
                self.context.observe("tts_queue_seconds", waited, {"stage": "tts_queue"})

        return await self._gate.run(asked if needed_at is None else needed_at, fn, *args,
                                    on_start=started)

    async def synthesize_piece(self, voice: LoadedVoice, text: str,
                               needed_at: float | None = None) -> bytes:
        """Synthesise one short piece in the pool (the caller may be cancelled meanwhile);
        pieces waiting for the pool start in order of ``needed_at`` (default: now)."""
        return await self._run(needed_at, voice.synthesize_piece, text, self.synthesis,
                               self._configs.get(voice.name))

    async def stream_piece(self, voice: LoadedVoice, text: str) -> AsyncIterator[bytes]:
        """A piece needed now, as it is decoded: its first part as soon as it is ready (at
        least ``first_audio_seconds``; see ``LoadedVoice.start_piece``), then the rest. The
        rest is queued at once, as urgent as a first piece; it is withdrawn if the caller
        stops listening before it starts."""
        started = await self._run(None, voice.start_piece, text, self.synthesis,
                                  self._configs.get(voice.name),
                                  self.settings.first_audio_seconds)
        if started.rest is None:
            yield started.audio
            return
        ready = time.monotonic()
        # As urgent as another call's first piece: a gap mid-word is worse than a first word
        # a little later (the first part is sized for the rest's recent wait, queue included).
        rest = asyncio.ensure_future(self._run(ready, started.rest))
        rest.add_done_callback(retrieve_failure)

        def came(done: asyncio.Future[bytes]) -> None:
            if not done.cancelled() and done.exception() is None:
                voice.rest_pace.record(time.monotonic() - ready, started.rest_frames)

        rest.add_done_callback(came)
        try:
            yield started.audio
            yield await rest
        finally:
            rest.cancel()

    def create_service(self, call: CallContext) -> PiperTTSService:
        return PiperTTSService(self, self.voice_for(call.profile), call.language,
                               sample_rate=call.output_sample_rate)

    async def synthesize(self, text: str, profile: Profile) -> AudioClip:
        """A whole phrase said before a call needs it (a greeting, an apology): kept in the
        voice's cache (:mod:`vc_tts_piper.voice_cache`), so a later start finds it made."""
        voice = self.voice_for(profile)
        if self.settings.normalize:
            text = normalize(text, profile.language)
        key = self._phrase_key(voice, text)
        loop = asyncio.get_running_loop()
        pcm = await loop.run_in_executor(self._executor, voice.cache.phrase, key)
        if pcm is None:
            pcm = b"".join([await self.synthesize_piece(voice, piece)
                            for piece in split_for_synthesis(voice.speakable(text),
                                                             self.settings.max_piece_words)])
            pcm = without_leading_silence(pcm, voice.sample_rate)
            await loop.run_in_executor(self._executor, voice.cache.keep_phrase, key, pcm)
        return AudioClip(pcm, voice.sample_rate)

    def _phrase_key(self, voice: LoadedVoice, text: str) -> str:
        """Everything that shapes a phrase's audio: the text, the synthesis settings, how
        it is split, the voice's gain, and this package's version."""
        return repr((__version__, text, self._configs.get(voice.name), self.synthesis,
                     self.settings.max_piece_words, voice.gain, voice.sample_rate))
