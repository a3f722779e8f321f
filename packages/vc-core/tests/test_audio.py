"""G.711 codecs (bit-exact against the ITU reference behaviour) and soxr resampling."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from vc import audio

ALL = np.arange(-32768, 32768, dtype="<i2").tobytes()


@pytest.fixture(scope="module")
def audioop():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop as ref  # CPython's C implementation of G.711, until 3.13
        except ImportError:
            pytest.skip("audioop is gone in this Python")
    return ref


def test_ulaw_and_alaw_are_bit_exact(audioop) -> None:
    codes = bytes(range(256))
    assert audio.ulaw_to_pcm(codes) == audioop.ulaw2lin(codes, 2)
    assert audio.alaw_to_pcm(codes) == audioop.alaw2lin(codes, 2)
    assert audio.pcm_to_ulaw(ALL) == audioop.lin2ulaw(ALL, 2)
    assert audio.pcm_to_alaw(ALL) == audioop.lin2alaw(ALL, 2)


def test_silence_codes() -> None:
    assert audio.ulaw_to_pcm(bytes([audio.ULAW_SILENCE])) == b"\x00\x00"
    assert abs(int.from_bytes(audio.alaw_to_pcm(bytes([audio.ALAW_SILENCE])), "little", signed=True)) <= 8


def test_streaming_resampler_matches_whole_clip_and_has_no_boundary_clicks() -> None:
    rate = 8000
    t = np.arange(rate) / rate
    tone = (np.sin(2 * np.pi * 440 * t) * 10000).astype("<i2").tobytes()
    rs = audio.StreamResampler(8000, 16000)
    chunks = [rs.process(tone[i : i + 320]) for i in range(0, len(tone), 320)]
    streamed = np.frombuffer(b"".join(chunks) + rs.process(b"", last=True), "<i2").astype(float)
    whole = np.frombuffer(audio.resample(tone, 8000, 16000), "<i2").astype(float)
    n = min(len(streamed), len(whole))
    assert abs(len(streamed) - len(whole)) <= 64
    # no discontinuities: sample-to-sample steps stay within what a 440 Hz tone produces
    assert np.max(np.abs(np.diff(streamed[100:n - 100]))) < 2 * np.max(np.abs(np.diff(whole[100:n - 100])))


def test_passthrough_and_rms() -> None:
    assert audio.StreamResampler(8000, 8000).process(b"\x01\x00") == b"\x01\x00"
    assert audio.rms(b"") == 0.0
    assert 0.2 < audio.rms((np.ones(100) * 10000).astype("<i2").tobytes()) < 0.4
