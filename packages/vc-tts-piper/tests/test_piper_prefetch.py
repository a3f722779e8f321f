"""A held (speculative) reply's first piece is synthesised while the reply is held, and the
released reply speaks from that audio (vc_tts_piper.prefetch), with the real voice, in-process
and through the Piper WebSocket service."""

from __future__ import annotations

import asyncio
import logging

import pytest
from pipecat.frames.frames import (
    EagerEndOfTurnCancelFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator
from piper_helpers import SENTENCES, Harness, call_context, provider_context, tokens, wer
from vc_tts_piper.local import PiperProvider, PiperSettings
from vc_tts_piper.prefetch import FirstPiece
from vc_tts_piper.server import PiperWebSocketServer
from vc_tts_piper.ws_client import PiperWebSocketProvider, PiperWebSocketSettings

from vc.turns import HeldReplyFrame

REPLY = "Sure, I can check that for you right now. Your order shipped yesterday."


def held(text: str) -> list[Frame]:
    """What core announces while the LLM service holds ``text`` back."""
    return [HeldReplyFrame(start=True), *[HeldReplyFrame(text=t) for t in tokens(text)],
            HeldReplyFrame(end=True)]


def released(text: str) -> list[Frame]:
    """The same reply as the LLM service lets it through once the turn has ended."""
    return [UserStoppedSpeakingFrame(), LLMFullResponseStartFrame(),
            *[LLMTextFrame(t) for t in tokens(text)], LLMFullResponseEndFrame()]


async def test_the_released_reply_starts_with_the_piece_made_while_it_was_held(
        piper, transcribe, monkeypatch) -> None:
    observed: list[tuple[str, float, dict[str, str]]] = []
    monkeypatch.setattr(piper.context, "observe", lambda *a: observed.append(a))
    voice = piper.voice_for(call_context().profile)
    service = piper.create_service(call_context(8000))
    async with Harness(service, 8000) as h:
        await h.send(*held(REPLY))
        # Its first piece is being made, and nothing is heard while the reply is held.
        await h.wait(lambda: service.held.started == 1)
        before = voice.pieces_started
        assert not h.audio_frames()
        await h.send(*released(REPLY))
        await h.wait(lambda: len(service.spoken) == 3)
        await h.quiet()
    assert service.spoken[0] == "Sure, I can check that"  # the piece that was made held
    assert service.held.used == 1
    # The first piece was not synthesised again: only the pieces after it were.
    assert voice.pieces_started - before == 2
    heard = transcribe(h.audio(), 8000)
    assert wer(REPLY, heard) <= 0.2, heard
    assert not h.errors()
    # How long the released reply waited for the held piece is published, once.
    waits = [(name, labels) for name, _, labels in observed if name == "tts_held_wait_seconds"]
    assert waits == [("tts_held_wait_seconds", {"stage": "tts_held_wait"})]


async def test_a_short_reply_complete_while_held_is_made_from_its_end(piper, transcribe) -> None:
    service = piper.create_service(call_context(8000))
    async with Harness(service, 8000) as h:
        await h.send(*held("Of course"))  # no sentence end: only the reply's end completes it
        await h.wait(lambda: service.held.started == 1)
        await h.send(*released("Of course"))
        await h.wait(lambda: h.audio_frames())
        await h.quiet()
    assert service.spoken == ["Of course"] and service.held.used == 1
    assert "course" in transcribe(h.audio(), 8000).lower()


async def test_a_withdrawn_reply_is_never_heard(piper, transcribe) -> None:
    """The caller went on: the held reply is withdrawn; the reply to the whole turn is
    spoken, none of the withdrawn one."""
    service = piper.create_service(call_context(8000))
    async with Harness(service, 8000) as h:
        await h.send(*held("You said: I would like a table for."))
        await h.wait(lambda: service.held.started == 1)
        await h.send(EagerEndOfTurnCancelFrame())
        await h.send(*released(SENTENCES[1]))
        await h.wait(lambda: h.audio_frames())
        await h.quiet()
    assert service.held.used == 0
    assert service.spoken == [SENTENCES[1]]
    heard = transcribe(h.audio(), 8000)
    assert wer(SENTENCES[1], heard) <= 0.15, heard


async def test_an_interruption_forgets_the_held_reply(piper) -> None:
    service = piper.create_service(call_context(8000))
    async with Harness(service, 8000) as h:
        await h.send(*held(REPLY))
        await h.wait(lambda: service.held.started == 1)
        await h.send(InterruptionFrame())
        await h.wait(lambda: h.first(InterruptionFrame))
        assert service.held.take("Sure, I can check that") is None


async def test_a_different_reply_is_synthesised_as_it_is(piper, transcribe, caplog) -> None:
    """Held words that are not the released reply's (a stale announcement) are not used: they
    are dropped, and the log says so."""
    caplog.set_level(logging.INFO, logger="vc_tts_piper.prefetch")
    service = piper.create_service(call_context(8000))
    async with Harness(service, 8000) as h:
        await h.send(*held(SENTENCES[0]))
        await h.wait(lambda: service.held.started == 1)
        await h.send(*released(SENTENCES[1]))
        await h.wait(lambda: h.audio_frames())
        await h.quiet()
    assert service.held.used == 0
    assert service.held.take(service.spoken[0]) is None  # dropped, not kept for later
    said = [r.getMessage() for r in caplog.records if "dropped unused" in r.getMessage()]
    assert len(said) == 1 and "Please call me back" in said[0], said
    heard = transcribe(h.audio(), 8000)
    assert wer(SENTENCES[1], heard) <= 0.15, heard


async def test_prefetch_off_makes_nothing_while_held() -> None:
    provider = PiperProvider(PiperSettings(prefetch=False), provider_context())
    await provider.start()
    try:
        service = provider.create_service(call_context(8000))
        voice = provider.voice_for(call_context().profile)
        async with Harness(service, 8000) as h:
            before = voice.pieces_started
            await h.send(*held(REPLY))
            # The service passes each announcement on once it has seen it.
            await h.wait(lambda: any(isinstance(f, HeldReplyFrame) and f.end
                                     for _, f in h.down.frames))
            assert service.held.started == 0 and voice.pieces_started == before
    finally:
        await provider.stop()


async def test_the_websocket_service_is_asked_for_the_held_piece_early(piper, transcribe) -> None:
    """Through the Piper WebSocket service (the deployment vc replaces): the held reply's first
    request goes to the service on a connection of its own while the turn is waited out; the
    call's own connection then asks only for the rest."""
    voice = piper.voice_for(call_context().profile)
    server = PiperWebSocketServer({voice.name: voice}, voice.name)
    port = await server.start("127.0.0.1", 0)
    provider = PiperWebSocketProvider(PiperWebSocketSettings(
        url=f"ws://127.0.0.1:{port}/tts", voice=voice.name), provider_context())
    await provider.start()
    try:
        service = provider.create_service(call_context(8000))
        async with Harness(service, 8000) as h:
            await h.send(*held(REPLY))
            await h.wait(lambda: service.held.started == 1)
            await h.send(*released(REPLY))
            await h.wait(lambda: len(service.spoken) == 3)
            await h.quiet()
        assert service.spoken[0] == "Sure, I can check that"
        assert service.held.used == 1
        assert service.client.requests == 2  # the first was answered while held
        heard = transcribe(h.audio(), 8000)
        assert wer(REPLY, heard) <= 0.2, heard
        assert not h.errors()
    finally:
        await provider.stop()
        await server.stop()


async def test_the_wait_for_a_piece_still_being_made_is_told() -> None:
    """A released reply that asks for its held piece before it is made waits for it; the wait
    (from the ask to the audio) is what the services publish as stage ``tts_held_wait``."""
    made = asyncio.Event()
    waits: list[float] = []

    async def synthesize(piece: str, needed_at: float) -> bytes:
        await made.wait()
        return piece.encode()

    first = FirstPiece(SimpleTextAggregator, lambda text: text.strip(), synthesize, waits.append)
    await first.observe(HeldReplyFrame(start=True))
    await first.observe(HeldReplyFrame(text="Sure thing. "))
    await first.observe(HeldReplyFrame(text="More", end=True))
    audio = first.take("Sure thing.")
    assert audio is not None and not audio.done() and waits == []
    await asyncio.sleep(0.05)
    made.set()
    assert await audio == b"Sure thing."
    assert len(waits) == 1 and waits[0] >= 0.05


@pytest.mark.parametrize("frame", [EagerEndOfTurnCancelFrame(), InterruptionFrame()])
async def test_a_withdrawn_piece_reports_no_wait(frame: Frame) -> None:
    waits: list[float] = []

    async def synthesize(piece: str, needed_at: float) -> bytes:
        await asyncio.sleep(10)
        return b""

    first = FirstPiece(SimpleTextAggregator, lambda text: text.strip(), synthesize, waits.append)
    await first.observe(HeldReplyFrame(start=True))
    await first.observe(HeldReplyFrame(text="Sure thing. ", end=True))
    assert first.started == 1
    await first.observe(frame)
    await asyncio.sleep(0)
    assert first.take("Sure thing.") is None and waits == []
