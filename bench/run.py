"""Run vc's benchmarks and write bench/results/<date>-<machine>.{json,md} plus plots.

    python bench/run.py                    # everything (about 30 minutes on 2 cores)
    python bench/run.py --quick            # fewer turns/trials/steps (a few minutes)
    python bench/run.py --only latency,barge-in --no-baseline
    python bench/run.py --only latency --vc-config bench/variants/stop-0.3.ini --label stop-0.3

Benchmarks (see bench/README.md): ``models`` (pure model times), ``cold-start``,
``container-start`` (each start with an empty cache, then seeded as the image does), ``latency``
(voice to voice), ``barge-in``, ``capacity`` (media path with fake AI). vc runs as
``vc serve`` runs with no configuration file (the embedded default stack) unless
``--vc-config`` names a variant; the baseline is the same models in a plain pipecat bot
(bench/baseline_bot.py) with llama.cpp's OpenAI-compatible server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import report  # noqa: E402
import scenarios  # noqa: E402
from scenarios import log  # noqa: E402
from utterances import QUESTION_SETS  # noqa: E402

from vc.config import DEFAULT_STOP_SECS  # noqa: E402

ALL = ("models", "cold-start", "container-start", "latency", "pauses", "barge-in",
       "false-interruptions", "capacity")
CAPACITY_STEPS = [1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96]
FAKE_INI = """[vc]
transports = twilio
[stt]
provider = fake
[llm]
provider = fake
[tts]
provider = fake
[tts.fake]
ms_per_char = 60
"""


def machine() -> dict[str, Any]:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in ("vc-core", "vc-transport-twilio", "vc-stt-faster-whisper", "vc-llm-llama-ws",
                 "vc-tts-piper", "pipecat-ai", "faster-whisper", "ctranslate2", "llama_cpp_python",
                 "piper-tts", "onnxruntime"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    # An editable install keeps the version it was installed with: the source's is what runs.
    import vc

    versions["vc-core"] = vc.__version__
    return {"cpu": cpu, "cores": os.cpu_count(), "host": socket.gethostname(),
            "python": platform.python_version(), "versions": versions, "commit": commit()}


def commit() -> str:
    """The checkout's commit (with ``+`` when it has uncommitted changes), or ""."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                              capture_output=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               text=True, capture_output=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+" if head and dirty else "")


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_stages(url: str) -> dict[str, dict[str, float]]:
    """vc's own account of the run's stages (``vc_stage_latency_seconds`` from ``/metrics``):
    each stage's mean and count, providers' queues and waits included."""
    from load import stage_totals

    return {stage: {"mean_s": round(total / count, 4), "count": int(count)}
            for stage, (total, count) in sorted(stage_totals(url).items()) if count}


async def wait_http(url: str, within: float = 120.0) -> None:
    import aiohttp

    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as r:
                    if r.status < 500:
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {within:.0f} s")


@contextlib.asynccontextmanager
async def llama_server():
    """llama.cpp's OpenAI-compatible server on the default GGUF (the baseline's LLM)."""
    from vc_llm_llama_ws.models import resolve_model

    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llama_cpp.server", "--model", str(resolve_model("smollm2")),
        "--host", "127.0.0.1", "--port", str(port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_http(f"http://127.0.0.1:{port}/v1/models")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 20)


