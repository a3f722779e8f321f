"""Contract test suites: subclass one in your plugin's tests to prove it honours vc's contract.

Providers (``STTContract``, ``LLMContract``, ``TTSContract``, ``TransportContract``) and
observers (``ObserverContract``, set ``observer = MyObserver``).

    from vc.testing.contracts import STTContract
    from vc_stt_mine import MySTTProvider

    class TestMySTT(STTContract):
        provider = MySTTProvider
        def make_settings(self):
            return MySTTProvider.Settings(model="small")

Each suite starts the provider as vc would (``Provider(settings, context)`` then
``await start()``), builds a service for a call and drives it with real frames through a real
pipecat pipeline. Override ``make_settings``, ``language`` or the sample inputs as needed.
``TransportContract`` also places a loopback call through vc's engine once the subclass
implements ``connect_caller`` (returning a :class:`ContractCaller`).
"""

from __future__ import annotations

import inspect
import logging
import re
from typing import Any, ClassVar, Protocol, runtime_checkable

import attrs
import pytest
from pipecat.frames.frames import (
    ErrorFrame,
    InputAudioRawFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.task import PipelineParams
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.tests.utils import run_test

from vc.call import CallInfo
from vc.plugins import load_plugins
from vc.profiles import Profile, ProfileSettings
from vc.providers import (
    CallContext,
    CallHost,
    LLMProvider,
    Observer,
    Provider,
    ProviderContext,
    STTProvider,
    TransportProvider,
    TTSProvider,
)
from vc.settings import describe


def _words(text: str) -> set[str]:
    return set(re.findall(r"[^\W_]+", text.lower()))


class ProviderContract:
    """Checks every provider kind shares: metadata, schema, registration, lifecycle."""

    provider: ClassVar[type[Provider]]
    #: Profile language used for the call contexts.
    language: ClassVar[str] = "en"
    #: Set False for a provider you test without installing it (no entry point to find).
    check_entry_point: ClassVar[bool] = True

    def make_settings(self) -> Any:
        cls = self.provider.Settings
        return cls() if cls is not None else None

    def make_profile(self) -> Profile:
        return Profile("default", ProfileSettings(language=self.language, greeting="Hello."))

    def make_provider(self) -> Any:
        return self.provider(
            self.make_settings(),
            ProviderContext(profiles=[self.make_profile()], log=logging.getLogger("vc.contract")),
        )

    def call_context(self, input_rate: int = 16000, output_rate: int = 8000) -> CallContext:
        info = CallInfo(call_id="contract-call", transport="contract")
        return CallContext(info=info, profile=self.make_profile(), input_sample_rate=input_rate,
                           output_sample_rate=output_rate,
                           log=logging.LoggerAdapter(logging.getLogger("vc.contract"), {}))

    def test_metadata(self) -> None:
        p = self.provider
        assert p.kind in ("transport", "stt", "llm", "tts"), "subclass a vc.providers base class"
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", p.name), f"provider name {p.name!r} must be kebab-case"
        assert p.description, "describe the provider in one line (shown by vc list-plugins)"
        assert p.languages and all(isinstance(x, str) for x in p.languages)

    def test_settings_schema_is_documented(self) -> None:
        if self.provider.Settings is None:
            return
        assert attrs.has(self.provider.Settings), "Settings must be an attrs class"
        for field in describe(self.provider.Settings):
            assert field.help, f"setting {field.name!r} has no help text (use vc.settings.setting)"

    def test_registered_through_entry_point(self) -> None:
        if not self.check_entry_point:
            pytest.skip("entry point check disabled")
        registry = load_plugins(env={})
        found = registry.provider(self.provider.kind, self.provider.name)
        assert found is self.provider, (
            f"no installed plugin registers {self.provider.kind} provider {self.provider.name!r}; "
            "check the [project.entry-points.vc] table and the register_* hook"
        )

    @pytest.mark.asyncio
    async def test_start_and_stop(self) -> None:
        provider = self.make_provider()
        await provider.start()
        try:
            assert provider.ready()
        finally:
            await provider.stop()


class STTContract(ProviderContract):
    """Speech to text: real speech in, a transcript out."""

    provider: ClassVar[type[STTProvider]]
    #: What to say (espeak-ng), the espeak voice, and words the transcript must contain (any).
    phrase: ClassVar[str] = "please call me back tomorrow morning"
    voice: ClassVar[str] = "en-us"
    expected_words: ClassVar[tuple[str, ...]] = ("call", "back", "tomorrow", "morning")

    def make_audio(self, rate: int) -> bytes:
        from vc.testing.calls import speech

        return bytes(rate // 5 * 2) + speech(self.phrase, rate, self.voice) + bytes(rate // 2 * 2)

    def _frames(self, pcm: bytes, rate: int) -> list[Any]:
        step = rate // 50 * 2
        audio = [InputAudioRawFrame(pcm[i : i + step], rate, 1) for i in range(0, len(pcm), step)]
        return [VADUserStartedSpeakingFrame(), *audio, VADUserStoppedSpeakingFrame()]

    async def _transcribe(self, pcm: bytes) -> tuple[str, list[Any]]:
        provider = self.make_provider()
        await provider.start()
        try:
            rate = provider.sample_rate
            service = provider.create_service(self.call_context(input_rate=rate))
            down, _ = await run_test(
                service,
                frames_to_send=self._frames(pcm, rate),
                pipeline_params=PipelineParams(audio_in_sample_rate=rate),
                start_timeout=10.0,
            )
        finally:
            await provider.stop()
        text = " ".join(f.text for f in down if type(f) is TranscriptionFrame)
        return text, list(down)

    @pytest.mark.asyncio
    async def test_transcribes_speech(self) -> None:
        rate = self.provider.sample_rate
        text, _ = await self._transcribe(self.make_audio(rate))
        assert _words(text) & set(self.expected_words), f"transcript {text!r} misses {self.expected_words}"

    @pytest.mark.asyncio
    async def test_silence_is_harmless(self) -> None:
        rate = self.provider.sample_rate
        _, frames = await self._transcribe(bytes(rate * 2))
        assert not [f for f in frames if isinstance(f, ErrorFrame)]


class LLMContract(ProviderContract):
    """Language model: a conversation in, streamed text out, framed as pipecat expects."""

    provider: ClassVar[type[LLMProvider]]
    question: ClassVar[str] = "Say hello in one short sentence."

    async def _ask(self, messages: list[dict[str, Any]]) -> list[Any]:
        provider = self.make_provider()
        await provider.start()
        try:
            service = provider.create_service(self.call_context())
            down, _ = await run_test(
                service,
                frames_to_send=[LLMContextFrame(LLMContext(messages=messages))],  # type: ignore[arg-type]
                start_timeout=10.0,
            )
        finally:
            await provider.stop()
        return list(down)

    @pytest.mark.asyncio
    async def test_streams_a_framed_reply(self) -> None:
        frames = await self._ask([{"role": "user", "content": self.question}])
        kinds = [type(f) for f in frames]
        assert LLMFullResponseStartFrame in kinds and LLMFullResponseEndFrame in kinds
        start, end = kinds.index(LLMFullResponseStartFrame), kinds.index(LLMFullResponseEndFrame)
        texts = [f.text for f in frames[start:end] if isinstance(f, LLMTextFrame)]
        assert "".join(texts).strip(), "no text between LLMFullResponseStart and End"
        assert not [f for f in frames if isinstance(f, ErrorFrame)]


class TTSContract(ProviderContract):
    """Text to speech: text in, audio at the call's rate out, bracketed by start/stop frames."""

    provider: ClassVar[type[TTSProvider]]
    sentence: ClassVar[str] = "Hello, thanks for calling. How can I help you today?"
    output_rate: ClassVar[int] = 8000

    @pytest.mark.asyncio
    async def test_synthesize_for_greeting_cache(self) -> None:
        provider = self.make_provider()
        await provider.start()
        try:
            clip = await provider.synthesize(self.sentence, self.make_profile())
        finally:
            await provider.stop()
        assert clip.sample_rate > 0 and clip.duration > 0.5

    async def _speak(self, text: str) -> list[Any]:
        provider = self.make_provider()
        await provider.start()
        try:
            service = provider.create_service(self.call_context(output_rate=self.output_rate))
            down, _ = await run_test(
                service,
                frames_to_send=[TTSSpeakFrame(text)],
                pipeline_params=PipelineParams(audio_out_sample_rate=self.output_rate),
                start_timeout=10.0,
            )
        finally:
            await provider.stop()
        return list(down)

    @pytest.mark.asyncio
    async def test_streams_audio_at_call_rate(self) -> None:
        frames = await self._speak(self.sentence)
        audio = [f for f in frames if isinstance(f, TTSAudioRawFrame)]
        assert audio, "no TTSAudioRawFrame"
        assert {f.sample_rate for f in audio} == {self.output_rate}
        seconds = sum(len(f.audio) for f in audio) / 2 / self.output_rate
        assert seconds > 0.5
        kinds = [type(f) for f in frames]
        assert TTSStartedFrame in kinds and TTSStoppedFrame in kinds

    @pytest.mark.asyncio
    async def test_empty_text_is_harmless(self) -> None:
        frames = await self._speak("")
        assert not [f for f in frames if isinstance(f, ErrorFrame)]


class RecordingHost(CallHost):
    """A CallHost that records the calls a transport hands over (for TransportContract)."""

    def __init__(self) -> None:
        self.accepting = True
        self.calls: list[Any] = []

    def select_profile(self, info: CallInfo) -> Profile:
        return Profile("default")

    async def run_call(self, connection: Any) -> str:
        self.calls.append(connection)
        return "completed"


@runtime_checkable
class ContractCaller(Protocol):
    """The caller's end of the call :class:`TransportContract` places: a phone the test drives.

    Audio is PCM16 mono at 8 kHz both ways, whatever the wire carries.
    """

    def send_audio(self, pcm: bytes) -> None:
        """Speak ``pcm`` into the call in real time, after what is still being sent. Between
        utterances the phone keeps sending silence, as a real one does."""

    def received_audio(self) -> bytes:
        """All the bot audio the caller has heard so far, in order (silent gaps may be left out)."""

    async def hangup(self) -> None:
        """The caller hangs up (a BYE, Twilio's ``stop``...)."""

    async def close(self) -> None:
        """Release what ``connect_caller`` opened (sockets, tasks); runs even after a failure."""


#: One 20 ms frame at 8 kHz, PCM16.
_FRAME_8K = 320


class _Heard:
    """Counts the non-silent 20 ms frames a :class:`ContractCaller` has heard, with their times."""

    def __init__(self, caller: ContractCaller) -> None:
        self.caller = caller
        self.offset = 0
        self.loud = 0
        #: when the last loud frame was heard (0: none yet)
        self.last_loud_at = 0.0
        #: (time, loud frames heard by then), sampled every 10 ms
        self.samples: list[tuple[float, int]] = []

    def poll(self) -> int:
        import time

        from vc.audio import rms

        audio = self.caller.received_audio()
        now = time.monotonic()
        while self.offset + _FRAME_8K <= len(audio):
            if rms(audio[self.offset : self.offset + _FRAME_8K]) > 0.003:
                self.loud += 1
                self.last_loud_at = now
            self.offset += _FRAME_8K
        self.samples.append((now, self.loud))
        return self.loud

    def at(self, t: float) -> int:
        """Loud frames heard by time ``t`` (from the samples)."""
        return max((n for ts, n in self.samples if ts <= t), default=0)

    async def run(self) -> None:
        import asyncio

        while True:
            self.poll()
            await asyncio.sleep(0.01)


class TransportContract(ProviderContract):
    """Transport: starts, reports readiness, exposes routes (if HTTP), stops cleanly, and places
    a real call through vc's engine.

    The call needs the caller's end of the transport: implement :meth:`connect_caller`
    (return None to skip that test). The engine runs the fake STT/LLM/TTS
    (:mod:`vc.testing.fakes`); the transport's :meth:`~TransportProvider.routes` are served
    on 127.0.0.1 as ``vc serve`` would, before :meth:`~TransportProvider.start` gets the
    engine as its :class:`~vc.providers.CallHost`. The call checks, in order: the greeting
    is heard; the caller's speech reaches the STT and its answer is heard; marks are reported
    (``mark_played``); talking over a long answer stops the bot's audio (``clear``) within
    :attr:`max_clear_seconds`; the caller's hang-up ends the call in core.
    """

    provider: ClassVar[type[TransportProvider]]
    #: How long bot audio may still be heard once core decided on a barge-in.
    max_clear_seconds: ClassVar[float] = 0.5
    #: What the fake STT hears, one line per utterance (the first asks for a long answer).
    loopback_script: ClassVar[str] = "tell me everything about the sea, stop right there"

    async def connect_caller(
        self, transport: TransportProvider, http_url: str
    ) -> ContractCaller | None:
        """Place a call to the started ``transport`` and return its caller's end.

        ``http_url`` is where the transport's routes are served (``http://127.0.0.1:<port>``;
        empty when :meth:`~TransportProvider.routes` returned None). Return once the call is
        being answered (the greeting may still be on its way). None skips the call test.
        """
        return None

    @pytest.mark.asyncio
    async def test_start_and_stop(self) -> None:
        transport = self.make_provider()
        host = RecordingHost()
        await transport.start(host)
        try:
            assert transport.ready(), "ready() must be true once start() returned"
            assert transport.host is host, "start(host) must keep the host (super().start(host))"
            assert transport.alive(), "alive() must be true for a transport that just started"
        finally:
            await transport.stop()

    def test_routes_are_an_api_router_or_none(self) -> None:
        from fastapi import APIRouter

        routes = self.make_provider().routes()
        assert routes is None or isinstance(routes, APIRouter)

    @pytest.mark.asyncio
    async def test_a_loopback_call_moves_audio_both_ways(self) -> None:
        import asyncio
        import contextlib
        import time

        from fastapi import FastAPI

        from vc.engine import Engine
        from vc.hookspecs import hookimpl
        from vc.server import HTTPServer
        from vc.testing import FAKE_STACK, config_from_ini, fake_registry, until
        from vc.testing.calls import speech

        # Made up front: espeak-ng runs while nothing is timed yet.
        question = speech("tell me everything about the sea", 8000) + bytes(3200)
        interruption = speech("stop right there please", 8000) + bytes(3200)
        seen: list[tuple[float, str, str, dict[str, Any]]] = []

        class Recorder(Observer):
            name = "contract-recorder"

            def event(self, info: CallInfo, name: str, data: dict[str, Any]) -> None:
                seen.append((time.monotonic(), info.call_id, name, dict(data)))

        class Registers:
            @hookimpl
            def register_observers(self, register: Any) -> None:
                register(Recorder)

        registry = fake_registry(env={"VC_LOAD_PLUGINS": ""}, extra=[("contract", Registers())])
        ini = (FAKE_STACK + f"[stt.fake]\nscript = {self.loopback_script}\n[tts.fake]\n"
               "ms_per_char = 40\n[vc]\nobservers = contract-recorder\n")
        engine = Engine(config_from_ini(ini, registry), registry)

        def events(name: str, after: float = 0.0) -> list[tuple[float, dict[str, Any]]]:
            return [(t, d) for t, _, n, d in seen if n == name and t > after]

        transport = self.make_provider()
        http: HTTPServer | None = None
        caller: ContractCaller | None = None
        watcher: asyncio.Task[None] | None = None
        await engine.start()
        try:
            router = transport.routes()  # as vc serve does: routes first, then start(host)
            url = ""
            if router is not None:
                app = FastAPI()
                app.include_router(router)
                http = HTTPServer(app, "127.0.0.1", 0)
                await http.start()
                url = http.url
            await transport.start(engine)
            caller = await self.connect_caller(transport, url)
            if caller is None:
                pytest.skip("connect_caller is not implemented for this transport")
            heard = _Heard(caller)
            watcher = asyncio.create_task(heard.run())

            # 1. The greeting is heard, and its mark reported once it has been.
            await until(lambda: heard.loud >= 5, what="greeting audio")
            session = await until(lambda: list(engine.sessions.values()), what="call in core")
            call_id = session[0].info.call_id
            await until(lambda: events("mark_played"), what="mark_played for the greeting")
            await until(lambda: time.monotonic() - heard.last_loud_at > 0.8,
                        what="the end of the greeting")

            # 2. The caller speaks; core transcribes it; the (long) answer is heard.
            before = heard.loud
            asked = time.monotonic()
            caller.send_audio(question)
            await until(lambda: events("transcript", asked), what="transcript of the caller's speech")
            await until(lambda: heard.loud >= before + 10, what="the answer")

            # 3. Talking over the answer: the bot's audio stops, and nothing stale follows.
            await asyncio.sleep(0.6)
            interrupted = time.monotonic()
            caller.send_audio(interruption)
            (barge_at, _), *_ = await until(lambda: events("barge_in", interrupted), what="barge_in")
            (turn_at, _), *_ = await until(
                lambda: events("transcript", barge_at), what="the interruption's transcript"
            )
            stopped_by = barge_at + self.max_clear_seconds
            if turn_at > stopped_by:
                late = heard.at(turn_at) - heard.at(stopped_by)
                assert late * 0.02 <= 0.1, (
                    f"{late * 20} ms of bot audio was heard more than {self.max_clear_seconds}s "
                    "after the barge-in: clear() must drop what the transport buffered"
                )
            assert len(events("mark_played")) >= 1

            # 4. The caller hangs up: the call ends in core.
            await caller.hangup()
            await until(lambda: call_id not in engine.sessions, within=10,
                        what="the end of the call in core")
            assert transport.alive()
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            if caller is not None:
                await caller.close()
            await transport.stop()
            if http is not None:
                await http.stop()
            await engine.stop()


#: A payload of each catalogue event, as core would send it (for events a short loopback call
#: does not produce by itself: barge-ins and pauses need a caller talking over the bot).
SAMPLE_EVENTS: dict[str, dict[str, Any]] = {
    "transcript": {"text": "where is my order"},
    "turn": {"text": "where is my order", "voice_to_voice": 0.61, "vad_stop": 0.2, "stt": 0.1,
             "llm_first_token": 0.15, "tts_first_audio": 0.12},
    "barge_in": {},
    "bot_paused": {},
    "bot_resumed": {},
    "mark_played": {"name": "contract-mark"},
    "dtmf": {"digit": "5"},
    "tool_call": {"name": "end_call", "arguments": {}},
    "media_quality": {"expected": 500, "received": 495, "lost": 5, "late": 1, "duplicate": 0,
                      "concealed_seconds": 0.12, "jitter_seconds": 0.004,
                      "max_jitter_seconds": 0.011, "loss_ratio": 0.01},
}


class ObserverContract:
    """Observer: metadata, settings schema, registration, start/stop, and a real call.

    The call runs through vc's engine (fake STT/LLM/TTS, a :class:`LoopbackConnection` caller):
    greeting, a spoken turn, a key press, and the bot ending the call with ``end_call``; the
    catalogue events such a call does not produce are sent through the engine during it. Every
    method the engine calls must return without raising, must not be a coroutine function, and
    must return within ``max_call_seconds`` (it runs on the call's path).
    """

    observer: ClassVar[type[Observer]]
    #: Set False for an observer you test without installing it (no entry point to find).
    check_entry_point: ClassVar[bool] = True
    #: The environment the registration check loads plugins with (``{"VC_PLUGIN_MODULES":
    #: "my_module"}`` for a module that is a plugin without being installed).
    plugin_env: ClassVar[dict[str, str]] = {}
    #: The longest one observer method may run on the call's path.
    max_call_seconds: ClassVar[float] = 0.05

    def make_settings(self) -> Any:
        cls = self.observer.Settings
        return cls() if cls is not None else None

    def make_observer(self) -> Observer:
        return self.observer(self.make_settings())

    def test_metadata(self) -> None:
        o = self.observer
        assert isinstance(o, type) and issubclass(o, Observer), "subclass vc.providers.Observer"
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", o.name), f"observer name {o.name!r} must be kebab-case"
        for method in ("call_started", "call_ended", "latency", "event"):
            assert not inspect.iscoroutinefunction(getattr(o, method)), (
                f"{method} must be a plain method: the engine calls it on the call's path and "
                "never awaits it (hand slow work to a task or a thread started in start())"
            )
        for method in ("start", "stop"):
            assert inspect.iscoroutinefunction(getattr(o, method)), f"{method} must be async"

    def test_settings_schema_is_documented(self) -> None:
        if self.observer.Settings is None:
            return
        assert attrs.has(self.observer.Settings), "Settings must be an attrs class"
        names = [f.name for f in describe(self.observer.Settings)]
        assert "enabled" not in names, "'enabled' is core's key in every [observer.<name>] section"
        for field in describe(self.observer.Settings):
            assert field.help, f"setting {field.name!r} has no help text (use vc.settings.setting)"

    def test_registered_through_entry_point(self) -> None:
        if not self.check_entry_point:
            pytest.skip("entry point check disabled")
        registry = load_plugins(env=dict(self.plugin_env))
        found = registry.observers.get(self.observer.name, (None, None))[0]
        assert found is self.observer, (
            f"no installed plugin registers observer {self.observer.name!r}; "
            "check the [project.entry-points.vc] table and the register_observers hook"
        )

    @pytest.mark.asyncio
    async def test_start_and_stop(self) -> None:
        observer = self.make_observer()
        await observer.start()
        await observer.stop()

    @pytest.mark.asyncio
    async def test_hears_every_event_of_a_real_call_without_slowing_it(self) -> None:
        import asyncio
        import time

        from vc.engine import Engine
        from vc.events import CATALOGUE
        from vc.hookspecs import hookimpl
        from vc.testing import FAKE_STACK, config_from_ini, fake_registry
        from vc.testing.calls import LoopbackConnection, run_loopback_call, speech

        cls = self.observer

        class Registers:
            @hookimpl
            def register_observers(self, register: Any) -> None:
                register(cls)

        registry = fake_registry(env={"VC_LOAD_PLUGINS": ""}, extra=[("contract", Registers())])
        ini = FAKE_STACK + f"[stt.fake]\nscript = goodbye\n[vc]\nobservers = {cls.name}\n"
        config = config_from_ini(ini, registry)
        config.observers[cls.name] = self.make_settings()
        engine = Engine(config, registry)
        await engine.start()
        try:
            (observer,) = engine.observers
            assert isinstance(observer, cls)
            heard: list[tuple[str, str]] = []  # (method, event name)
            slow: list[str] = []
            failures: list[str] = []

            def timed(method: str) -> Any:
                original = getattr(observer, method)

                def call(*args: Any) -> Any:
                    t0 = time.monotonic()
                    try:
                        result = original(*args)
                    except Exception as e:
                        failures.append(f"{method}{args[1:]!r}: {type(e).__name__}: {e}")
                        raise
                    took = time.monotonic() - t0
                    heard.append((method, args[1] if method == "event" else ""))
                    if took > self.max_call_seconds:
                        slow.append(f"{method}({args[1]!r}) took {took * 1000:.0f} ms")
                    assert not inspect.isawaitable(result), f"{method} returned an awaitable"
                    return result

                return call

            for method in ("call_started", "call_ended", "latency", "event"):
                setattr(observer, method, timed(method))

            conn = LoopbackConnection()
            task = await run_loopback_call(engine, conn)
            await conn.wait_for_bot_audio(0, timeout=20)  # the greeting
            await conn.wait_for_bot_silence()
            conn.press("5")
            for name in CATALOGUE:  # whatever this short call does not produce by itself
                engine.event(conn.info, name, dict(SAMPLE_EVENTS[name]))
            conn.say(speech("goodbye", 8000))  # the fake model says goodbye and hangs up
            assert await conn.wait_for_hangup(timeout=30), "the bot did not end the call"
            outcome = await asyncio.wait_for(task, 20)
            await conn.stop()
        finally:
            await engine.stop()
        assert not failures, "the observer raised:\n" + "\n".join(failures)
        assert not slow, (
            "the observer held up the call (it must hand slow I/O to a task or thread):\n"
            + "\n".join(slow)
        )
        methods = {m for m, _ in heard}
        assert {"call_started", "call_ended", "latency", "event"} <= methods, methods
        assert {n for m, n in heard if m == "event"} >= set(CATALOGUE)
        assert outcome == "completed"
