"""``vc doctor``: what users trip over before a call, checked in one go.

Each check returns :class:`Check` results (``ok``, ``warn`` or ``fail``, a one-line detail and,
for warn/fail, what to do). Core checks the configuration, the configured providers' plugins,
their models, the ports vc will listen on, the remote services the providers connect to, the
clocks and the audio resampling path; plugins add their own checks through the
``register_checks`` hook (``register(fn)``, ``fn(config) -> Iterable[Check]``, sync or async;
``config`` is the loaded :class:`vc.config.Config`, or ``None`` when it has errors).

Every check runs on its own: one that raises or hangs becomes a ``fail`` naming the exception,
and the others still run. ``fail`` means the configured stack cannot run; ``warn`` means it
can, but something deserves attention. How the generic checks read plugin settings:

* ports: every setting of a configured transport whose name ends with ``port`` (not
  ``*advertised*``, not ``setting(..., remote=True)``, not one whose help starts with
  ``"<m> mode:"`` while the settings' ``mode`` is another) is bind-tested on the address in
  the sibling ``<prefix>_ip``/``_host``/``_bind_ip`` setting (else ``0.0.0.0``), over UDP when
  its help says UDP or RTP, else TCP; ``X_min_port``/``X_max_port`` are tested as a range;
* remote services: every setting of a configured STT/LLM/TTS provider named ``url``,
  ``*_url`` or ``host`` whose value is a ws://, wss://, http:// or https:// URL is connected to
  over TCP;
* models: a catalogue named like a configured provider; the catalogue's models whose name
  matches that provider's ``model``/``voice`` setting (or a profile's ``voice``/
  ``llm_model``) are the ones used.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import json
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from vc import config as vcconfig
from vc.plugins import PluginRecord, Registry, normalize
from vc.providers import ModelCatalog, ModelInfo, ProviderError

Status = Literal["ok", "warn", "fail"]
STATUSES: tuple[Status, ...] = ("ok", "warn", "fail")
#: The wall clock is wrong if it says a year before this vc-core was released.
RELEASE_YEAR = 2026
#: Seconds one check may take before it is reported as hanging.
CHECK_TIMEOUT = 120.0
#: Seconds to wait for a remote service to accept a TCP connection.
CONNECT_TIMEOUT = 2.0
#: Rates the VAD (Silero) accepts; it runs at the STT's input rate.
VAD_RATES = (8000, 16000)
#: The rate of phone audio after G.711 decoding (a transport without a sample_rate setting).
PHONE_RATE = 8000
#: Ports of a range tested one by one, at most.
MAX_RANGE = 4096


@attrs.frozen
class Check:
    """One result of ``vc doctor``."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    def __attrs_post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"Check status must be one of {', '.join(STATUSES)}, got {self.status!r}")

    @classmethod
    def ok(cls, name: str, detail: str) -> Check:
        return cls(name, "ok", detail)

    @classmethod
    def warn(cls, name: str, detail: str, fix: str) -> Check:
        return cls(name, "warn", detail, fix)

    @classmethod
    def fail(cls, name: str, detail: str, fix: str) -> Check:
        return cls(name, "fail", detail, fix)

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


#: What a check function may return: Checks (one, several, none), or an awaitable of those.
CheckFn = Callable[[Any], Any]


@attrs.define
class Context:
    """What the core checks look at."""

    registry: Registry
    raw: vcconfig.RawConfig
    config: vcconfig.Config | None
    errors: list[Any]
    env: Mapping[str, str]


def gather(config_file: str | None, registry: Registry, env: Mapping[str, str] | None = None) -> Context:
    """Read and resolve the configuration the way ``vc serve`` would."""
    env = os.environ if env is None else env
    raw = vcconfig.read(config_file, env)
    cfg, errors = vcconfig.resolve(raw, registry, env)
    return Context(registry=registry, raw=raw, config=cfg, errors=list(errors), env=env)


# -- running -------------------------------------------------------------------------------


def run(ctx: Context, timeout: float = CHECK_TIMEOUT) -> list[Check]:
    """Run core's checks, then every plugin's; each on its own."""
    return asyncio.run(run_async(ctx, timeout))


