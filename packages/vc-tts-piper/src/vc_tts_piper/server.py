"""``vc-piper-ws-server``: the Piper WebSocket protocol (protocols.md §5) served from local voices.

Run Piper as its own service (docker-compose, Kubernetes) and point vc's ``piper-websocket``
provider, or the old connector, at it. ``GET /health`` answers 200 with the loaded voices.
piper-tts is GPL-3.0: running it here, in its own process and image, keeps it out of the
main vc image (see docs/tts.md).

Each request is answered with a start message, the audio in binary messages as it is
synthesised (short pieces, resampled to the requested rate with a streaming soxr
resampler), and an end message; control messages carry both dialects' keys.

It listens on 127.0.0.1 unless told otherwise (``--host``/``VC_PIPER_WS_HOST``). With
``--token`` (or ``VC_PIPER_WS_TOKEN``) a connection must present that token (``Authorization:
Bearer`` or a ``token`` query parameter; ``/health`` stays open) or is refused with 401. A
request's text is capped (``--max-text``) and its synthesis time limited (``--time-limit``);
numbers must be finite and in range. A refused request gets an error message and the connection
stays open. Requests are synthesised piece by piece (about 16 words) on a shared pool of
``--parallel`` threads taken in arrival order, so a long request interleaves with the others
instead of holding a thread for its whole text.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from vc import jsonsafe
from vc.audio import StreamResampler
from vc.providers import ProviderError
from vc.wsauth import token_ok
from vc_tts_piper import protocol
from vc_tts_piper.clauses import split_for_synthesis
from vc_tts_piper.normalize import normalize
from vc_tts_piper.voices import DEFAULT_VOICE, LoadedVoice, Synthesis, resolve

log = logging.getLogger("vc_tts_piper.server")

#: Longest text one request may carry (default; ``--max-text``).
MAX_TEXT = 2_000
#: Seconds one request's synthesis may take (default; ``--time-limit``).
TIME_LIMIT = 20.0
RATES = (8000, 48000)
#: Bytes per binary message (about 0.2 s at 22050 Hz).
MESSAGE_BYTES = 8820
PATHS = ("/tts", "/")


class PiperWebSocketServer:
    """Serves loaded voices over WebSocket; one task per connection, requests in order."""

    def __init__(self, voices: dict[str, LoadedVoice], default_voice: str, *,
                 synthesis: Synthesis | None = None, parallel: int = 2, normalize_text: bool = True,
                 max_piece_words: int = 16, token: str = "", max_text: int = MAX_TEXT,
                 time_limit: float = TIME_LIMIT, first_audio_seconds: float = 0.3) -> None:
        if default_voice not in voices:
            raise ProviderError(f"default voice {default_voice!r} is not loaded")
        self.voices = voices
        self.default_voice = default_voice
        self.synthesis = synthesis or Synthesis()
        self.normalize_text = normalize_text
        self.max_piece_words = max_piece_words
        self.token = token
        self.max_text = max_text
        self.time_limit = time_limit
        self.first_audio_seconds = first_audio_seconds
        self._preparing: list[asyncio.Task[None]] = []
        self._configs = {name: v.config_for(self.synthesis) for name, v in voices.items()}
        self._executor = ThreadPoolExecutor(max(1, parallel), thread_name_prefix="piper-server")
        self._server: Server | None = None
        self.requests = 0

    @classmethod
    def load(cls, specs: list[str], dirs: list[Path], *, threads: int = 0,
             **kwargs: Any) -> PiperWebSocketServer:
        """Load the voices named (default: en_US-joe-medium); the first is the default."""
        voices: dict[str, LoadedVoice] = {}
        for spec in specs or [DEFAULT_VOICE]:
            voice = LoadedVoice(resolve(spec, dirs), threads)
            voices[voice.name] = voice
        return cls(voices, next(iter(voices)), **kwargs)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 8000) -> int:
        """Listen; returns the port (pass 0 for an ephemeral one)."""
        if self.first_audio_seconds > 0:
            self._preparing = [asyncio.create_task(self._prepare_parts(v))
                               for v in {v.name: v for v in self.voices.values()}.values()
                               if v.parts is None]
        self._server = await serve(self._handle, host, port, process_request=self._http,
                                   max_size=2**20, compression=None, ping_interval=20)
        bound = self._server.sockets[0].getsockname()[1]
        log.info("piper websocket server on ws://%s:%d/tts, voices: %s", host, bound,
                 ", ".join(self.voices))
        return int(bound)

    async def _prepare_parts(self, voice: LoadedVoice) -> None:
        why = await voice.switch_to_parts()
        if not why:
            log.info("voice %s is decoded in parts from now on", voice.name)
        else:
            log.warning("voice %s stays decoded whole: %s", voice.name, why)

    async def stop(self) -> None:
        for task in self._preparing:
            task.cancel()
        await asyncio.gather(*self._preparing, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "default_voice": self.default_voice,
                "voices": {n: {"sample_rate": v.sample_rate, "language": v.language}
                           for n, v in self.voices.items()}}

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path in ("/health", "/healthz"):
            response = connection.respond(HTTPStatus.OK, json.dumps(self.health()) + "\n")
            response.headers["Content-Type"] = "application/json"
            return response
        if path not in PATHS:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found; the service is at /tts\n")
        if not token_ok(self.token, request.path, request.headers):
            log.warning("refused %s: missing or wrong token", connection.remote_address)
            return connection.respond(
                HTTPStatus.UNAUTHORIZED,
                "a token is required (Authorization: Bearer <token>, or ?token=)\n")
        return None

    # -- requests ------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        try:
            async for message in ws:
                await self._request(ws, message)
        except ConnectionClosed:
            pass

    async def _request(self, ws: ServerConnection, message: str | bytes) -> None:
        try:
            req = jsonsafe.loads_object(message)  # ValueError only, also for "[" * 1000
        except ValueError as e:
            await self._error(ws, f"bad request: {e}; send {{\"text\": .., \"voice\": .., "
                                  "\"sample_rate\": .., \"format\": \"pcm16\"}")
            return
        text = req.get("text", "")
        name = str(req.get("voice") or self.default_voice)
        voice = self.voices.get(name)
        fmt = str(req.get("format") or "pcm16")
        rate = _rate(req.get("sample_rate"), voice.sample_rate if voice else 0)
        low, high = RATES
        problem = (
            "text must be a string" if not isinstance(text, str) else
            f"text is longer than {self.max_text} characters ({len(text)}); send it in "
            "sentences" if len(text) > self.max_text else
            f"unknown voice {name!r}; this server has: {', '.join(self.voices)}" if voice is None
            else f"unsupported format {fmt!r}; only pcm16" if fmt != "pcm16" else
            f"sample_rate {req.get('sample_rate')!r} is not a whole number between {low} and "
            f"{high}" if not low <= rate <= high else ""
        )
        if problem or voice is None:
            await self._error(ws, problem)
            return
        self.requests += 1
        await ws.send(json.dumps(protocol.STARTED))
        try:
            await self._speak(ws, voice, text, rate)
        except ConnectionClosed:
            raise
        except TimeLimitError as e:
            await self._error(ws, str(e))
            return
        except Exception as e:  # one bad request must not end the connection
            log.exception("synthesis failed for %r", text[:60])
            await self._error(ws, f"synthesis failed: {e}")
            return
        await ws.send(json.dumps(protocol.COMPLETED))

    async def _speak(self, ws: ServerConnection, voice: LoadedVoice, text: str, rate: int) -> None:
        if self.normalize_text:
            text = normalize(text, voice.language)
        text = voice.speakable(text)
        if not text:
            return
        loop = asyncio.get_running_loop()
        resampler = StreamResampler(voice.sample_rate, rate)
        started = loop.time()
        for i, piece in enumerate(split_for_synthesis(text, self.max_piece_words)):
            if self.time_limit and loop.time() - started > self.time_limit:
                raise TimeLimitError(f"synthesis time limit of {self.time_limit:g}s reached; "
                                     "the audio is incomplete")
            config = self._configs[voice.name]
            if i == 0:  # the client waits for it: its first part first
                head = await loop.run_in_executor(self._executor, voice.start_piece, piece,
                                                  self.synthesis, config,
                                                  self.first_audio_seconds)
                ready = time.monotonic()
                rest = None if head.rest is None else \
                    loop.run_in_executor(self._executor, head.rest)  # at once, not after sending
                await self._send_audio(ws, resampler.process(head.audio))
                if rest is None:
                    continue
                pcm = await rest
                voice.rest_pace.record(time.monotonic() - ready, head.rest_frames)
            else:
                pcm = await loop.run_in_executor(self._executor, voice.synthesize_piece, piece,
                                                 self.synthesis, config)
            await self._send_audio(ws, resampler.process(pcm))
        await self._send_audio(ws, resampler.process(b"", last=True))

    @staticmethod
    async def _send_audio(ws: ServerConnection, pcm: bytes) -> None:
        for i in range(0, len(pcm), MESSAGE_BYTES):
            await ws.send(pcm[i : i + MESSAGE_BYTES])

    @staticmethod
    async def _error(ws: ServerConnection, message: str) -> None:
        log.warning("request refused: %s", message)
        await ws.send(json.dumps(protocol.error(message)))


class TimeLimitError(Exception):
    """A request's synthesis ran past the server's time limit."""


def _rate(value: Any, default: int) -> int:
    """The requested sample rate as an int, or -1 when it is not a finite whole number."""
    if value is None or value == "" or value == 0:
        return default
    if isinstance(value, bool):
        return -1
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return -1
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value != int(value):
        return -1
    return int(value)


def _env(name: str, default: str) -> str:
    return os.environ.get(f"VC_PIPER_WS_{name}", default)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vc-piper-ws-server",
        description="Serve Piper voices over the Piper WebSocket protocol (ws://HOST:PORT/tts), "
        "with GET /health.")
    p.add_argument("--host", default=_env("HOST", "127.0.0.1"),
                   help="listen address (0.0.0.0 in containers; env VC_PIPER_WS_HOST)")
    p.add_argument("--token", default=_env("TOKEN", ""),
                   help="shared token clients must present (Authorization: Bearer, or ?token=); "
                   "empty: no authentication (env VC_PIPER_WS_TOKEN, preferred)")
    p.add_argument("--max-text", type=int, default=int(_env("MAX_TEXT", str(MAX_TEXT))),
                   help=f"most characters one request may carry (default {MAX_TEXT})")
    p.add_argument("--time-limit", type=float,
                   default=float(_env("TIME_LIMIT", str(TIME_LIMIT))),
                   help=f"seconds one request's synthesis may take (default {TIME_LIMIT:g}; "
                   "0: no limit)")
    p.add_argument("--port", type=int, default=8000, help="listen port (default 8000; 0: any)")
    p.add_argument("--voice", action="append", default=[],
                   help="voice name or .onnx path; repeat for more; the first is the default "
                   f"(default: {DEFAULT_VOICE})")
    p.add_argument("--voices-dir", action="append", default=[], type=Path,
                   help="folder of NAME.onnx + NAME.onnx.json voices; repeat for more")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads per synthesis")
    p.add_argument("--parallel", type=int, default=2, help="syntheses at once (all connections)")
    p.add_argument("--first-audio-seconds", type=float,
                   default=float(_env("FIRST_AUDIO_SECONDS", "0.3")),
                   help="a request's first piece is decoded this many seconds first and sent "
                   "before the rest (0: whole; env VC_PIPER_WS_FIRST_AUDIO_SECONDS)")
    p.add_argument("--speaker", default="", help="speaker name or id (multi-speaker voices)")
    p.add_argument("--length-scale", type=float, default=None, help="<1 faster, >1 slower")
    p.add_argument("--noise-scale", type=float, default=None)
    p.add_argument("--noise-w", type=float, default=None)
    p.add_argument("--sentence-silence", type=float, default=0.0)
    p.add_argument("--no-normalize", action="store_true",
                   help="speak text as sent (no number/markdown/emoji normalisation)")
    p.add_argument("--log-level", default="info")
    return p


async def _serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before anyone can know we are up
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    synthesis = Synthesis(speaker=args.speaker, length_scale=args.length_scale,
                          noise_scale=args.noise_scale, noise_w=args.noise_w,
                          sentence_silence=args.sentence_silence)
    server = await asyncio.to_thread(
        PiperWebSocketServer.load, args.voice, args.voices_dir, threads=args.threads,
        synthesis=synthesis, parallel=args.parallel, normalize_text=not args.no_normalize,
        token=args.token, max_text=args.max_text, time_limit=args.time_limit,
        first_audio_seconds=args.first_audio_seconds)
    port = await server.start(args.host, args.port)
    # One line on stdout for supervisors and tests (the port is the real one with --port 0).
    print(f"vc-piper-ws-server listening on ws://{args.host}:{port}/tts", flush=True)
    await stop.wait()
    log.info("stopping")
    await server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if not (math.isfinite(args.time_limit) and args.time_limit >= 0):
        parser.error(f"--time-limit must be a finite number of seconds >= 0, got {args.time_limit}")
    if not (math.isfinite(args.first_audio_seconds) and args.first_audio_seconds >= 0):
        parser.error("--first-audio-seconds must be a finite number of seconds >= 0")
    if args.max_text < 1:
        parser.error("--max-text must be at least 1")
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_serve(args))
    except (ProviderError, OSError) as e:
        raise SystemExit(f"vc-piper-ws-server: {e}") from None


if __name__ == "__main__":
    main()