def baseline_command(llm_url: str, fake: bool = False, vad_stop_secs: float | None = None
                     ) -> list[str]:
    cmd = [sys.executable, str(HERE / "baseline_bot.py"), "--llm-url", llm_url]
    if vad_stop_secs is not None:
        cmd += ["--vad-stop-secs", str(vad_stop_secs)]
    return cmd + (["--fake"] if fake else [])


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from vc_transport_twilio.demo_server import ServerProcess

    if args.compare:
        return await compare(args)
    only = set(args.only.split(",")) if args.only else set(ALL)
    unknown = only - set(ALL)
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(sorted(unknown))}; known: {', '.join(ALL)}")
    turns = args.turns or (6 if args.quick else 24)
    trials = args.trials or (5 if args.quick else 20)
    cold_runs = 1 if args.quick else 3
    steps = [s for s in CAPACITY_STEPS if s <= args.capacity_max]
    if args.quick:
        steps = [s for s in steps if s in (1, 4, 16)]
    results: dict[str, Any] = {"vc": {}, "baseline": {}, "phases": {}}
    logs_dir = Path(args.out) / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)

    def phase(name: str) -> Any:
        log(f"\n== {name} (load average {load()})")
        results["phases"][name] = {"load_before": load(), "started": time.monotonic()}
        return name

    def phase_done(name: str) -> None:
        results["phases"][name]["load_after"] = load()
        started = results["phases"][name].pop("started")
        results["phases"][name]["seconds"] = round(time.monotonic() - started, 1)

    async def call_benchmarks(side: str, server: ServerProcess) -> None:
        """The latency and barge-in benchmarks asked for, against one running server."""
        if "latency" in only:
            name = phase(f"{side}: voice-to-voice latency, {turns} turns")
            results[side]["latency"] = await scenarios.latency(
                server, turns, asked=QUESTION_SETS[args.questions])
            phase_done(name)
        if "pauses" in only:
            name = phase(f"{side}: pauses inside sentences")
            results[side]["pauses"] = await scenarios.pauses(server)
            phase_done(name)
        if "false-interruptions" in only:
            name = phase(f"{side}: sounds that are not a turn, {trials} trials")
            results[side]["false_interruptions"] = await scenarios.false_interruptions(server, trials)
            phase_done(name)
        if "barge-in" in only:
            name = phase(f"{side}: barge-in, {trials} trials")
            results[side]["barge_in"] = await scenarios.barge_in(server, trials)
            phase_done(name)

    stop_secs = DEFAULT_STOP_SECS
    if args.vc_config:
        m = re.search(r"stop_secs\s*=\s*([0-9.]+)", Path(args.vc_config).read_text())
        stop_secs = float(m.group(1)) if m else stop_secs
    # The baseline ends turns after the same silence as vc (a turn-taking policy, not an
    # engineering difference); --baseline-vad-stop pipecat keeps pipecat's own 0.2 s.
    baseline_stop = None if args.baseline_vad_stop == "pipecat" else (
        float(args.baseline_vad_stop) if args.baseline_vad_stop else stop_secs)
    results["baseline_vad_stop_secs"] = baseline_stop if baseline_stop is not None else 0.2
    if "models" in only:
        import models

        name = phase("models: pure model times")
        results["vc"]["models"] = await models.measure(stop_secs)
        phase_done(name)

    vc_env = dict(os.environ)
    if "cold-start" in only:
        name = phase("cold start: vc serve")
        results["vc"]["cold_start"] = await scenarios.cold_start_vc(cold_runs, vc_env)
        phase_done(name)
        name = phase("cold start: vc serve, one core busy")
        results["vc"]["cold_start_busy"] = await scenarios.cold_start_vc(cold_runs, vc_env, busy=True)
        phase_done(name)
    if "container-start" in only:  # each start with an empty cache, as a new container's
        starts: dict[str, Any] = {}
        with tempfile.TemporaryDirectory(prefix="vc-image-cache-") as seed:
            await scenarios.prepare_cache_seed(seed, vc_env)
            for key, seeded, busy in (("empty", None, False), ("empty_busy", None, True),
                                      ("seeded", seed, False), ("seeded_busy", seed, True)):
                name = phase(f"container start: {'seeded' if seeded else 'empty'} cache"
                             + (", one core busy" if busy else ""))
                starts[key] = await scenarios.container_start_vc(cold_runs, vc_env, seeded, busy)
                phase_done(name)
        results["vc"]["container_start"] = starts

    if {"latency", "pauses", "barge-in", "false-interruptions"} & only and not args.no_vc:
        with open(logs_dir / "vc-server.log", "w", encoding="utf-8") as vlog:
            async with ServerProcess(args.vc_config, log=vlog, log_level=args.server_log_level) as server:
                name = phase("vc: starting the default stack")
                await server.ready(600)
                phase_done(name)
                await call_benchmarks("vc", server)
                results["vc"]["server_events"] = len(server.events)
                results["vc"]["server_stages"] = await asyncio.to_thread(server_stages, server.url)

    call_kinds = {"latency", "pauses", "barge-in", "false-interruptions"}
    if not args.no_baseline and ((call_kinds | {"cold-start"}) & only):
        async with llama_server() as llm_url:
            if "cold-start" in only:
                name = phase("cold start: baseline")
                results["baseline"]["cold_start"] = await scenarios.cold_start_baseline(
                    cold_runs, baseline_command(llm_url))
                phase_done(name)
            if {"latency", "pauses", "barge-in", "false-interruptions"} & only:
                with open(logs_dir / "baseline.log", "w", encoding="utf-8") as blog:
                    command = baseline_command(llm_url, vad_stop_secs=baseline_stop)
                    async with ServerProcess(command=command, log=blog) as server:
                        await server.ready(120)
                        await call_benchmarks("baseline", server)

    if "capacity" in only:
        ini = Path(args.out) / "logs" / "capacity.ini"
        ini.write_text(FAKE_INI, encoding="utf-8")
        env = {**os.environ, "VC_PLUGIN_MODULES": "vc.testing.fakes"}
        pin_server, pin_caller = ["taskset", "-c", "0"], {1 % (os.cpu_count() or 1)}
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, pin_caller)
        try:
            with open(logs_dir / "capacity-vc.log", "w", encoding="utf-8") as clog:
                async with ServerProcess(str(ini), env=env, log=clog, prefix=pin_server) as server:
                    await server.ready(120)
                    name = phase("capacity: vc (fake AI, server on core 0)")
                    results["vc"]["capacity"] = await scenarios.capacity(server, steps)
                    phase_done(name)
            if not args.no_baseline:
                benv = {**os.environ, "FAKE_MS_PER_CHAR": "60"}
                with open(logs_dir / "capacity-baseline.log", "w", encoding="utf-8") as clog:
                    async with ServerProcess(command=baseline_command("http://127.0.0.1:9/v1", True),
                                             env=benv, log=clog, prefix=pin_server) as server:
                        await server.ready(120)
                        name = phase("capacity: baseline (fake AI, server on core 0)")
                        results["baseline"]["capacity"] = await scenarios.capacity(server, steps)
                        phase_done(name)
        finally:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    return results