async def run_async(ctx: Context, timeout: float = CHECK_TIMEOUT) -> list[Check]:
    out: list[Check] = []
    for fn in CORE_CHECKS:
        out += await run_check(fn, ctx, fn.__name__.removeprefix("check_"), "vc-core", timeout)
    for fn, record in ctx.registry.checks:
        label = f"{record.name}: {getattr(fn, '__name__', type(fn).__name__)}"
        out += await run_check(fn, ctx.config, label, record.distribution, timeout)
    return out


async def run_check(fn: CheckFn, arg: Any, label: str, owner: str,
                    timeout: float = CHECK_TIMEOUT) -> list[Check]:
    """Run one check function; whatever goes wrong becomes a ``fail`` naming it."""
    fix = (f"this is a bug in {owner}: please report it" if owner == "vc-core"
           else f"this is a bug in the plugin {owner}: report it to its authors, or uninstall it")
    try:
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            result = fn(arg)
        else:  # sync checks may block (connects, hashing): a thread keeps them interruptible
            result = await _in_thread(lambda: _materialize(fn(arg)), timeout)
        if inspect.isawaitable(result):
            result = await asyncio.wait_for(result, timeout)
        if hasattr(result, "__aiter__"):
            result = await asyncio.wait_for(_collect(result), timeout)
        checks = _materialize(result)
    except TimeoutError:
        return [Check.fail(label, f"the check did not finish in {timeout:.0f} s", fix)]
    except Exception as e:
        return [Check.fail(label, f"the check raised {type(e).__name__}: {e}", fix)]
    out: list[Check] = []
    for item in checks:
        if isinstance(item, Check):
            out.append(item)
        else:
            out.append(Check.fail(label, f"the check returned {item!r}, not a vc.doctor.Check", fix))
    return out


def _materialize(result: Any) -> Any:
    """Checks as a list; awaitables and async iterators are left for the loop."""
    if result is None:
        return []
    if isinstance(result, Check):
        return [result]
    if inspect.isawaitable(result) or hasattr(result, "__aiter__"):
        return result
    return list(result)


async def _collect(agen: Any) -> list[Any]:
    return [item async for item in agen]


