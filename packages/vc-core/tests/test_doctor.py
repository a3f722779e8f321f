"""`vc doctor`: each check on its own, contained failures, exit codes, JSON, plugin checks."""

from __future__ import annotations

import asyncio
import calendar
import json
import os
import socket
from pathlib import Path
from typing import Any

import attrs
import pytest
from click.testing import CliRunner

from vc import cli, doctor
from vc.doctor import Check
from vc.hookspecs import hookimpl
from vc.providers import TransportProvider
from vc.settings import setting
from vc.testing import FAKE_STACK, fake_registry
from vc.testing.fakes import FakeLLM, FakeSTT

#: The fake stack, no transports, and a port the OS picks: every core check passes.
QUIET = FAKE_STACK + "[server]\nport = 0\n"


@attrs.define
class ServiceSettings:
    url: str = setting("ws://127.0.0.1:9/llm", help="WebSocket URL of the service")


class ServiceLLM(FakeLLM):
    name = "service-llm"
    Settings = ServiceSettings


@attrs.define
class WideSettings:
    sample_rate: int = setting(44100, help="rate the recognizer is fed")


class WideSTT(FakeSTT):
    name = "wide-stt"
    Settings = WideSettings


@attrs.define
class SipSettings:
    mode: str = setting("proxy", help="proxy or b2b")
    sip_ip: str = setting("127.0.0.1", help="proxy mode: address the UAS listens on (UDP)")
    sip_port: int = setting(0, help="proxy mode: UDP port of the UAS")
    sip_advertised_port: int = setting(5060, help="port put in Contact")
    event_port: int = setting(8090, help="b2b mode: UDP port of the event socket")
    peer_ip: str = setting("127.0.0.1", help="address of the peer's socket")
    peer_port: int = setting(8080, help="UDP port of the peer's socket", remote=True)
    rtp_min_port: int = setting(0, help="lowest RTP port")
    rtp_max_port: int = setting(0, help="highest RTP port")
    rtp_bind_ip: str = setting("127.0.0.1", help="address RTP sockets bind to")


class Sip(TransportProvider):
    name = "sip"
    Settings = SipSettings
    description = "a transport with ports"


class Providers:
    @hookimpl
    def register_llm(self, register):
        register(ServiceLLM)

    @hookimpl
    def register_stt(self, register):
        register(WideSTT)

    @hookimpl
    def register_transports(self, register):
        register(Sip)


def registry(*extra: tuple[str, object]):
    """Core, the fakes and the test's plugins only (not what happens to be installed)."""
    return fake_registry(env={"VC_LOAD_PLUGINS": ""}, extra=[("providers", Providers()), *extra])


def context(tmp_path: Path, ini: str, reg=None, env: dict[str, str] | None = None) -> doctor.Context:
    path = tmp_path / "vc.ini"
    path.write_text(ini)
    return doctor.gather(str(path), reg or registry(), env or {})


def named(checks: list[Check], prefix: str) -> list[Check]:
    return [c for c in checks if c.name.startswith(prefix)]


def listening(proto: str = "tcp") -> socket.socket:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    if proto == "tcp":
        s.listen()
    return s


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_everything_passes_on_a_runnable_configuration(tmp_path) -> None:
    ctx = context(tmp_path, QUIET)
    checks = doctor.run(ctx)
    assert [c for c in checks if c.status != "ok"] == []
    names = [c.name for c in checks]
    for expected in ("config", "stt fake", "llm fake", "tts fake", "port http", "clock",
                     "monotonic clock", "resampling", "sample rate stt fake"):
        assert expected in names
    assert doctor.exit_code(checks) == 0


def test_a_port_already_bound_is_a_failure_naming_its_owner(tmp_path) -> None:
    with listening() as taken:
        port = taken.getsockname()[1]
        checks = doctor.run(context(tmp_path, FAKE_STACK + f"[server]\nport = {port}\n"))
    (http,) = named(checks, "port http")
    assert http.status == "fail"
    assert f"127.0.0.1:{port}/tcp is in use by pid {os.getpid()}" in http.detail
    assert "[server] port" in http.fix and "--port" in http.fix
    assert doctor.exit_code(checks) == 1


def test_port_from_the_environment_is_the_one_checked(tmp_path) -> None:
    with listening() as taken:
        port = taken.getsockname()[1]
        checks = doctor.run(context(tmp_path, QUIET, env={"PORT": str(port)}))
    (http,) = named(checks, "port http")
    assert http.status == "fail" and http.detail.startswith("$PORT:")


