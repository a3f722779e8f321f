"""Plugin discovery and the registry of everything plugins register.

Plugins are Python distributions with an entry point in the ``vc`` group pointing at a module
(or object) with hook implementations (see :mod:`vc.hookspecs`). Each entry point is loaded
and its hooks called on their own, so one broken plugin is reported and skipped instead of
taking the process down. Environment:

* ``VC_LOAD_PLUGINS`` - unset: all installed plugins; empty: none; ``a,b``: only those
  distributions.
* ``VC_STRICT_PLUGINS=1`` - a broken plugin is fatal (:class:`PluginLoadError`).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

import attrs
import pluggy

from vc import hookspecs
from vc.providers import (
    LLMProvider,
    ModelCatalog,
    Observer,
    Provider,
    STTProvider,
    Tool,
    TransportProvider,
    TTSProvider,
)

if sys.version_info >= (3, 12):
    from importlib.metadata import EntryPoint, entry_points
else:  # pragma: no cover - exercised on 3.11
    from importlib_metadata import EntryPoint, entry_points

log = logging.getLogger("vc.plugins")

GROUP = "vc"
KIND_BASES: dict[str, type] = {
    "transport": TransportProvider,
    "stt": STTProvider,
    "llm": LLMProvider,
    "tts": TTSProvider,
}
HOOK_KIND = {
    "register_transports": "transport",
    "register_stt": "stt",
    "register_llm": "llm",
    "register_tts": "tts",
    "register_observers": "observer",
    "register_tools": "tool",
    "register_models": "models",
    "register_checks": "check",
}


class PluginLoadError(Exception):
    """A plugin failed to load while ``VC_STRICT_PLUGINS=1``, or plugins conflict."""


def normalize(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


@attrs.define
class PluginRecord:
    """One plugin as ``vc list-plugins`` shows it."""

    name: str
    distribution: str
    version: str
    status: str = "ok"  # ok | error
    error: str = ""
    provides: list[tuple[str, str]] = attrs.field(factory=list)  # (kind, name)
    languages: dict[str, list[str]] = attrs.field(factory=dict)  # provider name -> languages
    hooks: list[str] = attrs.field(factory=list)

    @property
    def kinds(self) -> list[str]:
        return sorted({k for k, _ in self.provides})

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status,
            "error": self.error,
            "kinds": self.kinds,
            "providers": [{"kind": k, "name": n} for k, n in self.provides],
            "languages": self.languages,
            "hooks": sorted(self.hooks),
        }


@attrs.define
class Registered:
    """A registered provider class and the plugin that registered it."""

    cls: type[Provider]
    plugin: PluginRecord


@attrs.define
class Registry:
    """Everything the loaded plugins registered."""

    pm: pluggy.PluginManager
    plugins: list[PluginRecord] = attrs.field(factory=list)
    providers: dict[str, dict[str, Registered]] = attrs.field(
        factory=lambda: {k: {} for k in KIND_BASES}
    )
    observers: dict[str, tuple[type[Observer], PluginRecord]] = attrs.field(factory=dict)
    tools: dict[str, tuple[Tool, PluginRecord]] = attrs.field(factory=dict)
    catalogs: list[ModelCatalog] = attrs.field(factory=list)
    #: ``vc doctor`` checks: ``fn(config) -> Iterable[vc.doctor.Check]`` and who registered it.
    checks: list[tuple[Callable[[Any], Any], PluginRecord]] = attrs.field(factory=list)
    conflicts: list[str] = attrs.field(factory=list)

    def provider(self, kind: str, name: str) -> type[Provider] | None:
        entry = self.providers[kind].get(name)
        return entry.cls if entry else None

    def errors(self) -> list[PluginRecord]:
        return [p for p in self.plugins if p.status != "ok"]


#: Which distribution provides each of our own providers, for "pip install" hints.
KNOWN_DISTRIBUTIONS: dict[tuple[str, str], str] = {
    ("transport", "twilio"): "vc-transport-twilio",
    ("transport", "opensips"): "vc-transport-opensips",
    ("stt", "faster-whisper"): "vc-stt-faster-whisper",
    ("stt", "vosk"): "vc-stt-vosk",
    ("stt", "vosk-websocket"): "vc-stt-vosk",
    ("llm", "ollama"): "vc-llm-ollama",
    ("llm", "llama-ws"): "vc-llm-llama-ws",
    ("llm", "llama-cpp"): "'vc-llm-llama-ws[embedded]'",
    ("tts", "piper"): "'vc-tts-piper[local]'",
    ("tts", "piper-websocket"): "vc-tts-piper",
    ("observer", "gcp-logging"): "vc-gcp",
}


class _Loader:
    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.pm = pluggy.PluginManager("vc")
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry(pm=self.pm)

    def fail(self, record: PluginRecord, message: str, exc: BaseException | None = None) -> None:
        record.status = "error"
        record.error = message
        log.error("plugin %s (%s) failed: %s", record.name, record.distribution, message)
        if exc is not None:
            log.debug("".join(traceback.format_exception(exc)))
        if self.strict:
            raise PluginLoadError(
                f"plugin {record.name!r} from {record.distribution} failed to load: {message}"
            ) from exc

    def add(self, plugin: object, record: PluginRecord) -> None:
        self.registry.plugins.append(record)
        try:
            self.pm.register(plugin, name=record.name)
            self.pm.check_pending()
        except Exception as e:  # PluginValidationError, ValueError (duplicate name)
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            self.fail(record, f"{type(e).__name__}: {e}", e)
            return
        impls = [
            (hook_name, impl)
            for hook_name in HOOK_KIND
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls()
            if impl.plugin is plugin
        ]
        record.hooks = [
            h
            for h in ("register_commands", *HOOK_KIND)
            if any(i.plugin is plugin for i in getattr(self.pm.hook, h).get_hookimpls())
        ]
        for hook_name, impl in impls:
            try:
                impl.function(register=self._register_callback(hook_name, record))
            except PluginLoadError:
                raise
            except Exception as e:
                self.fail(record, f"{hook_name} raised {type(e).__name__}: {e}", e)
                self._forget(record)
                if self.pm.is_registered(plugin):
                    self.pm.unregister(plugin)
                return

    def _forget(self, record: PluginRecord) -> None:
        """Drop whatever a plugin registered before it failed."""
        reg = self.registry
        for kind in KIND_BASES:
            for name in [n for n, r in reg.providers[kind].items() if r.plugin is record]:
                del reg.providers[kind][name]
        for name in [n for n, (_, p) in reg.observers.items() if p is record]:
            del reg.observers[name]
        for name in [n for n, (_, p) in reg.tools.items() if p is record]:
            del reg.tools[name]
        reg.checks[:] = [(fn, p) for fn, p in reg.checks if p is not record]
        record.provides.clear()

    def _register_callback(self, hook_name: str, record: PluginRecord):
        kind = HOOK_KIND[hook_name]
        reg = self.registry

        def register(obj: Any) -> None:
            if kind in KIND_BASES:
                base = KIND_BASES[kind]
                if not (isinstance(obj, type) and issubclass(obj, base)):
                    raise TypeError(f"{hook_name} expects a subclass of {base.__qualname__}, got {obj!r}")
                obj = cast(type[Provider], obj)
                if not obj.name:
                    raise TypeError(f"{obj.__qualname__} has no name")
                if obj.Settings is not None and not attrs.has(obj.Settings):
                    raise TypeError(f"{obj.__qualname__}.Settings must be an attrs class")
                taken = reg.providers[kind].get(obj.name)
                if taken is not None:
                    msg = (
                        f"{kind} provider {obj.name!r} is registered twice: by "
                        f"{taken.plugin.distribution} {taken.plugin.version} ({taken.cls.__module__}."
                        f"{taken.cls.__qualname__}) and by {record.distribution} {record.version} "
                        f"({obj.__module__}.{obj.__qualname__}); uninstall one of them"
                    )
                    reg.conflicts.append(msg)
                    record.status = "error"
                    record.error = msg
                    log.error(msg)
                    return
                reg.providers[kind][obj.name] = Registered(obj, record)
                record.provides.append((kind, obj.name))
                record.languages[obj.name] = list(obj.languages)
            elif kind == "observer":
                if not (isinstance(obj, type) and issubclass(obj, Observer) and obj.name):
                    raise TypeError(f"register_observers expects a named Observer subclass, got {obj!r}")
                if obj.name in reg.observers:
                    other = reg.observers[obj.name][1]
                    msg = (
                        f"observer {obj.name!r} is registered twice: by {other.distribution} "
                        f"and by {record.distribution}"
                    )
                    reg.conflicts.append(msg)
                    record.status, record.error = "error", msg
                    return
                reg.observers[obj.name] = (obj, record)
                record.provides.append(("observer", obj.name))
            elif kind == "tool":
                if not isinstance(obj, Tool):
                    raise TypeError(f"register_tools expects a vc.providers.Tool, got {obj!r}")
                if obj.name in reg.tools:
                    other = reg.tools[obj.name][1]
                    msg = (
                        f"tool {obj.name!r} is registered twice: by {other.distribution} "
                        f"and by {record.distribution}"
                    )
                    reg.conflicts.append(msg)
                    record.status, record.error = "error", msg
                    return
                reg.tools[obj.name] = (obj, record)
                record.provides.append(("tool", obj.name))
            elif kind == "models":
                if not isinstance(obj, ModelCatalog):
                    raise TypeError(f"register_models expects a ModelCatalog, got {obj!r}")
                reg.catalogs.append(obj)
            elif kind == "check":
                if not callable(obj):
                    raise TypeError(f"register_checks expects a function fn(config), got {obj!r}")
                reg.checks.append((obj, record))

        return register


def _wanted(env: Mapping[str, str]) -> set[str] | None:
    raw = env.get("VC_LOAD_PLUGINS")
    if raw is None:
        return None
    return {normalize(p) for p in raw.split(",") if p.strip()}


def load_plugins(
    *,
    env: Mapping[str, str] | None = None,
    extra: Iterable[tuple[str, object]] = (),
    eps: Iterable[EntryPoint] | None = None,
) -> Registry:
    """Discover, load and register plugins; broken ones are recorded with their error."""
    env = os.environ if env is None else env
    strict = env.get("VC_STRICT_PLUGINS", "").strip().lower() in ("1", "true", "yes", "on")
    loader = _Loader(strict)

    from vc import builtins  # core's own tools and observers, always present

    loader.add(builtins, PluginRecord("vc", "vc-core", _version("vc-core")))
    if env.get("VC_FAKE_PROVIDERS", "").strip() in ("1", "true", "yes"):
        from vc.testing import fakes

        loader.add(fakes, PluginRecord("vc-testing-fakes", "vc-core", _version("vc-core")))

    wanted = _wanted(env)
    found = list(entry_points(group=GROUP) if eps is None else eps)
    for ep in sorted(found, key=lambda e: (normalize(_dist_name(e)), e.name)):
        dist = _dist_name(ep)
        if wanted is not None and normalize(dist) not in wanted:
            continue
        record = PluginRecord(ep.name, dist, _dist_version(ep))
        try:
            plugin = ep.load()
        except PluginLoadError:
            raise
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                raise
            loader.registry.plugins.append(record)
            loader.fail(record, f"import failed: {type(e).__name__}: {e}", e)
            continue
        loader.add(plugin, record)
    for name, plugin in extra:
        loader.add(plugin, PluginRecord(name, name, "0"))
    return loader.registry


def _dist_name(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else ep.value.split(":")[0].split(".")[0]


def _dist_version(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.version if dist is not None else "?"


def _version(dist: str) -> str:
    try:
        if sys.version_info >= (3, 12):
            from importlib.metadata import version
        else:  # pragma: no cover
            from importlib_metadata import version
        return version(dist)
    except Exception:
        from vc import __version__

        return __version__
