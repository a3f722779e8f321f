"""The upstream vosk-server WebSocket protocol (protocols.md §5), client side.

* client -> server: one text message ``{"config": {"sample_rate": N}}``, then binary PCM16LE
  mono frames; at the end of the stream the exact text ``{"eof" : 1}`` (the server compares
  the string, space before the colon included), after which it sends the final result and
  closes. Newer servers also accept ``{"reset" : 1}``: the final result now, stream continues.
* server -> client: one text message per binary frame: ``{"partial": "..."}`` or, at an
  endpoint, ``{"text": "...", "result": [{"conf", "start", "end", "word"}...]}``.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from vc import jsonsafe

#: Exactly what upstream vosk-server recognises as end of stream.
EOF_MESSAGE = '{"eof" : 1}'
#: Newer vosk-server versions finish the current utterance on this text (and keep going).
RESET_MESSAGE = '{"reset" : 1}'


def config_message(sample_rate: int) -> str:
    return json.dumps({"config": {"sample_rate": sample_rate}})


@attrs.frozen
class ServerMessage:
    """One parsed server message."""

    final: bool
    text: str
    raw: dict[str, Any]


def parse_message(message: str | bytes) -> ServerMessage | None:
    """Parse a server message; None (ignored) for anything that is neither a partial nor a
    result, malformed or too deeply nested JSON included. Never raises."""
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    try:
        data = jsonsafe.loads(message)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if "partial" in data:
        return ServerMessage(False, str(data.get("partial") or "").strip(), data)
    if "text" in data or "result" in data:
        return ServerMessage(True, str(data.get("text") or "").strip(), data)
    alternatives = data.get("alternatives")
    if isinstance(alternatives, list):  # a server started with max_alternatives > 0
        best = alternatives[0] if alternatives and isinstance(alternatives[0], dict) else {}
        return ServerMessage(True, str(best.get("text") or "").strip(), data)
    return None
