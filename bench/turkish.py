"""Turkish speech-to-text over the phone path: word error rate per decoding setting.

A fixed Turkish reference set (numbers, addresses, dates, times, everyday customer-service
sentences) is spoken by espeak-ng's Turkish voice, sent through what a call does to it (8 kHz,
G.711 µ-law encode and decode, resampled to 16 kHz for Whisper, as vc core feeds the STT) and
transcribed by faster-whisper (Whisper ``base``, ``language = tr``) under several decoding
settings. The WER is word-level Levenshtein after both sides go through vc.textnorm's Turkish
normaliser (digits, times, dates and amounts become words), Turkish lower-casing (İ/ı), and
punctuation, apostrophe and circumflex stripping.

No natural-sounding Turkish voice is packaged on PyPI (no Turkish Piper voice; the Turkish TTS
packages found all download their weights from a model hub at run time; MBROLA's Turkish voices
are not in the Debian archive this machine reaches), so espeak-ng is the only speech source. It
is robotic and hard for Whisper: read the numbers as a lower bound on real callers.

    python bench/turkish.py                    # every setting, ~15 min on 2 shared cores
    python bench/turkish.py --quick            # 8 sentences, 3 settings
    python bench/turkish.py --only beam5,beam5-prompt

Writes ``bench/results/<date>-turkish-stt.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import unicodedata
from pathlib import Path
from typing import Any

from vc.audio import pcm_to_ulaw, resample, ulaw_to_pcm
from vc.testing.calls import speech
from vc.textnorm import lower, normalize

RESULTS = Path(__file__).parent / "results"

#: The reference set: what a Turkish caller says to a customer-service line. Written as a
#: person (or an STT) writes it: digits, times and dates as numbers.
SENTENCES: tuple[str, ...] = (
    "Merhaba, siparişimin durumunu öğrenmek istiyorum.",
    "Sipariş numaram 48172.",
    "Kargom dün gelmesi gerekiyordu ama hâlâ gelmedi.",
    "Adresim Atatürk Caddesi 23 numara, daire 5, Kadıköy İstanbul.",
    "Teslimatı 14 Ekim Salı günü saat 15:30'a alabilir miyiz?",
    "Faturamı e-posta adresime gönderebilir misiniz?",
    "Aboneliğimi iptal etmek istiyorum.",
    "Hesabımdaki bakiyeyi öğrenmek istiyorum.",
    "Telefon numaram 0532 418 27 63.",
    "Randevumu yarın sabah 9'a almak istiyorum.",
    "Mağaza cumartesi günü saat kaçta açılıyor?",
    "Evdeki internet bu sabahtan beri çalışmıyor.",
    "Geçen ay 249 lira fazla ödeme yaptım.",
    "Beni müşteri hizmetlerine bağlar mısınız?",
    "Şifremi unuttum, yeni bir şifre almak istiyorum.",
    "Posta kodum 06420, Çankaya Ankara.",
    "Kredi kartımla 3 taksit yapabilir miyim?",
    "Ürünü iade etmek istiyorum, kutusu açılmadı.",
    "Cuma günü öğleden sonra evde olacağım.",
    "Bu akşam iki kişilik bir masa ayırtmak istiyorum.",
    "Doğum tarihim 12 Mart 1985.",
    "Toplam tutar ne kadar, kampanya var mı?",
    "Lütfen beni saat 17:00'den sonra arayın.",
    "Çok teşekkür ederim, iyi günler.",
)

#: Words a Turkish customer-service line hears: the initial prompt of the ``prompt`` settings.
DOMAIN_PROMPT = (
    "Müşteri hizmetleri görüşmesi. Sipariş, kargo, teslimat, fatura, abonelik, iptal, iade, "
    "bakiye, randevu, adres, cadde, sokak, numara, daire, posta kodu, telefon numarası, "
    "şifre, taksit, kredi kartı, lira."
)

#: Decoding settings compared: name -> (FasterWhisperSettings fields, extra faster-whisper
#: options). ``no_speech_threshold`` is not a vc setting (vc never drops a segment the VAD
#: found speech in); it is measured here to see whether dropping would help.
SETTINGS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "beam1": ({"beam_size": 1}, {}),
    "beam5": ({"beam_size": 5}, {}),
    "beam1-prompt": ({"beam_size": 1, "initial_prompt": DOMAIN_PROMPT}, {}),
    "beam5-prompt": ({"beam_size": 5, "initial_prompt": DOMAIN_PROMPT}, {}),
    "beam5-fallback": ({"beam_size": 5, "temperature_fallback": True}, {}),
    "beam5-prompt-fallback": (
        {"beam_size": 5, "initial_prompt": DOMAIN_PROMPT, "temperature_fallback": True}, {}),
    "beam5-prompt-vad": ({"beam_size": 5, "initial_prompt": DOMAIN_PROMPT, "vad_filter": True},
                         {}),
    "beam5-prompt-nospeech0.6": (
        {"beam_size": 5, "initial_prompt": DOMAIN_PROMPT},
        {"no_speech_threshold": 0.6, "log_prob_threshold": -1.0}),
}
QUICK_SETTINGS = ("beam1", "beam5", "beam5-prompt")

#: Speech sources: name -> (espeak-ng voice, words per minute).
VOICES: dict[str, tuple[str, int]] = {
    "espeak-tr-150": ("tr", 150),
    "espeak-tr-120": ("tr", 120),
}


# -- scoring --------------------------------------------------------------------------------

_FOLD = str.maketrans({"â": "a", "î": "i", "û": "u", "’": "", "'": "", "-": " "})


def words(text: str) -> list[str]:
    """``text`` as comparable Turkish words: numbers read out, lower-cased the Turkish way,
    apostrophes joined (``15:30'a`` and ``15.30 a`` both end as ``on beş otuza``-like words),
    punctuation dropped."""
    text = normalize(text, "tr")
    text = unicodedata.normalize("NFC", lower(text, "tr")).translate(_FOLD)
    return re.findall(r"[^\W_]+", text)


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Word-level Levenshtein distance (substitutions, deletions, insertions)."""
    row = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        diag, row[0] = row[0], i
        for j in range(1, len(hyp) + 1):
            above = row[j]
            row[j] = min(above + 1, row[j - 1] + 1, diag + (ref[i - 1] != hyp[j - 1]))
            diag = above
    return row[len(hyp)]


def wer(refs: list[str], hyps: list[str]) -> float:
    """Word error rate over a set: all errors / all reference words."""
    pairs = list(zip(refs, hyps, strict=True))
    errors = sum(edit_distance(words(r), words(h)) for r, h in pairs)
    return errors / max(1, sum(len(words(r)) for r, _ in pairs))


# -- audio ----------------------------------------------------------------------------------


def phone_line(text: str, voice: str, wpm: int) -> bytes:
    """``text`` as the STT receives it from a phone call: espeak-ng at 8 kHz, G.711 µ-law
    there and back, resampled to 16 kHz (what core does before Whisper)."""
    pcm8k = speech(normalize(text, "tr"), 8000, voice, wpm)
    return resample(ulaw_to_pcm(pcm_to_ulaw(pcm8k)), 8000, 16000)


def wideband(text: str, voice: str, wpm: int) -> bytes:
    """The same speech at 16 kHz without the phone line, for comparison."""
    return speech(normalize(text, "tr"), 16000, voice, wpm)


# -- running --------------------------------------------------------------------------------


def make_transcriber(fields: dict[str, Any], extra: dict[str, Any], cache_dir: str,
                     threads: int) -> Any:
    from vc_stt_faster_whisper.models import resolve_model
    from vc_stt_faster_whisper.settings import FasterWhisperSettings
    from vc_stt_faster_whisper.transcriber import Transcriber

    class Measured(Transcriber):
        def options(self, audio_seconds: float) -> dict[str, Any]:
            return {**super().options(audio_seconds), **extra}

    settings = FasterWhisperSettings(model="base", language="tr", cpu_threads=threads,
                                     num_workers=1, cache_dir=cache_dir, **fields)
    t = Measured(resolve_model("base", cache_dir), settings)
    t.load()
    return t


def run_setting(name: str, clips: list[bytes], cache_dir: str, threads: int) -> dict[str, Any]:
    fields, extra = SETTINGS[name]
    t = make_transcriber(fields, extra, cache_dir, threads)
    try:
        t.transcribe_sync(clips[0], "tr")  # warm-up, not counted
        texts, seconds = [], []
        for clip in clips:
            result = t.transcribe_sync(clip, "tr")
            texts.append(result.text)
            seconds.append(result.seconds)
    finally:
        t.close()
    return {"texts": texts, "seconds": seconds}


def summarise(refs: list[str], texts: list[str], seconds: list[float]) -> dict[str, Any]:
    ref_words = sum(len(words(r)) for r in refs)
    hyp_words = sum(len(words(h)) for h in texts)
    return {
        "wer": round(wer(refs, texts), 3),
        "sentences_exact": sum(words(r) == words(h) for r, h in zip(refs, texts, strict=True)),
        "empty": sum(not words(h) for h in texts),
        "hyp_words_per_ref_word": round(hyp_words / max(1, ref_words), 2),
        "seconds_p50": round(statistics.median(seconds), 3),
        "seconds_max": round(max(seconds), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 sentences, 3 settings")
    parser.add_argument("--only", default="", help="comma-separated settings")
    parser.add_argument("--voices", default=",".join(VOICES), help="comma-separated sources")
    parser.add_argument("--threads", type=int, default=2, help="CTranslate2 CPU threads")
    parser.add_argument("--cache-dir", default=os.environ.get("VC_CACHE_DIR", ""),
                        help="where Whisper base is assembled (default: vc's cache)")
    parser.add_argument("--label", default="", help="appended to the result file names")
    args = parser.parse_args(argv)

    refs = list(SENTENCES[:8] if args.quick else SENTENCES)
    names = [n for n in args.only.split(",") if n] or list(
        QUICK_SETTINGS if args.quick else SETTINGS)
    voices = [v for v in args.voices.split(",") if v]
    cache_dir = args.cache_dir or str(Path(tempfile.gettempdir()) / "vc-bench-whisper")
    runs: list[dict[str, Any]] = []
    load_before = [round(x, 2) for x in os.getloadavg()]
    started = time.monotonic()
    for voice_name in voices:
        voice, wpm = VOICES[voice_name]
        paths = {"8k-ulaw": [phone_line(s, voice, wpm) for s in refs]}
        if voice_name == voices[0]:
            paths["16k"] = [wideband(s, voice, wpm) for s in refs]
        for path, clips in paths.items():
            for name in names if path == "8k-ulaw" else names[:2]:
                load = [round(x, 2) for x in os.getloadavg()]
                out = run_setting(name, clips, cache_dir, args.threads)
                row = {"voice": voice_name, "path": path, "setting": name,
                       "settings": SETTINGS[name][0] | SETTINGS[name][1], "load_before": load,
                       **summarise(refs, out["texts"], out["seconds"]),
                       "utterances": [{"ref": r, "hyp": h, "seconds": round(s, 3)}
                                      for r, h, s in zip(refs, out["texts"], out["seconds"],
                                                         strict=True)]}
                runs.append(row)
                print(f"{voice_name:14} {path:8} {name:26} WER {row['wer']:.3f} exact "
                      f"{row['sentences_exact']}/{len(refs)} p50 {row['seconds_p50']:.2f}s "
                      f"max {row['seconds_max']:.2f}s load {load}", flush=True)
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "model": "Whisper base (faster-whisper, int8 on CPU), language tr",
        "threads": args.threads,
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "minutes": round((time.monotonic() - started) / 60, 1),
        "sentences": refs,
        "domain_prompt": DOMAIN_PROMPT,
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    stem = f"{dt.date.today().isoformat()}-turkish-stt" + (f"-{args.label}" if args.label else "")
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(result))
    print(f"wrote {RESULTS / stem}.json and .md")
    return 0


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Turkish STT, {result['date']}",
        "",
        f"{result['model']}; {len(result['sentences'])} reference sentences spoken by espeak-ng "
        f"Turkish; {result['machine']['cpus']} CPUs, {result['threads']} threads; load average "
        f"{result['load_before']} before, {result['load_after']} after; "
        f"{result['minutes']} minutes.",
        "",
        "| voice | path | setting | WER | exact sentences | hyp/ref words | empty | "
        "p50 s | max s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    n = len(result["sentences"])
    for r in result["runs"]:
        lines.append(
            f"| {r['voice']} | {r['path']} | {r['setting']} | {r['wer']:.3f} | "
            f"{r['sentences_exact']}/{n} | {r['hyp_words_per_ref_word']} | {r['empty']} | "
            f"{r['seconds_p50']:.2f} | {r['seconds_max']:.2f} |")
    phone = [r for r in result["runs"] if r["path"] == "8k-ulaw"]
    voices = list(dict.fromkeys(r["voice"] for r in phone))
    mean = {}
    for name in dict.fromkeys(r["setting"] for r in phone):
        rows = {r["voice"]: r["wer"] for r in phone if r["setting"] == name}
        mean[name] = sum(rows.values()) / len(rows)
        if len(voices) > 1 and name == next(iter(mean)):
            lines += ["", "Over the phone path (8k-ulaw), per setting:", "",
                      "| setting | " + " | ".join(voices) + " | mean WER |",
                      "|---|" + "---|" * (len(voices) + 1)]
        if len(voices) > 1:
            lines.append(f"| {name} | " + " | ".join(
                f"{rows[v]:.3f}" if v in rows else "" for v in voices) + f" | {mean[name]:.3f} |")
    chosen = min(mean, key=lambda n: (round(mean[n], 3), len(n)))  # ties: the simplest
    best = min((r for r in phone if r["setting"] == chosen), key=lambda r: r["wer"])
    lines += ["", f"Lowest mean WER over the phone path: {chosen} (ties go to the setting with "
              "fewer options).", "",
              f"## Transcripts: {best['setting']}, {best['voice']}, {best['path']}", ""]
    for u in best["utterances"]:
        lines.append(f"* {u['ref']} → {u['hyp']!r}")
    lines += ["", f"Domain prompt: {result['domain_prompt']}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
