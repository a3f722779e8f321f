"""Garbage floods on the SIP and RTP ports during a live call, and the existing system's INI."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time

import pytest
from opensips_kit import VC, RtpPhone, SipCaller, place_call
from vc_transport_opensips import rtp
from vc_transport_opensips.settings import OpenSIPSSettings
from vc_transport_opensips.transport import OpenSIPSTransport

from vc.config import read
from vc.providers import CallHost, ProviderContext
from vc.settings import build
from vc.testing import until
from vc.testing.calls import speech


def garbage(rng: random.Random) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 400))
    if kind == 1:  # RTP-looking, wrong payload type or version
        return rtp.build(rng.choice([13, 96, 127]), rng.randrange(65536), 0, 1, rng.randbytes(160))
    if kind == 2:  # truncated RTP header with extension flag
        return b"\x90\x00" + rng.randbytes(rng.randrange(0, 20))
    if kind == 3:
        return b"INVITE sip:x SIP/2.0\r\nVia: nonsense\r\n\r\n"
    return b"SIP/2.0 200 OK\r\nCall-ID: x\r\n\r\n"


async def test_garbage_flood_does_not_disturb_a_live_call(
    phone: RtpPhone, caller: SipCaller
) -> None:
    async with VC(script="what time is it") as vc:
        await place_call(vc, phone, caller)
        await until(lambda: phone.loud(), what="greeting")
        stream = vc.session().connection.stream
        rtp_addr = ("127.0.0.1", stream.local_port)
        rng = random.Random(1234)
        attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        attacker.bind(("127.0.0.1", 0))
        attacker.setblocking(False)

        async def flood() -> int:
            sent = 0
            deadline = time.monotonic() + 4.0
            while time.monotonic() < deadline and sent < 6000:
                for _ in range(50):
                    attacker.sendto(garbage(rng), rtp_addr)
                    attacker.sendto(garbage(rng), vc.sip_addr)
                    sent += 2
                await asyncio.sleep(0.01)
            return sent

        flooding = asyncio.create_task(flood())
        await asyncio.sleep(0.3)
        t_asked = time.monotonic()
        await asyncio.sleep(phone.say(speech("What time is it now, please?")))
        await until(
            lambda: phone.loud(after=t_asked + 1.0),
            within=30,
            what="the bot's reply during the flood",
        )
        sent = await flooding
        attacker.close()
        assert sent > 1000
        assert sum(stream.drops.values()) > 100, stream.drops
        assert vc.transport.ua.drops, "garbage SIP was not counted as dropped"
        assert stream.latched == ("127.0.0.1", phone.port), "the flood hijacked the RTP latch"
        assert {addr for addr in phone.sources} == {rtp_addr}
        assert len(vc.recorder.started) == 1 and not vc.recorder.ended
        caller.send(caller.in_dialog("BYE", vc.sip_addr), vc.sip_addr)
        await caller.expect("BYE", 200)


LEGACY_INI = """
[general]
loglevel = INFO

[engine]
event_ip = 127.0.0.1
event_port = 8090
sip_ip = 0.0.0.0
sip_port = 8089

[opensips]
ip = 127.0.0.1
port = 8080
mi_transport = datagram

[rtp]
min_port = 35000
max_port = 35100
bind_ip = 0.0.0.0
ip = 192.0.2.10

[stt]
url = ws://vosk-server:2700
sample_rate = 16000
model = vosk-model-tr
send_eof = true
channels = 1

[llm]
url = ws://llm-turkish-server:8765
model = llama3.2:3b-instruct-turkish
temperature = 0.2
max_tokens = 80

[tts]
url = ws://piper-tts-server:8000/tts
voice = tr_TR-dfki-medium
sample_rate = 22050

[interruption]
enabled = true
min_words_strategy = false

[VAD]
confidence = 0.7
min_silence_ms = 400
"""


class NoCalls(CallHost):
    accepting = True

    async def run_call(self, connection):  # pragma: no cover - no call is placed
        raise AssertionError("no call expected")


async def test_existing_ini_starts_proxy_mode_on_8089(tmp_path) -> None:
    path = tmp_path / "config.ini"
    path.write_text(LEGACY_INI)
    raw = read(path, env={})
    assert raw.legacy
    values = raw.get("transport.opensips")
    settings, errors = build(OpenSIPSSettings, values, "transport.opensips")
    assert not errors, errors
    assert settings.mode == "proxy"
    assert (settings.sip_ip, settings.sip_port) == ("0.0.0.0", 8089)
    assert (settings.event_ip, settings.event_port) == ("127.0.0.1", 8090)
    assert (settings.mi_ip, settings.mi_port, settings.mi_transport) == (
        "127.0.0.1",
        8080,
        "datagram",
    )
    assert (settings.rtp_min_port, settings.rtp_max_port) == (35000, 35100)
    assert (settings.rtp_bind_ip, settings.rtp_ip) == ("0.0.0.0", "192.0.2.10")
    # Start it on 8089 as the old engine did (or on a free port if 8089 is taken here, via
    # the environment override a deployment would use).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", 8089))
            busy = False
        except OSError:
            busy = True
    env = (
        {"VC_TRANSPORT_OPENSIPS__SIP_PORT": "0", "VC_TRANSPORT_OPENSIPS__SIP_IP": "127.0.0.1"}
        if busy
        else {"VC_TRANSPORT_OPENSIPS__SIP_IP": "127.0.0.1"}
    )
    raw = read(path, env=env)
    for key, value in env.items():
        raw.sections["transport.opensips"][key.split("__")[1].lower()] = (value, f"env {key}")
    settings, errors = build(OpenSIPSSettings, raw.get("transport.opensips"), "transport.opensips")
    assert not errors
    transport = OpenSIPSTransport(
        settings, ProviderContext(profiles=[], log=logging.getLogger("t"))
    )
    await transport.start(NoCalls())
    try:
        assert transport.ready()
        assert transport.sip_port == 8089 if not busy else transport.sip_port > 0
        assert transport.media.pool.size == 51  # even ports 35000..35100
        caller = await SipCaller().start()
        caller.send(
            caller.in_dialog("OPTIONS", ("127.0.0.1", transport.sip_port)),
            ("127.0.0.1", transport.sip_port),
        )
        await caller.expect("OPTIONS", 200)
        await caller.close()
    finally:
        await transport.stop()


def test_env_names_for_the_docs() -> None:
    from vc.config import env_name

    assert env_name("transport.opensips", "sip_port") == "VC_TRANSPORT_OPENSIPS__SIP_PORT"


def test_deploy_dev_ini_loads() -> None:
    """deploy/opensips/vc.ini (docker-compose.dev.yml) is valid for this transport."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "deploy" / "opensips" / "vc.ini"
    if not path.exists():
        pytest.skip("not running from the repository")
    raw = read(path, env={})
    settings, errors = build(OpenSIPSSettings, raw.get("transport.opensips"), "transport.opensips")
    assert not errors, errors
    assert settings.mode == "proxy" and settings.sip_port == 8089 and settings.mi_ip == "opensips"
