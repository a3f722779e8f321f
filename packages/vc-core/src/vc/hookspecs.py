"""The hooks a vc plugin can implement. Each hands the plugin a ``register`` callback."""

from __future__ import annotations

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("vc")
hookimpl = HookimplMarker("vc")


@hookspec
def register_transports(register):
    """Register telephony transports: ``register(TransportProviderClass)``."""


@hookspec
def register_stt(register):
    """Register speech-to-text providers: ``register(STTProviderClass)``."""


@hookspec
def register_llm(register):
    """Register language-model providers: ``register(LLMProviderClass)``."""


@hookspec
def register_tts(register):
    """Register text-to-speech providers: ``register(TTSProviderClass)``."""


@hookspec
def register_observers(register):
    """Register metrics, logging or tracing sinks: ``register(ObserverClass)``."""


@hookspec
def register_tools(register):
    """Register tools the LLM may call during a call: ``register(Tool)``."""


@hookspec
def register_models(register):
    """Register model catalogues shown and prepared by ``vc models``: ``register(catalog)``."""


@hookspec
def register_checks(register):
    """Register ``vc doctor`` checks: ``register(fn)``, ``fn(config) -> Iterable[Check]``, sync or async."""


@hookspec
def register_known_providers(register):
    """Install hints and the default stack: ``register(KnownProvider(kind, name, install, default))``."""


@hookspec
def register_commands(cli):
    """Add subcommands to the ``vc`` click group."""
