"""espeak-ng as a vc TTS provider: the provider (started once) and its per-call pipecat service.

Text is normalised for the call's language first (:mod:`vc.textnorm`: numbers, dates, times,
currency, Turkish casing), as a pipecat text transform. pipecat's sentence aggregation hands
``run_tts`` one sentence at a time as the LLM writes; each sentence is one espeak-ng process
whose audio streams out as it is rendered (first audio ~10 ms), resampled with
:class:`vc.audio.StreamResampler` from espeak-ng's 22050 Hz to the call's rate (8000 Hz on the
phone path). Barge-in cancels the task reading the process, which kills it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import attrs
from pipecat.frames.frames import ErrorFrame, Frame, TTSAudioRawFrame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService

from vc.audio import StreamResampler, resample
from vc.profiles import Profile
from vc.providers import AudioClip, CallContext, ProviderContext, ProviderError, TTSProvider
from vc.settings import setting
from vc.textnorm import normalize
from vc_tts_espeak.engine import (
    Run,
    Voice,
    find_binary,
    language_of,
    list_voices,
    voice_exists,
)

#: BCP-47 primary tags of the languages espeak-ng 1.5x speaks (what `vc list-plugins` shows
#: while no voice is configured; a configured ``voice`` narrows an instance to its language).
LANGUAGES: tuple[str, ...] = (
    "af", "am", "an", "ar", "as", "az", "ba", "be", "bg", "bn", "bs", "ca", "cmn", "cs", "cv",
    "cy", "da", "de", "el", "en", "eo", "es", "et", "eu", "fa", "fi", "fr", "ga", "gd", "gn",
    "gu", "he", "hi", "hr", "ht", "hu", "hy", "ia", "id", "is", "it", "ja", "ka", "kk", "kl",
    "kn", "ko", "ku", "ky", "la", "lb", "lt", "lv", "mi", "mk", "ml", "mr", "ms", "mt", "my",
    "nb", "ne", "nl", "om", "or", "pa", "pl", "pt", "qu", "ro", "ru", "sd", "si", "sk", "sl",
    "sq", "sr", "sv", "sw", "ta", "te", "th", "tk", "tn", "tr", "tt", "ug", "uk", "ur", "uz",
    "vi", "yue",
)
_VOICE_NAME = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9_./-]*(?:\+[A-Za-z0-9_-]+)?)?")
#: What start() synthesises once, so a broken installation fails at startup, not in a call.
WARM_TEXT = {"tr": "Hazır.", "en": "Ready."}


def _voice_name(instance: Any, attribute: Any, value: str) -> None:
    if not _VOICE_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not an espeak-ng voice name (like tr, en-us, en-us+f3)")


@attrs.define
class EspeakSettings:
    """Keys of ``[tts.espeak]``."""

    voice: str = setting(
        "", validator=_voice_name,
        help="espeak-ng voice: a language (tr, en-us, en-gb, de...) or voice name, with an "
        "optional +variant (en-us+f3); empty: each profile's `voice` if espeak-ng has it, else "
        "the profile's language. `espeak-ng --voices` lists them")
    words_per_minute: int = setting(160, min=80, max=450, help="speaking rate, words per minute")
    pitch: int = setting(50, min=0, max=99, help="base pitch, 0-99")
    amplitude: int = setting(100, min=0, max=200, help="volume, 0-200")
    gap: int = setting(0, min=0, max=100,
                       help="extra pause between words, in units of 10 ms at the default speed")
    sample_rate: int = setting(
        0, choices=(0, 8000, 16000, 22050),
        help="rate espeak-ng's 22050 Hz audio is resampled to (vc.audio's soxr resampler): 0 = "
        "each call's own rate (8000 on the phone path), and 22050 for greeting clips")
    normalize: bool = setting(
        True, help="spell out numbers, dates, times, currency, URLs (vc.textnorm, English and "
        "Turkish rules); drop markdown and emoji")
    binary: str = setting("espeak-ng", help="the espeak-ng program: a name on PATH or a path")


class EspeakTTSService(TTSService):
    """One call's TTS: one espeak-ng process per sentence, streamed, resampled, killable."""

    def __init__(self, provider: EspeakTTS, voice: Voice, language: str, **kwargs: Any) -> None:
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=TTSSettings(model="espeak-ng", voice=voice.name, language=language),
            # Text with nothing to say (emoji only) never opens an audio context, and the LLM
            # context keeps the text as written.
            text_transforms=[("*", self._transform)],
            # A failed request is reported (ErrorFrame) but never ends TTS for the call.
            max_consecutive_zero_audio_contexts=0,
            **kwargs,
        )
        self._provider = provider
        self._voice = voice
        self._language = language
        #: What was sent to espeak-ng, request by request (diagnostics, tests).
        self.spoken: list[str] = []
        #: The espeak-ng runs of the requests, in order (tests check barge-in killed them).
        self.runs: list[Run] = []

    def can_generate_metrics(self) -> bool:
        return True

    async def _transform(self, text: str, text_type: str) -> str:
        return self._provider.prepare(text, self._language)

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        if not any(c.isalnum() for c in text):
            return
        self.spoken.append(text)
        await self.start_tts_usage_metrics(text)
        rate = self._provider.settings.sample_rate or self.sample_rate
        try:
            # Leaving this block early (barge-in cancels the task reading it) kills espeak-ng.
            async with self._provider.run(self._voice, text) as run:
                self.runs.append(run)
                async for pcm in _resampled(_resampled(run.pcm(), run, rate), rate,
                                            self.sample_rate):
                    await self.stop_ttfb_metrics()
                    yield TTSAudioRawFrame(pcm, self.sample_rate, 1, context_id=context_id)
        except ProviderError as e:
            yield ErrorFrame(error=f"espeak-ng could not speak {text[:60]!r}: {e}")


