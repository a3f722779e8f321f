"""Plugin discovery and the registry of everything plugins register.

Plugins are Python distributions with an entry point in the ``vc`` group pointing at a module
(or object) with hook implementations (see :mod:`vc.hookspecs`). Each entry point is loaded
and its hooks called on their own, so one broken plugin is reported and skipped instead of
taking the process down. Environment:

* ``VC_LOAD_PLUGINS`` - unset: all installed plugins; empty: none; ``a,b``: only those
  distributions.
* ``VC_STRICT_PLUGINS=1`` - a broken plugin is fatal (:class:`PluginLoadError`).
* ``VC_PLUGIN_MODULES`` - ``pkg.mod,other.mod``: modules loaded as plugins as well, whatever
  ``VC_LOAD_PLUGINS`` says (tests use ``vc.testing.fakes``, the instant fake providers).
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import pluggy

from vc import hookspecs
from vc.providers import (
    KnownProvider,
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
KIND_BASES: dict[str, type[Provider]] = {
    "transport": TransportProvider,
    "stt": STTProvider,
    "llm": LLMProvider,
    "tts": TTSProvider,
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
    #: ``register_known_providers``: install hints and the default stack, in load order.
    known: list[tuple[KnownProvider, PluginRecord]] = attrs.field(factory=list)
    conflicts: list[str] = attrs.field(factory=list)

    def provider(self, kind: str, name: str) -> type[Provider] | None:
        entry = self.providers[kind].get(name)
        return entry.cls if entry else None

    def install_hint(self, kind: str, name: str) -> str | None:
        """What to ``pip install`` for provider ``name`` of ``kind`` (an observer too), as a
        plugin declared it (the first that did); None when no installed plugin knows."""
        return next((k.install for k, _ in self.known if (k.kind, k.name) == (kind, name)), None)

    def default_provider(self, kind: str) -> str | None:
        """The default stack's ``kind`` provider (the first one declared); where no plugin
        declares one, the only installed ``kind`` provider; otherwise None."""
        declared = next((k.name for k, _ in self.known if k.default and k.kind == kind), None)
        return declared or self._only_installed(kind)

    def default_transports(self) -> list[str]:
        """The default stack's transports (every one declared, in load order, once); where no
        plugin declares any, the only installed transport."""
        declared = [k.name for k, _ in self.known if k.default and k.kind == "transport"]
        only = self._only_installed("transport")
        return list(dict.fromkeys(declared)) or ([only] if only else [])

    def _only_installed(self, kind: str) -> str | None:
        installed = list(self.providers.get(kind, {}))
        return installed[0] if len(installed) == 1 else None

    def errors(self) -> list[PluginRecord]:
        return [p for p in self.plugins if p.status != "ok"]


def _provider_name(base: type[Provider]) -> Callable[[Any], str]:
    def check(obj: Any) -> str:
        if not (isinstance(obj, type) and issubclass(obj, base)):
            raise TypeError(f"expects a subclass of {base.__qualname__}, got {obj!r}")
        if not obj.name:
            raise TypeError(f"{obj.__qualname__} has no name")
        if obj.Settings is not None and not attrs.has(obj.Settings):
            raise TypeError(f"{obj.__qualname__}.Settings must be an attrs class")
        return str(obj.name)

    return check


def _observer_name(obj: Any) -> str:
    if not (isinstance(obj, type) and issubclass(obj, Observer) and obj.name):
        raise TypeError(f"expects a named Observer subclass, got {obj!r}")
    return obj.name


def _tool_name(obj: Any) -> str:
    if not isinstance(obj, Tool):
        raise TypeError(f"expects a vc.providers.Tool, got {obj!r}")
    return obj.name


def _catalog(obj: Any) -> None:
    if not isinstance(obj, ModelCatalog):
        raise TypeError(f"expects a ModelCatalog, got {obj!r}")


def _check_function(obj: Any) -> None:
    if not callable(obj):
        raise TypeError(f"expects a function fn(config), got {obj!r}")


def _known_provider(obj: Any) -> None:
    if not isinstance(obj, KnownProvider):
        raise TypeError(f"expects a vc.providers.KnownProvider, got {obj!r}")
    if obj.kind not in (*KIND_BASES, "observer") or not obj.name or not obj.install.strip():
        raise TypeError(f"expects a kind ({', '.join((*KIND_BASES, 'observer'))}), a name and "
                        f"what to install, got {obj!r}")


def _providers_of(kind: str) -> Callable[[Registry], dict[str, Registered]]:
    return lambda reg: reg.providers[kind]


@attrs.frozen
class _Hook:
    """What one ``register_*`` hook accepts and where the registry keeps it."""

    kind: str
    #: checks an object (TypeError when wrong); returns its name, or None for unnamed kinds
    check: Callable[[Any], str | None]
    #: named kinds: the registry's table of that kind; unnamed: the list appended to
    store: Callable[[Registry], Any]
    label: str


#: One registration path: every register_* hook, what it accepts and where it goes.
HOOKS: dict[str, _Hook] = {
    **{
        f"register_{'transports' if kind == 'transport' else kind}": _Hook(
            kind, _provider_name(base), _providers_of(kind), f"{kind} provider"
        )
        for kind, base in KIND_BASES.items()
    },
    "register_observers": _Hook("observer", _observer_name, lambda reg: reg.observers, "observer"),
    "register_tools": _Hook("tool", _tool_name, lambda reg: reg.tools, "tool"),
    "register_models": _Hook("models", _catalog, lambda reg: reg.catalogs, "model catalogue"),
    "register_checks": _Hook("check", _check_function, lambda reg: reg.checks, "check"),
    "register_known_providers": _Hook("known", _known_provider, lambda reg: reg.known,
                                      "known provider"),
}
HOOK_KIND = {hook: spec.kind for hook, spec in HOOKS.items()}


def _is_wrapper(impl: pluggy.HookImpl) -> bool:
    return bool(impl.wrapper or impl.hookwrapper)


def implements(pm: pluggy.PluginManager, plugin: object, hook_name: str) -> bool:
    impls = getattr(pm.hook, hook_name).get_hookimpls()
    return any(impl.plugin is plugin for impl in impls)


def in_call_order(impls: list[pluggy.HookImpl]) -> list[pluggy.HookImpl]:
    """The non-wrapper implementations: tryfirst ones, then the others, then trylast ones,
    each group in load order (stable, so the first plugin loaded wins a name clash)."""
    plain = [impl for impl in impls if not _is_wrapper(impl)]
    return sorted(plain, key=lambda impl: 0 if impl.tryfirst else 2 if impl.trylast else 1)


def hook_of(pm: pluggy.PluginManager, plugin: object, hook_name: str) -> Any | None:
    """The hook ``hook_name`` called through pluggy for one plugin's implementation, with every
    plugin's wrappers around it (None if the plugin does not implement it).

    vc calls each hook plugin by plugin, so one that raises is reported on its own and the
    others still run; the call still goes through pluggy (wrappers, tracing, monitoring).
    """
    impls = getattr(pm.hook, hook_name).get_hookimpls()
    if not any(impl.plugin is plugin for impl in impls):
        return None
    others = [i.plugin for i in impls if i.plugin is not plugin and not _is_wrapper(i)]
    return pm.subset_hook_caller(hook_name, remove_plugins=others)


def _origin(record: PluginRecord, obj: Any) -> str:
    where = f" ({obj.__module__}.{obj.__qualname__})" if isinstance(obj, type) else ""
    return f"{record.distribution} {record.version}{where}"


class _Loader:
    """Registers plugins one at a time; each plugin's hooks are called through pluggy
    (``subset_hook_caller``: that plugin's implementations, wrappers included), so a plugin
    that fails is reported and everything it registered is dropped, and the others load."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.pm = pluggy.PluginManager("vc")
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry(pm=self.pm)
        self.records: dict[str, PluginRecord] = {}

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
        """Register a plugin with pluggy (its hooks are called by :meth:`register_all`)."""
        self.registry.plugins.append(record)
        try:
            self.pm.register(plugin, name=record.name)
            self.pm.check_pending()
        except Exception as e:  # PluginValidationError, ValueError (duplicate name)
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            self.fail(record, f"{type(e).__name__}: {e}", e)
            return
        self.records[record.name] = record
        record.hooks = [h for h in ("register_commands", *HOOKS) if implements(self.pm, plugin, h)]

    def register_all(self) -> None:
        """Call every register_* hook, plugin by plugin in pluggy's order (tryfirst/trylast,
        then load order); a plugin whose hook raises loses everything it registered."""
        for hook_name in HOOKS:
            for impl in in_call_order(getattr(self.pm.hook, hook_name).get_hookimpls()):
                if not self.pm.is_registered(impl.plugin):  # failed in an earlier hook
                    continue
                record = self.records[impl.plugin_name]
                call = hook_of(self.pm, impl.plugin, hook_name)
                try:
                    if call is not None:
                        call(register=self._register_callback(hook_name, record))
                except PluginLoadError:
                    raise
                except Exception as e:
                    self._forget(record)
                    self.pm.unregister(impl.plugin)
                    self.fail(record, f"{hook_name} raised {type(e).__name__}: {e}", e)

    def _forget(self, record: PluginRecord) -> None:
        """Drop whatever a plugin registered before it failed."""
        reg = self.registry
        for spec in HOOKS.values():
            store = spec.store(reg)
            if isinstance(store, dict):
                for name in [n for n, entry in store.items() if self._owner(entry) is record]:
                    del store[name]
        reg.checks[:] = [(fn, p) for fn, p in reg.checks if p is not record]
        reg.known[:] = [(k, p) for k, p in reg.known if p is not record]
        record.provides.clear()

    @staticmethod
    def _owner(entry: Any) -> PluginRecord:
        return entry.plugin if isinstance(entry, Registered) else entry[1]

    def _register_callback(self, hook_name: str, record: PluginRecord) -> Callable[[Any], None]:
        spec = HOOKS[hook_name]
        reg = self.registry

        def register(obj: Any) -> None:
            try:
                name = spec.check(obj)
            except TypeError as e:
                raise TypeError(f"{hook_name} {e}") from None
            store = spec.store(reg)
            if name is None:  # unnamed kinds: model catalogues, doctor checks, known providers
                store.append(obj if spec.kind == "models" else (obj, record))
                return
            taken = store.get(name)
            if taken is not None:
                first = taken.cls if isinstance(taken, Registered) else taken[0]
                msg = (f"{spec.label} {name!r} is registered twice: by "
                       f"{_origin(self._owner(taken), first)} and by {_origin(record, obj)}; "
                       "uninstall one of them")
                reg.conflicts.append(msg)
                record.status, record.error = "error", msg
                log.error(msg)
                return
            store[name] = Registered(obj, record) if spec.kind in KIND_BASES else (obj, record)
            record.provides.append((spec.kind, name))
            if spec.kind in KIND_BASES:
                record.languages[name] = list(obj.languages)

        return register


_loaded: Registry | None = None


def registry() -> Registry:
    """The plugins of this process, loaded on first use (what ``vc`` commands and plugin
    commands use; a plugin's command calls this rather than loading plugins again)."""
    global _loaded
    if _loaded is None:
        _loaded = load_plugins()
    return _loaded


def use_registry(reg: Registry | None) -> None:
    """Make ``reg`` what :func:`registry` returns (None: load afresh on next use)."""
    global _loaded
    _loaded = reg


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
    for module in _plugin_modules(env):
        _add_module(loader, module)

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
    loader.register_all()
    return loader.registry


def _plugin_modules(env: Mapping[str, str]) -> list[str]:
    return [m.strip() for m in env.get("VC_PLUGIN_MODULES", "").split(",") if m.strip()]


def _add_module(loader: _Loader, module: str) -> None:
    """A module named in ``VC_PLUGIN_MODULES`` loaded as a plugin (e.g. ``vc.testing.fakes``)."""
    record = PluginRecord(module, module.split(".")[0], "?")
    try:
        plugin = importlib.import_module(module)
    except Exception as e:
        loader.registry.plugins.append(record)
        loader.fail(record, f"import failed: {type(e).__name__}: {e}", e)
        return
    loader.add(plugin, record)


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
