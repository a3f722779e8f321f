"""The plugin as the `vc` command sees it: list-plugins, config, secret-check, and `vc serve`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from gcp_helpers import clean_env, parse_lines
from test_observer import metadata_server

VC = str(Path(sys.executable).with_name("vc"))


def run_vc(*args: str, env: dict[str, str] | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([VC, *args], capture_output=True, text=True, timeout=timeout,
                          env=env if env is not None else clean_env())


def test_list_plugins_sees_vc_gcp() -> None:
    proc = run_vc("list-plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    plugins = {p["distribution"]: p for p in json.loads(proc.stdout)["plugins"]}
    gcp = plugins["vc-gcp"]
    assert gcp["status"] == "ok", gcp["error"]
    assert gcp["providers"] == [{"kind": "observer", "name": "gcp-logging"}]
    assert {"register_observers", "register_commands"} <= set(gcp["hooks"])


def test_config_show_lists_the_observer_settings_with_their_env_names(tmp_path: Path) -> None:
    ini = tmp_path / "vc.ini"
    ini.write_text("[vc]\ntransports =\n[stt]\nprovider = fake\n[llm]\nprovider = fake\n"
                   "[tts]\nprovider = fake\n[observer.gcp-logging]\nlabels = env=prod, team=voice\n")
    env = clean_env(VC_PLUGIN_MODULES="vc.testing.fakes", VC_OBSERVER_GCP_LOGGING__MODE="always")
    proc = run_vc("config", "show", "--json", "-c", str(ini), env=env)
    assert proc.returncode == 0, proc.stderr
    rows = {(r["section"], r["key"]): r for r in json.loads(proc.stdout)}
    assert rows[("observer.gcp-logging", "mode")]["value"] == "always"
    assert rows[("observer.gcp-logging", "mode")]["source"] == "env VC_OBSERVER_GCP_LOGGING__MODE"
    assert rows[("observer.gcp-logging", "labels")]["value"] == "env=prod, team=voice"
    assert rows[("observer.gcp-logging", "stream")]["value"] == "stdout"
    bad = run_vc("config", "check", "-c", str(ini),
                 env=clean_env(VC_PLUGIN_MODULES="vc.testing.fakes",
                               VC_OBSERVER_GCP_LOGGING__MODE="sometimes"))
    assert bad.returncode == 1
    assert "[observer.gcp-logging] mode = 'sometimes'" in bad.stderr
    assert "'auto', 'always', 'off'" in bad.stderr


# -- vc gcp secret-check ------------------------------------------------------------------------

SECRET = "s3cr3t-VALUE-never-printed"


@pytest.fixture
def secret_setup(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    (tmp_path / "sid").write_text(SECRET + "-file\n")
    (tmp_path / "empty").write_text("\n")
    ini = tmp_path / "vc.ini"
    ini.write_text(
        "[transport.twilio]\n"
        "public_url = https://vc.example.com\n"
        "auth_token = $env:TWILIO_AUTH_TOKEN\n"
        f"account_sid = $file:{tmp_path}/sid\n"
        f"api_secret = $file:{tmp_path}/empty\n"
        f"api_token = $file:{tmp_path}/not-mounted\n"
        "[llm.ollama]\n"
        f"api_key = {SECRET}-plain\n"
    )
    env = clean_env(TWILIO_AUTH_TOKEN=SECRET, VC_TRANSPORT_TWILIO__STREAM_SECRET="$env:STREAM_KEY")
    return ini, env


def test_secret_check_reports_every_reference_and_never_a_value(secret_setup) -> None:
    ini, env = secret_setup
    proc = run_vc("gcp", "secret-check", "-c", str(ini), env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    assert SECRET not in out and SECRET not in proc.stderr
    lines = {line.split()[0]: line for line in out.splitlines()[:-1]}
    assert "auth_token = $env:TWILIO_AUTH_TOKEN" in out
    assert "environment variable TWILIO_AUTH_TOKEN is set" in out
    assert re.search(r"^ok\s+\[transport\.twilio\] account_sid", out, re.M)
    assert re.search(r"^empty\s+\[transport\.twilio\] api_secret .*is empty", out, re.M)
    assert re.search(r"^missing\s+\[transport\.twilio\] api_token .*does not exist", out, re.M)
    assert re.search(r"^missing\s+env VC_TRANSPORT_TWILIO__STREAM_SECRET = \$env:STREAM_KEY", out, re.M)
    assert re.search(r"^plaintext\s+\[llm\.ollama\] api_key", out, re.M)
    assert "public_url" not in out  # not a secret, not a reference
    assert out.splitlines()[-1] == "2 ok, 2 missing, 1 empty, 1 plaintext"
    assert lines  # table printed


def test_secret_check_passes_once_everything_is_there(secret_setup, tmp_path: Path) -> None:
    ini, env = secret_setup
    (tmp_path / "empty").write_text("value")
    (tmp_path / "not-mounted").write_text("value")
    env["STREAM_KEY"] = "k"
    proc = run_vc("gcp", "secret-check", "-c", str(ini), "--json", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True and report["config"] == str(ini)
    statuses = sorted(f["status"] for f in report["findings"])
    assert statuses == ["ok"] * 5 + ["plaintext"]
    strict = run_vc("gcp", "secret-check", "-c", str(ini), "--strict", env=env)
    assert strict.returncode == 1  # the plain-text api_key fails a strict check


def test_secret_check_without_a_file(tmp_path: Path) -> None:
    proc = run_vc("gcp", "secret-check", "-c", str(tmp_path / "nope.ini"))
    assert proc.returncode == 2 and "configuration file not found" in proc.stderr
    proc = run_vc("gcp", "secret-check")
    assert proc.returncode == 0 and "no secret references" in proc.stdout


# -- the real `vc serve` -------------------------------------------------------------------------

SERVE_INI = """
[vc]
transports = twilio
log_level = info
log_format = json
[server]
host = 127.0.0.1
drain_timeout = 5
[stt]
provider = fake
[stt.fake]
script = what are your opening hours
[turn]
end = silence
[llm]
provider = fake
[tts]
provider = fake
"""


async def test_vc_serve_on_cloud_run_logs_only_cloud_logging_json(tmp_path: Path) -> None:
    """`vc serve` as Cloud Run starts it: K_SERVICE set, so the observer takes over stdout."""
    pytest.importorskip("vc_transport_twilio", reason="the Twilio transport drives this call")
    from vc_transport_twilio.simulator import TwilioCloud
    from vc_transport_twilio.testing import twilio_section

    from vc.testing.calls import speech

    async with TwilioCloud("http://127.0.0.1:1") as cloud:
        ini = tmp_path / "vc.ini"
        ini.write_text(SERVE_INI + twilio_section(cloud))
        with metadata_server() as metadata:
            env = clean_env(VC_PLUGIN_MODULES="vc.testing.fakes",
                            VC_LOAD_PLUGINS="vc-gcp,vc-transport-twilio",
                            K_SERVICE="vc", K_REVISION="vc-00001-abc", GCE_METADATA_HOST=metadata)
            proc, out_path, err_path = start_vc(["serve", "-c", str(ini), "--port", "0"], env, tmp_path)
            try:
                # (on stdout once the observer has started: vc serve starts its engine, the
                # observers first, before it listens)
                port = await _wait_for_port([err_path, out_path], proc)
                cloud.local_url = f"http://127.0.0.1:{port}"
                async with httpx.AsyncClient() as client:
                    deadline = time.monotonic() + 120
                    while (await client.get(f"{cloud.local_url}/readyz")).status_code != 200:
                        assert time.monotonic() < deadline, "vc never became ready"
                        assert proc.poll() is None, err_path.read_text()
                        await asyncio.sleep(0.2)
                call = await cloud.place_call()
                await call.wait_for_bot_speech(within=30)  # the greeting
                await call.wait_for_bot_silence()
                end = call.say(speech("what are your opening hours", 8000))
                await call.wait_for_bot_speech(after=end, within=30)  # the answer
                await call.wait_for_bot_silence(within=30)
                await call.hangup()
                await asyncio.sleep(0.5)
            finally:
                proc.send_signal(signal.SIGTERM)
                code = await asyncio.to_thread(proc.wait, 60)
    assert code == 0, err_path.read_text()[-3000:]
    entries = parse_lines(out_path.read_text())  # every stdout line is a Cloud Logging entry
    assert entries, "nothing logged on stdout"
    for e in entries:
        assert {"severity", "message", "time", "logging.googleapis.com/sourceLocation"} <= set(e), e
    messages = [e["message"] for e in entries]
    assert "Cloud Logging format on; traces link to project vc-metadata-project" in messages
    call_lines = [e for e in entries
                  if e.get("logging.googleapis.com/labels", {}).get("call_id") == call.call_sid]
    assert {"call started", "transcript", "call ended"} <= {e["message"] for e in call_lines}
    started = [e["message"] for e in call_lines].index("call started")
    assert call_lines[0]["message"].endswith("connecting a stream")  # the webhook, before the call
    for n, e in enumerate(call_lines):
        assert e["logging.googleapis.com/labels"]["transport"] == "twilio", e
        if n >= started:  # the profile is chosen when the call starts
            assert e["logging.googleapis.com/labels"]["profile"] == "default", e
    # what came before the observer started (core's own JSON lines on stderr) is JSON too
    for e in parse_lines(err_path.read_text()):
        assert "severity" in e and "message" in e


def start_vc(args: list[str], env: dict[str, str], where: Path) -> tuple[subprocess.Popen, Path, Path]:
    """``vc ARGS`` in the background, its stdout and stderr into files."""
    out_path, err_path = where / "stdout", where / "stderr"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen([VC, *args], stdout=out, stderr=err, env=env)
    return proc, out_path, err_path


def read(path: Path) -> str:
    return path.read_text()


async def _wait_for_port(paths: list[Path], proc: subprocess.Popen, within: float = 60) -> int:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        text = "".join(read(path) for path in paths)
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", text)
        if m:
            return int(m.group(1))
        assert proc.poll() is None, f"vc serve exited: {text[-3000:]}"
        await asyncio.sleep(0.1)
    raise AssertionError("vc serve did not say where it listens")


def test_vc_executable_is_the_one_of_this_environment() -> None:
    assert os.access(VC, os.X_OK), VC
