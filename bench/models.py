"""Pure model times: each model of the default stack alone, warm, on the reference questions.

* STT: faster-whisper on the question as it crossed the phone line (µ-law), followed by the
  VAD's stop delay and pipecat's 0.5 s of padding, as the pipeline hands it over.
* LLM: the first token and the first clause (cut as vc's TTS cuts it) of the answer to the
  question as transcribed, for a new caller (system prompt cached; greeting and question
  not).
* TTS: Piper synthesising the first piece of that clause.

The latency benchmark's "remaining overhead" is the measured voice-to-voice time minus the
sum of these (plus the VAD's stop delay): what the pipeline, the transport and CPU contention
add on top of the models themselves. The providers are vc's own, with their default
settings, so the models run exactly as configured in ``vc serve``.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from typing import Any

from utterances import QUESTIONS, utterance

from vc.audio import pcm_to_ulaw, resample, ulaw_to_pcm

REPEATS = 3


def _context(kind: str, cls: type, **overrides: Any) -> Any:
    from vc.profiles import Profile
    from vc.providers import ProviderContext

    settings = cls.Settings(**overrides) if cls.Settings is not None else None
    return cls(settings, ProviderContext(profiles=[Profile("default")], log=logging.getLogger(kind)))


async def first_clause(model: Any, sampling: Any, messages: list[dict[str, Any]]
                       ) -> tuple[float, float, str]:
    """(first token, first clause, clause text) for one reply, as vc's TTS would cut it."""
    from vc_tts_piper.clauses import ClauseAggregator

    aggregator = ClauseAggregator(min_words=4)
    t0 = time.monotonic()
    first_token = None
    clause = ""
    text = ""
    pieces = model.stream(messages, sampling)
    try:
        async for piece in pieces:
            if first_token is None and piece.strip():
                first_token = time.monotonic() - t0
            text += piece
            async for agg in aggregator.aggregate(piece):
                clause = agg.text
                break
            if clause:
                break
    finally:
        await pieces.aclose()
    if not clause:
        clause = text.strip()
    return first_token or 0.0, time.monotonic() - t0, clause


async def measure(stop_secs: float) -> dict[str, Any]:
    from vc_llm_llama_ws.embedded import LlamaCppProvider
    from vc_llm_llama_ws.generation import Sampling
    from vc_stt_faster_whisper.provider import FasterWhisperSTT
    from vc_tts_piper.clauses import split_for_synthesis
    from vc_tts_piper.local import PiperProvider
    from vc_tts_piper.normalize import normalize

    from vc.profiles import DEFAULT_GREETING, DEFAULT_SYSTEM_PROMPT, Profile

    # The model in this process (isolation = thread), so that each repeat can put its cache
    # back to the system prompt alone (the child process's model has no such call).
    stt, llm, tts = (_context("stt", FasterWhisperSTT),
                     _context("llm", LlamaCppProvider, isolation="thread"),
                     _context("tts", PiperProvider))
    for p in (stt, llm, tts):
        await p.start()
    rows = []
    try:
        for q in QUESTIONS:
            pcm8 = ulaw_to_pcm(pcm_to_ulaw(utterance(q).pcm))  # as it crossed the phone line
            # What the STT gets: speech, the VAD's stop delay, pipecat's 0.5 s of padding.
            pcm16 = resample(pcm8 + bytes(int(8000 * stop_secs) * 2), 8000, 16000) + bytes(16000)
            stt_times, text = [], ""
            for _ in range(REPEATS):
                t = await stt.transcriber.transcribe(pcm16, "en")
                stt_times.append(t.seconds)
                text = t.text
            s = llm.settings
            sampling = Sampling(temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens,
                                repeat_penalty=s.repeat_penalty)
            messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                        {"role": "assistant", "content": DEFAULT_GREETING},
                        {"role": "user", "content": text}]
            token_times, clause_times, clause = [], [], ""
            for _ in range(REPEATS):
                # As for a new caller: the system prompt is cached, the greeting and the
                # question are not (mid-call turns have fewer new tokens: only the question).
                await llm.default.warm([DEFAULT_SYSTEM_PROMPT])
                tok, cl, clause = await first_clause(llm.default, sampling, messages)
                token_times.append(tok)
                clause_times.append(cl)
            voice = tts.voice_for(Profile("default"))
            piece = split_for_synthesis(voice.speakable(normalize(clause, "en")), 16)[0]
            tts_times = []
            for _ in range(REPEATS):
                t0 = time.monotonic()
                await tts.synthesize_piece(voice, piece)
                tts_times.append(time.monotonic() - t0)
            row = {
                "question": q, "heard": text, "first_clause": clause,
                "stt": statistics.median(stt_times), "llm_first_token": statistics.median(token_times),
                "llm_first_clause": statistics.median(clause_times),
                "tts_first_chunk": statistics.median(tts_times),
            }
            rows.append(row)
    finally:
        for p in (stt, llm, tts):
            await p.stop()

    def med(key: str) -> float:
        return round(statistics.median(r[key] for r in rows), 4)

    return {
        "vad_stop_secs": stop_secs,
        "per_question": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
                         for r in rows],
        "median": {k: med(k) for k in ("stt", "llm_first_token", "llm_first_clause",
                                        "tts_first_chunk")},
        "sum_of_pure_model_times": round(stop_secs + med("stt") + med("llm_first_clause")
                                         + med("tts_first_chunk"), 4),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(asyncio.run(measure(0.4)), indent=2))
