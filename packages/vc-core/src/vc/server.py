"""``vc serve``: one asyncio process with the HTTP server, the engine and every transport.

The HTTP server answers while the models load (``/healthz``: 200 unless a transport reports
itself dead, see ``TransportProvider.alive``; ``vc serve`` begins loading them before this
module is imported, see ``vc.cli.serve_loading_first``); ``/readyz`` turns ready once
plugins are loaded, providers started (models warm, greetings rendered) and every transport
is listening. A provider whose remote service is not reachable (yet) keeps it not ready, named
in the body's ``not_ready`` with the reason, until the service answers (see
:mod:`vc.reconnect`). SIGTERM flips ``/readyz`` to not-ready, stops new calls, waits up to
``[server] drain_timeout`` for active calls (their media streams stay open: the HTTP server
is told to exit only after the drain), has the calls still up say their goodbye and hang up,
and then exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.routing import BaseRoute, WebSocketRoute

from vc import __version__
from vc.config import Config
from vc.engine import Engine
from vc.plugins import Registry
from vc.providers import ProviderContext, TransportProvider

log = logging.getLogger("vc.server")


class RouteConflict(Exception):
    """Two transports (or a transport and core) serve the same HTTP path."""


def route_keys(route: BaseRoute) -> list[tuple[str, str]]:
    """What two routes collide on: ``("POST", "/twilio/voice")``, ``("WS", "/twilio/stream")``."""
    path = str(getattr(route, "path", "") or "")
    if not path:  # a router included in the transport's: not inspected
        return []
    if isinstance(route, WebSocketRoute):
        return [("WS", path)]
    methods = getattr(route, "methods", None) or {"*"}
    return [(method, path) for method in sorted(methods)]


class App:
    """The running service: engine + transports + HTTP routes."""

    def __init__(self, config: Config, registry: Registry, engine: Engine | None = None,
                 engine_start: asyncio.Future[None] | None = None) -> None:
        """``engine`` and ``engine_start``: an engine whose start (its models loading) was
        begun before this module was imported (see ``vc.cli``); by default ``start()`` creates
        and starts one."""
        self.config = config
        self.registry = registry
        self.engine = engine or Engine(config, registry)
        self._engine_start = engine_start
        self.transports: dict[str, TransportProvider] = {}
        for name, choice in config.transports.items():
            cls = registry.provider("transport", name)
            assert cls is not None
            self.transports[name] = cls(  # type: ignore[assignment]
                choice.settings,
                ProviderContext(profiles=config.profiles, log=logging.getLogger(f"vc.transport.{name}")),
            )
        #: When this service began starting: its engine's creation (the models may have
        #: begun loading before this App was made).
        self.started_at = self.engine.created_at
        self.ready_at: float | None = None
        self.error: str | None = None
        self.stopping = False
        self.http = self._build_http()

    def _build_http(self) -> FastAPI:
        http = FastAPI(title="vc", version=__version__, docs_url=None, redoc_url=None)

        @http.get("/healthz")
        async def healthz() -> JSONResponse:
            dead = self.dead_transports()
            if dead:
                return JSONResponse(
                    {"status": "failing", "version": __version__, "dead": dead}, status_code=503
                )
            return JSONResponse({"status": "ok", "version": __version__})

        @http.get("/readyz")
        async def readyz() -> JSONResponse:
            checks = self.checks()
            ok = all(checks.values())
            body: dict[str, object] = {"ready": ok, "checks": checks}
            if not ok:
                body["not_ready"] = self.not_ready(checks)
            if self.error:
                body["error"] = self.error
            return JSONResponse(body, status_code=200 if ok else 503)

        @http.get("/metrics")
        async def metrics() -> Response:
            return Response(generate_latest(self.engine.metrics.registry), media_type=CONTENT_TYPE_LATEST)

        core_paths = {key for r in http.routes for key in route_keys(r)}
        taken: dict[tuple[str, str], str] = {}
        for name, transport in self.transports.items():
            router = transport.routes()
            if router is None:
                continue
            for key in (key for r in router.routes for key in route_keys(r)):
                owner = "vc" if key in core_paths else taken.get(key)
                if owner is not None:
                    raise RouteConflict(
                        f"transport {name!r} registers {key[0]} {key[1]}, which {owner!r} "
                        "already serves: give one of them another path (transports put their "
                        "routes under /<transport name>/)"
                    )
                taken[key] = name
            http.include_router(router)
        return http

    def dead_transports(self) -> list[str]:
        """Transports whose ``alive()`` is False (or raises): ``/healthz`` fails while any is."""
        dead = []
        for name, t in self.transports.items():
            alive = getattr(t, "alive", None)
            try:
                ok = bool(alive()) if alive is not None else True
            except Exception:
                log.exception("transport %s: alive() failed", name)
                ok = False
            if not ok:
                dead.append(f"transport.{name}")
        return dead

    def checks(self) -> dict[str, bool]:
        """Every readiness check by name: core's, each provider's (``llm.llama-ws``), each
        greeting still waiting for its TTS (``greeting.default``), each transport's."""
        waiting = self.engine.not_ready()
        out = {"plugins": not self.registry.conflicts, "engine": "engine" not in waiting,
               "draining": not self.stopping}
        for kind, providers in self.engine.providers.items():
            for name in providers:
                out[f"{kind}.{name}"] = f"{kind}.{name}" not in waiting
        for name in waiting:
            if name.startswith("greeting."):
                out[name] = False
        for name, t in self.transports.items():
            out[f"transport.{name}"] = t.ready() and self.engine.started
        return out

    def not_ready(self, checks: dict[str, bool] | None = None) -> dict[str, str]:
        """The failing checks, each with why (``{"tts.piper-websocket": "cannot reach ..."}``)."""
        checks = self.checks() if checks is None else checks
        waiting = self.engine.not_ready()
        reasons = {"plugins": "; ".join(self.registry.conflicts), "draining": "shutting down"}
        return {
            name: waiting.get(name) or reasons.get(name)
            or ("not ready" if self.engine.started else "starting")
            for name, ok in checks.items() if not ok
        }

    async def start(self) -> None:
        """Start providers, then transports. Raises EngineStartError with every failure."""
        for name in self.transports:  # a series from the start, so autoscalers see idle pods
            self.engine.metrics.active_calls.labels(name).set(0)
        await (self._engine_start if self._engine_start is not None else self.engine.start())
        for name, transport in self.transports.items():
            await transport.start(self.engine)
            log.info("transport %s started", name)
        self.ready_at = time.monotonic()
        self.engine.metrics.ready.set(1)
        waiting = self.engine.not_ready()
        if waiting:  # a remote service is not reachable yet: /readyz stays 503 until it is
            log.warning("started in %.2fs; not ready until %s answer(s)",
                        self.ready_at - self.started_at, ", ".join(waiting))
        else:
            log.info("ready in %.2fs", self.ready_at - self.started_at)

    async def stop(self) -> None:
        self.stopping = True
        drain = self.config.server.drain_timeout
        left = await self.engine.drain(drain)
        if left:
            log.warning("%d call(s) still active after %.0fs drain: hung up", left, drain)
        for transport in self.transports.values():
            try:
                await transport.stop()
            except Exception as e:
                log.warning("transport %s failed to stop cleanly: %s", transport.name, e)
        await self.engine.stop()


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: vc drains calls first, then tells it to exit.

    uvicorn has changed how it takes signals (``install_signal_handlers`` up to 0.28,
    ``capture_signals`` since, which replaces the process's handlers with ``signal.signal``):
    both are turned off here, and :func:`serve` also (re)installs vc's own handlers once uvicorn
    has started, so SIGTERM reaches vc's drain whatever a uvicorn version does. Had uvicorn
    taken SIGTERM, it would close every WebSocket at once, cutting live Twilio calls.
    """

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        pass

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:  # uvicorn >= 0.29
        yield


class HTTPServer:
    """uvicorn serving an App's routes (or a FastAPI app's); ``start()`` returns the bound
    port (port 0 works)."""

    def __init__(self, app: App | FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        http = app if isinstance(app, FastAPI) else app.http
        self.server = _Server(uvicorn.Config(http, host=host, port=port, log_config=None,
                                             lifespan="off", ws_max_size=1 << 20))
        self._task: asyncio.Task[None] | None = None
        self.port = port

    async def _serve(self) -> None:
        try:
            await self.server.serve()
        except SystemExit as e:  # uvicorn exits when it cannot bind; a task must not do that
            raise RuntimeError(
                f"HTTP server on {self.host}:{self.port} did not start (uvicorn exit status {e.code})"
            ) from None

    async def start(self) -> int:
        self._task = asyncio.create_task(self._serve())
        while not self.server.started:
            if self._task.done():
                self._task.result()  # raises what uvicorn raised
                raise RuntimeError(f"HTTP server on {self.host}:{self.port} did not start")
            await asyncio.sleep(0.005)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self.port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await self._task


def listen_port(config: Config, port: int | None) -> int:
    """--port, else $PORT (Cloud Run), else [server] port."""
    if port is not None:
        return port
    env = os.environ.get("PORT")
    return int(env) if env else config.server.port


def listen_host(config: Config, host: str | None) -> str:
    """--host, else [server] host."""
    return host.strip() if host and host.strip() else config.server.host


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop`` (through the running loop; main thread only)."""
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if not stop.is_set():
            log.info("%s received", sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError, ValueError) as e:  # not the main thread...
            log.debug("cannot handle %s: %s", sig.name, e)


