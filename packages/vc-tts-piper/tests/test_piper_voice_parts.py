"""A Piper voice decoded in parts: the same audio as the whole model, its first part first.

The reference is always the voice file itself, run by piper's own code (``PiperVoice``) or by
onnxruntime as one graph; noise is turned off so that every synthesis of a text is the same.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from piper import PiperVoice
from piper.config import SynthesisConfig
from piper_helpers import SENTENCES, provider_context
from vc_tts_piper import voice_parts
from vc_tts_piper.local import PiperProvider, PiperSettings
from vc_tts_piper.server import MESSAGE_BYTES, PiperWebSocketServer
from vc_tts_piper.voice_parts import (
    CONTEXT_FRAMES,
    PACE_MARGIN,
    RestPace,
    SplitError,
    cut_model,
    first_frames,
    parts_dir,
    prepare_elsewhere,
    prepare_parts,
)
from vc_tts_piper.voices import CALIBRATION_TEXT, TARGET_PEAK, LoadedVoice, Synthesis, resolve

QUIET = Synthesis(noise_scale=0.0, noise_w=0.0)
JOE = resolve("")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A cache directory of this module's own, with joe-medium's parts prepared in it."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VC_CACHE_DIR", str(folder))
        prepare_parts(JOE.model)
        yield folder


@pytest.fixture
def in_cache(cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VC_CACHE_DIR", str(cache))
    return cache


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, "<i2").astype(np.int32)


def assert_same_audio(a: bytes, b: bytes, lsb: int = 1) -> None:
    """Equal up to the last ``lsb`` steps of a sample (float rounding in another graph)."""
    x, y = samples(a), samples(b)
    assert len(x) == len(y) > 0
    assert int(np.max(np.abs(x - y))) <= lsb


# -- the parts decode what the whole model decodes --------------------------------------------


def test_piece_audio_is_what_piper_itself_makes_times_the_voice_gain(in_cache: Path) -> None:
    """Our feed of the model (scales, lengths) and piper's own give the same audio; we only
    scale it by the voice's gain where piper scales each piece to its own peak."""
    reference = PiperVoice.load(str(JOE.model))
    raw = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, normalize_audio=False)
    calibration = np.concatenate([c.audio_float_array for c in reference.synthesize(
        CALIBRATION_TEXT, syn_config=raw)])
    for parts in (True, False):
        voice = LoadedVoice(JOE, threads=1, parts=parts)
        assert (voice.parts is not None) is parts
        assert voice.gain == pytest.approx(TARGET_PEAK / np.max(np.abs(calibration)), rel=1e-4)
        for text in SENTENCES[:3]:
            audio = np.concatenate([c.audio_float_array
                                    for c in reference.synthesize(text, syn_config=raw)])
            expected = (np.clip(audio * voice.gain, -1, 1) * 32767).astype("<i2").tobytes()
            # (piper optimises the graph further: rounding differs by up to 2 steps of 65536)
            assert_same_audio(voice.synthesize_piece(text, QUIET), expected, lsb=2)


def test_a_piece_starts_with_its_first_part_and_the_rest_goes_on_from_there(
        in_cache: Path) -> None:
    voice = LoadedVoice(JOE, threads=1)
    assert voice.parts is not None and voice.parts.hop == 256
    voice.rest_pace = RestPace(0.0)  # no pace known: first_seconds exactly
    for text in ("The capital of France is", "We are open from nine. Call us any time."):
        whole = voice.synthesize_piece(text, QUIET)
        started = voice.start_piece(text, QUIET, first_seconds=0.3)
        assert len(started.audio) == 2 * 256 * round(0.3 * 22050 / 256)  # 0.30 s
        assert started.rest is not None
        assert_same_audio(started.audio + started.rest(), whole)


