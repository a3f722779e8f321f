"""The Llama WebSocket service's messages (protocols.md section 5), for client and server.

Request, one per turn, on a persistent connection (no ids, no cancel)::

    {"messages": [{"role": "system", "content": ".."}, {"role": "user", "content": ".."}, ..],
     "temperature": 0.2, "max_tokens": 80, "stream": true, "use_rag": true}

or the legacy form ``{"prompt": "..", "system_prompt": ".."}``. Replies: an optional
``{"rag_context": "..", "context_length": N}``, then ``{"chunk": ".."}`` messages, then
``{"done": true}``; or ``{"error": ".."}``. Extensions this implementation understands and the
old server ignores: ``top_p``, ``seed`` and ``model``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import attrs

from vc import jsonsafe

ROLES = {"system", "user", "assistant", "tool", "developer"}


class ProtocolError(ValueError):
    """A request or reply that does not follow the protocol; the message says what is wrong."""


@attrs.frozen
class ChatRequest:
    messages: list[dict[str, str]]
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stream: bool = True
    use_rag: bool = False
    model: str = ""
    legacy: bool = False

    def to_json(self) -> str:
        """The wire form (the modern ``messages`` form, or the legacy one if ``legacy``)."""
        if self.legacy:
            system = "\n".join(m["content"] for m in self.messages if m["role"] == "system")
            user = next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")
            data: dict[str, Any] = {"prompt": user, "system_prompt": system}
        else:
            data = {"messages": self.messages}
        if self.temperature is not None:
            data["temperature"] = self.temperature
        if self.max_tokens is not None:
            data["max_tokens"] = self.max_tokens
        if self.top_p is not None:
            data["top_p"] = self.top_p
        if self.seed is not None:
            data["seed"] = self.seed
        data["stream"] = self.stream
        data["use_rag"] = self.use_rag
        if self.model:
            data["model"] = self.model
        return json.dumps(data, ensure_ascii=False)


def _number(data: dict[str, Any], key: str, kind: type, low: float, high: float) -> Any:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError(f"{key} must be a number, got {value!r}")
    if not math.isfinite(value):  # json accepts Infinity and NaN; int(inf) would raise
        raise ProtocolError(f"{key} must be a finite number, got {value!r}")
    if kind is int and value != int(value):
        raise ProtocolError(f"{key} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ProtocolError(f"{key} must be between {low} and {high}, got {value!r}")
    return kind(value)


def _content(value: Any, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # OpenAI content parts
        return " ".join(str(p.get("text", "")) for p in value if isinstance(p, dict))
    raise ProtocolError(f"{where} must be a string")


def parse_request(raw: str | bytes) -> ChatRequest:
    """A request from its JSON text; raises ProtocolError saying what is wrong."""
    try:
        data = jsonsafe.loads(raw)  # ValueError only, also for "[" * 1000
    except ValueError as e:
        raise ProtocolError(f"request is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise ProtocolError("request must be a JSON object")
    legacy = False
    if "messages" in data:
        msgs = data["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise ProtocolError("messages must be a non-empty list")
        messages = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or m["role"] not in ROLES:
                raise ProtocolError(f"messages[{i}] needs a role ({', '.join(sorted(ROLES))})")
            messages.append(
                {"role": m["role"], "content": _content(m.get("content"), f"messages[{i}].content")}
            )
    elif "prompt" in data:
        legacy = True
        prompt = _content(data["prompt"], "prompt")
        system = _content(data.get("system_prompt"), "system_prompt")
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}
        ]
    else:
        raise ProtocolError("request needs messages (or the legacy prompt)")
    if not any(m["role"] in ("user", "tool") for m in messages):
        raise ProtocolError("messages contain no user message")
    model = data.get("model") or ""
    return ChatRequest(
        messages=messages,
        temperature=_number(data, "temperature", float, 0.0, 5.0),
        max_tokens=_number(data, "max_tokens", int, 1, 1 << 20),
        top_p=_number(data, "top_p", float, 0.0, 1.0),
        seed=_number(data, "seed", int, -(1 << 31), (1 << 32) - 1),
        stream=bool(data.get("stream", True)),
        use_rag=bool(data.get("use_rag", False)),
        model=model if isinstance(model, str) else "",
        legacy=legacy,
    )


def chunk(text: str) -> str:
    return json.dumps({"chunk": text}, ensure_ascii=False)


def done() -> str:
    return json.dumps({"done": True})


def error(message: str) -> str:
    return json.dumps({"error": message}, ensure_ascii=False)


def rag_context(text: str) -> str:
    return json.dumps({"rag_context": text, "context_length": len(text)}, ensure_ascii=False)


@attrs.frozen
class Reply:
    """One message from the server, classified."""

    kind: str  # "chunk", "done", "error", "rag_context", "other"
    text: str = ""
    data: dict[str, Any] = attrs.field(factory=dict)
    #: the request is over after this message (``done`` set, possibly beside a last chunk)
    final: bool = False


def parse_reply(raw: str | bytes) -> Reply:
    """A server message, classified; raises ProtocolError (only) for anything not an object."""
    try:
        data = jsonsafe.loads(raw)  # ValueError only, also for "[" * 1000
    except ValueError:
        raise ProtocolError(f"server sent a non-JSON message: {str(raw)[:80]!r}") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"server sent a non-object message: {str(raw)[:80]!r}")
    if data.get("error"):
        return Reply("error", str(data["error"]), data, final=True)
    if "chunk" in data:
        return Reply("chunk", str(data["chunk"] or ""), data, final=bool(data.get("done")))
    if data.get("done"):
        return Reply("done", "", data, final=True)
    if "rag_context" in data:
        return Reply("rag_context", str(data["rag_context"] or ""), data)
    return Reply("other", "", data)