def test_transport_ports_are_bind_tested_over_their_protocol(tmp_path) -> None:
    with listening("udp") as taken, listening("udp") as rtp:
        port, rtp_port = taken.getsockname()[1], rtp.getsockname()[1]
        ini = (QUIET.replace("transports =", "transports = sip") + "[transport.sip]\n"
               f"sip_port = {port}\nrtp_min_port = {rtp_port}\nrtp_max_port = {rtp_port + 3}\n")
        checks = doctor.run(context(tmp_path, ini))
    ports = {c.name: c for c in named(checks, "port sip")}
    # advertised, remote and other-mode ports are not ours to bind; max_port goes with min_port
    assert set(ports) == {"port sip sip_port", "port sip rtp_min_port..rtp_max_port"}
    assert ports["port sip sip_port"].status == "fail"
    assert f"[transport.sip] sip_port: 127.0.0.1:{port}/udp is in use" in ports["port sip sip_port"].detail
    assert "VC_TRANSPORT_SIP__SIP_PORT" in ports["port sip sip_port"].fix
    rtp_check = ports["port sip rtp_min_port..rtp_max_port"]
    assert rtp_check.status in ("warn", "fail") and "1 of 4 ports" in rtp_check.detail


def test_transport_port_settings_discovery() -> None:
    ports = doctor.transport_ports(SipSettings(mode="b2b", sip_port=5, event_port=6, rtp_min_port=10,
                                               rtp_max_port=20))
    assert ports == [("event_port", "udp", "0.0.0.0", 6, 6),
                     ("rtp_min_port", "udp", "127.0.0.1", 10, 20)]


def test_unreachable_service_fails_with_the_url_and_what_to_do(tmp_path) -> None:
    url = f"ws://127.0.0.1:{closed_port()}/llm"
    ini = QUIET.replace("[llm]\nprovider = fake", f"[llm]\nprovider = service-llm\nurl = {url}")
    checks = doctor.run(context(tmp_path, ini))
    (service,) = named(checks, "service")
    assert service.status == "fail"
    assert service.name == "service llm.service-llm"
    assert url in service.detail and "cannot connect" in service.detail
    assert service.fix.startswith("start the service or fix the url")
    assert "VC_LLM_SERVICE_LLM__URL" in service.fix
    assert doctor.exit_code(checks) == 1


def test_listening_service_passes(tmp_path) -> None:
    with listening() as server:
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        ini = QUIET.replace("[llm]\nprovider = fake", f"[llm]\nprovider = service-llm\nurl = {url}")
        checks = doctor.run(context(tmp_path, ini))
    (service,) = named(checks, "service")
    assert service.status == "ok" and "accepts connections" in service.detail


def test_configuration_errors_are_listed_and_missing_providers_named(tmp_path) -> None:
    ini = QUIET + "[vad]\nconfidence = very\nstart_secs = soon\n[tts]\nprovider = nope\n"
    checks = doctor.run(context(tmp_path, ini))
    config = [c for c in named(checks, "config") if c.status == "fail"]
    assert len(config) == 2 and all("`vc config check`" in c.fix for c in config)
    assert any("[vad] confidence = 'very'" in c.detail for c in config)
    (tts,) = named(checks, "tts nope")
    assert tts.status == "fail" and "tts provider 'nope' is not installed" in tts.detail
    assert doctor.exit_code(checks) == 1


def test_broken_plugins_warn_or_fail_when_they_provide_a_configured_provider(tmp_path) -> None:
    import known_stack
    import raising_hook

    reg = registry(("vc-llm-ollama", raising_hook), ("index", known_stack))
    quiet = doctor.run(context(tmp_path, QUIET, reg))
    (plugins,) = named(quiet, "plugins")
    assert plugins.status == "warn" and "plugin vc-llm-ollama" in plugins.detail
    assert "the hook failed half way" in plugins.detail
    assert doctor.exit_code(quiet) == 0  # the configuration does not use it
    ini = QUIET.replace("[llm]\nprovider = fake", "[llm]\nprovider = ollama")
    used = doctor.run(context(tmp_path, ini, reg))
    (llm,) = named(used, "llm ollama")
    assert llm.status == "fail" and "did not load: register_llm raised ValueError" in llm.detail
    assert "pip install --force-reinstall vc-llm-ollama" in llm.fix
    assert named(used, "plugins") == []  # said once, where it matters
    (config,) = named(used, "config")
    assert config.status == "fail" and "does not load" in config.detail


def test_a_missing_file_is_one_failure(tmp_path) -> None:
    ctx = doctor.gather(str(tmp_path / "absent.ini"), registry(), {})
    checks = doctor.run(ctx)
    assert [c.status for c in named(checks, "config")] == ["fail"]
    assert "configuration file not found" in named(checks, "config")[0].detail


def test_vad_rates_are_checked(tmp_path) -> None:
    ini = QUIET.replace("[stt]\nprovider = fake", "[stt]\nprovider = wide-stt")
    checks = doctor.run(context(tmp_path, ini))
    (rate,) = named(checks, "sample rate stt")
    assert rate.status == "fail" and "44100" in rate.detail and "8000 or 16000" in rate.detail
    ok = doctor.run(context(tmp_path, ini + "[stt.wide-stt]\nsample_rate = 8000\n"))
    assert named(ok, "sample rate stt")[0].status == "ok"


