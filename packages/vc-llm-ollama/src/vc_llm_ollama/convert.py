"""OpenAI-style messages and tools (what pipecat hands vc) in Ollama's ``/api/chat`` form."""

from __future__ import annotations

from typing import Any

from vc import jsonsafe


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content)


def _arguments(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str) and raw.strip():
        try:
            value = jsonsafe.loads(raw)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}
    return {}


def to_ollama_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Roles kept; tool calls with dict arguments; tool results named by their tool."""
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m.get("role", "user")
        if role == "developer":
            role = "system"
        msg: dict[str, Any] = {"role": role, "content": _text(m.get("content"))}
        if role == "assistant" and m.get("tool_calls"):
            calls = []
            for c in m["tool_calls"]:
                fn = c.get("function", c)
                names[str(c.get("id", ""))] = fn.get("name", "")
                calls.append(
                    {
                        "function": {
                            "name": fn.get("name", ""),
                            "arguments": _arguments(fn.get("arguments")),
                        }
                    }
                )
            msg["tool_calls"] = calls
        if role == "tool":
            name = names.get(str(m.get("tool_call_id", "")), m.get("name", ""))
            if name:
                msg["tool_name"] = name
        out.append(msg)
    return out


def to_ollama_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI function tools pass through (Ollama takes the same schema); others are dropped."""
    out = []
    for t in tools:
        fn = t.get("function") if t.get("type", "function") == "function" else None
        if not fn or not fn.get("name"):
            continue
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        out.append(
            {
                "type": "function",
                "function": {
                    "name": fn["name"],
                    "description": fn.get("description", ""),
                    "parameters": params,
                },
            }
        )
    return out