async def abandon(engine: Engine | None, engine_start: asyncio.Future[None] | None) -> None:
    """Stop an engine begun before vc could listen (its LLM child process, its threads)."""
    if engine_start is None or engine is None:
        return
    engine_start.cancel()
    with contextlib.suppress(BaseException):
        await engine_start
    await engine.stop()


async def serve(
    config: Config, registry: Registry, *, port: int | None = None, host: str | None = None,
    engine: Engine | None = None, engine_start: asyncio.Future[None] | None = None,
) -> int:
    """Listen, start (or go on starting) the engine, then the transports; serve until SIGTERM
    or SIGINT, then drain. ``engine``/``engine_start``: see :class:`App`."""
    try:
        app = App(config, registry, engine, engine_start)
    except RouteConflict as e:
        log.error("cannot start: %s", e)
        await abandon(engine, engine_start)
        return 1
    http = HTTPServer(app, listen_host(config, host), listen_port(config, port))
    stop = asyncio.Event()
    install_stop_signals(stop)
    try:
        await http.start()
    except (OSError, SystemExit, RuntimeError) as e:
        log.error("cannot listen on %s:%s: %s", http.host, http.port, e)
        await abandon(app.engine, engine_start)
        return 1
    # Again, now that uvicorn runs: whatever it did with the process's signal handlers,
    # SIGTERM/SIGINT are vc's (readiness off, drain, then uvicorn is told to exit).
    install_stop_signals(stop)
    log.info("listening on %s", http.url)
    try:
        starting = asyncio.create_task(app.start())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done() and starting.exception() is not None:
            app.error = str(starting.exception())
            log.error("startup failed: %s", app.error)
            await app.engine.stop()
            return 1
        await stop.wait()
        log.info("shutting down: draining calls (up to %.0fs)", config.server.drain_timeout)
        if not starting.done():
            starting.cancel()
        await app.stop()
    finally:
        await http.stop()
    return 0
