"""JSON from the network, parsed so that bad input fails only with :class:`ValueError`.

``json.loads`` raises ``RecursionError`` for deeply nested input (``"[" * 1000`` is enough),
which handlers catching ``ValueError`` let escape: one message then kills a WebSocket
handler or a call. Every protocol handler in vc parses peer messages with :func:`loads` (or
:func:`loads_object` where a JSON object is required) and treats :class:`JsonError` like any
other malformed message.
"""

from __future__ import annotations

import json
from typing import Any


class JsonError(ValueError):
    """The text is not acceptable JSON (malformed, too deeply nested, or the wrong shape)."""


def loads(text: str | bytes | bytearray) -> Any:
    """``json.loads`` that raises only :class:`JsonError` (a ``ValueError``) for bad input."""
    try:
        return json.loads(text)
    except RecursionError:
        raise JsonError("JSON nested too deeply") from None
    except (ValueError, TypeError) as e:  # JSONDecodeError, UnicodeDecodeError, not text
        raise JsonError(f"malformed JSON: {e}") from None


def loads_object(text: str | bytes | bytearray) -> dict[str, Any]:
    """Like :func:`loads`, and the value must be a JSON object."""
    value = loads(text)
    if not isinstance(value, dict):
        raise JsonError(f"expected a JSON object, got {type(value).__name__}")
    return value