async def compare(args: argparse.Namespace) -> dict[str, Any]:
    """Latency of vc configurations side by side (``--compare default,variants/x.ini``)."""
    from vc_transport_twilio.demo_server import ServerProcess

    turns = args.turns or 16
    names = [c.strip() for c in args.compare.split(",") if c.strip()]
    logs_dir = Path(args.out) / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"compare": {}, "phases": {}, "load": []}
    async with contextlib.AsyncExitStack() as stack:
        servers = {}
        for name in names:
            config = None if name == "default" else str(HERE / name if not Path(name).exists() else name)
            label = Path(name).stem
            logf = stack.enter_context(open(logs_dir / f"compare-{label}.log", "w", encoding="utf-8"))
            server = await stack.enter_async_context(ServerProcess(config, log=logf,
                                                                   log_level=args.server_log_level))
            await server.ready(600)  # one at a time: starts do not overlap
            servers[label] = server
            log(f"  {label}: ready ({config or 'built-in defaults'})")
        results["load"].append(load())
        runs = await scenarios.compare(servers, turns, args.block,
                                       asked=QUESTION_SETS[args.questions])
        results["load"].append(load())
        stages = {label: await asyncio.to_thread(server_stages, server.url)
                  for label, server in servers.items()}
    for label, run in runs.items():
        results["compare"][label] = {"run": run, "summary": report.summarise_latency(run),
                                     "server_stages": stages[label]}
    return results


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    if "compare" in results:
        return {k: v["summary"] for k, v in results["compare"].items()}
    out: dict[str, Any] = {}
    for side in ("vc", "baseline"):
        r = results.get(side, {})
        s: dict[str, Any] = {}
        if r.get("latency"):
            s["latency"] = report.summarise_latency(r["latency"])
        if r.get("pauses"):
            p = r["pauses"]
            totals = [t["total"] for t in p["trials"] if t["total"] is not None]
            s["pauses"] = {"trials": len(p["trials"]), "premature": p["premature"],
                           "cut_inside": p.get("cut_inside"),
                           "unanswered": p["unanswered"],
                           "premature_by_pause_ms": {
                               str(ms): sum(t["premature"] for t in p["trials"] if t["pause_ms"] == ms)
                               for ms in sorted({t["pause_ms"] for t in p["trials"]})},
                           "voice_to_voice_p50": report._r(statistics.median(totals)) if totals else None}
        if r.get("false_interruptions"):
            f = r["false_interruptions"]
            s["false_interruptions"] = {"trials": len(f["trials"]), "interrupted": f["interrupted"]}
        if r.get("barge_in"):
            s["barge_in"] = report.summarise_barge_in(r["barge_in"])
        if r.get("cold_start"):
            s["cold_start"] = report.summarise_cold(r["cold_start"])
        if r.get("cold_start_busy"):
            s["cold_start_busy"] = report.summarise_cold(r["cold_start_busy"])
        if r.get("container_start"):
            s["container_start"] = {k: report.summarise_cold(v)
                                    for k, v in r["container_start"].items()}
        if r.get("capacity"):
            s["capacity"] = {k: v for k, v in r["capacity"].items()}
        out[side] = s
    vc, base = out["vc"], out["baseline"]
    if vc.get("latency") and results["vc"].get("models"):
        out["overhead"] = report.overhead(vc["latency"], results["vc"]["models"])
    if vc.get("latency") and base.get("latency"):
        out["ratio_vc_over_baseline"] = {
            q: report._r(vc["latency"]["voice_to_voice"][q] / base["latency"]["voice_to_voice"][q])
            for q in ("p50", "p95")
            if vc["latency"]["voice_to_voice"][q] and base["latency"]["voice_to_voice"][q]
        }
    return out


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(ALL)}")
    parser.add_argument("--quick", action="store_true", help="fewer turns, trials and steps")
    parser.add_argument("--no-baseline", action="store_true", help="vc only")
    parser.add_argument("--no-vc", action="store_true",
                        help="baseline only (latency and barge-in)")
    parser.add_argument("--turns", type=int, default=0, help="latency turns (default 24)")
    parser.add_argument("--trials", type=int, default=0, help="barge-in trials (default 20)")
    parser.add_argument("--capacity-max", type=int, default=96, help="most concurrent calls tried")
    parser.add_argument("--vc-config", default=None, help="INI for vc (default: built-in stack)")
    parser.add_argument("--label", default="", help="suffix of the result files")
    parser.add_argument("--baseline-vad-stop", default="",
                        help="silence (s) that ends the baseline's turns: default vc's own; "
                             "'pipecat' for pipecat's default (0.2 s)")
    parser.add_argument("--compare", default="",
                        help="comma-separated vc configurations (INI paths relative to bench/, or "
                             "'default') measured side by side, interleaved, for latency only")
    parser.add_argument("--questions", choices=sorted(QUESTION_SETS), default="reference",
                        help="the latency questions: the reference set, or questions ending on a "
                        "word that could go on (the adaptive end of turn waits longer after them)")
    parser.add_argument("--block", type=int, default=4, help="turns per call in --compare")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--server-log-level", default="info",
                        help="vc's log level in bench/results/logs/vc-server.log (debug: every piece)")
    args = parser.parse_args()
    meta = machine()
    started = dt.datetime.now(dt.UTC)
    name = started.strftime("%Y-%m-%d")
    host = re.sub(r"[^a-z0-9]+", "-", meta["host"].lower()).strip("-")[:24] or "machine"
    mname = f"{host}-{meta['cores']}cpu"
    stem = Path(args.out) / (f"{name}-{mname}" + (f"-{args.label}" if args.label else ""))
    load_before = load()
    results = asyncio.run(main(args))
    results["meta"] = {
        **meta, "date": started.strftime("%Y-%m-%d %H:%M UTC"), "machine": mname,
        "load_before": load_before, "load_after": load(), "gpu": None,
        "vc_config": args.vc_config or "built-in defaults (vc serve with no configuration file)",
        "argv": sys.argv[1:],
    }
    results["summary"] = summarise(results)
    stem.parent.mkdir(parents=True, exist_ok=True)
    if args.compare:
        stem = stem.parent / (stem.name + "-compare")
        results["plots"] = report.compare_plots(results, stem)
        md = report.compare_markdown(results)
    else:
        results["plots"] = report.plots(results, stem)
        md = report.markdown(results)
    js, mdfile = stem.parent / (stem.name + ".json"), stem.parent / (stem.name + ".md")
    js.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    mdfile.write_text(md, encoding="utf-8")
    print(md)
    print(f"wrote {js} and {mdfile}", file=sys.stderr)


if __name__ == "__main__":
    cli()
