"""Load test: more and more simultaneous conversations until a latency budget breaks.

Each simulated caller phones in as Twilio does (voice webhook, Media Stream, µ-law at real time),
waits for the greeting, then asks the reference questions one after another with a random
pause to think between an answer and the next question, as people do. Step by step the number
of callers grows (``--steps``); each step runs ``--step-seconds``. A step passes while the
voice-to-voice p95 stays within ``--budget`` and every question is answered; the knee is the
last step that passed. Against a local server (the default: ``vc serve``'s embedded default
stack, started here) the server's CPU-seconds per answered turn are reported too.

    python bench/load.py                                   # nox -s load
    python bench/load.py --steps 1,2,4 --step-seconds 30   # a quick look
    python bench/load.py --url https://vc.example.com --auth-token "$TWILIO_AUTH_TOKEN"

Against a deployed vc (GKE, Cloud Run) the simulator signs its webhooks with the account's
auth token, exactly as Twilio would; run it from a machine near the deployment. Results:
``bench/results/<date>-load[-label].{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).parent))
from report import STALL_S
from scenarios import ANSWER_TIMEOUT, cpu_seconds, stall_and_offset
from utterances import QUESTIONS, utterance
from vc_transport_twilio.conversation import percentile, speak, wait_quiet
from vc_transport_twilio.demo_server import ServerProcess
from vc_transport_twilio.simulator import TwilioCloud

RESULTS = Path(__file__).parent / "results"
#: Stages in the order a turn passes them (``llm_queue``: waiting for the model; ``tts_queue``:
#: a piece needed at once, a reply's first, waiting for a Piper synthesis slot;
#: ``tts_held_wait``: a released reply waiting for its first piece, begun while it was held).
STAGE_ORDER = ("vad_stop", "stt", "llm_queue", "llm_first_token", "tts_queue", "tts_held_wait",
               "tts_first_audio", "voice_to_voice", "barge_in")
#: How long a caller waits for an answer before the question counts as unanswered.
UNANSWERED_S = 10.0


async def caller(cloud: TwilioCloud, until: float, rng: random.Random,
                 think: tuple[float, float]
                 ) -> tuple[list[float | None], list[tuple[float, float]]]:
    """One conversation until ``until``: each question's voice-to-voice time (None if
    unanswered), and the longest stall in each answer's audio (``longest_stall``)."""
    call = await cloud.place_call()
    out: list[float | None] = []
    replies: list[list[float]] = []  # [first audio of an answer, the next question's onset]
    with contextlib.suppress(TimeoutError):
        await call.wait_for_bot_speech(after=call.connected_at or 0.0, within=ANSWER_TIMEOUT)
    while time.monotonic() < until:
        await wait_quiet(call, within=ANSWER_TIMEOUT)
        await asyncio.sleep(rng.uniform(*think))
        if time.monotonic() >= until:
            break
        onset, end = await speak(call, utterance(rng.choice(QUESTIONS)))
        if replies:
            replies[-1][1] = min(replies[-1][1], onset)
        try:
            heard = await call.wait_for_bot_speech(after=end, within=UNANSWERED_S)
            out.append(heard - end)
            replies.append([heard, float("inf")])
        except TimeoutError:
            out.append(None)
    await call.hangup()
    with contextlib.suppress(TimeoutError):
        await call.wait_closed(within=10)
    return out, [stall_and_offset(call.media, a, b) for a, b in replies]


def stage_totals(url: str) -> dict[str, tuple[float, float]]:
    """Each stage's (sum, count) from vc's ``/metrics`` (empty where it cannot be read)."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    totals: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "vc_stage_latency_seconds":
            continue
        for sample in family.samples:
            kind = sample.name.rsplit("_", 1)[-1]
            if kind in ("sum", "count"):
                totals.setdefault(sample.labels["stage"], [0.0, 0.0])[kind == "count"] = sample.value
    return {stage: (s, c) for stage, (s, c) in totals.items()}


def stage_means(before: dict[str, tuple[float, float]],
                after: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Mean seconds per stage between two :func:`stage_totals` readings (where it ran)."""
    out = {}
    for stage, (s1, c1) in after.items():
        s0, c0 = before.get(stage, (0.0, 0.0))
        if c1 > c0:
            out[stage] = round((s1 - s0) / (c1 - c0), 3)
    return out