def test_a_clock_before_the_release_year_fails(tmp_path) -> None:
    ctx = context(tmp_path, QUIET)
    past = calendar.timegm((doctor.RELEASE_YEAR - 1, 6, 1, 0, 0, 0))
    (clock, _) = doctor.check_clock(ctx, now=past)
    assert clock.status == "fail" and "set the clock" in clock.fix


class Plugged:
    """A plugin adding checks of every shape through the hook."""

    @hookimpl
    def register_checks(self, register):
        def sync_check(config):
            assert config is not None and "fake" in config.providers["stt"]
            return [Check.ok("plugged sync", "fine"), Check.warn("plugged warn", "meh", "tune it")]

        async def async_check(config):
            await asyncio.sleep(0)
            return Check.ok("plugged async", "fine")

        async def async_gen_check(config):
            yield Check.ok("plugged agen", "fine")

        def raising_check(config):
            raise RuntimeError("the check itself is broken")

        def wrong_result(config):
            return ["not a check"]

        def sleepy(config):
            import time

            time.sleep(5)

        for fn in (sync_check, async_check, async_gen_check, raising_check, wrong_result, sleepy):
            register(fn)


def test_plugins_add_checks_and_a_broken_check_is_contained(tmp_path) -> None:
    reg = registry(("plugged", Plugged()))
    record = next(p for p in reg.plugins if p.name == "plugged")
    assert record.status == "ok" and "register_checks" in record.hooks
    checks = doctor.run(context(tmp_path, QUIET, reg), timeout=1.0)
    by_name = {c.name: c for c in checks}
    assert by_name["plugged sync"].status == "ok" and by_name["plugged async"].status == "ok"
    assert by_name["plugged agen"].status == "ok"
    assert by_name["plugged warn"] == Check("plugged warn", "warn", "meh", "tune it")
    broken = by_name["plugged: raising_check"]
    assert broken.status == "fail"
    assert broken.detail == "the check raised RuntimeError: the check itself is broken"
    assert "plugin plugged" in broken.fix
    assert "not a vc.doctor.Check" in by_name["plugged: wrong_result"].detail
    assert by_name["plugged: sleepy"].detail == "the check did not finish in 1 s"
    assert doctor.exit_code(checks) == 1


def test_a_core_check_raising_is_contained(tmp_path, monkeypatch) -> None:
    def exploding(ctx: Any):
        raise ValueError("kaboom")

    monkeypatch.setattr(doctor, "CORE_CHECKS", [exploding, doctor.check_clock])
    checks = doctor.run(context(tmp_path, QUIET))
    assert checks[0] == Check.fail("exploding", "the check raised ValueError: kaboom",
                                   "this is a bug in vc-core: please report it")
    assert {c.name for c in checks[1:]} == {"clock", "monotonic clock"}


def test_registering_something_not_callable_is_a_plugin_error() -> None:
    class Bad:
        @hookimpl
        def register_checks(self, register):
            register("not a function")

    reg = registry(("bad", Bad()))
    record = next(p for p in reg.plugins if p.name == "bad")
    assert record.status == "error" and "register_checks expects a function" in record.error
    assert reg.checks == []


def test_check_rejects_unknown_status() -> None:
    with pytest.raises(ValueError, match="ok, warn, fail"):
        Check("x", "bad", "detail")  # type: ignore[arg-type]


def run_cli(monkeypatch, reg, *args: str):
    monkeypatch.setattr("vc.plugins._loaded", reg)
    return CliRunner().invoke(cli.cli, ["doctor", *args])


def test_cli_exit_codes_text_and_json(tmp_path, monkeypatch) -> None:
    ini = tmp_path / "vc.ini"
    ini.write_text(QUIET)
    ok = run_cli(monkeypatch, registry(), "-c", str(ini))
    assert ok.exit_code == 0, ok.output
    assert ok.output.startswith(f"vc doctor: {ini}\n")
    assert "  ok    config" in ok.output and "failed: the configured stack can run" in ok.output

    with listening() as taken:
        ini.write_text(FAKE_STACK + f"[server]\nport = {taken.getsockname()[1]}\n")
        text = run_cli(monkeypatch, registry(), "-c", str(ini))
        as_json = run_cli(monkeypatch, registry(), "-c", str(ini), "--json")
    assert text.exit_code == 1
    lines = text.output.splitlines()
    fail_at = next(i for i, line in enumerate(lines) if line.lstrip().startswith("FAIL"))
    assert "port http" in lines[fail_at] and "fix: stop what listens there" in lines[fail_at + 1]
    assert "the configured stack cannot run" in lines[-1]

    assert as_json.exit_code == 1
    body = json.loads(as_json.stdout)
    assert set(body) == {"ok", "config", "counts", "checks"}
    assert body["ok"] is False and body["config"] == str(ini)
    assert body["counts"]["fail"] == 1 and sum(body["counts"].values()) == len(body["checks"])
    for c in body["checks"]:
        assert set(c) == {"name", "status", "detail", "fix"} and c["status"] in ("ok", "warn", "fail")
    assert [c["name"] for c in body["checks"] if c["status"] == "fail"] == ["port http"]
