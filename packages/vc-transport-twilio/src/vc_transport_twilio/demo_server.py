"""vc's server in a child process, reporting what happens as JSON lines (``vc demo``, bench/).

    python -m vc_transport_twilio.demo_server [-c FILE] [--port 0]

Runs exactly what ``vc serve`` runs (:class:`vc.server.App` behind :class:`vc.server.HTTPServer`,
configuration from ``-c FILE``/``$VC_CONFIG_FILE`` or the built-in default stack, always on
127.0.0.1) and writes one JSON object per line on stdout; logs go to stderr. Every event has
``t``, the ``time.monotonic()`` of this process, which on Linux is the same clock in every
process of the machine, so a caller in another process can line its own timestamps up with
these:

* ``listening`` (``url``), then ``progress`` while providers start (``done``: provider ->
  seconds, ``waiting``: providers still starting), then ``ready`` (``seconds`` since the
  process started) or ``error`` (``message``);
* every observer callback: ``call_started``, ``call_ended``, ``latency`` (``stage``,
  ``seconds``) and events (``transcript``, ``turn`` with its stage latencies, ``barge_in``,
  ``tool_call``, ``mark_played``...), each with ``call_id``;
* ``reply``: each message the bot added to a call's conversation (``text``), i.e. what the
  caller heard of each answer (cut short where the caller interrupted).

The process stops on SIGTERM/SIGINT or when its stdin is closed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from typing import Any, TextIO

PROCESS_STARTED = time.monotonic()


class EventWriter:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, event: str, **data: Any) -> None:
        line = json.dumps({"t": time.monotonic(), "event": event, **data}, default=str)
        self.out.write(line + "\n")
        self.out.flush()


def _recorder(emit: EventWriter) -> Any:
    """A plugin registering an observer that forwards every callback to ``emit``."""
    from vc.hookspecs import hookimpl
    from vc.providers import Observer

    class Forward(Observer):
        name = "demo-events"

        def call_started(self, info: Any, profile: str) -> None:
            emit("call_started", call_id=info.call_id, profile=profile, info=info.as_dict())

        def call_ended(self, info: Any, outcome: str, duration: float) -> None:
            emit("call_ended", call_id=info.call_id, outcome=outcome, duration=duration)

        def latency(self, info: Any, stage: str, seconds: float) -> None:
            emit("latency", call_id=info.call_id, stage=stage, seconds=seconds)

        def event(self, info: Any, name: str, data: dict[str, Any]) -> None:
            emit(name, call_id=info.call_id, data=data)

    class Plugin:
        @hookimpl
        def register_observers(self, register: Any) -> None:
            register(Forward)

    return Plugin()


async def _watch_replies(engine: Any, emit: EventWriter) -> None:
    """Report messages the bot adds to each call's conversation (the assistant aggregator's)."""
    seen: dict[str, int] = {}
    while True:
        for call_id, session in list(engine.sessions.items()):
            context = getattr(session, "context", None)
            if context is None:
                continue
            messages = context.get_messages()
            start = seen.get(call_id, 0)
            for message in messages[start:]:
                if isinstance(message, dict) and message.get("role") == "assistant":
                    content = message.get("content")
                    if isinstance(content, list):
                        content = " ".join(str(p.get("text", "")) for p in content
                                           if isinstance(p, dict))
                    if content:
                        emit("reply", call_id=call_id, text=str(content))
            seen[call_id] = len(messages)
        for call_id in list(seen):
            if call_id not in engine.sessions:
                del seen[call_id]
        await asyncio.sleep(0.05)


async def _progress(engine: Any, emit: EventWriter) -> None:
    last: tuple[str, ...] = ()
    while True:
        wanted = [f"{kind}.{name}" for kind, names in engine.config.providers.items()
                  for name in names]
        done = dict(engine.startup_seconds)
        key = tuple(sorted(done))
        if key != last:
            last = key
            emit("progress", done=done, waiting=[w for w in wanted if w not in done],
                 seconds=time.monotonic() - PROCESS_STARTED)
        await asyncio.sleep(0.1)


async def _stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)


async def run(config_file: str | None, port: int, emit: EventWriter) -> int:
    from vc import config as vcconfig
    from vc.plugins import load_plugins
    from vc.server import App, HTTPServer

    registry = load_plugins(extra=[("demo-events", _recorder(emit))])
    cfg, errors = vcconfig.load(config_file, registry)
    if errors or cfg is None:
        emit("error", message="configuration has errors: " + "; ".join(str(e) for e in errors))
        return 2
    if "twilio" not in cfg.transports:
        emit("error", message="the configuration does not enable the twilio transport")
        return 2
    cfg.server.host = "127.0.0.1"  # the demo and the benchmarks only ever call in locally
    app = App(cfg, registry)
    http = HTTPServer(app, "127.0.0.1", port)
    try:
        await http.start()
    except (OSError, SystemExit, RuntimeError) as e:
        emit("error", message=f"cannot listen on 127.0.0.1:{port}: {e}")
        return 1
    emit("listening", url=http.url, pid=os.getpid())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watchers = [asyncio.create_task(_progress(app.engine, emit))]
    try:
        try:
            await app.start()
        except Exception as e:
            emit("error", message=str(e))
            return 1
        finally:
            watchers[0].cancel()
        emit("progress", done=dict(app.engine.startup_seconds), waiting=[],
             seconds=time.monotonic() - PROCESS_STARTED)
        emit("ready", seconds=time.monotonic() - PROCESS_STARTED,
             providers=dict(app.engine.startup_seconds))
        watchers.append(asyncio.create_task(_watch_replies(app.engine, emit)))
        closed = asyncio.create_task(_stdin_closed())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({closed, stopped}, return_when=asyncio.FIRST_COMPLETED)
        closed.cancel()
        stopped.cancel()
        app.config.server.drain_timeout = min(app.config.server.drain_timeout, 2.0)
        await app.stop()
    finally:
        for w in watchers:
            w.cancel()
        with contextlib.suppress(Exception):
            await http.stop()
    return 0


class ServerProcess:
    """Starts this module in a child process and collects its events (the caller's side).

        async with ServerProcess(on_event=print) as server:
            await server.ready(timeout=300)
            ...server.url, server.events...
    """

    def __init__(
        self,
        config_file: str | None = None,
        *,
        env: dict[str, str] | None = None,
        log: TextIO | int | None = None,
        log_level: str = "warning",
        on_event: Any = None,
        python: str | None = None,
        prefix: list[str] | None = None,
        command: list[str] | None = None,
    ) -> None:
        self.config_file = config_file
        self.env = env
        self.log = log
        self.log_level = log_level
        self.on_event = on_event
        self.python = python or sys.executable
        #: Command prefix, e.g. ``["taskset", "-c", "0"]`` to pin the server to one core.
        self.prefix = prefix or []
        #: Another program speaking the same event protocol (the benchmark's baseline bot).
        self.command = command
        self.events: list[dict[str, Any]] = []
        self.url = ""
        self.pid = 0
        self.started_at = 0.0
        self.proc: asyncio.subprocess.Process | None = None
        self._listening = asyncio.Event()
        self._ready = asyncio.Event()
        self._failed: str | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.command:
            args = [*self.prefix, *self.command]
        else:
            args = [*self.prefix, self.python, "-m", "vc_transport_twilio.demo_server",
                    "--log-level", self.log_level]
            if self.config_file:
                args += ["-c", self.config_file]
        self.started_at = time.monotonic()
        self.proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=self.log, env=self.env, limit=1 << 22,
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self.events.append(event)
            kind = event.get("event")
            if kind == "listening":
                self.url, self.pid = event["url"], event.get("pid", 0)
                self._listening.set()
            elif kind == "ready":
                self._ready.set()
            elif kind == "error":
                self._failed = event.get("message", "error")
            if self.on_event is not None:
                self.on_event(event)
        code = await self.proc.wait()
        if not self._ready.is_set() and self._failed is None:
            self._failed = f"the server exited with status {code} before it was ready"
        self._listening.set()
        self._ready.set()

    async def ready(self, timeout: float = 600.0) -> dict[str, Any]:
        """Wait for the ``ready`` event; raises RuntimeError with the server's reason."""
        async with asyncio.timeout(timeout):
            await self._ready.wait()
        if self._failed:
            raise RuntimeError(self._failed)
        return next(e for e in self.events if e["event"] == "ready")

    def of(self, call_id: str, *names: str) -> list[dict[str, Any]]:
        """Events of one call (optionally only those named)."""
        return [e for e in self.events if e.get("call_id") == call_id
                and (not names or e["event"] in names)]

    async def stop(self, timeout: float = 20.0) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.returncode is None:
            with contextlib.suppress(Exception):
                assert proc.stdin is not None
                proc.stdin.close()
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)
        return proc.returncode

    async def __aenter__(self) -> ServerProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", default=None, help="INI file (default: built-in stack)")
    parser.add_argument("--port", type=int, default=0, help="HTTP port (0: any free one)")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    # stdout carries the events; everything else, pipecat's loguru output included, goes to stderr.
    events = EventWriter(os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1))
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    from vc import logs

    logs.setup(args.log_level, "text")
    code = asyncio.run(run(args.config, args.port, events))
    sys.exit(code)


if __name__ == "__main__":
    main()
