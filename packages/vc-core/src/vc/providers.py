"""Base classes for what plugins register: providers of each kind, observers, tools, catalogues.

A provider class is registered once; core builds one instance per configured provider at
startup (``__init__`` + ``await start()``: load models, open connections, warm caches), then
asks it for a pipecat service for each call (``create_service``). Nothing slow may happen in
``create_service``: it runs while the caller waits.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

if TYPE_CHECKING:
    from fastapi import APIRouter
    from pipecat.services.llm_service import LLMService
    from pipecat.services.stt_service import STTService
    from pipecat.services.tts_service import TTSService

    from vc.call import CallConnection, CallInfo
    from vc.profiles import Profile


class ProviderError(Exception):
    """A provider could not start or serve; the message says what to do about it."""


@attrs.define
class CallContext:
    """What a provider sees of one call when it builds that call's service."""

    info: CallInfo
    profile: Profile
    #: Sample rate the STT receives (the pipeline's input rate).
    input_sample_rate: int
    #: Sample rate the TTS should produce (the call's wire rate; core resamples if it differs).
    output_sample_rate: int
    log: logging.LoggerAdapter[Any]

    @property
    def call_id(self) -> str:
        return self.info.call_id

    @property
    def language(self) -> str:
        return self.profile.language


@attrs.define
class ProviderContext:
    """What a provider sees of the running system at startup."""

    #: The profiles whose calls this provider serves (preload their voices/models in start()).
    profiles: list[Profile]
    log: logging.Logger
    observe: Callable[[str, float, dict[str, str]], None] = lambda name, value, labels: None


class Provider:
    """Common base: a name, a settings schema, supported languages, a start/stop lifecycle."""

    kind: ClassVar[str] = ""
    #: Name used in configuration (``[stt] provider = <name>``).
    name: ClassVar[str] = ""
    #: attrs class of this provider's settings (see :mod:`vc.settings`), or None.
    Settings: ClassVar[type | None] = None
    #: Languages supported, as BCP-47 primary tags (``"en"``, ``"tr"``); ``"*"`` = any.
    #: The class value is what plugin listings show; an instance may narrow it from its
    #: settings in ``__init__`` (an English-only model), and configuration checks and
    #: ``vc serve`` both ask the configured instance (:meth:`supports_language`).
    languages: tuple[str, ...] = ("*",)
    description: ClassVar[str] = ""

    def __init__(self, settings: Any, context: ProviderContext) -> None:
        self.settings = settings
        self.context = context
        self.log = context.log

    async def start(self, *args: Any, **kwargs: Any) -> None:
        """Load models, open connections, warm up. Raise ProviderError with a clear message.

        STT, LLM and TTS providers override it as ``async def start(self) -> None``; a
        transport as ``async def start(self, host: CallHost) -> None``
        (:meth:`TransportProvider.start`). The base accepts either so that both are proper
        overrides for type checkers.
        """

    async def warm(self) -> None:
        """Work that makes a call's first turn faster but need not delay readiness (a first
        run that allocates a model's buffers), called once vc is ready. It runs in the
        background: a call may come meanwhile, and a failure is logged, not raised. Default:
        nothing."""

    async def stop(self) -> None:
        """Release everything ``start`` acquired."""

    def ready(self) -> bool:
        """Whether this provider can take calls now (reported by ``/readyz``)."""
        return True

    def not_ready_reason(self) -> str:
        """Why ``ready()`` is False, in one line for ``/readyz`` ("" when ready).

        Providers of a remote service get this from :class:`vc.reconnect.RemoteProvider`.
        """
        return "" if self.ready() else "not ready"

    def supports_language(self, language: str) -> bool:
        """Whether this provider, as configured, serves ``language`` (from ``self.languages``)."""
        primary = language.split("-")[0].lower()
        return "*" in self.languages or primary in self.languages


class STTProvider(Provider):
    """Speech to text. ``create_service`` returns a pipecat ``STTService``."""

    kind = "stt"
    #: The sample rate the STT wants its input at (an instance may set it from its settings).
    sample_rate: int = 16000

    def create_service(self, call: CallContext) -> STTService:
        raise NotImplementedError


class LLMProvider(Provider):
    """Language model. ``create_service`` returns a pipecat ``LLMService`` (see vc.llm)."""

    kind = "llm"
    #: Whether the model can call tools (``end_call``, ``transfer_call``...). The class value
    #: is the capability; an instance may turn it off from its settings.
    supports_tools: bool = False

    def create_service(self, call: CallContext) -> LLMService:
        raise NotImplementedError


