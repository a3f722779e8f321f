"""Audio helpers shared by transports and providers: G.711 codecs and streaming resampling.

G.711 (µ-law / A-law, ITU-T G.711) is done with 64 KiB lookup tables: decoding is one
table lookup per sample, encoding one lookup on the top 14 bits (µ-law) / 13 bits (A-law)
of each sample. Resampling keeps filter state between chunks (no clicks at chunk boundaries,
no naive decimation). Between rates that are whole multiples of each other (8 <-> 16 kHz, the
phone line and the models) a stream uses :class:`FirResampler`, whose output follows each chunk
6 ms behind its input; other rate pairs use soxr's streaming resampler, which hands its output
over in blocks (HQ 8 -> 16 kHz: 104 ms at a time, so a caller's words reached the VAD up to a
tenth of a second late).
"""

from __future__ import annotations

import numpy as np
import soxr

_BIAS = 0x84


def _ulaw_decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    sample = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(sign != 0, -sample, sample).astype(np.int16)


def _alaw_decode_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    sign = a & 0x80
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    sample = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1)
    )
    return np.where(sign != 0, sample, -sample).astype(np.int16)


def _ulaw_encode(samples: np.ndarray) -> np.ndarray:
    v = samples.astype(np.int32) >> 2  # 14-bit, as G.711 defines it
    mask = np.where(v < 0, 0x7F, 0xFF)
    v = np.minimum(np.abs(v), 8159) + 0x21
    seg = np.maximum(np.floor(np.log2(v)).astype(np.int32) - 5, 0)
    uval = np.where(seg > 7, 0x7F, (np.minimum(seg, 7) << 4) | ((v >> (np.minimum(seg, 7) + 1)) & 0x0F))
    return (uval ^ mask).astype(np.uint8)


def _alaw_encode(samples: np.ndarray) -> np.ndarray:
    s = samples.astype(np.int32)
    sign = np.where(s >= 0, 0x80, 0)
    mag = np.minimum(np.where(s < 0, -s - 1, s), 32767) >> 3  # 13-bit magnitude
    exponent = np.where(mag < 32, 0, np.floor(np.log2(np.maximum(mag, 1))).astype(np.int32) - 4)
    exponent = np.clip(exponent, 0, 7)
    mantissa = np.where(exponent == 0, mag >> 1, mag >> exponent) & 0x0F
    return ((sign | (exponent << 4) | mantissa) ^ 0x55).astype(np.uint8)


_ULAW_DEC = _ulaw_decode_table()
_ALAW_DEC = _alaw_decode_table()
_ALL = np.arange(-32768, 32768, dtype=np.int32)
_ULAW_ENC = _ulaw_encode(_ALL)
_ALAW_ENC = _alaw_encode(_ALL)


def ulaw_to_pcm(data: bytes) -> bytes:
    """G.711 µ-law bytes -> PCM16LE."""
    return _ULAW_DEC[np.frombuffer(data, dtype=np.uint8)].tobytes()


def pcm_to_ulaw(pcm: bytes) -> bytes:
    """PCM16LE -> G.711 µ-law bytes."""
    s = np.frombuffer(pcm, dtype="<i2").astype(np.int32) + 32768
    return _ULAW_ENC[s].tobytes()


def alaw_to_pcm(data: bytes) -> bytes:
    """G.711 A-law bytes -> PCM16LE."""
    return _ALAW_DEC[np.frombuffer(data, dtype=np.uint8)].tobytes()


def pcm_to_alaw(pcm: bytes) -> bytes:
    """PCM16LE -> G.711 A-law bytes."""
    s = np.frombuffer(pcm, dtype="<i2").astype(np.int32) + 32768
    return _ALAW_ENC[s].tobytes()


#: Silence in each codec (what a decoder turns into 0).
ULAW_SILENCE = 0xFF
ALAW_SILENCE = 0xD5