def test_a_piece_too_short_to_gain_comes_whole_and_nothing_is_asked_for_twice(
        in_cache: Path) -> None:
    voice = LoadedVoice(JOE, threads=1)
    started = voice.start_piece("Yes.", QUIET, first_seconds=0.5)  # 45 frames: < 43 + 16
    assert started.rest is None
    assert_same_audio(started.audio, voice.synthesize_piece("Yes.", QUIET))
    assert voice.start_piece("", QUIET, first_seconds=0.3).audio == b""
    whole_voice = LoadedVoice(JOE, threads=1, parts=False)
    started = whole_voice.start_piece(SENTENCES[0], QUIET, first_seconds=0.3)
    assert started.rest is None  # decoded whole: all of it at once
    assert_same_audio(started.audio, whole_voice.synthesize_piece(SENTENCES[0], QUIET))


def test_span_edges_match_the_whole_decode_only_with_enough_context(in_cache: Path) -> None:
    """Why CONTEXT_FRAMES is 16: with 4 frames either side the seam is audible (a difference
    of several percent of full scale), with 16 it is gone."""
    voice = LoadedVoice(JOE, threads=1)
    parts = voice.parts
    assert parts is not None
    latent = parts.latent(voice._feed(voice._sentences(SENTENCES[0])[0], voice.config_for(QUIET)))
    whole = parts.decode(latent)
    cut = latent.length // 2

    def seam(context: int) -> float:
        voice_parts.CONTEXT_FRAMES = context
        try:
            joined = np.concatenate([parts.decode(latent, 0, cut), parts.decode(latent, cut)])
        finally:
            voice_parts.CONTEXT_FRAMES = CONTEXT_FRAMES
        return float(np.max(np.abs(joined - whole)))

    assert seam(4) > 0.01
    assert seam(CONTEXT_FRAMES) < 1e-4


def test_the_first_part_plays_until_the_rest_comes_at_the_recent_pace() -> None:
    frame = 256 / 22050
    assert first_frames(200, 0, 26, 0.0, frame) == 26  # no pace known: the least
    assert first_frames(200, 0, 26, 0.0007, frame) == 26  # idle: 0.3 s covers the rest
    slow = first_frames(200, 0, 26, 0.004, frame)  # under load
    assert 26 < slow < 200
    rest = PACE_MARGIN * 0.004 * (200 - slow + CONTEXT_FRAMES)
    assert slow * frame >= rest > (slow - 1) * frame - PACE_MARGIN * 0.004  # the least that does
    assert first_frames(200, 300, 26, 0.004, frame) > slow  # more sentences to decode after
    pace = RestPace(0.001, window=3)
    assert pace.per_frame == 0.001  # (the calibration's, until a rest has come)
    for seconds in (0.2, 0.1, 0.05, 0.05):
        pace.record(seconds, 100)
    assert pace.per_frame == 0.001 * 1  # the slowest of the last three: 0.1 / 100


def test_a_slow_rest_makes_the_first_part_longer(in_cache: Path) -> None:
    voice = LoadedVoice(JOE, threads=1)
    text = SENTENCES[6]
    whole = voice.synthesize_piece(text, QUIET)
    idle = voice.start_piece(text, QUIET, first_seconds=0.3)
    for _ in range(8):
        voice.rest_pace.record(0.4, 100)  # 4 ms a frame
    busy = voice.start_piece(text, QUIET, first_seconds=0.3)
    assert len(idle.audio) < len(busy.audio) < len(whole)
    assert busy.rest is not None
    assert_same_audio(busy.audio + busy.rest(), whole)
    for _ in range(8):
        voice.rest_pace.record(3.0, 100)  # 30 ms a frame: slower than real time
    crawling = voice.start_piece(text, QUIET, first_seconds=0.3)
    assert len(busy.audio) < len(crawling.audio) < len(whole)  # most of it first
    assert crawling.rest is not None
    assert_same_audio(crawling.audio + crawling.rest(), whole)
    short = voice.start_piece("Of course.", QUIET, first_seconds=0.3)
    assert short.rest is None  # a short piece at that pace: whole
    assert_same_audio(short.audio, voice.synthesize_piece("Of course.", QUIET))


# -- a graph vc cannot cut, damaged parts ---------------------------------------------------


def _renamed_voice(folder: Path) -> Path:
    """joe-medium with its decoder's first node renamed: a voice vc does not know how to cut."""
    model = onnx.load(str(JOE.model))
    for node in model.graph.node:
        if node.name == voice_parts.DECODER_ENTRY:
            node.name = "/generator/first"
    path = folder / "odd-voice.onnx"
    onnx.save(model, str(path))
    shutil.copy(JOE.config, folder / "odd-voice.onnx.json")
    return path


