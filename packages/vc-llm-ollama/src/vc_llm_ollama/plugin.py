"""vc plugin entry point for vc-llm-ollama (hook implementations)."""

from __future__ import annotations

import json
import sys
from typing import NoReturn

from vc.hookspecs import hookimpl
from vc.providers import ProviderError
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

    def fail(message: str) -> NoReturn:
        """A provider error (Ollama unreachable, model unknown): one line, exit status 1."""
        click.echo(message, err=True)
        sys.exit(1)

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
            error: ProviderError | None = None
            with click.progressbar(length=100, label=f"pulling {name}") as bar:
                last = [0]

                def progress(done: int, total: int) -> None:
                    pct = int(done * 100 / total) if total else 100
                    bar.update(max(0, pct - last[0]))
                    last[0] = max(last[0], pct)

                try:
                    where = catalog.prepare(name, progress)
                except ProviderError as e:
                    error = e
            if error is not None:
                fail(f"{name}: {error}")
            click.echo(f"{name}: ready on {where}")

    if "show" not in group.commands:

        @group.command("show")
        @click.argument("name")
        @host_option
        def show(name: str, host: str | None) -> None:
            """Show what the Ollama server knows about a model (NAME: ollama:MODEL)."""
            try:
                info = OllamaModels(host).show(name)
            except ProviderError as e:
                fail(f"{name}: {e}")
            click.echo(json.dumps(info, indent=2, default=str))
