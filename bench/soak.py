"""Bounded soak test: N concurrent simulated Twilio calls against a real ``vc serve`` process.

The vc process runs with the fake providers (``VC_PLUGIN_MODULES=vc.testing.fakes``); callers
talk (espeak-ng speech when installed, tone bursts otherwise), each call lasts a few turns, hangs up and is
replaced at once, so ``--calls`` are always up. Every ``--every`` seconds the vc process's RSS
(``/proc/<pid>/status`` VmRSS) and open file descriptors (``/proc/<pid>/fd``) are sampled. It
stops by itself after ``--minutes`` and writes ``bench/results/<date>-soak.{json,md}``: the
samples, calls completed and failed, and whether RSS and FDs are flat after the warm-up (the
least-squares slope over the samples after ``--warmup`` seconds).

    python bench/soak.py --minutes 10           # nox -s soak
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from vc_transport_twilio.simulator import TwilioCloud
from vc_transport_twilio.testing import twilio_section

from vc.testing import FAKE_STACK

RESULTS = Path(__file__).parent / "results"
PHRASES = ["What time is it?", "Tell me about your opening hours.", "Thank you, goodbye."]
#: Flat: RSS grows by less than this many MiB per hour after the warm-up (and FDs by < 1/min).
RSS_FLAT_MIB_PER_H = 50.0
FD_FLAT_PER_MIN = 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tone(seconds: float, freq: float, rate: int = 8000) -> bytes:
    n = int(seconds * rate)
    return b"".join(
        int(8000 * math.sin(2 * math.pi * freq * i / rate)).to_bytes(2, "little", signed=True)
        for i in range(n)
    )


def utterances() -> list[bytes]:
    if shutil.which("espeak-ng"):
        from vc.testing.calls import speech

        return [speech(p) for p in PHRASES]
    return [tone(1.2, f) for f in (220.0, 330.0, 440.0)]


def proc_sample(pid: int) -> tuple[float, int, int]:
    """(RSS in MiB, open file descriptors, threads) of a live process."""
    status: dict[str, str] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            status[key] = value
    rss_kib = int(status.get("VmRSS", "0 kB").split()[0])
    threads = int(status.get("Threads", "0"))
    return rss_kib / 1024, len(os.listdir(f"/proc/{pid}/fd")), threads


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (units per second); 0 with fewer than two points."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return 0.0 if den == 0 else sum((x - mx) * (y - my) for x, y in points) / den


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.completed = 0
        self.failed: list[str] = []
        self.turns = 0
        self.samples: list[dict[str, Any]] = []
        self.stop_at = 0.0

    async def caller(self, cloud: TwilioCloud, audio: list[bytes], slot: int) -> None:
        rng = random.Random(slot)
        while time.monotonic() < self.stop_at:
            try:
                call = await cloud.place_call(from_=f"+1555000{slot:04d}")
                if call.ws is None:
                    raise RuntimeError(f"no stream: {call.webhook_status} {call.twiml[:80]!r}")
                await call.wait_for_bot_speech(within=20)
                await call.wait_for_bot_silence(quiet=0.3, within=30)
                for _ in range(rng.randint(1, self.args.turns)):
                    if time.monotonic() >= self.stop_at:
                        break
                    spoken = call.say(rng.choice(audio))
                    await call.wait_for_bot_speech(after=spoken, within=20)
                    await call.wait_for_bot_silence(quiet=0.3, within=30)
                    self.turns += 1
                await call.hangup()
                await call.wait_closed(within=10)
                self.completed += 1
                cloud.calls.pop(call.call_sid, None)
            except Exception as e:  # a failed call is a result, not the end of the soak
                self.failed.append(f"{type(e).__name__}: {e}"[:200])
                await asyncio.sleep(1)

    async def sampler(self, pid: int, t0: float) -> None:
        while time.monotonic() < self.stop_at:
            rss, fds, threads = proc_sample(pid)
            self.samples.append({"t": round(time.monotonic() - t0, 1), "rss_mib": round(rss, 2),
                                 "fds": fds, "threads": threads, "completed": self.completed})
            await asyncio.sleep(self.args.every)

    async def run(self) -> dict[str, Any]:
        args = self.args
        audio = utterances()
        cloud = TwilioCloud("http://127.0.0.1:1")
        await cloud.start()
        tmp = Path(tempfile.mkdtemp(prefix="vc-soak-"))
        ini = tmp / "vc.ini"
        ini.write_text(
            FAKE_STACK
            + "[vc]\ntransports = twilio\nlog_format = json\nlog_level = warning\n"
            + f"[server]\nmax_calls = {args.calls * 2}\n"
            + "[tts]\nms_per_char = 10\n"
            + "[profile.default]\ngreeting = Hello, how can I help?\n"
            + twilio_section(cloud)
        )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cloud.local_url = url
        log = (tmp / "vc.log").open("w+")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from vc.cli import main; main()", "serve", "-c", str(ini),
            "--port", str(port),
            env={**os.environ, "VC_PLUGIN_MODULES": "vc.testing.fakes",
                 "VC_LOAD_PLUGINS": "vc-transport-twilio"},
            stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            async with httpx.AsyncClient(base_url=url, timeout=2) as client:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    try:
                        if (await client.get("/readyz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.2)
                else:
                    log.seek(0)
                    raise SystemExit("vc did not get ready: " + log.read()[-3000:])
            t0 = time.monotonic()
            self.stop_at = t0 + args.minutes * 60
            await asyncio.gather(self.sampler(proc.pid, t0),
                                 *(self.caller(cloud, audio, i) for i in range(args.calls)))
            await asyncio.sleep(2)  # every call closed on vc's side too
            rss, fds, threads = proc_sample(proc.pid)
            self.samples.append({"t": round(time.monotonic() - t0, 1), "rss_mib": round(rss, 2),
                                 "fds": fds, "threads": threads, "completed": self.completed,
                                 "idle": True})
            alive = proc.returncode is None
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            await cloud.stop()
        log.seek(0)
        errors = [line[:300] for line in log if '"levelname": "ERROR"' in line or "Traceback" in line]
        return self.summary(alive, proc.returncode, errors)

    def summary(self, alive: bool, rc: int | None, errors: list[str]) -> dict[str, Any]:
        args = self.args
        after = [s for s in self.samples if s["t"] >= args.warmup and not s.get("idle")]
        rss_slope = slope([(s["t"], s["rss_mib"]) for s in after]) * 3600  # MiB per hour
        fd_slope = slope([(s["t"], s["fds"]) for s in after]) * 60  # per minute
        first = after[0] if after else None
        last = after[-1] if after else None
        return {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "config": {"calls": args.calls, "minutes": args.minutes, "every_s": args.every,
                       "warmup_s": args.warmup, "turns_max": args.turns,
                       "callers": "espeak-ng speech" if shutil.which("espeak-ng") else "tones"},
            "calls_completed": self.completed,
            "calls_failed": len(self.failed),
            "failures": self.failed[:20],
            "turns": self.turns,
            "vc_alive_at_end": alive,
            "vc_exit_code": rc,
            "vc_error_log_lines": errors[:20],
            "rss_mib": {"start": self.samples[0]["rss_mib"] if self.samples else None,
                        "after_warmup": first and first["rss_mib"],
                        "end": last and last["rss_mib"],
                        "max": max((s["rss_mib"] for s in self.samples), default=None),
                        "idle_after": self.samples[-1]["rss_mib"] if self.samples else None,
                        "slope_mib_per_h": round(rss_slope, 2),
                        "flat": abs(rss_slope) < RSS_FLAT_MIB_PER_H},
            "fds": {"start": self.samples[0]["fds"] if self.samples else None,
                    "after_warmup": first and first["fds"], "end": last and last["fds"],
                    "max": max((s["fds"] for s in self.samples), default=None),
                    "idle_after": self.samples[-1]["fds"] if self.samples else None,
                    "slope_per_min": round(fd_slope, 3),
                    "flat": abs(fd_slope) < FD_FLAT_PER_MIN},
            "threads": {"start": self.samples[0].get("threads") if self.samples else None,
                        "max": max((s.get("threads", 0) for s in self.samples), default=None),
                        "idle_after": self.samples[-1].get("threads") if self.samples else None},
            "env": {k: os.environ[k] for k in sorted(os.environ)
                    if k.startswith(("MALLOC_", "VC_SERVER__"))},
            "samples": self.samples,
        }


def markdown(r: dict[str, Any]) -> str:
    c, rss, fds, th = r["config"], r["rss_mib"], r["fds"], r["threads"]
    env = ", ".join(f"`{k}={v}`" for k, v in r["env"].items()) or "no MALLOC_* or VC_SERVER__* set"
    lines = [
        f"# Soak test, {r['date']}",
        "",
        f"{c['calls']} concurrent simulated Twilio calls ({c['callers']}, 1-{c['turns_max']} turns "
        f"each, then hang up and redial) against a `vc serve` process with the fake providers, "
        f"{c['minutes']} min, sampled every {c['every_s']} s, warm-up {c['warmup_s']} s; "
        f"{r['host']['cpus']} CPUs, Python {r['host']['python']}.",
        "",
        f"* calls completed: **{r['calls_completed']}**, failed: {r['calls_failed']}, "
        f"caller turns answered: {r['turns']}",
        f"* vc alive at the end: {r['vc_alive_at_end']}; exit code after SIGTERM: {r['vc_exit_code']}; "
        f"ERROR log lines: {len(r['vc_error_log_lines'])}",
        "",
        "| | start | after warm-up | end | max | idle after | slope | flat |",
        "|---|---|---|---|---|---|---|---|",
        f"| RSS (MiB) | {rss['start']} | {rss['after_warmup']} | {rss['end']} | {rss['max']} | "
        f"{rss['idle_after']} | {rss['slope_mib_per_h']} MiB/h | {rss['flat']} |",
        f"| open FDs | {fds['start']} | {fds['after_warmup']} | {fds['end']} | {fds['max']} | "
        f"{fds['idle_after']} | {fds['slope_per_min']} /min | {fds['flat']} |",
        "",
        f"Threads in vc: {th['start']} at the start, at most {th['max']}, {th['idle_after']} "
        f"once the calls had ended. Environment: {env}.",
        "",
        f"Flat means |slope| < {RSS_FLAT_MIB_PER_H} MiB/h (RSS) and < {FD_FLAT_PER_MIN}/min (FDs), "
        "least squares over the samples after the warm-up. Samples are in the JSON file.",
    ]
    if r["failures"]:
        lines += ["", "Failures (first 20):", "", *[f"* `{f}`" for f in r["failures"]]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=None, help="seconds (default: 20%% of the run)")
    ap.add_argument("--turns", type=int, default=3, help="most caller turns per call")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.warmup is None:
        args.warmup = args.minutes * 60 * 0.2
    result = asyncio.run(Soak(args).run())
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{dt.date.today().isoformat()}-soak"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
