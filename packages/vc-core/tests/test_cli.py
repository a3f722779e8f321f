"""Small things about the `vc` command: `vc models` alone, `serve --host`, JSON startup logs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from vc import cli
from vc.providers import ModelCatalog, ModelInfo
from vc.testing import FAKE_STACK, fake_registry

PLUGINS = Path(__file__).parent / "plugins"


class Catalog(ModelCatalog):
    name = "mine"

    def list(self) -> list[ModelInfo]:
        return [ModelInfo("mine-small", "stt", True, "/models/small")]


def test_vc_models_alone_lists(monkeypatch) -> None:
    reg = fake_registry(env={"VC_LOAD_PLUGINS": ""})
    reg.catalogs.append(Catalog())
    monkeypatch.setattr("vc.plugins._loaded", reg)
    runner = CliRunner()
    alone = runner.invoke(cli.cli, ["models"])
    listed = runner.invoke(cli.cli, ["models", "list"])
    assert alone.exit_code == 0, alone.output
    assert alone.output == listed.output
    assert "mine-small" in alone.output and "installed  /models/small" in alone.output


def test_serve_host_overrides_the_configured_host(tmp_path, monkeypatch) -> None:
    import vc.server

    seen: dict[str, Any] = {}

    async def fake_serve(config, registry, *, port=None, host=None, engine=None,
                         engine_start=None) -> int:
        seen.update(host=vc.server.listen_host(config, host), port=port,
                    configured=config.server.host, loading=engine_start is not None)
        await vc.server.abandon(engine, engine_start)
        return 0

    monkeypatch.setattr(vc.server, "serve", fake_serve)
    monkeypatch.setattr("vc.plugins._loaded", fake_registry(env={"VC_LOAD_PLUGINS": ""}))
    ini = tmp_path / "vc.ini"
    ini.write_text(FAKE_STACK + "[server]\nhost = 127.0.0.1\n")
    result = CliRunner().invoke(cli.cli, ["serve", "-c", str(ini), "--host", "0.0.0.0", "--port", "9"])
    assert result.exit_code == 0, result.output
    # (the models began loading before vc.server was imported: see serve_loading_first)
    assert seen == {"host": "0.0.0.0", "port": 9, "configured": "127.0.0.1", "loading": True}
    seen.clear()
    result = CliRunner().invoke(cli.cli, ["serve", "-c", str(ini)])
    assert seen["host"] == "127.0.0.1"


def test_serve_host_reaches_the_http_server(tmp_path) -> None:
    """A real `vc serve --host` listens where it is told (127.0.0.2 is loopback too on Linux)."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ini = tmp_path / "vc.ini"
    ini.write_text(FAKE_STACK + "[server]\nhost = 127.0.0.1\n")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from vc.cli import main; main()", "serve", "-c", str(ini),
         "--host", "127.0.0.2", "--port", str(port)],
        env={**os.environ, "VC_PLUGIN_MODULES": "vc.testing.fakes", "VC_LOAD_PLUGINS": ""},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        import time

        deadline = time.monotonic() + 60
        answer = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                answer = httpx.get(f"http://127.0.0.2:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert answer is not None and answer.status_code == 200, proc.stderr.read() if proc.poll() else ""
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_json_logs_carry_the_startup_warnings(tmp_path) -> None:
    """With log_format = json every line `vc serve` writes is a JSON object, warnings included:
    a plugin that fails to import (logged while plugins load, before the format is known), a
    configuration warning, and the plugin-not-loaded warning."""
    site = tmp_path / "site"
    dist = site / "vc_broken_test-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: vc-broken-test\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[vc]\nbroken = broken_import\n")
    with socket.socket() as taken:  # serve stops right after startup: its port is taken
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ini = tmp_path / "vc.ini"
        ini.write_text(FAKE_STACK + f"[vc]\nlog_format = json\n[server]\nport = {taken.getsockname()[1]}\n"
                       "[stt.nobody]\nmodel = x\n")
        proc = subprocess.run(
            [sys.executable, "-c", "from vc.cli import main; main()", "serve", "-c", str(ini)],
            env={**os.environ, "VC_PLUGIN_MODULES": "vc.testing.fakes", "VC_LOAD_PLUGINS": "vc-broken-test",
                 "PYTHONPATH": os.pathsep.join([str(site), str(PLUGINS)])},
            capture_output=True, text=True, timeout=120,
        )
    assert proc.returncode == 1
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    messages = [(r["severity"], r["logger"], r["message"]) for r in records]
    assert ("ERROR", "vc.plugins", "plugin broken (vc-broken-test) failed: import failed: "
            "RuntimeError: this plugin is broken on import") in messages
    assert ("WARNING", "vc.startup", "configuration: [stt.nobody] is ignored: no installed stt "
            "provider is named 'nobody'") in messages
    assert any(sev == "WARNING" and m.startswith("plugin broken (vc-broken-test) not loaded")
               for sev, _, m in messages)
    assert any(m.startswith("cannot listen on 127.0.0.1") for _, _, m in messages)


def test_text_commands_still_show_plugin_load_errors(tmp_path) -> None:
    """Held startup records are shown as before by the other commands (plain text, stderr)."""
    site = tmp_path / "site"
    dist = site / "vc_broken_test-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: vc-broken-test\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[vc]\nbroken = broken_import\n")
    proc = subprocess.run(
        [sys.executable, "-c", "from vc.cli import main; main()", "list-plugins"],
        env={**os.environ, "VC_LOAD_PLUGINS": "vc-broken-test",
             "PYTHONPATH": os.pathsep.join([str(site), str(PLUGINS)])},
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0
    assert proc.stderr.splitlines()[0] == (
        "plugin broken (vc-broken-test) failed: import failed: RuntimeError: this plugin is "
        "broken on import"
    )
    assert "vc-broken-test" in proc.stdout


class Shelf(ModelCatalog):
    """Two installed models (one of them damaged) and one that is not installed."""

    name = "shelf"

    def __init__(self) -> None:
        self.prepared: list[str] = []

    def list(self) -> list[ModelInfo]:
        return [ModelInfo("good", "stt", True, "/m/good"), ModelInfo("damaged", "tts", True, "/m/d"),
                ModelInfo("absent", "llm", False, install_hint="pip install absent")]

    def prepare(self, model: str, progress: Any) -> str:
        from vc.providers import ProviderError

        self.prepared.append(model)
        if model == "damaged":
            raise ProviderError("its sha256 is not the pinned one")
        return f"/m/{model}"


class Unreachable(ModelCatalog):
    name = "remote"

    def list(self) -> list[ModelInfo]:
        raise ConnectionError("no server here")


def test_models_prepare_installed_prepares_every_installed_model(monkeypatch) -> None:
    """What an image build runs to fill the cache it ships (deploy/Dockerfile)."""
    reg = fake_registry(env={"VC_LOAD_PLUGINS": ""})
    shelf = Shelf()
    reg.catalogs += [Unreachable(), shelf]
    monkeypatch.setattr("vc.plugins._loaded", reg)
    result = CliRunner().invoke(cli.cli, ["models", "prepare", "--installed"])
    assert shelf.prepared == ["good", "damaged"]  # not the one that is not installed
    assert result.exit_code == 1
    assert "good: ready at /m/good" in result.output
    assert "damaged: its sha256 is not the pinned one" in result.output
    assert "warning: remote: no server here" in result.output
    assert "not prepared: damaged" in result.output
    for args in (["models", "prepare"], ["models", "prepare", "good", "--installed"]):
        refused = CliRunner().invoke(cli.cli, args)
        assert refused.exit_code == 2 and "NAME or --installed" in refused.output
