"""External services a provider combination needs, each started as a real process on 127.0.0.1.

Every service is started with port 0 and prints one ready line with the port it got; nothing
is downloaded (the models come from the installed PyPI packages).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
READY_TIMEOUT = 180.0  # model loading on two shared cores
_URL = re.compile(r"listening on ((?:ws|http)://\S+)")


def console_script(name: str) -> str:
    """The console script ``name`` of the running interpreter's environment."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"console script {name!r} not found next to {sys.executable}")
    return found


class Service:
    """One started process and the URL from its ready line."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.argv = argv
        self.url = ""
        self.proc: asyncio.subprocess.Process | None = None
        self._log = tempfile.TemporaryFile()

    def log_tail(self, n: int = 3000) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-n:]

    async def start(self) -> Service:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdout=asyncio.subprocess.PIPE, stderr=self._log, env=env
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.url:
            left = deadline - time.monotonic()
            try:
                line = await asyncio.wait_for(self.proc.stdout.readline(), max(0.1, left))
            except TimeoutError:
                await self.stop()
                raise RuntimeError(f"{self.name} not ready after {READY_TIMEOUT:.0f}s:\n"
                                   f"{self.log_tail()}") from None
            if not line:  # exited
                code = await self.proc.wait()
                raise RuntimeError(f"{self.name} exited with {code} before it was ready:\n"
                                   f"{self.log_tail()}")
            match = _URL.search(line.decode(errors="replace"))
            if match:
                self.url = match.group(1)
        return self

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def llama_ws_server() -> Service:
    return Service("vc-llama-ws-server",
                   [console_script("vc-llama-ws-server"), "--host", "127.0.0.1", "--port", "0",
                    "--log-level", "warning"])


def piper_ws_server() -> Service:
    return Service("vc-piper-ws-server",
                   [console_script("vc-piper-ws-server"), "--host", "127.0.0.1", "--port", "0",
                    "--parallel", "1", "--log-level", "warning"])


def ollama_standin() -> Service:
    return Service("ollama stand-in", [sys.executable, str(HERE / "ollama_standin.py"), "0"])


#: Which service each provider needs, and the INI section that points vc at it.
SERVICES = {
    ("llm", "llama-ws"): (llama_ws_server, "[llm.llama-ws]\nurl = {url}\n"),
    ("llm", "ollama"): (ollama_standin, "[llm.ollama]\nhost = {url}\nmodel = smollm2\n"),
    ("tts", "piper-websocket"): (
        piper_ws_server, "[tts.piper-websocket]\nurl = {url}\nvoice = en_US-joe-medium\n"
    ),
}


@contextlib.asynccontextmanager
async def services_for(combination: dict[str, str]) -> AsyncIterator[str]:
    """Start what ``combination`` needs (concurrently); yields the INI sections that use them."""
    wanted = [SERVICES[(k, n)] for k, n in combination.items() if (k, n) in SERVICES]
    started: list[Service] = []
    try:
        services = [make() for make, _ in wanted]
        started += services
        await asyncio.gather(*(s.start() for s in services))
        yield "".join(section.format(url=s.url) for s, (_, section) in zip(services, wanted, strict=True))
    finally:
        for s in started:
            with contextlib.suppress(ProcessLookupError):
                await s.stop()
