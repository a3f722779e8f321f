"""espeak-ng as a vc TTS provider: the provider (loaded once) and its per-call pipecat service."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import attrs
from pipecat.frames.frames import ErrorFrame, Frame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService

from vc.profiles import Profile
from vc.providers import AudioClip, CallContext, ProviderError, TTSProvider
from vc.settings import setting

ESPEAK_RATE = 22050  # espeak-ng writes 22.05 kHz mono 16-bit WAV to stdout


@attrs.define
class EspeakSettings:
    """Keys of [tts.espeak]."""

    voice: str = setting("", help="espeak-ng voice (empty: the profile's language, e.g. en, tr)")
    words_per_minute: int = setting(170, help="speaking rate")
    pitch: int = setting(50, help="pitch, 0-99")


async def speak(text: str, voice: str, settings: EspeakSettings) -> bytes:
    """PCM16 mono at 22050 Hz for ``text``."""
    proc = await asyncio.create_subprocess_exec(
        "espeak-ng", "-v", voice, "-s", str(settings.words_per_minute), "-p", str(settings.pitch),
        "--stdout", text,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        wav, err = await proc.communicate()
    except asyncio.CancelledError:  # barge-in: stop synthesising at once
        proc.kill()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"espeak-ng failed: {err.decode(errors='replace').strip()}")
    data = wav.find(b"data")
    return wav[data + 8 :] if data >= 0 else b""


class EspeakTTSService(TTSService):
    """One call's TTS. Overrides the one pipecat method a TTS service needs: run_tts."""

    def __init__(self, settings: EspeakSettings, voice: str, **kwargs: Any) -> None:
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=TTSSettings(model="espeak-ng", voice=voice, language=None),
            **kwargs,
        )
        self._espeak = settings
        self._voice = voice

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        if not text.strip():
            return
        try:
            pcm = await speak(text, self._voice, self._espeak)
        except RuntimeError as e:
            yield ErrorFrame(error=str(e))
            return

        async def chunks() -> AsyncIterator[bytes]:
            step = ESPEAK_RATE // 50 * 2  # 20 ms
            for i in range(0, len(pcm), step):
                yield pcm[i : i + step]

        async for frame in self._stream_audio_frames_from_iterator(
            chunks(), in_sample_rate=ESPEAK_RATE, context_id=context_id
        ):
            await self.stop_ttfb_metrics()
            yield frame


class EspeakTTS(TTSProvider):
    """Registered once; vc starts it before the first call and asks it for a service per call."""

    name = "espeak"
    Settings = EspeakSettings
    languages = ("en", "tr", "de", "fr", "es", "it", "pt", "nl", "pl", "ru", "ar", "hi", "ko")
    description = "espeak-ng speech synthesis (robotic, many languages)"

    async def start(self) -> None:
        if shutil.which("espeak-ng") is None:
            raise ProviderError("espeak-ng is not installed: apt-get install espeak-ng")
        await speak("ready", "en", self.settings)  # fail at startup, not during a call

    def voice_for(self, profile: Profile) -> str:
        return profile.voice or self.settings.voice or profile.language

    def create_service(self, call: CallContext) -> EspeakTTSService:
        return EspeakTTSService(self.settings, self.voice_for(call.profile),
                                sample_rate=call.output_sample_rate)

    async def synthesize(self, text: str, profile: Profile) -> AudioClip:
        return AudioClip(await speak(text, self.voice_for(profile), self.settings), ESPEAK_RATE)