def test_a_graph_without_the_decoder_entry_is_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(SplitError, match="no node /dec/conv_pre/Conv"):
        cut_model(_renamed_voice(tmp_path))


async def test_a_voice_that_cannot_be_cut_is_spoken_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("VC_CACHE_DIR", str(tmp_path / "cache"))
    path = _renamed_voice(tmp_path)
    assert "no node" in await prepare_elsewhere(path)
    provider = PiperProvider(PiperSettings(voice=str(path)), provider_context())
    with caplog.at_level(logging.WARNING, "vc.tts.test"):
        await provider.start()
        try:
            await asyncio.wait_for(asyncio.gather(*provider._preparing), 120)
            voice = provider.voices[str(path)]
            assert voice.parts is None
            chunks = [c async for c in provider.stream_piece(voice, SENTENCES[1])]
            assert len(chunks) == 1 and len(chunks[0]) > 22050  # whole, > 0.5 s
        finally:
            await provider.stop()
    assert any("stays decoded whole" in r.getMessage() and "no node" in r.getMessage()
               for r in caplog.records)


def test_damaged_parts_cost_only_the_early_audio(
        in_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    copy = tmp_path / "voices"
    copy.mkdir()
    model = copy / "en_US-joe-medium.onnx"
    shutil.copy(JOE.model, model)
    shutil.copy(JOE.config, copy / "en_US-joe-medium.onnx.json")
    folder = prepare_parts(model)
    (folder / voice_parts.DECODER_FILE).write_bytes(b"not a model")
    with caplog.at_level(logging.WARNING, "vc.tts.piper"):
        voice = LoadedVoice(resolve(str(model)), threads=1)
    assert voice.parts is None
    assert any("decoded whole" in r.getMessage() and "unreadable" in r.getMessage()
               for r in caplog.records)
    assert len(voice.synthesize_piece(SENTENCES[1], QUIET)) > 22050


def test_parts_are_kept_per_voice_file_and_cut_once(in_cache: Path, tmp_path: Path) -> None:
    folder = prepare_parts(JOE.model)
    assert folder == parts_dir(JOE.model) and folder.parent.parent == in_cache
    meta = json.loads((folder / voice_parts.META_FILE).read_text())
    assert meta["hop"] == 256 and meta["conditions"] == []
    stamp = (folder / voice_parts.FRONT_FILE).stat().st_mtime_ns
    assert prepare_parts(JOE.model) == folder  # kept: not cut again
    assert (folder / voice_parts.FRONT_FILE).stat().st_mtime_ns == stamp


def test_each_part_keeps_its_weights_beside_its_graph(in_cache: Path) -> None:
    """(onnxruntime loads a graph whose weights are in a file of their own much faster.)"""
    folder = prepare_parts(JOE.model)
    for part in (voice_parts.FRONT_FILE, voice_parts.DECODER_FILE):
        graph, weights = folder / part, folder / (part + voice_parts.WEIGHTS_SUFFIX)
        assert graph.stat().st_size < 1 << 20 < weights.stat().st_size
    sizes = sum(f.stat().st_size for f in folder.glob("*.onnx*"))
    assert 0.95 < sizes / JOE.model.stat().st_size < 1.05  # the weights once, not twice


def test_parts_of_an_older_layout_are_cut_again_and_removed(
        in_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    copy = tmp_path / "voices"
    copy.mkdir()
    model = copy / "en_US-joe-medium.onnx"
    shutil.copy(JOE.model, model)
    shutil.copy(JOE.config, copy / "en_US-joe-medium.onnx.json")
    layout = voice_parts.LAYOUT
    monkeypatch.setattr(voice_parts, "LAYOUT", layout - 1)
    older = prepare_parts(model)
    monkeypatch.setattr(voice_parts, "LAYOUT", layout)
    newer = prepare_parts(model)
    assert newer.parent.parent == in_cache
    assert newer != older and not older.exists()
    assert (newer / voice_parts.META_FILE).exists()
    assert parts_dir(JOE.model).exists()  # another voice file's parts are not touched


# -- the provider and the server ----------------------------------------------------------------


async def test_the_provider_prepares_missing_parts_in_the_background_then_uses_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("VC_CACHE_DIR", str(tmp_path))
    settings = PiperSettings(noise_scale=0.0, noise_w=0.0)
    provider = PiperProvider(settings, provider_context())
    with caplog.at_level(logging.INFO, "vc.tts.test"):
        await provider.start()
        try:
            voice = provider.voice_for(provider.context.profiles[0])
            assert voice.parts is None  # a start never waits for the cut
            await asyncio.wait_for(asyncio.gather(*provider._preparing), 120)
            assert voice.parts is not None
            whole = await provider.synthesize_piece(voice, SENTENCES[0])
            chunks = [c async for c in provider.stream_piece(voice, SENTENCES[0])]
            assert len(chunks) == 2 and len(chunks[0]) % 512 == 0  # whole frames
            assert 2 * 256 * 26 <= len(chunks[0]) < len(whole)  # at least 0.30 s
            assert_same_audio(b"".join(chunks), whole)
        finally:
            await provider.stop()
    assert any("decoded in parts from now on" in r.getMessage() for r in caplog.records)


async def test_a_caller_who_stops_listening_after_the_first_part_costs_no_more(
        in_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    provider = PiperProvider(PiperSettings(), provider_context())
    await provider.start()
    rests: list[str] = []
    original = LoadedVoice.start_piece

    def spied(self: LoadedVoice, *args: Any, **kwargs: Any) -> Any:
        started = original(self, *args, **kwargs)
        rest = started.rest
        assert rest is not None

        def counted() -> bytes:
            rests.append(args[0])
            return rest()

        return type(started)(started.audio, counted)

    monkeypatch.setattr(LoadedVoice, "start_piece", spied)
    try:
        voice = provider.voice_for(provider.context.profiles[0])
        assert voice.parts is not None
        stream = provider.stream_piece(voice, SENTENCES[0])
        first = await anext(stream)
        assert 0 < len(first) < 2 * 22050  # under a second
        await stream.aclose()  # barge-in
        assert [c async for c in provider.stream_piece(voice, SENTENCES[1])]
        assert rests == [SENTENCES[1]]
    finally:
        await provider.stop()


async def test_the_websocket_server_sends_the_same_audio_with_its_first_part_first(
        in_cache: Path) -> None:
    from vc_tts_piper import protocol
    from websockets.asyncio.client import connect

    async def audio(first_audio_seconds: float) -> list[bytes]:
        server = PiperWebSocketServer.load([], [], threads=1, synthesis=QUIET,
                                           first_audio_seconds=first_audio_seconds)
        port = await server.start(port=0)
        try:
            async with connect(f"ws://127.0.0.1:{port}/tts") as ws:
                await ws.send(protocol.request(SENTENCES[3], "en_US-joe-medium", 22050))
                out = []
                while isinstance(m := await asyncio.wait_for(ws.recv(), 60), bytes) or \
                        protocol.classify(m)[0] != "end":
                    if isinstance(m, bytes):
                        out.append(m)
                return out
        finally:
            await server.stop()

    def first_burst(messages: list[bytes]) -> int:
        """Bytes sent up to the first message shorter than a full one (the end of a part)."""
        sent = 0
        for m in messages:
            sent += len(m)
            if len(m) < MESSAGE_BYTES:
                break
        return sent

    streamed, whole = await audio(0.3), await audio(0.0)
    assert_same_audio(b"".join(streamed), b"".join(whole))
    head = first_burst(streamed)  # its first part went out on its own: >= 0.30 s
    assert head % 512 == 0 and 2 * 256 * 26 <= head < len(b"".join(streamed))
    assert first_burst(whole) == len(b"".join(whole))


def test_vc_models_prepare_cuts_the_voice_ahead(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "VC_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "vc.cli", "models", "prepare",
                           "en_US-joe-medium"], capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0, done.stderr
    kept = list((tmp_path / "piper-parts").glob("en_US-joe-medium-*/parts.json"))
    assert len(kept) == 1 and json.loads(kept[0].read_text())["hop"] == 256
