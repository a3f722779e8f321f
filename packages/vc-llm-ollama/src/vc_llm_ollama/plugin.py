"""vc plugin entry point for vc-llm-ollama (hook implementations)."""

from __future__ import annotations

import json

from vc.hookspecs import hookimpl
from vc_llm_ollama.models import OllamaModels
from vc_llm_ollama.provider import OllamaProvider


@hookimpl
def register_llm(register):
    register(OllamaProvider)


@hookimpl
def register_models(register):
    register(OllamaModels())


@hookimpl
def register_commands(cli):
    """``vc models pull ollama:NAME`` and ``vc models show ollama:NAME``."""
    import click

    group = cli.commands.get("models") if hasattr(cli, "commands") else None
    if group is None or not hasattr(group, "command"):
        return

    host_option = click.option(
        "--host", default=None, help="Ollama URL (default: VC_LLM_OLLAMA__HOST, OLLAMA_HOST, local)"
    )

    if "pull" not in group.commands:

        @group.command("pull")
        @click.argument("name")
        @host_option
        def pull(name: str, host: str | None) -> None:
            """Pull a model onto the Ollama server, with a progress bar (NAME: ollama:MODEL)."""
            catalog = OllamaModels(host)
            with click.progressbar(length=100, label=f"pulling {name}") as bar:
                last = [0]

                def progress(done: int, total: int) -> None:
                    pct = int(done * 100 / total) if total else 100
                    bar.update(max(0, pct - last[0]))
                    last[0] = max(last[0], pct)

                where = catalog.prepare(name, progress)
            click.echo(f"{name}: ready on {where}")

    if "show" not in group.commands:

        @group.command("show")
        @click.argument("name")
        @host_option
        def show(name: str, host: str | None) -> None:
            """Show what the Ollama server knows about a model (NAME: ollama:MODEL)."""
            click.echo(json.dumps(OllamaModels(host).show(name), indent=2, default=str))