async def _in_thread(fn: Callable[[], Any], timeout: float) -> Any:
    """Run ``fn`` in a daemon thread (a hanging check must not keep the process alive)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def target() -> None:
        try:
            value, ok = fn(), True
        except BaseException as e:  # handed to the waiting coroutine
            value, ok = e, False
        try:
            loop.call_soon_threadsafe(settle, ok, value)
        except RuntimeError:  # the loop is gone: nobody waits any more
            pass

    threading.Thread(target=target, name="vc-doctor-check", daemon=True).start()
    return await asyncio.wait_for(future, timeout)


def exit_code(checks: Iterable[Check]) -> int:
    """1 when any check failed (the configured stack cannot run), else 0."""
    return 1 if any(c.status == "fail" for c in checks) else 0


def counts(checks: Iterable[Check]) -> dict[str, int]:
    out: dict[str, int] = dict.fromkeys(STATUSES, 0)
    for c in checks:
        out[c.status] += 1
    return out


def to_json(checks: list[Check], ctx: Context | None = None) -> str:
    body: dict[str, Any] = {
        "ok": exit_code(checks) == 0,
        "config": _source(ctx) if ctx is not None else None,
        "counts": counts(checks),
        "checks": [c.as_dict() for c in checks],
    }
    return json.dumps(body, indent=2, ensure_ascii=False)


def format_text(checks: list[Check], ctx: Context | None = None, color: bool = False) -> str:
    labels = {"ok": "ok", "warn": "warn", "fail": "FAIL"}
    colors = {"ok": "green", "warn": "yellow", "fail": "red"}
    width = max((len(c.name) for c in checks), default=0)
    lines = [f"vc doctor: {_source(ctx)}"] if ctx is not None else []
    for c in checks:
        label = labels[c.status].ljust(4)
        if color:
            import click

            label = click.style(label, fg=colors[c.status], bold=c.status != "ok")
        lines.append(f"  {label}  {c.name.ljust(width)}  {c.detail}")
        if c.status != "ok" and c.fix:
            lines.append(f"        {' ' * width}  fix: {c.fix}")
    n = counts(checks)
    verdict = ("the configured stack cannot run" if n["fail"] else
               "the configured stack can run")
    lines.append(f"{len(checks)} checks: {n['ok']} ok, {n['warn']} warning(s), "
                 f"{n['fail']} failed: {verdict}")
    return "\n".join(lines)


def _source(ctx: Context | None) -> str:
    if ctx is None:
        return ""
    if ctx.raw.path is None:
        return "built-in defaults"
    return ctx.raw.path + (" (OpenSIPS AI Voice Connector format)" if ctx.raw.legacy else "")


# -- configuration and plugins -------------------------------------------------------------


def _is_missing_provider(error: Any) -> bool:
    return "provider" in error.expected and "is not installed (" in error.expected


def check_config(ctx: Context) -> Iterable[Check]:
    """The configuration loads (every error listed; missing providers: see the provider checks)."""
    fix = "fix it in the file or its environment override; `vc config check` lists every problem"
    shown = [e for e in ctx.errors if e.section != "plugins" and not _is_missing_provider(e)]
    for e in shown:
        yield Check.fail("config", str(e), fix)
    if ctx.config is None:
        if not shown:
            yield Check.fail("config", f"{_source(ctx)}: does not load (see below)",
                             "install what the checks below name")
        return
    for w in ctx.config.warnings:
        yield Check.warn("config", w, "remove or correct it")
    cfg = ctx.config
    summary = "; ".join(
        [f"transports {', '.join(cfg.transports) or 'none'}"]
        + [f"{k} {', '.join(cfg.providers[k])}" for k in vcconfig.KINDS]
        + [f"profiles {', '.join(p.name for p in cfg.profiles)}"]
    )
    yield Check.ok("config", f"{_source(ctx)}: {summary}")


def configured_providers(ctx: Context) -> list[tuple[str, str, str]]:
    """(kind, name, where) of every provider the configuration asks for, even if it has errors."""
    if ctx.config is not None:
        cfg = ctx.config
        out = [("transport", n, "[vc] transports") for n in cfg.transports]
        for kind in vcconfig.KINDS:
            for name in cfg.providers[kind]:
                where = (f"[{kind}] provider" if name == cfg.default_providers[kind]
                         else f"a profile's {kind}")
                out.append((kind, name, where))
        return out
    raw = ctx.raw
    if raw.errors:  # the file could not be read: nothing is known
        return []
    out = []
    transports = raw.get("vc").get("transports")
    names = ([t.strip() for t in transports[0].split(",") if t.strip()] if transports
             else ctx.registry.default_transports())
    out += [("transport", n, "[vc] transports") for n in names]
    for kind in vcconfig.KINDS:
        default = ctx.registry.default_provider(kind) or ""
        chosen = raw.get(kind).get("provider", (default, ""))[0].strip()
        wanted = {chosen: f"[{kind}] provider"} if chosen else {}
        for section, values in raw.sections.items():
            if section.startswith("profile.") and values.get(kind, ("", ""))[0].strip():
                wanted.setdefault(values[kind][0].strip(), f"[{section}] {kind}")
        out += [(kind, n, where) for n, where in wanted.items()]
    return out


def _record_for(registry: Registry, distribution: str) -> PluginRecord | None:
    dist = normalize(distribution.strip("'\"").split("[")[0])
    for p in registry.plugins:
        if normalize(p.distribution) == dist:
            return p
    return None


def check_providers(ctx: Context) -> Iterable[Check]:
    """Each configured provider is installed and its plugin loaded."""
    reg = ctx.registry
    implicated: set[str] = set()
    for kind, name, where in configured_providers(ctx):
        label = f"{kind} {name}"
        found = reg.providers[kind].get(name)
        if found is not None:
            p = found.plugin
            yield Check.ok(label, f"{where}: from {p.distribution} {p.version}")
            continue
        dist = reg.install_hint(kind, name)
        record = _record_for(reg, dist) if dist else None
        if record is not None and record.status != "ok":
            implicated.add(record.name)
            yield Check.fail(
                label, f"{where}: the plugin {record.name} ({record.distribution}) that provides "
                f"it did not load: {record.error}",
                f"pip install --force-reinstall {dist}; `vc list-plugins` shows the error",
            )
        else:
            hint = f"pip install {dist}" if dist else "install the plugin that provides it"
            yield Check.fail(label, f"{where}: {vcconfig.missing_provider_message(kind, name, reg)}",
                             f"{hint}, or choose an installed {kind} provider")
    for conflict in reg.conflicts:
        yield Check.fail("plugins", conflict, "uninstall one of the two distributions")
    for p in reg.errors():
        if p.name in implicated or p.error in reg.conflicts:
            continue
        yield Check.warn(
            "plugins", f"plugin {p.name} ({p.distribution} {p.version}) is not loaded: {p.error}",
            f"reinstall or uninstall {p.distribution} (VC_LOAD_PLUGINS selects the plugins to load)",
        )


# -- models --------------------------------------------------------------------------------


def _model_values(ctx: Context, kind: str, name: str) -> set[str]:
    """The model/voice names a configured provider is set to use."""
    cfg = ctx.config
    assert cfg is not None
    values: set[str] = set()
    choice = cfg.providers.get(kind, {}).get(name)
    if choice is not None and choice.settings is not None and attrs.has(type(choice.settings)):
        for f in attrs.fields(type(choice.settings)):
            if f.name in ("model", "voice") or f.name.endswith(("_model", "_voice")):
                v = getattr(choice.settings, f.name)
                if isinstance(v, str) and v.strip():
                    values.add(v.strip())
    profile_key = {"llm": "llm_model", "tts": "voice"}.get(kind)
    if profile_key:
        for p in cfg.profiles:
            if (getattr(p.settings, kind) or cfg.default_providers[kind]) == name:
                v = getattr(p.settings, profile_key)
                if v:
                    values.add(v.strip())
    return values


def _matches(model: ModelInfo, catalog: str, value: str) -> bool:
    name = model.name.lower().removeprefix(f"{catalog.lower()}:")
    v = value.lower().removeprefix(f"{catalog.lower()}:")
    return (name == v or name.endswith(f"-{v}") or name == f"{v}:latest"
            or model.location == value)


def _verify(catalog: ModelCatalog, model: ModelInfo) -> Check:
    label = f"model {model.name}"
    if not model.installed:
        return Check.fail(label, f"{catalog.name}: {model.name} is not installed",
                          model.install_hint or f"vc models prepare {model.name}")
    verify = getattr(catalog, "verify", None)
    overridden = verify is not None and getattr(type(catalog), "verify", None) is not getattr(
        ModelCatalog, "verify", None)
    where = f" ({model.location})" if model.location else ""
    if verify is None or not overridden:
        return Check.ok(label, f"{catalog.name}: installed{where}; no checksums to verify")
    try:
        verify(model.name)
    except ProviderError as e:
        return Check.fail(label, f"{catalog.name}: {e}",
                          f"reinstall it ({model.install_hint})" if model.install_hint
                          else f"vc models prepare {model.name}")
    except NotImplementedError:
        return Check.ok(label, f"{catalog.name}: installed{where}; no checksums to verify")
    return Check.ok(label, f"{catalog.name}: installed and verified{where}")


def check_models(ctx: Context) -> Iterable[Check]:
    """The models the configured providers use are present and verified."""
    used: dict[str, tuple[str, set[str]]] = {}  # catalogue name -> (kind, configured values)
    if ctx.config is not None:
        for kind in vcconfig.KINDS:
            for name in ctx.config.providers[kind]:
                used[name] = (kind, _model_values(ctx, kind, name))
    for catalog in ctx.registry.catalogs:
        in_use = catalog.name in used
        try:
            rows = catalog.list()
        except Exception as e:
            if in_use or ctx.config is None:
                yield Check.fail(f"models {catalog.name}", f"cannot list the models: {e}",
                                 "see the detail; `vc models list` shows the same")
            continue  # a catalogue the configuration does not use cannot stop a call
        if ctx.config is not None and not in_use:
            continue
        values = used[catalog.name][1] if in_use else set()
        chosen = [m for m in rows if any(_matches(m, catalog.name, v) for v in values)]
        if chosen:
            yield from (_verify(catalog, m) for m in chosen)
            continue
        installed = [m for m in rows if m.installed]
        if in_use and not installed:
            wanted = ", ".join(sorted(values)) or "its default"
            yield Check.warn(f"models {catalog.name}",
                             f"{catalog.name} uses {wanted}, which this catalogue does not list "
                             "(a path or a server-side model?); no listed model is installed",
                             f"`vc models list` shows what {catalog.name} can use")
        yield from (_verify(catalog, m) for m in installed)


# -- ports ---------------------------------------------------------------------------------


def _meta(field: Any) -> dict[str, Any]:
    meta: dict[str, Any] = field.metadata.get("vc", {})
    return meta


def _host_for(settings: Any, port_field: str) -> str:
    prefix = port_field.removesuffix("port").rstrip("_")
    head = prefix.split("_")[0]
    for key in (f"{prefix}_ip", f"{prefix}_host", f"{prefix}_bind_ip", f"{head}_bind_ip",
                f"{head}_ip", f"{head}_host", "bind_ip", "host", "ip"):
        value = getattr(settings, key, None)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return "0.0.0.0"


def transport_ports(settings: Any) -> list[tuple[str, str, str, int, int]]:
    """(setting name, protocol, host, first port, last port) a transport will listen on."""
    if settings is None or not attrs.has(type(settings)):
        return []
    fields = {f.name: f for f in attrs.fields(type(settings))}
    mode = getattr(settings, "mode", None)
    out = []
    for name, f in fields.items():
        value = getattr(settings, name)
        if not name.endswith("port") or "advertised" in name or type(value) is not int:
            continue
        meta = _meta(f)
        help_text = str(meta.get("help", ""))
        if meta.get("remote"):
            continue
        head = help_text.split(":", 1)[0].strip().lower()
        if isinstance(mode, str) and head.endswith(" mode") and head[: -len(" mode")] != mode.lower():
            continue  # a setting of another mode of this transport
        if name.endswith("max_port") and name.replace("max_port", "min_port") in fields:
            continue  # tested with its min_port
        last = value
        if name.endswith("min_port") and name.replace("min_port", "max_port") in fields:
            last = getattr(settings, name.replace("min_port", "max_port"))
        proto = "udp" if ("UDP" in help_text or "RTP" in help_text or "rtp" in name) else "tcp"
        out.append((name, proto, _host_for(settings, name), value, last))
    return out


def bind_error(host: str, port: int, proto: str = "tcp") -> OSError | None:
    """Why vc could not listen on host:port (None: it could)."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    try:
        infos = socket.getaddrinfo(host or None, port, type=kind, flags=socket.AI_PASSIVE)
        family, socktype, protocol, _, addr = infos[0]
        with socket.socket(family, socktype, protocol) as s:
            if proto == "tcp":  # as servers do: a port in TIME_WAIT is free
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(addr)
    except OSError as e:
        return e
    return None


