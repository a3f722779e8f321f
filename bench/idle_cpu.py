"""CPU that calls cost vc's process while nobody speaks: the caller's line (silence, a frame
every 20 ms) through the VAD and the STT, the bot idle. Fake providers, loopback calls.

    python bench/idle_cpu.py --calls 4 --seconds 15

This is the floor under every turn and the cost per call before any model runs: pipecat hands
each caller frame through its processors (queues, tasks, observers), so the frame rate of the
caller's audio into the pipeline shows up here (bench/README.md, 2026-12-06, third session).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time

from vc.engine import Engine
from vc.testing import FAKE_STACK, config_from_ini, fake_registry
from vc.testing.calls import LoopbackConnection, run_loopback_call


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def measure(calls: int, seconds: float) -> float:
    """Percent of one core used by ``calls`` idle calls over ``seconds``."""
    reg = fake_registry()
    engine = Engine(config_from_ini(FAKE_STACK, reg), reg)
    await engine.start()
    conns = [LoopbackConnection() for _ in range(calls)]
    for conn in conns:
        await run_loopback_call(engine, conn)
    await asyncio.sleep(3)  # greetings played, calls settled
    cpu0, t0 = cpu_seconds(), time.monotonic()
    await asyncio.sleep(seconds)
    share = 100 * (cpu_seconds() - cpu0) / (time.monotonic() - t0)
    for conn in conns:
        conn.caller_hangs_up()
    await asyncio.sleep(1)
    await engine.stop()
    return share


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=4)
    p.add_argument("--seconds", type=float, default=15.0)
    args = p.parse_args()
    share = asyncio.run(measure(args.calls, args.seconds))
    print(f"{args.calls} idle calls: {share:.1f} % of a core "
          f"({share / args.calls:.1f} % per call), load average {open('/proc/loadavg').read()[:14]}")


if __name__ == "__main__":
    main()