async def step(cloud: TwilioCloud, n: int, seconds: float, pid: int,
               think: tuple[float, float], seed: int) -> dict[str, Any]:
    """``n`` conversations at once for ``seconds``: their turns, the server's CPU use and the
    mean of each stage vc reports (``vc_stage_latency_seconds``: where the time went)."""
    stages0 = await asyncio.to_thread(stage_totals, cloud.local_url)
    cpu0, t0, load0 = tree_cpu_seconds(pid) if pid else 0.0, time.monotonic(), os.getloadavg()
    until = t0 + seconds
    rngs = [random.Random(seed * 1000 + i) for i in range(n)]
    # Callers join a little apart, as calls arrive in life (not all in the same 20 ms frame).
    async def join(i: int) -> tuple[list[float | None], list[tuple[float, float]]]:
        await asyncio.sleep(i * min(1.0, seconds / (4 * n)))
        return await caller(cloud, until, rngs[i], think)

    runs = await asyncio.gather(*(join(i) for i in range(n)))
    turns = [t for run, _ in runs for t in run]
    stalls = [s for _, run in runs for s in run]
    answered = [t for t in turns if t is not None]
    cpu = (tree_cpu_seconds(pid) - cpu0) if pid else None
    stages = stage_means(stages0, await asyncio.to_thread(stage_totals, cloud.local_url))
    return {
        "calls": n, "seconds": round(time.monotonic() - t0, 1), "turns": len(turns),
        "unanswered": len(turns) - len(answered),
        "p50": _r(percentile(answered, 50)), "p95": _r(percentile(answered, 95)),
        "max": _r(max(answered, default=None)),
        "stalled_replies": sum(1 for s, _ in stalls if s > STALL_S),
        "longest_stall": _r(max((s for s, _ in stalls), default=None)),
        # each stalled reply's longest stall and how far into its playout it began
        "stalls": [[_r(s), _r(at)] for s, at in stalls if s > STALL_S],
        "cpu_seconds_per_turn": _r(cpu / len(answered)) if cpu is not None and answered else None,
        "load_average": [round(x, 2) for x in load0],
        "stage_means_s": stages,
    }


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants (the embedded LLM runs in a child)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError):
            total += cpu_seconds(p)
        todo += children.get(p, [])
    return total


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def passed(result: dict[str, Any], budget: float) -> bool:
    return bool(result["turns"]) and not result["unanswered"] and (result["p95"] or 1e9) <= budget


async def ramp(url: str, public_url: str, auth_token: str, steps: list[int], seconds: float,
               budget: float, pid: int, think: tuple[float, float],
               all_steps: bool = False) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    knee = 0
    async with TwilioCloud(url, public_url=public_url, auth_token=auth_token) as cloud:
        for i, n in enumerate(steps):
            r = await step(cloud, n, seconds, pid, think, seed=i)
            ok = passed(r, budget)
            print(f"{n:3d} calls: {r['turns']:3d} turns, p50 {r['p50']} s, p95 {r['p95']} s, "
                  f"unanswered {r['unanswered']}, CPU/turn {r['cpu_seconds_per_turn']} s "
                  f"-> {'ok' if ok else 'over budget'}", flush=True)
            print("    stage means: " + ", ".join(f"{k} {v}" for k, v in r["stage_means_s"].items()),
                  flush=True)
            results.append({**r, "passed": ok})
            if not ok and not all_steps:
                break
            if ok and knee == (steps[i - 1] if i else 0):
                knee = n
            await asyncio.sleep(2)
    return {"steps": results, "knee": knee, "budget_p95_s": budget}


