"""The engine: started providers, greeting cache, VAD pool, observers and the calls in flight.

Everything slow happens in :meth:`Engine.start`, before the first call: providers load their
models and open their connections, greetings are synthesised, VAD models are loaded. A provider
of a remote service that is not reachable yet (:mod:`vc.reconnect`) does not stop the start: the
engine runs, reports it in :meth:`Engine.not_ready`, and renders the greetings of a TTS that
comes up later as soon as it is ready.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Coroutine
from functools import partial
from typing import Any

from pipecat.audio.vad.vad_analyzer import VADParams

from vc import events
from vc.audio import resample
from vc.call import CallConnection, CallInfo, MediaQuality
from vc.capabilities import capability_errors, create_provider
from vc.config import Config
from vc.llm import DEFAULT_APOLOGY, apology_for
from vc.logs import LogThrottle
from vc.memory import HeapTrimmer
from vc.metrics import Metrics
from vc.plugins import Registry
from vc.profiles import Profile, select_profile
from vc.providers import AudioClip, CallHost, Observer, Provider, ProviderContext, ProviderError
from vc.reconnect import backoff
from vc.vad import CallVAD

log = logging.getLogger("vc.engine")

VAD_POOL = 4
#: After [server] drain_timeout: how long the calls still up may take to hear the goodbye.
DRAIN_GOODBYE_TIMEOUT = 8.0
VAD_POOL_RATE = 16000
#: How long an observer's start() or stop() may take before it is given up on.
OBSERVER_TIMEOUT = 10.0
#: An observer method that takes longer than this holds up the call; it is logged.
SLOW_OBSERVER_S = 0.1


class EngineStartError(Exception):
    """One or more providers failed to start; the message lists every failure."""


class Engine(CallHost):
    def __init__(self, config: Config, registry: Registry, metrics: Metrics | None = None) -> None:
        self.config = config
        self.registry = registry
        self.metrics = metrics or Metrics()
        self.providers: dict[str, dict[str, Provider]] = {}
        self.observers: list[Observer] = []
        self._observers_stopped: set[int] = set()
        self._observer_log = LogThrottle()
        self.greetings: dict[str, AudioClip] = {}
        self._greeting_rates: dict[tuple[str, int], bytes] = {}
        #: profile name -> its apology, pre-rendered like the greeting (see apology_text)
        self.apologies: dict[str, AudioClip] = {}
        self._apology_rates: dict[tuple[str, int], bytes] = {}
        self._vad_pool: list[CallVAD] = []
        self._vad_refill: asyncio.Task[None] | None = None
        self.sessions: dict[str, Any] = {}
        self.accepting = False
        self.started = False
        self._drained = asyncio.Event()
        self._drained.set()
        self.startup_seconds: dict[str, float] = {}
        #: profile name -> TTS provider whose greeting waits for it to become ready
        self.greetings_pending: dict[str, str] = {}
        self._later: set[asyncio.Task[None]] = set()
        self._apologies_rendering: set[asyncio.Task[None]] = set()
        #: hands the memory calls freed back to the OS after they end (vc.memory)
        self.heap_trimmer = HeapTrimmer(config.server.memory_trim_interval)
        self.created_at = time.monotonic()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every configured provider concurrently; raise with all failures listed."""
        ctx = ProviderContext(profiles=self.config.profiles, log=logging.getLogger("vc.provider"),
                              observe=self._observe_value)
        await self._start_observers()

        jobs: list[tuple[str, str, Provider]] = []
        construction_failures: list[str] = []
        for kind, choices in self.config.providers.items():
            for name, choice in choices.items():
                cls = self.registry.provider(kind, name)
                assert cls is not None
                default = self.config.default_providers[kind]
                try:
                    provider = create_provider(cls, kind, name, choice.settings, ctx.profiles,
                                               default, observe=ctx.observe)
                except Exception as e:
                    log.exception("%s provider %s failed to initialise", kind, name)
                    construction_failures.append(f"{kind} provider {name!r}: {type(e).__name__}: {e}")
                    continue
                # The same verdict as `vc config check` (vc.config.resolve) reaches.
                problems = capability_errors(kind, name, provider)
                if problems:
                    construction_failures += [str(p) for p in problems]
                    continue
                self.providers.setdefault(kind, {})[name] = provider
                jobs.append((kind, name, provider))

        async def start_one(kind: str, name: str, provider: Provider) -> str | None:
            t0 = time.monotonic()
            try:
                await provider.start()
            except ProviderError as e:
                return f"{kind} provider {name!r}: {e}"
            except Exception as e:
                log.exception("%s provider %s failed to start", kind, name)
                return f"{kind} provider {name!r}: {type(e).__name__}: {e}"
            self.startup_seconds[f"{kind}.{name}"] = time.monotonic() - t0
            if provider.ready():
                log.info("%s provider %s ready in %.2fs", kind, name, time.monotonic() - t0)
            else:
                log.info("%s provider %s started in %.2fs, not ready yet: %s", kind, name,
                         time.monotonic() - t0, provider.not_ready_reason() or "not ready")
            if kind == "tts" and not provider.ready():  # its service is not reachable yet
                self._render_greetings_later(name, provider)
            elif kind == "tts":  # while the other models still load
                try:
                    await self._render_greetings(name)
                except EngineStartError as e:
                    return str(e)
            return None

        starts = [asyncio.create_task(start_one(*j)) for j in jobs]  # first: a child to spawn
        vad_job = asyncio.create_task(self._fill_vad_pool(VAD_POOL))
        # The call path's modules import in a thread while the models load (mostly outside
        # the GIL): a first pipeline build then takes milliseconds instead of ~0.6 s.
        imports = asyncio.create_task(asyncio.to_thread(_import_call_path))
        failures = construction_failures + [f for f in await asyncio.gather(*starts) if f]
        await vad_job
        await imports
        if failures:
            await self.stop()
            raise EngineStartError("; ".join(failures))
        self._warm_call_path()
        self.started = True
        self.accepting = True
        for kind, name, provider in jobs:
            self._in_background(self._warm_provider(kind, name, provider))

    async def _warm_provider(self, kind: str, name: str, provider: Provider) -> None:
        """``provider.warm()`` once vc is ready (on 2 cores, a warm-up run while the other
        models still load delays readiness)."""
        t0 = time.monotonic()
        try:
            await provider.warm()
        except Exception as e:
            log.warning("%s provider %s failed to warm up: %s: %s", kind, name,
                        type(e).__name__, e)
            return
        log.debug("%s provider %s warmed in %.2fs", kind, name, time.monotonic() - t0)

    def _warm_call_path(self) -> None:
        """Build (and throw away) one call's pipeline so the first real call pays no one-time costs."""
        from vc.call import UnconnectedCall
        from vc.session import CallSession

        t0 = time.monotonic()
        for profile in self.config.profiles:
            conn = UnconnectedCall()
            conn.profile = profile
            try:
                CallSession(self, conn).build()
            except Exception as e:
                raise EngineStartError(f"profile {profile.name!r}: building a call failed: {e}") from e
        log.info("call path warmed in %.2fs", time.monotonic() - t0)

    async def stop(self) -> None:
        self.accepting = False
        self.heap_trimmer.close()
        for task in list(self._later):
            task.cancel()
        for kind in self.providers.values():
            for name, provider in kind.items():
                try:
                    await provider.stop()
                except Exception as e:
                    log.warning("provider %s failed to stop cleanly: %s", name, e)
        self.providers.clear()
        await self._stop_observers()

    def ready(self) -> bool:
        return self.started and self.accepting and not self.not_ready()

    def not_ready(self) -> dict[str, str]:
        """What keeps the engine from being ready, each with why: ``{"llm.llama-ws": "cannot
        connect to ..."}``, ``{"greeting.default": "waiting for tts piper-websocket"}``."""
        out: dict[str, str] = {}
        if not self.started:
            out["engine"] = "starting"
        elif not self.accepting:
            out["engine"] = "not accepting calls (shutting down)"
        for kind, providers in self.providers.items():
            for name, provider in providers.items():
                if not provider.ready():
                    out[f"{kind}.{name}"] = provider.not_ready_reason() or "not ready"
        for profile, tts in self.greetings_pending.items():
            out[f"greeting.{profile}"] = f"waiting for tts {tts}"
        return out

    async def drain(self, timeout: float) -> int:
        """Stop taking calls and wait up to ``timeout`` for active ones; those still up then hear
        their profile's goodbye and are hung up. Returns how many were still up at ``timeout``."""
        self.accepting = False
        self.metrics.ready.set(0)
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
        except TimeoutError:
            pass
        remaining = list(self.sessions.values())
        # The caller hears the profile's goodbye, then the bot hangs up (as end_call does).
        for session in remaining:
            goodbye = str(getattr(session.profile, "goodbye", "") or "")
            try:
                if goodbye:
                    await session.say(goodbye)
                    session.after_speech(partial(session.end, "server shutting down"))
                else:
                    await session.end("server shutting down")
            except Exception as e:
                log.warning("ending %s failed: %s", session.info.call_id, e)
        if any(s in self.sessions.values() for s in remaining):
            try:
                await asyncio.wait_for(self._drained.wait(), DRAIN_GOODBYE_TIMEOUT)
            except TimeoutError:
                pass
        for session in [s for s in remaining if s in self.sessions.values()]:
            try:  # the goodbye was not heard in time: hang up now
                await session.end("server shutting down")
            except Exception as e:
                log.warning("hanging up %s failed: %s", session.info.call_id, e)
        try:  # give the pipelines a moment to wind down
            await asyncio.wait_for(self._drained.wait(), 5.0)
        except TimeoutError:
            log.warning("%d call(s) did not end after hang-up", len(self.sessions))
        return len(remaining)

    # -- providers, greetings, VAD --------------------------------------------------------

    def provider(self, kind: str, name: str = "") -> Any:
        return self.providers[kind][name or self.config.default_providers[kind]]

    def select_profile(self, info: CallInfo) -> Profile:
        return select_profile(self.config.profiles, info)

    def _greeted_by(self, tts_name: str) -> list[Profile]:
        default = self.config.default_providers["tts"]
        return [p for p in self.config.profiles if p.greeting and (p.tts or default) == tts_name]

    async def _render_greetings(self, tts_name: str) -> None:
        for profile in self._greeted_by(tts_name):
            if profile.name in self.greetings:
                continue
            tts = self.provider("tts", profile.tts)
            try:
                clip = await tts.synthesize(profile.greeting, profile)
            except NotImplementedError:  # this TTS cannot pre-render: calls start without one
                self.greetings_pending.pop(profile.name, None)
                continue
            except Exception as e:
                raise EngineStartError(
                    f"greeting of profile {profile.name!r} could not be synthesised: {e}") from e
            self.greetings[profile.name] = clip
            self.greetings_pending.pop(profile.name, None)
            log.info("greeting for profile %s ready (%.2fs of audio)", profile.name, clip.duration)
        # The apologies are for failures later on: rendered after the engine is ready, not before
        # (on 2 cores, 0.6-0.8 CPU-s of Piper that readiness waited for).
        self._apologies_rendering.add(self._in_background(self._render_apologies(tts_name)))

    def _in_background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        self._later.add(task)
        task.add_done_callback(self._later.discard)
        return task

    async def apologies_rendered(self) -> None:
        """Wait until the apologies being pre-rendered (in the background, once their TTS is
        up) are done; a test's or a tool's way to know they are there."""
        pending = [t for t in self._apologies_rendering if not t.done()]
        await asyncio.gather(*pending, return_exceptions=True)

    def apology_text(self, profile: Profile) -> str:
        """What the caller hears when a provider fails a turn, the same text the LLM says when
        the model fails (vc.llm.apology_for): the profile's ``apology`` (its own key, else
        ``[llm.<name>] apology`` where set, else its language's phrase: config.resolve fills
        it in), else the ``apology`` of the profile's LLM provider, else English."""
        try:
            llm = self.provider("llm", profile.llm)
        except KeyError:
            return apology_for(profile, DEFAULT_APOLOGY)
        text = getattr(getattr(llm, "settings", None), "apology", None)
        return apology_for(profile, text if isinstance(text, str) and text.strip() else "")

    async def _render_apologies(self, tts_name: str) -> None:
        """Pre-render each profile's apology with its TTS, so it plays when the TTS fails."""
        default = self.config.default_providers["tts"]
        for profile in self.config.profiles:
            if (profile.tts or default) != tts_name or profile.name in self.apologies:
                continue
            tts = self.provider("tts", profile.tts)
            try:
                clip = await tts.synthesize(self.apology_text(profile), profile)
            except NotImplementedError:  # this TTS cannot pre-render: failed TTS turns are silent
                continue
            except Exception as e:  # not worth refusing to start over; retried if rendered later
                log.warning("apology of profile %s could not be synthesised: %s", profile.name, e)
                continue
            self.apologies[profile.name] = clip
            log.info("apology for profile %s ready (%.2fs of audio)", profile.name, clip.duration)

    def apology_audio(self, profile: Profile, sample_rate: int) -> bytes:
        """The profile's pre-rendered apology at ``sample_rate`` (empty if there is none)."""
        clip = self.apologies.get(profile.name)
        if clip is None:
            return b""
        key = (profile.name, sample_rate)
        if key not in self._apology_rates:
            self._apology_rates[key] = resample(clip.pcm, clip.sample_rate, sample_rate)
        return self._apology_rates[key]

    def provider_failed(self, info: CallInfo, kind: str, provider: str) -> None:
        self.metrics.provider_failures.labels(kind, provider).inc()

    def apologised(self, info: CallInfo, kind: str) -> None:
        self.metrics.apologies.labels(kind).inc()

    def _render_greetings_later(self, tts_name: str, provider: Provider) -> None:
        """The TTS's service was not reachable at start: render its greetings once it is."""
        profiles = self._greeted_by(tts_name)
        for profile in profiles:
            self.greetings_pending[profile.name] = tts_name

        async def later() -> None:
            delays = backoff()
            while True:
                while not provider.ready():
                    await asyncio.sleep(0.2)
                try:
                    await self._render_greetings(tts_name)
                    return
                except EngineStartError as e:  # went away again, or cannot speak it: retry
                    delay = next(delays)
                    log.warning("%s; trying again in %gs", e, delay)
                    await asyncio.sleep(delay)

        self._in_background(later())

    def greeting_audio(self, profile: Profile, sample_rate: int) -> bytes:
        clip = self.greetings.get(profile.name)
        if clip is None:
            return b""
        key = (profile.name, sample_rate)
        if key not in self._greeting_rates:
            self._greeting_rates[key] = resample(clip.pcm, clip.sample_rate, sample_rate)
        return self._greeting_rates[key]

    async def _fill_vad_pool(self, n: int) -> None:
        while len(self._vad_pool) < n:
            self._vad_pool.append(
                await asyncio.to_thread(CallVAD, sample_rate=VAD_POOL_RATE)
            )

    def take_vad(self, params: VADParams, sample_rate: int = VAD_POOL_RATE) -> CallVAD:
        """A loaded Silero VAD for one call (from the warm pool when the rate matches)."""
        if self._vad_pool and sample_rate == VAD_POOL_RATE:
            vad = self._vad_pool.pop()
        else:
            vad = CallVAD(sample_rate=sample_rate)
        vad.configure(params)
        if self._vad_refill is None or self._vad_refill.done():
            self._vad_refill = asyncio.ensure_future(self._fill_vad_pool(VAD_POOL))
        return vad

    def min_volume(self) -> float:
        threshold = self.config.interruption.volume_threshold
        if threshold is None:
            return self.config.vad.min_volume
        return threshold if threshold <= 1 else min(1.0, threshold / 32768)

    # -- calls ----------------------------------------------------------------------------

    @property
    def listen_host(self) -> str | None:
        return self.config.server.host

    def admit(self, info: CallInfo) -> str | None:
        """Why a call would be refused now (counted in vc_calls_refused_total), or None."""
        if not self.accepting:
            self.metrics.refused.labels("not_accepting").inc()
            return "not accepting calls (starting or shutting down)"
        max_calls = self.config.server.max_calls
        if max_calls and len(self.sessions) >= max_calls:
            self.metrics.refused.labels("capacity").inc()
            return f"at capacity ({max_calls} calls)"
        return None

    async def run_call(self, connection: CallConnection) -> str:
        """Run one call to its end. Raises ProviderError at once if it is refused (see admit)."""
        from vc.session import CallSession

        info = connection.info
        refused = self.admit(info)
        if refused:
            raise ProviderError(refused)
        # A TTS whose service is down cannot answer any turn (at best each one would hear the
        # pre-rendered apology, where one could be rendered): refuse the call cleanly (Twilio
        # says its busy_message, SIP gets a 503). Down STT or LLM: the call is taken; turns
        # are apologised for (LLM) or transcribed once the service is back (STT replays). A
        # provider failing mid-call costs that turn the apology (vc.session._provider_failed).
        profile = connection.profile or self.select_profile(info)
        connection.profile = profile
        tts_name = profile.tts or self.config.default_providers["tts"]
        tts = self.providers.get("tts", {}).get(tts_name)
        if tts is not None and not tts.ready():
            self.metrics.refused.labels("tts_not_ready").inc()
            raise ProviderError(f"tts provider {tts_name!r} is not ready "
                                f"({tts.not_ready_reason() or 'not ready'}): refusing the call")
        session = CallSession(self, connection)
        self.sessions[info.call_id] = session
        self._drained.clear()
        try:
            return await session.run()
        finally:
            self.sessions.pop(info.call_id, None)
            if not self.sessions:
                self._drained.set()
            self.heap_trimmer.call_ended()

    # -- observers ------------------------------------------------------------------------

    async def _start_observers(self) -> None:
        """Build and start the enabled observers; one that fails is logged and left out."""
        for name, settings in self.config.observers.items():
            observer_cls, _ = self.registry.observers[name]
            try:
                observer = observer_cls(settings)
                await asyncio.wait_for(observer.start(), OBSERVER_TIMEOUT)
            except Exception as e:
                self.metrics.observer_errors.labels(name).inc()
                log.error("observer %s failed to start, left out: %s: %s", name, type(e).__name__, e)
                continue
            self.observers.append(observer)

    async def _stop_observers(self) -> None:
        """Stop every observer once (each on its own: one that fails or hangs is logged).

        They stay in :attr:`observers` (stopped), for whoever inspects them afterwards."""
        observers = [o for o in self.observers if id(o) not in self._observers_stopped]
        self._observers_stopped.update(id(o) for o in observers)
        for obs in observers:
            name = getattr(type(obs), "name", "") or type(obs).__name__
            stop = getattr(obs, "stop", None)
            if stop is None:  # not an Observer subclass (a test's recorder)
                continue
            try:
                await asyncio.wait_for(stop(), OBSERVER_TIMEOUT)
            except Exception as e:
                self.metrics.observer_errors.labels(name).inc()
                log.warning("observer %s failed to stop cleanly: %s: %s", name, type(e).__name__, e)

    def _notify(self, method: str, *args: Any) -> None:
        for obs in self.observers:
            t0 = time.monotonic()
            try:
                getattr(obs, method)(*args)
            except Exception as e:
                self.metrics.observer_errors.labels(type(obs).name).inc()
                self._observer_log.log(log, logging.WARNING, "observer %s.%s failed: %s",
                                       type(obs).name, method, e)
            took = time.monotonic() - t0
            if took > SLOW_OBSERVER_S:  # it held up the call: say so (it must hand off its I/O)
                self._observer_log.log(log, logging.WARNING,
                                       "observer %s.%s took %.0f ms on the call's path",
                                       type(obs).name, method, took * 1000)

    def _observe_value(self, name: str, value: float, labels: dict[str, str]) -> None:
        if name.endswith("_seconds") or name.endswith(".latency"):
            self.metrics.stage_latency.labels(labels.get("stage", name)).observe(value)
        elif name == "provider_restarts":
            self.metrics.provider_restarts.labels(
                labels.get("provider", ""), labels.get("reason", "")
            ).inc(value)

    def call_started(self, info: CallInfo, profile: str) -> None:
        self.metrics.active_calls.labels(info.transport).inc()
        self._notify("call_started", info, profile)

    def call_ended(self, info: CallInfo, outcome: str, duration: float) -> None:
        self.metrics.active_calls.labels(info.transport).dec()
        self.metrics.calls.labels(info.transport, outcome).inc()
        self.metrics.call_duration.labels(info.transport).observe(duration)
        self._notify("call_ended", info, outcome, duration)

    def media_quality(self, info: CallInfo, quality: MediaQuality) -> None:
        """A call's network statistics, as it ends: metrics, and the observers' event."""
        m, transport = self.metrics, info.transport
        for outcome in ("received", "lost", "late", "duplicate"):
            m.rtp_packets.labels(transport, outcome).inc(getattr(quality, outcome))
        m.rtp_concealed.labels(transport).inc(quality.concealed_seconds)
        m.rtp_jitter.labels(transport).observe(quality.max_jitter_seconds)
        m.rtp_loss.labels(transport).observe(quality.loss_ratio)
        self._notify("event", info, events.MEDIA_QUALITY, quality.as_event())

    def latency(self, info: CallInfo, stage: str, seconds: float) -> None:
        self.metrics.stage_latency.labels(stage).observe(seconds)
        self._notify("latency", info, stage, seconds)

    def event(self, info: CallInfo, name: str, data: dict[str, Any]) -> None:
        if name == events.BARGE_IN:
            self.metrics.barge_ins.labels(info.transport).inc()
        self._notify("event", info, name, data)


#: Imported before the first call, while the models load: core's call path, the bulk of a first
#: pipeline build. (vc's LLM services use vc.chat_adapter, not pipecat's OpenAI adapter and the
#: openai SDK it imports; a plugin's own LLMService that does imports it in the warm-up build.)
CALL_PATH_MODULES = ("vc.session",)


def _import_call_path() -> None:
    for module in CALL_PATH_MODULES:
        try:
            importlib.import_module(module)
        except ImportError as e:  # the build after start reports what is really missing
            log.debug("could not import %s ahead of the first call: %s", module, e)
