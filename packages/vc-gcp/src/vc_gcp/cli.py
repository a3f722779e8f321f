"""``vc gcp ...`` commands (added through the ``register_commands`` hook)."""

from __future__ import annotations

import json
import os
import sys

import click

from vc import config as vcconfig
from vc_gcp import secrets


@click.group("gcp")
def gcp() -> None:
    """Google Cloud helpers (vc-gcp)."""


@gcp.command("secret-check")
@click.option(
    "-c", "--config", "config_file", type=click.Path(dir_okay=False),
    help="INI file (default: $VC_CONFIG_FILE, then $OAVC_CONFIG_FILE)",
)
@click.option("--strict", is_flag=True, help="secrets written into the file in plain text fail the check too")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def secret_check(config_file: str | None, strict: bool, as_json: bool) -> None:
    """Check that every $env:/$file: secret reference resolves (values are never shown).

    Exit status 0: all references resolve; 1: one is missing, empty or unreadable (or, with
    --strict, a secret is written into the file); 2: the configuration cannot be read.
    Use it as an init container or before `vc serve` in a deployment pipeline.
    """
    raw = vcconfig.read(config_file, os.environ)
    if raw.errors:
        for e in raw.errors:
            click.echo(f"error: {e}", err=True)
        sys.exit(2)
    try:
        from vc.plugins import registry

        reg = registry()
    except Exception:  # secret flags by name only
        reg = None
    findings = secrets.scan(raw, os.environ, reg)
    bad = secrets.failed(findings, strict)
    if as_json:
        click.echo(json.dumps({"config": raw.path, "ok": not bad,
                               "findings": [f.as_dict() for f in findings]}, indent=2))
    else:
        if not findings:
            click.echo(f"{raw.path or 'built-in defaults'}: no secret references")
        width = max((len(f.status) for f in findings), default=0)
        for f in findings:
            ref = f" = {f.reference}" if f.reference else ""
            click.echo(f"{f.status.ljust(width)}  {f.where}{ref}: {f.detail}")
        counts = {s: sum(f.status == s for f in findings) for s in ("ok", *secrets.PROBLEMS, "plaintext")}
        click.echo(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "nothing to check")
    sys.exit(1 if bad else 0)