@attrs.frozen
class AudioClip:
    """Mono PCM16 audio."""

    pcm: bytes
    sample_rate: int

    @property
    def duration(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate


class TTSProvider(Provider):
    """Text to speech. ``create_service`` returns a pipecat ``TTSService``."""

    kind = "tts"

    def create_service(self, call: CallContext) -> TTSService:
        raise NotImplementedError

    async def synthesize(self, text: str, profile: Profile) -> AudioClip:
        """Speak ``text`` whole (used to pre-render greetings at startup)."""
        raise NotImplementedError


class CallHost(ABC):
    """Core's side of the process, as transports see it: the one API a transport calls.

    ``vc serve`` passes its engine to :meth:`TransportProvider.start`; tests pass their own
    (``vc.testing.contracts.RecordingHost``). A transport uses exactly this:

    * :meth:`admit` before it answers a call (SIP ``200 OK``, Twilio TwiML): a reason string
      means refuse (SIP 503, Twilio busy), None means take it;
    * :meth:`run_call` once the call is answered, with its :class:`~vc.call.CallConnection`:
      it returns when the conversation is over, or raises :class:`ProviderError` at once when
      the call is refused after all (the host admits again: it may have filled up meanwhile);
    * :attr:`listen_host`, where a transport wants to know whether vc's HTTP server is
      reachable from other machines.
    """

    #: Whether new calls are taken at all (False while starting and while draining).
    #: Transports ask :meth:`admit`, which also checks capacity and counts refusals.
    accepting: bool = True

    def admit(self, info: CallInfo) -> str | None:
        """Why a new call would be refused now (None: it would be taken). Check before answering."""
        return None if self.accepting else "not accepting calls"

    def select_profile(self, info: CallInfo) -> Profile:
        """The profile a call runs with (core decides; transports need not call this)."""
        raise NotImplementedError

    @property
    def listen_host(self) -> str | None:
        """The address vc's HTTP server is bound to (``[server] host``), if there is one."""
        return None

    @abstractmethod
    async def run_call(self, connection: CallConnection) -> str:
        """Run the conversation until it ends; returns the outcome (``completed``, ``error``...)."""


class TransportProvider(Provider):
    """A telephony transport: accepts calls and hands each to ``host.run_call``."""

    kind = "transport"

    def __init__(self, settings: Any, context: ProviderContext) -> None:
        super().__init__(settings, context)
        self.host: CallHost | None = None

    def routes(self) -> APIRouter | None:
        """HTTP routes to mount on vc's server (webhooks, WebSocket endpoints), if any.

        Called once, when the server is built: before :meth:`start`, so ``self.host`` is
        still None here (a handler reads it when a request comes). Put every path under the
        transport's own prefix (``/<name>/...``): ``vc serve`` refuses to start when a path
        is taken twice (by another transport or by core's ``/healthz``, ``/readyz``,
        ``/metrics``).
        """
        return None

    async def start(self, host: CallHost) -> None:
        """Start listening; calls go to ``host.run_call``. Called after :meth:`routes`.

        Overrides call ``await super().start(host)`` (or set ``self.host``) first.
        """
        self.host = host

    def alive(self) -> bool:
        """False only when this transport is broken beyond what it can repair by itself (its
        listening socket died and could not be reopened): ``/healthz`` then fails so that the
        process is restarted. Not started yet, or stopped on purpose, is alive. Must be cheap.
        """
        return True


class Observer:
    """A metrics, logging or tracing sink: hears every call's start, end, latencies and events.

    Registered with ``register_observers(register)``; which installed observers run is decided
    by ``[vc] observers`` and ``[observer.<name>] enabled`` (docs/configuration.md). The engine
    builds one instance per process (``Observer(settings)``), awaits :meth:`start` before the
    first call and :meth:`stop` at shutdown.

    Every method is optional. The per-call methods (:meth:`call_started`, :meth:`call_ended`,
    :meth:`latency`, :meth:`event`) are called on the event loop, on the call's path: they
    must return at once - never do I/O that can wait (a network send, a flush to a slow disk)
    in them; hand the data to a queue or a thread that :meth:`start` set up and :meth:`stop`
    drains. An exception raised by any method is logged (``vc_observer_errors`` counts it) and
    goes no further: it never reaches the call or the process; an observer whose
    ``__init__`` or :meth:`start` fails is left out until the process restarts.
    """

    #: Name used in configuration (``[vc] observers = <name>``, ``[observer.<name>]``).
    name: ClassVar[str] = ""
    #: attrs class of this observer's settings (see :mod:`vc.settings`), or None.
    Settings: ClassVar[type | None] = None
    description: ClassVar[str] = ""

    def __init__(self, settings: Any = None) -> None:
        self.settings = settings

    async def start(self) -> None:
        """Open what the observer needs (a file, a connection, a worker); before the first call."""

    async def stop(self) -> None:
        """Flush and release what :meth:`start` opened; at shutdown, after the last call."""

    def call_started(self, info: CallInfo, profile: str) -> None:
        """A call was answered; ``profile`` is the name of the profile it runs with."""

    def call_ended(self, info: CallInfo, outcome: str, duration: float) -> None:
        """A call ended: ``outcome`` (``completed``, ``error``...), ``duration`` in seconds."""

    def latency(self, info: CallInfo, stage: str, seconds: float) -> None:
        """A turn's stage latency, or a barge-in's (``stage`` in
        :data:`vc.events.LATENCY_STAGES`)."""

    def event(self, info: CallInfo, name: str, data: dict[str, Any]) -> None:
        """A call event: ``name`` from :mod:`vc.events`, ``data`` with the keys it documents."""


@attrs.define
class ToolCall:
    """What a tool handler receives: the arguments and the call it acts on."""

    arguments: dict[str, Any]
    connection: CallConnection
    info: CallInfo
    profile: Profile
    #: Run an action once the bot's current speech has been heard (e.g. hang up after goodbye).
    after_speech: Callable[[Callable[[], Awaitable[None]]], None]
    #: Speak a sentence now, through the TTS.
    say: Callable[[str], Awaitable[None]]
    #: End the call from the bot's side (hangs up and stops the pipeline).
    end: Callable[[str], Awaitable[None]]
    #: Whether the model already said something in the reply that called this tool.
    spoke_this_turn: bool = False


@attrs.frozen
class Tool:
    """A function the LLM may call. ``parameters`` is a JSON-schema ``properties`` mapping."""

    name: str
    description: str
    handler: Callable[[ToolCall], Awaitable[Any]]
    parameters: dict[str, Any] = attrs.field(factory=dict)
    required: tuple[str, ...] = ()


@attrs.frozen
class ModelInfo:
    """One model a catalogue knows about."""

    name: str
    kind: str
    installed: bool
    location: str = ""
    detail: str = ""
    install_hint: str = ""


@attrs.frozen
class KnownProvider:
    """A provider an index plugin vouches for, whether it is installed here or not.

    Core names no provider: which distribution provides one (the ``pip install`` hint for a
    provider that is configured but not installed) and which providers run when the
    configuration names none (the default stack) are data plugins contribute through
    ``register_known_providers``. ``kind`` is ``transport``, ``stt``, ``llm``, ``tts`` or
    ``observer``; ``install`` is what to give ``pip install`` (``vc-stt-vosk``,
    ``'vc-tts-piper[local]'``); ``default`` puts it in the default stack (the first default of
    each provider kind; every default transport).
    """

    kind: str
    name: str
    install: str
    default: bool = False


class ModelCatalog:
    """Lists and prepares the models one plugin can use (``vc models``)."""

    name: ClassVar[str] = ""

    def list(self) -> list[ModelInfo]:
        return []

    def prepare(self, model: str, progress: Callable[[int, int], None]) -> Path | str:
        """Make ``model`` usable (assemble, verify, pull); returns where it is."""
        raise ProviderError(f"{self.name}: nothing to prepare for {model}")

    def verify(self, model: str) -> None:
        """Raise ProviderError unless ``model``'s files are the ones the catalogue pins.

        Cheap when nothing changed (sizes, then sha256s remembered by ``vc.verify``); ``prepare``
        verifies with a full re-hash. The default has nothing to check.
        """


def package_dir(module: str) -> Path | None:
    """Where an installed package (a model package, say) lives, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def cache_dir() -> Path:
    """vc's cache directory: ``$VC_CACHE_DIR``, else ``$XDG_CACHE_HOME/vc``, else ``~/.cache/vc``.

    Assembled models live in its ``models`` folder, the model verification cache in
    ``verified.json`` (see ``vc.verify``).
    """
    if os.environ.get("VC_CACHE_DIR"):
        return Path(os.environ["VC_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "vc"


def retrieve_failure(future: asyncio.Future[Any]) -> None:
    """Done callback for work started ahead that may then not be wanted (an early transcript,
    a withdrawn reply, a held piece): read its failure so that asyncio never logs it as
    "exception was never retrieved", and log it at debug instead. Whoever still awaits the
    future gets the failure raised as usual. ``future.add_done_callback(retrieve_failure)``."""
    if not future.cancelled() and (error := future.exception()) is not None:
        logging.getLogger(__name__).debug("work nobody awaited ended with %s: %s",
                                          type(error).__name__, error)
