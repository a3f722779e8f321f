"""The Piper WebSocket protocol (``ws://piper-tts-server:8000/tts``), both dialects.

Request, one per sentence: ``{"text": "..", "voice": "tr_TR-dfki-medium", "sample_rate": 22050,
"format": "pcm16"}``. Answer: an optional JSON start (``{"status": "started"}`` or
``{"type": "start" | "connected" | "audio_start"}``), binary PCM16LE mono at the requested
rate, a JSON end (``{"status": "completed"}`` or ``{"type": "end" | "audio_end"}``); errors
``{"error": ".."}`` or ``{"type": "error", "message": ".."}``. No request ids, no cancel.

Our server sends each control message in both dialects at once (``{"status": "started",
"type": "start"}``), so clients of either dialect understand it.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from vc import jsonsafe

START_TYPES = {"start", "started", "connected", "audio_start"}
END_TYPES = {"end", "audio_end", "done", "completed", "complete"}
START_STATUS = {"started", "start"}
END_STATUS = {"completed", "complete", "done", "finished", "end"}

Kind = Literal["start", "end", "error", "other"]

STARTED = {"status": "started", "type": "start"}
COMPLETED = {"status": "completed", "type": "end"}


def request(text: str, voice: str, sample_rate: int, fmt: str = "pcm16") -> str:
    return json.dumps({"text": text, "voice": voice, "sample_rate": sample_rate, "format": fmt},
                      ensure_ascii=False)


def error(message: str) -> dict[str, str]:
    """An error in both shapes."""
    return {"error": message, "type": "error", "message": message}


def classify(message: str) -> tuple[Kind, str]:
    """A control message -> (kind, error text or the raw message); never raises.

    Anything that is not a JSON object (malformed, nested too deeply) is ``other``: ignored.
    """
    try:
        data: Any = jsonsafe.loads(message)
    except ValueError:
        return "other", message
    if not isinstance(data, dict):
        return "other", message
    kind = str(data.get("type", "")).lower()
    status = str(data.get("status", "")).lower()
    if "error" in data and data["error"] not in (None, "", False):
        return "error", str(data["error"] if isinstance(data["error"], str) else
                            data.get("message") or data["error"])
    if kind == "error" or status == "error":
        return "error", str(data.get("message") or data.get("detail") or "unknown error")
    if kind in START_TYPES or status in START_STATUS:
        return "start", message
    if kind in END_TYPES or status in END_STATUS:
        return "end", message
    return "other", message