class FirResampler:
    """PCM16 mono streaming resampling by a whole factor, up or down, with little delay.

    One Kaiser-windowed sinc low-pass (``taps_per_phase`` taps per output phase; 8 <-> 16 kHz:
    flat to 3.7 kHz, -72 dB at 4 kHz) run over the zero-stuffed input (up) or before
    decimation (down). Every chunk's output is produced at once; it lags the input by half the
    filter (6 ms at 16 kHz with the default), and ``last=True`` flushes that tail, so a whole
    stream comes out exactly ``len * up // down`` samples long and aligned with its input.
    """

    def __init__(self, in_rate: int, out_rate: int, taps_per_phase: int = 96) -> None:
        if in_rate <= 0 or out_rate <= 0 or (in_rate % out_rate and out_rate % in_rate):
            raise ValueError(f"{in_rate} -> {out_rate} Hz is not a whole factor")
        self.up = max(1, out_rate // in_rate)
        self.down = max(1, in_rate // out_rate)
        factor = max(self.up, self.down)
        n = taps_per_phase * factor + 1  # odd: the delay is a whole number of samples
        t = np.arange(n) - (n - 1) / 2
        cutoff = 0.475 / factor  # of the high rate: 3.8 kHz for 8 <-> 16 kHz
        self._taps = (2 * cutoff * np.sinc(2 * cutoff * t) * np.kaiser(n, 7.0) * self.up)
        self._delay = (n - 1) // 2  # samples at the high rate (96: 6 ms at 16 kHz)
        self.reset()

    def reset(self) -> None:
        self._history = np.zeros(len(self._taps) - 1)
        self._produced = 0  # filtered samples at the high rate so far
        self._consumed = 0  # input samples so far

    def _filter(self, x: np.ndarray) -> np.ndarray:
        """High-rate samples ``x`` through the low-pass, continuing from the last call."""
        if not len(x):  # (np.convolve would swap its arguments on a buffer shorter than the taps)
            return x
        buf = np.concatenate([self._history, x])
        self._history = buf[len(buf) - len(self._history):]
        return np.convolve(buf, self._taps, mode="valid")

    def process(self, pcm: bytes, last: bool = False) -> bytes:
        x = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64)
        self._consumed += len(x)
        if self.up > 1:
            stuffed = np.zeros(len(x) * self.up)
            stuffed[:: self.up] = x
            x = stuffed
        y = self._filter(x)
        if last:
            y = np.concatenate([y, self._filter(np.zeros(self._delay))])
        # y[i] is the high-rate signal at time start + i: keep the samples on the output grid,
        # from time 0 (before it is the filter's lead-in) to the input's end (on the last call).
        start = self._produced - self._delay
        self._produced += len(y)
        first = max(0, -start)
        first += -(start + first) % self.down
        end = min(len(y), self._consumed * self.up - start) if last else len(y)
        if last:
            self.reset()
        return np.clip(np.rint(y[first:end:self.down]), -32768, 32767).astype("<i2").tobytes()


class StreamResampler:
    """PCM16 mono resampling between two fixed rates, chunk by chunk.

    Whole-factor rate pairs use :class:`FirResampler` (output with every chunk); others
    soxr's ``ResampleStream`` at ``quality`` (output in blocks of up to ~150 ms).
    """

    def __init__(self, in_rate: int, out_rate: int, quality: str = "VHQ") -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._passthrough = in_rate == out_rate
        self._fir: FirResampler | None = None
        self._rs = None
        if self._passthrough:
            return
        if in_rate % out_rate == 0 or out_rate % in_rate == 0:
            self._fir = FirResampler(in_rate, out_rate)
        else:
            self._rs = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)

    def process(self, pcm: bytes, last: bool = False) -> bytes:
        if self._passthrough:
            return pcm
        if self._fir is not None:
            return self._fir.process(pcm, last=last)
        assert self._rs is not None
        x = np.frombuffer(pcm, dtype="<i2")
        return self._rs.resample_chunk(x, last=last).tobytes()

    def reset(self) -> None:
        if self._fir is not None:
            self._fir.reset()
        if self._rs is not None:
            self._rs.clear()


def resample(pcm: bytes, in_rate: int, out_rate: int) -> bytes:
    """Resample a whole clip."""
    if in_rate == out_rate:
        return pcm
    x = np.frombuffer(pcm, dtype="<i2")
    return soxr.resample(x, in_rate, out_rate, quality="VHQ").astype("<i2").tobytes()


def rms(pcm: bytes) -> float:
    """Root-mean-square level of PCM16 audio, 0..1."""
    if not pcm:
        return 0.0
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    return float(np.sqrt(np.mean(x * x)))