async def _resampled(pcm: AsyncIterator[bytes], source: Run | int, rate: int
                     ) -> AsyncIterator[bytes]:
    """``pcm`` at ``rate``: one streaming resampler per request, flushed at its end. ``source``
    is the rate of ``pcm``, or the run that knows it once it has read its WAV header."""
    resampler: StreamResampler | None = None
    async for chunk in pcm:
        if resampler is None:
            from_rate = source if isinstance(source, int) else source.sample_rate
            if from_rate == rate:
                yield chunk
                continue
            resampler = StreamResampler(from_rate, rate, "HQ")
        out = resampler.process(chunk)
        if out:
            yield out
    if resampler is not None:
        tail = resampler.process(b"", last=True)
        if tail:
            yield tail


class EspeakTTS(TTSProvider):
    """espeak-ng, started once; a service per call."""

    name = "espeak"
    Settings = EspeakSettings
    languages = LANGUAGES
    description = "espeak-ng speech synthesis: local, ~10 ms to first audio, robotic, 90+ languages"

    def __init__(self, settings: EspeakSettings, context: ProviderContext) -> None:
        super().__init__(settings, context)
        if settings.voice:  # one voice for every call: that voice's language only
            self.languages = (language_of(settings.voice),)
        self.binary: str | None = None
        #: Every name ``-v`` accepts, once started.
        self.known_voices: set[str] | None = None
        #: The espeak-ng processes running now, across calls.
        self.running: set[Run] = set()

    async def start(self) -> None:
        self.binary = find_binary(self.settings.binary)
        self.known_voices = await list_voices(self.binary)
        if self.settings.voice and not voice_exists(self.settings.voice, self.known_voices):
            raise ProviderError(
                f"[tts.espeak] voice = {self.settings.voice!r}: espeak-ng has no such voice "
                "(`espeak-ng --voices` lists them; e.g. tr, en-us, en-gb)")
        profiles = self.context.profiles or [Profile("default")]
        for profile in profiles:
            voice = self.voice_for(profile)
            if profile.voice and profile.tts in ("", self.name) and voice != profile.voice:
                self.log.warning("profile %s: espeak-ng has no voice %r; speaking with %r",
                                 profile.name, profile.voice, voice)
        # Fail at startup, not during a call: one short synthesis with the first profile's voice.
        first = profiles[0]
        await self.render(WARM_TEXT.get(language_of(first.language), "Ready."), first)
        self.log.info("espeak-ng %s ready (voices: %s)", self.binary,
                      ", ".join(sorted({self.voice_for(p) for p in profiles})))

    async def stop(self) -> None:
        for run in list(self.running):
            await run.close()
        self.running.clear()
        self.known_voices = None

    def ready(self) -> bool:
        return self.binary is not None and self.known_voices is not None

    def voice_for(self, profile: Profile) -> str:
        """The ``-v`` name for ``profile``: its own voice, [tts.espeak] voice, or its language."""
        mine = profile.voice if profile.tts in ("", self.name) else ""
        candidates = [mine, self.settings.voice, profile.language, "en"]
        for name in candidates:
            if name and (self.known_voices is None or voice_exists(name, self.known_voices)):
                return name
        return "en"

    def voice_name(self, profile: Profile) -> str:
        return self.voice_for(profile)

    def voice_language(self, profile: Profile) -> str:
        """The language of the voice ``profile`` is spoken with ("" when the voice is named
        by a description such as ``turkish-mbrola-1`` rather than a language tag); what
        ``vc config check`` compares with the profile's language."""
        language = language_of(self.voice_for(profile))
        return language if 2 <= len(language) <= 3 else ""

    def voice(self, profile: Profile) -> Voice:
        s = self.settings
        return Voice(self.voice_for(profile), s.words_per_minute, s.pitch, s.amplitude, s.gap)

    def prepare(self, text: str, language: str) -> str:
        """The text espeak-ng should read: normalised for ``language`` (if enabled)."""
        if self.settings.normalize:
            text = normalize(text, language)
        return text.strip()

    def run(self, voice: Voice, text: str) -> _Tracked:
        """An espeak-ng process for ``text`` (use as ``async with``)."""
        if self.binary is None:
            raise ProviderError("the espeak provider was not started")
        return _Tracked(self, Run(self.binary, voice, text))

    async def render(self, text: str, profile: Profile) -> tuple[bytes, int]:
        """All of ``text`` (already prepared) as PCM16, and its sample rate."""
        async with self.run(self.voice(profile), text) as run:
            pcm = b"".join([chunk async for chunk in run.pcm()])
            return pcm, run.sample_rate

    def create_service(self, call: CallContext) -> EspeakTTSService:
        return EspeakTTSService(self, self.voice(call.profile), call.language,
                                sample_rate=call.output_sample_rate)

    async def synthesize(self, text: str, profile: Profile) -> AudioClip:
        pcm, rate = await self.render(self.prepare(text, profile.language), profile)
        if self.settings.sample_rate and self.settings.sample_rate != rate:
            pcm, rate = resample(pcm, rate, self.settings.sample_rate), self.settings.sample_rate
        return AudioClip(pcm, rate)


class _Tracked:
    """A :class:`Run` the provider knows about while it runs (``stop()`` kills what is left)."""

    def __init__(self, provider: EspeakTTS, run: Run) -> None:
        self.provider = provider
        self.inner = run

    async def __aenter__(self) -> Run:
        self.provider.running.add(self.inner)
        try:
            return await self.inner.__aenter__()
        except BaseException:
            self.provider.running.discard(self.inner)
            raise

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.inner.close()
        finally:
            self.provider.running.discard(self.inner)