def port_owner(port: int, proto: str = "tcp") -> str:
    """Who holds a local port, from /proc (``pid 12 (nginx)`` or ``user www-data``); '' unknown."""
    inodes: dict[str, int] = {}
    for table in (f"/proc/net/{proto}", f"/proc/net/{proto}6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) < 10 or ":" not in cols[1]:
                continue
            if int(cols[1].rsplit(":", 1)[1], 16) != port:
                continue
            if proto == "tcp" and cols[3] != "0A":  # LISTEN
                continue
            inodes[cols[9]] = int(cols[7])
    if not inodes:
        return ""
    wanted = {f"socket:[{i}]" for i in inodes}
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        pids = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                    comm = Path(f"/proc/{pid}/comm").read_text().strip()
                    return f"pid {pid} ({comm})"
            except OSError:
                continue
    uid = next(iter(inodes.values()))
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name}"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _port_problem(host: str, port: int, proto: str, e: OSError) -> tuple[str, str]:
    """(what is wrong, the start of the fix) for a failed bind."""
    if e.errno == errno.EADDRINUSE:
        owner = port_owner(port, proto)
        return (f"{host}:{port}/{proto} is in use" + (f" by {owner}" if owner else ""),
                "stop what listens there, or choose another port")
    if e.errno == errno.EADDRNOTAVAIL or isinstance(e, socket.gaierror):
        return (f"{host} is not an address of this machine ({e.strerror or e})",
                "use 0.0.0.0 or one of this machine's addresses")
    if e.errno == errno.EACCES:
        return (f"{host}:{port}/{proto} needs privileges ({e.strerror})",
                "use a port above 1023, or grant CAP_NET_BIND_SERVICE")
    return f"{host}:{port}/{proto} cannot be bound: {e}", "choose another address or port"


