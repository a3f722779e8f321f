"""The call events core reports to observers (:meth:`vc.providers.Observer.event`): the catalogue.

Each constant is an event name; :data:`CATALOGUE` maps it to the keys its ``data`` payload
always carries (and :data:`OPTIONAL_KEYS` to those it may carry). Payload values are plain JSON
types (str, int, float, bool, list, dict), so an observer can ``json.dumps`` them as they are.
Core never sends an event name that is not in the catalogue; a new event is added here first
(and is a minor version of vc-core, see docs/api.md). Observers ignore names they do not know.

Besides these, an observer hears the start and end of every call through its own methods
(:meth:`~vc.providers.Observer.call_started`, :meth:`~vc.providers.Observer.call_ended`) and
each turn's stage latencies through :meth:`~vc.providers.Observer.latency`; :data:`CALL_STARTED`
and :data:`CALL_ENDED` name them where one name per happening is wanted (a JSON-lines sink).
"""

from __future__ import annotations

from typing import Final

#: A final transcript of the caller. ``text``: what the STT heard.
TRANSCRIPT: Final = "transcript"
#: A caller turn answered: the bot's first audio reached the transport. ``text``: the turn's
#: transcript; ``voice_to_voice``: seconds from the caller's end of speech to that audio; when
#: measured, ``vad_stop``, ``stt``, ``llm_first_token``, ``tts_first_audio`` (seconds, see
#: :mod:`vc.monitor`).
TURN: Final = "turn"
#: The caller interrupted the bot while its audio was playing; the audio was dropped. No keys.
BARGE_IN: Final = "barge_in"
#: The caller may be talking over the bot: its audio is held (not dropped yet). No keys.
BOT_PAUSED: Final = "bot_paused"
#: It was not a turn (a cough, a short "mm"): the held audio plays on. No keys.
BOT_RESUMED: Final = "bot_resumed"
#: The transport reported a playout mark as heard by the caller. ``name``: the mark's name.
MARK_PLAYED: Final = "mark_played"
#: The caller pressed a key. ``digit``: ``0``-``9``, ``*``, ``#`` or ``A``-``D``.
DTMF: Final = "dtmf"
#: The LLM called a tool. ``name``: the tool; ``arguments``: its arguments, secrets redacted.
TOOL_CALL: Final = "tool_call"

#: Names for the ``call_started``/``call_ended`` methods (never passed to ``event``).
#: ``call_started`` gets ``(info, profile)``; ``call_ended`` ``(info, outcome, duration)``.
CALL_STARTED: Final = "call_started"
CALL_ENDED: Final = "call_ended"
#: Once, as a call ends, where its transport measures the network (RTP): the fields of
#: :class:`vc.call.MediaQuality` and ``loss_ratio``.
MEDIA_QUALITY: Final = "media_quality"

#: event name -> payload keys it always carries
CATALOGUE: Final[dict[str, tuple[str, ...]]] = {
    TRANSCRIPT: ("text",),
    TURN: ("text", "voice_to_voice"),
    BARGE_IN: (),
    BOT_PAUSED: (),
    BOT_RESUMED: (),
    MARK_PLAYED: ("name",),
    DTMF: ("digit",),
    TOOL_CALL: ("name", "arguments"),
    MEDIA_QUALITY: ("expected", "received", "lost", "late", "duplicate", "concealed_seconds",
                    "jitter_seconds", "max_jitter_seconds", "loss_ratio"),
}

#: event name -> payload keys it may also carry
OPTIONAL_KEYS: Final[dict[str, tuple[str, ...]]] = {
    TURN: ("vad_stop", "stt", "llm_first_token", "tts_first_audio"),
}

#: Stage names :meth:`~vc.providers.Observer.latency` reports (seconds; see :mod:`vc.monitor`):
#: each turn's stages, and ``barge_in`` for each barge-in: from the onset of the caller's
#: speech over the bot (as vc heard it) to the bot's audio stopping (paused or cleared).
LATENCY_STAGES: Final = ("vad_stop", "stt", "llm_first_token", "tts_first_audio", "voice_to_voice",
                         "barge_in")

__all__ = [
    "BARGE_IN", "BOT_PAUSED", "BOT_RESUMED", "CALL_ENDED", "CALL_STARTED", "CATALOGUE", "DTMF",
    "LATENCY_STAGES", "MARK_PLAYED", "MEDIA_QUALITY", "OPTIONAL_KEYS", "TOOL_CALL", "TRANSCRIPT",
    "TURN",
]
