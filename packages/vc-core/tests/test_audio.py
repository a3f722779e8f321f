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


# -- whole-factor resampling without block latency -------------------------------------------------


def _speechlike(rate: int, seconds: float = 1.0) -> np.ndarray:
    """A chirp from 100 Hz to 3.4 kHz plus two tones: energy across the phone band."""
    t = np.arange(int(rate * seconds)) / rate
    chirp = np.sin(2 * np.pi * (100 * t + (3300 / (2 * seconds)) * t * t))
    return ((chirp + 0.5 * np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 2900 * t))
            * 7000).astype("<i2")


def _snr_db(ref: np.ndarray, got: np.ndarray) -> float:
    ref, got = ref.astype(float), got.astype(float)
    return float(10 * np.log10(np.sum(ref ** 2) / np.sum((got - ref) ** 2)))


def test_whole_factor_streams_hand_over_every_chunk_at_once() -> None:
    # soxr's HQ stream gave 8 -> 16 kHz output in 104 ms blocks: a caller's last word reached
    # the VAD up to a tenth of a second late. Each 20 ms frame must come out as it goes in.
    rs = audio.StreamResampler(8000, 16000)
    frames = [f.tobytes() for f in np.split(_speechlike(8000), 50)]
    sizes = [len(rs.process(f)) for f in frames]
    delay = 2 * audio.FirResampler(8000, 16000)._delay
    assert sizes[0] == 640 - delay and set(sizes[1:]) == {640}
    down = audio.StreamResampler(16000, 8000)
    assert [len(down.process(bytes(640))) for _ in range(3)][1:] == [320, 320]


@pytest.mark.parametrize(("src", "dst"), [(8000, 16000), (16000, 8000), (16000, 48000), (48000, 16000)])
def test_whole_factor_stream_matches_soxr_on_the_whole_clip(src: int, dst: int) -> None:
    x = _speechlike(src)
    rs = audio.StreamResampler(src, dst)
    chunks = [x[i:i + src // 50].tobytes() for i in range(0, len(x), src // 50)]
    got = np.frombuffer(b"".join(rs.process(c) for c in chunks) + rs.process(b"", last=True), "<i2")
    ref = np.frombuffer(audio.resample(x.tobytes(), src, dst), "<i2")
    assert len(got) == len(ref) == len(x) * dst // src
    margin = dst // 100  # both filters start and end on a cut signal
    assert _snr_db(ref[margin:-margin], got[margin:-margin]) > 35


def test_whole_factor_stream_is_aligned_and_independent_of_chunking() -> None:
    x = np.zeros(8000, dtype="<i2")
    x[800] = 20000
    once = np.frombuffer(audio.FirResampler(8000, 16000).process(x.tobytes(), last=True), "<i2")
    assert int(np.argmax(once)) == 1600  # no delay left in the output: aligned with the input
    rng = np.random.default_rng(7)
    rs, out, i = audio.FirResampler(8000, 16000), b"", 0
    data = _speechlike(8000).tobytes()
    while i < len(data):
        n = 2 * int(rng.integers(1, 400))
        out += rs.process(data[i:i + n])
        i += n
    out += rs.process(b"", last=True)
    whole = np.frombuffer(audio.FirResampler(8000, 16000).process(data, last=True), "<i2")
    assert np.max(np.abs(np.frombuffer(out, "<i2").astype(int) - whole.astype(int))) <= 1


def test_only_whole_factors_use_the_fir_and_others_stay_on_soxr() -> None:
    with pytest.raises(ValueError, match="whole factor"):
        audio.FirResampler(22050, 8000)
    assert audio.StreamResampler(8000, 16000)._fir is not None
    assert audio.StreamResampler(22050, 8000)._fir is None
    rs = audio.StreamResampler(22050, 8000)
    one_second = rs.process(_speechlike(22050).tobytes()) + rs.process(b"", last=True)
    assert abs(len(one_second) // 2 - 8000) <= 8