def check_ports(ctx: Context) -> Iterable[Check]:
    """The ports vc will listen on are free: the HTTP [server] port and the transports' ports."""
    cfg = ctx.config
    if cfg is None:
        return
    host, port = cfg.server.host, cfg.server.port
    where = "[server] port"
    if ctx.env.get("PORT", "").strip().isdigit():  # as `vc serve` does (Cloud Run)
        port, where = int(ctx.env["PORT"]), "$PORT"
    if port == 0:
        yield Check.ok("port http", f"{host}: any free port ([server] port = 0)")
    else:
        e = bind_error(host, port, "tcp")
        if e is None:
            yield Check.ok("port http", f"{host}:{port}/tcp is free ({where})")
        else:
            problem, fix = _port_problem(host, port, "tcp", e)
            yield Check.fail("port http", f"{where}: {problem}",
                             f"{fix}: [server] port / host, VC_SERVER__PORT, `vc serve --port`")
    for tname, choice in cfg.transports.items():
        for key, proto, thost, first, last in transport_ports(choice.settings):
            label = f"port {tname} {key}"
            section = f"[transport.{tname}] {key}"
            env = vcconfig.env_name(f"transport.{tname}", key)
            if first == 0:
                yield Check.ok(label, f"{thost}: any free port ({section} = 0)")
                continue
            if key.endswith("min_port") and last != first:
                keys = f"{key}..{key.replace('min_port', 'max_port')}"
                yield _range_check(f"port {tname} {keys}", f"[transport.{tname}] {keys}", thost,
                                   proto, first, last)
                continue
            e = bind_error(thost, first, proto)
            if e is None:
                yield Check.ok(label, f"{thost}:{first}/{proto} is free ({section})")
            else:
                problem, fix = _port_problem(thost, first, proto, e)
                yield Check.fail(label, f"{section}: {problem}", f"{fix} ({section}, {env})")


