"""Measurements for docs/stt.md (``-m slow -s``): end of speech to final transcript, and how
well the small Korean model understands espeak-ng's Korean (character error rate)."""

from __future__ import annotations

import statistics
import time

import pytest
from pipecat.frames.frames import TranscriptionFrame, VADUserStoppedSpeakingFrame
from vosk_helpers import Harness, call_context, korean
from vosk_test_server import VoskTestServer

PHRASES = ("여보세요", "감사합니다", "문제가 있습니다", "회의가 있습니다", "죄송합니다",
           "안녕하세요", "오늘 날씨가 정말 좋네요", "내일 다시 전화해 주세요",
           "예약을 취소하고 싶습니다", "확인해 주세요")


def cer(ref: str, hyp: str) -> tuple[int, int]:
    r, h = ref.replace(" ", ""), hyp.replace(" ", "")
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            cur = d[j]
            d[j] = min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
            prev = cur
    return d[len(h)], len(r)


async def measure(service, phrases, trailing: float) -> tuple[list[float], list[str]]:
    """Real-time audio; seconds from the VAD stop to each final, and the finals."""
    delays, texts = [], []
    async with Harness(service) as h:
        for i, phrase in enumerate(phrases):
            speech_only = korean(phrase)[: -16000 * 6 // 10 * 2]
            await h.utterance(speech_only + bytes(6400), pace=0.02)  # VAD stops after 0.2 s
            await h.audio(bytes(int(16000 * 2 * trailing)), pace=0.02)  # the line stays open
            await h.transcript(i + 1, within=30)
            stop = [t for t, f in h.down.frames if isinstance(f, VADUserStoppedSpeakingFrame)][-1]
            final = [t for t, f in h.down.frames if isinstance(f, TranscriptionFrame)][-1]
            delays.append(final - stop)
            texts.append(h.transcripts[-1])
        await h.end()
    return delays, texts


def summary(label: str, delays: list[float], texts: list[str], phrases) -> None:
    errors = [cer(p, t) for p, t in zip(phrases, texts, strict=True)]
    rate = sum(e for e, _ in errors) / sum(n for _, n in errors)
    print(f"\n{label}: VAD stop -> final p50 {statistics.median(delays):.3f}s, "
          f"max {max(delays):.3f}s; CER {rate:.2f}")
    for p, t in zip(phrases, texts, strict=True):
        print(f"    {p} -> {t}")


@pytest.mark.slow
async def test_local_latency(local) -> None:
    t0 = time.monotonic()
    delays, texts = await measure(local.create_service(call_context()), PHRASES, trailing=2.5)
    summary("vosk local (finish at VAD stop)", delays, texts, PHRASES)
    assert len(texts) == len(PHRASES) and time.monotonic() > t0


@pytest.mark.slow
@pytest.mark.parametrize("reset", [False, True])
async def test_websocket_latency(started, server: VoskTestServer, reset: bool) -> None:
    p = await started("ws", url=server.url, finalize_on_vad_stop=reset)
    delays, texts = await measure(p.create_service(call_context()), PHRASES, trailing=2.5)
    how = 'with {"reset" : 1} at VAD stop' if reset else "server endpointing only"
    summary(f"vosk-websocket ({how})", delays, texts, PHRASES)
    assert len(texts) == len(PHRASES)
