"""The ``vosk-websocket`` provider against a vosk-server-protocol server backed by real Vosk."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any, ClassVar

import pytest
from pipecat.frames.frames import (
    InterimTranscriptionFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
)
from vc_stt_vosk.protocol import EOF_MESSAGE, parse_message
from vc_stt_vosk.settings import VoskWebSocketSettings
from vc_stt_vosk.websocket import VoskWebSocketSTT
from vosk_helpers import HELLO, PROBLEM, Harness, call_context, hangul, korean
from vosk_test_server import VoskTestServer

from vc.providers import ProviderError
from vc.testing import config_from_ini, fake_registry
from vc.testing.contracts import STTContract


class TestVoskWebSocketContract(STTContract):
    provider = VoskWebSocketSTT
    language = "ko"
    phrase = HELLO[0]
    voice = "ko"
    expected_words: ClassVar[tuple[str, ...]] = (HELLO[1],)

    @pytest.fixture(autouse=True)
    async def _server(self, server: VoskTestServer) -> None:
        self.url = server.url

    def make_settings(self) -> VoskWebSocketSettings:
        return VoskWebSocketSettings(url=getattr(self, "url", "ws://127.0.0.1:2700"))


#: The server finishes an utterance after 0.5-2 s of silence (its endpoint rules); a phone line
#: keeps sending silence after the caller stops, so the tests do too.
SILENCE = 16000 * 2 * 5 // 2


async def say(h: Harness, phrase: str) -> None:
    await h.utterance(korean(phrase), pace=0.005)
    await h.audio(bytes(SILENCE), pace=0.005)


def test_server_messages_parse() -> None:
    assert parse_message('{"partial" : "여보"}').final is False
    final = parse_message('{"result": [{"word": "여보세요", "conf": 1.0}], "text": "여보세요"}')
    assert final is not None and final.final and final.text == "여보세요"
    assert parse_message('{"alternatives": [{"text": "네", "confidence": 1}]}').text == "네"
    assert parse_message("not json") is None and parse_message("[]") is None


async def test_protocol_on_the_wire(started, server: VoskTestServer) -> None:
    p = await started("ws", url=server.url, pool_size=1)
    async with Harness(p.create_service(call_context())) as h:
        await say(h, HELLO[0])
        await h.transcript(1, within=30)
        await h.end()
    assert HELLO[1] in h.transcripts[0]
    call = server.connections[0]  # the pooled connection carried the call
    assert json.loads(call.order[0]) == {"config": {"sample_rate": 16000}}
    assert call.order[-1] == EOF_MESSAGE == '{"eof" : 1}'
    assert all(isinstance(m, int) for m in call.order[1:-1])  # only audio in between
    assert call.texts == [call.order[0], EOF_MESSAGE] and call.closed
    assert call.responses == call.frames + 1  # one answer per frame, and the final one
    assert h.interims and all(hangul(t) for t in h.interims)
    assert h.first(InterimTranscriptionFrame) < h.first(TranscriptionFrame)
    assert h.frames(TranscriptionFrame)[0].finalized and not h.errors


async def test_warm_pool_means_no_connect_at_call_start(started, server: VoskTestServer) -> None:
    p = await started("ws", url=server.url, pool_size=2)
    assert p.ready() and p.pool.idle == 2 and len(server.connections) == 2
    connects = p.pool.connects
    async with Harness(p.create_service(call_context())) as h:
        await h.audio(bytes(3200))
        await h.wait_for(lambda: server.connections[0].frames > 0, 10)
        await h.wait_for(lambda: p.pool.idle == 2, 10)  # refilled behind the call
        await h.end()
    assert p.pool.connects == connects + 1  # the one refill, not one for the call
    assert server.connections[0].frames > 0 and server.connections[1].frames == 0


async def test_server_drops_mid_call_and_comes_back(started, server: VoskTestServer) -> None:
    p = await started("ws", url=server.url, pool_size=1, reconnect_max_delay=0.5)
    service = p.create_service(call_context())
    async with Harness(service) as h:
        await say(h, HELLO[0])
        await h.transcript(1, within=30)
        problem = korean(PROBLEM[0])
        half = len(problem) // 2 // 640 * 640
        await h.task.queue_frame(VADUserStartedSpeakingFrame())
        await h.audio(problem[:half], pace=0.005)
        await asyncio.sleep(0.3)
        await server.stop(crash=True)  # the server dies in the middle of a word
        await h.audio(problem[half:], pace=0.005)  # the caller keeps talking meanwhile
        await h.audio(bytes(SILENCE), pace=0.005)
        await asyncio.sleep(1.0)
        await server.start()  # ...and comes back on the same port
        await h.transcript(2, within=60)
        await h.end()
    assert PROBLEM[1] in h.transcripts[1], h.transcripts
    assert service.reconnects >= 1 and service.dropped_bytes == 0 and not h.errors
    replayed = server.connections[-1]
    assert json.loads(replayed.order[0]) == {"config": {"sample_rate": 16000}}
    assert replayed.audio_bytes >= len(problem)  # the unfinished utterance was sent again
    assert replayed.order[-1] == EOF_MESSAGE


async def test_clean_server_restart_mid_call(started, server: VoskTestServer) -> None:
    p = await started("ws", url=server.url, pool_size=0, reconnect_max_delay=0.3)
    service = p.create_service(call_context())
    async with Harness(service) as h:
        await say(h, HELLO[0])
        await h.transcript(1, within=60)
        await server.stop(wait=False)  # close frames, not a crash
        await h.audio(bytes(6400), pace=0.02)  # the call goes on
        await server.start()
        await say(h, PROBLEM[0])
        await h.transcript(2, within=60)
        await h.end()
    assert HELLO[1] in h.transcripts[0] and PROBLEM[1] in h.transcripts[1]
    assert service.reconnects == 1


async def test_server_down_at_startup(started, ko_model: Any) -> None:
    s = VoskTestServer(ko_model)
    await s.start()
    url = s.url
    await s.stop()
    p = await started("ws", url=url, pool_size=1, reconnect_max_delay=0.2, connect_timeout=1.0)
    assert not p.ready()  # vc starts anyway; /readyz reports it
    service = p.create_service(call_context())
    try:
        async with Harness(service) as h:  # a call arrives while the server is still down
            await say(h, HELLO[0])
            await s.start()
            await h.transcript(1, within=60)
            await h.wait_for(p.ready, 10)
            await h.end()
    finally:
        await s.stop()
        s.close()
    assert HELLO[1] in h.transcripts[0]


@pytest.mark.parametrize("pool_size", [1, 0])
async def test_server_started_after_vc_makes_it_ready(started, ko_model: Any,
                                                     pool_size: int) -> None:
    """Start order does not matter: start() returns with the port closed, not ready (and says
    why); the Vosk server comes up on that port and the retry loop gets through."""
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    p = await started("ws", url=f"ws://127.0.0.1:{port}", pool_size=pool_size,
                      connect_timeout=1.0)
    assert not p.ready()
    assert f"cannot reach the Vosk server at ws://127.0.0.1:{port}" in p.not_ready_reason()
    s = VoskTestServer(ko_model)
    s.port = port
    await s.start()
    try:
        deadline = time.monotonic() + 12  # backoff 0.5 s doubling, capped at 10 s
        while not p.ready():
            assert time.monotonic() < deadline, p.not_ready_reason()
            await asyncio.sleep(0.05)
        assert p.pool.idle == pool_size and p.not_ready_reason() == ""
    finally:
        await s.stop()
        s.close()


async def test_finalize_on_vad_stop_sends_reset(started, server: VoskTestServer) -> None:
    p = await started("ws", url=server.url, pool_size=1, finalize_on_vad_stop=True)
    async with Harness(p.create_service(call_context())) as h:
        speech_only = korean(HELLO[0])[: -16000 * 6 // 10 * 2]
        await h.utterance(speech_only, pace=0.005)  # no silence after: only the reset ends it
        await h.transcript(1, within=30)
        await h.audio(bytes(6400))
        await h.end()
    assert HELLO[1] in h.transcripts[0]
    assert '{"reset" : 1}' in server.connections[0].texts and p.reset_enabled
    assert any(name == "stt_finalize_seconds" for name, _, _ in p.context.observe.values)


async def test_old_server_without_reset(started, ko_model: Any) -> None:
    old = VoskTestServer(ko_model, knows_reset=False)
    await old.start()
    try:
        p = await started("ws", url=old.url, pool_size=1, finalize_on_vad_stop=True,
                          reconnect_max_delay=0.3)
        service = p.create_service(call_context())
        async with Harness(service) as h:
            await say(h, HELLO[0])  # the reset kills the connection; vc copes
            await h.transcript(1, within=60)
            await say(h, PROBLEM[0])
            await h.transcript(2, within=60)
            await h.end()
    finally:
        await old.stop()
        old.close()
    assert HELLO[1] in h.transcripts[0] and PROBLEM[1] in h.transcripts[1]
    assert not p.reset_enabled and service.reconnects == 1  # detected once, then not sent


async def test_send_eof_false_just_closes(started, server: VoskTestServer) -> None:
    p = await started("ws", url=server.url, pool_size=0, send_eof=False)
    async with Harness(p.create_service(call_context())) as h:
        await h.audio(korean(HELLO[0]))
        await h.end()
    await asyncio.sleep(0.2)
    assert server.connections[0].texts == ['{"config": {"sample_rate": 16000}}']
    assert server.connections[0].closed


async def test_concurrent_calls(started, server: VoskTestServer) -> None:
    p = await started("ws", url=server.url, pool_size=2)

    async def call(phrase: str) -> str:
        async with Harness(p.create_service(call_context())) as h:
            await say(h, phrase)
            await h.transcript(1, within=60)
            await h.end()
        return " ".join(h.transcripts)

    hello, problem = await asyncio.gather(call(HELLO[0]), call(PROBLEM[0]))
    assert HELLO[1] in hello and PROBLEM[1] in problem and PROBLEM[1] not in hello


async def test_bad_url_is_a_startup_error(started) -> None:
    with pytest.raises(ProviderError, match="expected ws://host:port"):
        await started("ws", url="http://127.0.0.1:2700")


def test_legacy_ini_selects_the_websocket_provider_unchanged() -> None:
    ini = """
[stt]
url = ws://vosk-server:2700
sample_rate = 8000
model = vosk-model-tr
send_eof = true
channels = 1
[llm]
provider = fake
[tts]
provider = fake
"""
    cfg = config_from_ini(ini, fake_registry())
    assert cfg.default_providers["stt"] == "vosk-websocket"
    s = cfg.providers["stt"]["vosk-websocket"].settings
    assert (s.url, s.sample_rate, s.model, s.send_eof, s.channels) == (
        "ws://vosk-server:2700", 8000, "vosk-model-tr", True, 1)
    assert VoskWebSocketSTT(s, _ctx()).sample_rate == 8000  # core feeds it 8 kHz


def _ctx():
    from vosk_helpers import provider_context

    return provider_context()