def _range_check(label: str, section: str, host: str, proto: str, first: int, last: int) -> Check:
    if last < first:
        return Check.fail(label, f"{section}: the range {first}-{last} is empty",
                          "make the max port at least the min port")
    ports = range(first, min(last, first + MAX_RANGE - 1) + 1)
    busy = []
    for p in ports:
        e = bind_error(host, p, proto)
        if e is not None:
            if e.errno != errno.EADDRINUSE:
                problem, fix = _port_problem(host, p, proto, e)
                return Check.fail(label, f"{section}: {problem}", fix)
            busy.append(p)
    tested = f"{first}-{ports[-1]}" + (f" (first {MAX_RANGE} of {first}-{last})" if last > ports[-1] else "")
    if len(busy) == len(ports):
        return Check.fail(label, f"{section}: every port of {host}:{tested}/{proto} is in use",
                          "free some of them or widen the range")
    if busy:
        shown = ", ".join(map(str, busy[:5])) + (", ..." if len(busy) > 5 else "")
        owner = port_owner(busy[0], proto)
        return Check.warn(label, f"{section}: {len(busy)} of {len(ports)} ports of {host}:{tested}/"
                          f"{proto} are in use ({shown}{'; ' + owner if owner else ''})",
                          "fewer calls can run at once; widen the range or free them")
    return Check.ok(label, f"{host}:{tested}/{proto}: all {len(ports)} ports free")


# -- remote services -------------------------------------------------------------------------

URL_SCHEMES = {"ws": 80, "wss": 443, "http": 80, "https": 443}


