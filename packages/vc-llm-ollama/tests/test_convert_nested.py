"""Issue 12: tool-call arguments nested too deeply (``"[" * 1000``) become ``{}``, not an
escaping RecursionError (``json.loads`` raises it, past ``except ValueError``)."""

from __future__ import annotations

from vc_llm_ollama.convert import to_ollama_messages


def test_nested_tool_arguments_become_empty() -> None:
    call = {"id": "1", "function": {"name": "end_call", "arguments": "[" * 1000}}
    (msg,) = to_ollama_messages([{"role": "assistant", "content": "", "tool_calls": [call]}])
    assert msg["tool_calls"] == [{"function": {"name": "end_call", "arguments": {}}}]