def write(out: dict[str, Any], label: str) -> Path:
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"{dt.date.today().isoformat()}-load{'-' + label if label else ''}"
    stem.with_suffix(".json").write_text(json.dumps(out, indent=1))
    lines = [f"# Load test {dt.date.today().isoformat()}", "",
             f"Target: {out['target']}; voice-to-voice p95 budget {out['budget_p95_s']} s, every "
             f"question answered; {out['step_seconds']} s per step; think time "
             f"{out['think_s'][0]}-{out['think_s'][1]} s. CPUs: {os.cpu_count()}.", "",
             f"**Knee: {out['knee']} simultaneous conversations.**", "",
             "| calls | turns | p50 | p95 | max | unanswered | replies stalled > "
             f"{STALL_S * 1000:.0f} ms (longest) | server CPU s / turn | load avg | within budget |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in out["steps"]:
        lines.append(f"| {s['calls']} | {s['turns']} | {s['p50']} | {s['p95']} | {s['max']} | "
                     f"{s['unanswered']} | {s.get('stalled_replies', '–')} "
                     f"({s.get('longest_stall', '–')} s) | {s['cpu_seconds_per_turn']} | "
                     f"{' / '.join(map(str, s['load_average']))} | {'yes' if s['passed'] else 'no'} |")
    stages = [k for k in STAGE_ORDER if any(k in s["stage_means_s"] for s in out["steps"])]
    if stages:
        lines += ["", "Mean seconds per stage (vc's `vc_stage_latency_seconds`, this step's turns):",
                  "", "| calls | " + " | ".join(stages) + " |", "|---" * (len(stages) + 1) + "|"]
        for s in out["steps"]:
            lines.append(f"| {s['calls']} | " + " | ".join(
                str(s["stage_means_s"].get(k, "")) for k in stages) + " |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return stem


async def main(args: argparse.Namespace) -> dict[str, Any]:
    steps = [int(s) for s in args.steps.split(",")]
    think = (args.think_min, args.think_max)
    common = {"step_seconds": args.step_seconds, "think_s": list(think)}
    if args.url:
        out = await ramp(args.url, args.public_url or args.url, args.auth_token, steps,
                         args.step_seconds, args.budget, 0, think, args.all_steps)
        return {**out, **common, "target": args.url}
    async with ServerProcess(args.vc_config, log=sys.stderr if args.verbose else None) as server:
        await server.ready(600)
        out = await ramp(server.url, server.url, "", steps, args.step_seconds, args.budget,
                         server.pid, think, args.all_steps)
    return {**out, **common, "target": f"local vc ({args.vc_config or 'embedded default stack'})"}


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", default="1,2,3,4,5,6,8", help="simultaneous calls per step")
    p.add_argument("--step-seconds", type=float, default=60.0)
    p.add_argument("--budget", type=float, default=2.0, help="voice-to-voice p95 budget (s)")
    p.add_argument("--think-min", type=float, default=1.5, help="caller's pause before a question")
    p.add_argument("--think-max", type=float, default=4.0)
    p.add_argument("--url", default="", help="a running vc (else one is started here)")
    p.add_argument("--public-url", default="", help="the URL vc is configured with, if different")
    p.add_argument("--auth-token", default=os.environ.get("TWILIO_AUTH_TOKEN", ""),
                   help="the Twilio auth token the deployed vc validates signatures with")
    p.add_argument("--vc-config", default=None, help="configuration of the local vc")
    p.add_argument("--all-steps", action="store_true",
                   help="run every step even past the knee (to compare two configurations)")
    p.add_argument("--label", default="")
    p.add_argument("--verbose", action="store_true", help="the local server's log on stderr")
    args = p.parse_args()
    out = asyncio.run(main(args))
    stem = write(out, args.label)
    print(f"knee: {out['knee']} conversations; wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    cli()