def service_urls(ctx: Context) -> list[tuple[str, str, str]]:
    """(section, key, url) of every remote service the configured providers connect to."""
    cfg = ctx.config
    if cfg is None:
        return []
    out = []
    for kind in vcconfig.KINDS:
        for name, choice in cfg.providers[kind].items():
            s = choice.settings
            if s is None or not attrs.has(type(s)):
                continue
            for f in attrs.fields(type(s)):
                if not (f.name in ("url", "host") or f.name.endswith("_url")):
                    continue
                value = getattr(s, f.name)
                if isinstance(value, str) and urllib.parse.urlsplit(value.strip()).scheme in URL_SCHEMES:
                    out.append((f"{kind}.{name}", f.name, value.strip()))
    return out


def connect_error(host: str, port: int, timeout: float = CONNECT_TIMEOUT) -> OSError | None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        return e


def check_services(ctx: Context) -> Iterable[Check]:
    """Every remote service a configured provider uses accepts connections."""
    seen: set[str] = set()
    for section, key, url in service_urls(ctx):
        if url in seen:
            continue
        seen.add(url)
        label = f"service {section}"
        parts = urllib.parse.urlsplit(url)
        try:
            port = parts.port or URL_SCHEMES[parts.scheme]
        except ValueError as bad:
            yield Check.fail(label, f"[{section}] {key} = {url}: {bad}", "fix the url")
            continue
        host = parts.hostname or ""
        started = time.monotonic()
        e = connect_error(host, port)
        if e is None:
            ms = (time.monotonic() - started) * 1000
            yield Check.ok(label, f"{url} accepts connections ({host}:{port}, {ms:.0f} ms)")
        else:
            why = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
            yield Check.fail(
                label, f"[{section}] {key} = {url}: cannot connect to {host}:{port} ({why})",
                f"start the service or fix the url ([{section}] {key}, "
                f"{vcconfig.env_name(section, key)})",
            )


# -- clocks and audio ------------------------------------------------------------------------


def _installed_at() -> float:
    """When this vc-core was installed (its newest module file)."""
    here = Path(__file__).parent
    try:
        return max(p.stat().st_mtime for p in here.glob("*.py"))
    except (OSError, ValueError):
        return 0.0


def check_clock(ctx: Context, now: float | None = None) -> Iterable[Check]:
    """The wall clock is plausible and the monotonic clock fine-grained."""
    now = time.time() if now is None else now
    year = time.gmtime(now).tm_year
    shown = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
    installed = _installed_at()
    fix = "set the clock (NTP: timedatectl set-ntp true, or the host's time sync)"
    if year < RELEASE_YEAR:
        yield Check.fail("clock", f"the wall clock says {shown}, before vc-core {RELEASE_YEAR}; "
                         "TLS certificates and signatures will not validate", fix)
    elif installed and now < installed - 86400:
        yield Check.warn("clock", f"the wall clock says {shown}, a day or more before vc-core's "
                         "files were written", fix)
    else:
        yield Check.ok("clock", f"wall clock {shown}")
    info = time.get_clock_info("monotonic")
    a = time.monotonic()
    time.sleep(0.01)
    elapsed = time.monotonic() - a
    if info.resolution > 0.001:
        yield Check.warn("monotonic clock", f"{info.implementation}: resolution "
                         f"{info.resolution * 1000:.1f} ms; audio is paced in 20 ms frames",
                         "run on a kernel/VM with high-resolution timers")
    elif not 0.005 <= elapsed < 1.0:
        yield Check.warn("monotonic clock", f"a 10 ms sleep took {elapsed * 1000:.1f} ms",
                         "the machine is overloaded or its timers are broken")
    else:
        yield Check.ok("monotonic clock", f"{info.implementation}, resolution "
                       f"{info.resolution * 1e9:.0f} ns")


def _tone(rate: int, seconds: float = 1.0) -> Any:
    import numpy as np

    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * 440 * t) * 12000).astype("<i2")


def _resample_problem(in_rate: int, out_rate: int) -> str:
    """'' when a 200 ms clip resamples to the right length with soxr."""
    from vc.audio import resample

    pcm = _tone(in_rate, 0.2).tobytes()
    out = resample(pcm, in_rate, out_rate)
    want = len(pcm) // 2 * out_rate / in_rate
    if abs(len(out) // 2 - want) > 2:
        return f"{in_rate} -> {out_rate} Hz gave {len(out) // 2} samples instead of {want:.0f}"
    return ""


def check_audio(ctx: Context) -> Iterable[Check]:
    """soxr resamples 8 kHz <-> 16 kHz, and every configured rate has a resampling path."""
    import numpy as np

    from vc.audio import StreamResampler, resample

    fix = "reinstall soxr and numpy (pip install --force-reinstall soxr numpy)"
    tone = _tone(8000)
    up = resample(tone.tobytes(), 8000, 16000)
    down = np.frombuffer(resample(up, 16000, 8000), dtype="<i2")
    if len(up) // 2 != 16000 or len(down) != len(tone):
        yield Check.fail("resampling", f"soxr 8000 -> 16000 -> 8000 Hz changed the length of 1 s "
                         f"of audio: {len(tone)} -> {len(up) // 2} -> {len(down)} samples", fix)
        return
    corr = float(np.corrcoef(tone[400:-400].astype(float), down[400:-400].astype(float))[0, 1])
    stream = StreamResampler(8000, 16000)
    chunks = [tone[i:i + 160].tobytes() for i in range(0, len(tone), 160)]
    streamed = sum(len(stream.process(c, last=i == len(chunks) - 1)) // 2
                   for i, c in enumerate(chunks))
    if corr < 0.99:
        yield Check.fail("resampling", f"soxr 8000 -> 16000 -> 8000 Hz distorted a tone "
                         f"(correlation {corr:.3f})", fix)
    elif abs(streamed - 16000) > 16:
        yield Check.fail("resampling", f"streaming 1 s from 8000 to 16000 Hz in 20 ms chunks gave "
                         f"{streamed} samples", fix)
    else:
        yield Check.ok("resampling", f"soxr 8000 <-> 16000 Hz round trip keeps length and "
                       f"signal (correlation {corr:.4f}); streaming in 20 ms chunks too")
    yield from _rate_checks(ctx)


def _rate_checks(ctx: Context) -> Iterable[Check]:
    cfg = ctx.config
    if cfg is None:
        return
    reg = ctx.registry
    calls: dict[str, int] = {}
    for name, choice in cfg.transports.items():
        rate = getattr(choice.settings, "sample_rate", None)
        calls[name] = rate if isinstance(rate, int) and rate > 0 else PHONE_RATE
    call_rates = sorted(set(calls.values())) or [PHONE_RATE]
    for kind in ("stt", "tts"):
        for name, choice in cfg.providers[kind].items():
            cls = reg.provider(kind, name)
            rate = getattr(choice.settings, "sample_rate", None)
            if not isinstance(rate, int) and kind == "stt":
                rate = getattr(cls, "sample_rate", None)
            label = f"sample rate {kind} {name}"
            if not isinstance(rate, int):
                yield Check.ok(label, "the provider's own output rate, resampled to the call's")
                continue
            if rate <= 0:
                yield Check.fail(label, f"{rate} Hz is not a sample rate",
                                 f"set [{kind}.{name}] sample_rate to 8000 or 16000")
                continue
            if kind == "stt" and rate not in VAD_RATES:
                yield Check.fail(label, f"the STT takes {rate} Hz, but the VAD (Silero) runs at the "
                                 f"STT's rate and accepts only 8000 or 16000 Hz",
                                 f"set [{kind}.{name}] sample_rate to 8000 or 16000")
                continue
            pairs = ([(c, rate) for c in call_rates] if kind == "stt"
                     else [(rate, c) for c in call_rates])
            problems = [p for p in (_resample_problem(a, b) for a, b in pairs if a != b) if p]
            path = ", ".join(f"{a} -> {b} Hz" for a, b in pairs)
            if problems:
                yield Check.fail(label, "; ".join(problems), "use 8000, 16000 or 22050 Hz")
            else:
                yield Check.ok(label, f"{path} (soxr)")


#: Core's checks, in the order they are shown.
CORE_CHECKS: list[Callable[[Context], Iterable[Check]]] = [
    check_config, check_providers, check_models, check_ports, check_services, check_clock,
    check_audio,
]

