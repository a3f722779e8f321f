"""The Llama WebSocket protocol's messages (protocols.md section 5)."""

from __future__ import annotations

import json

import pytest
from vc_llm_llama_ws import protocol


def test_modern_request_round_trips() -> None:
    req = protocol.ChatRequest(
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        temperature=0.2,
        max_tokens=80,
        stream=True,
        use_rag=True,
    )
    wire = json.loads(req.to_json())
    # exactly the documented shape, no extensions unless configured
    assert wire == {
        "messages": req.messages,
        "temperature": 0.2,
        "max_tokens": 80,
        "stream": True,
        "use_rag": True,
    }
    assert protocol.parse_request(req.to_json()) == req


def test_legacy_prompt_form() -> None:
    parsed = protocol.parse_request('{"prompt": "Merhaba", "system_prompt": "Kısa cevap ver."}')
    assert parsed.legacy
    assert parsed.messages == [
        {"role": "system", "content": "Kısa cevap ver."},
        {"role": "user", "content": "Merhaba"},
    ]
    wire = json.loads(protocol.ChatRequest(messages=parsed.messages, legacy=True).to_json())
    assert wire["prompt"] == "Merhaba" and wire["system_prompt"] == "Kısa cevap ver."
    assert "messages" not in wire


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ("{}", "needs messages"),
        ('{"messages": []}', "non-empty"),
        ('{"messages": [{"role": "wizard", "content": "x"}]}', "needs a role"),
        ('{"messages": [{"role": "system", "content": "x"}]}', "no user message"),
        ('{"messages": [{"role": "user", "content": 5}]}', "must be a string"),
        ('{"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}', "temperature"),
        ('{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}', "max_tokens"),
        ('{"messages": [{"role": "user", "content": "x"}], "max_tokens": 2.5}', "integer"),
    ],
)
def test_bad_requests_say_what_is_wrong(raw: str, says: str) -> None:
    with pytest.raises(protocol.ProtocolError, match=says):
        protocol.parse_request(raw)


def test_replies_are_classified() -> None:
    assert protocol.parse_reply(protocol.chunk("Hel")) == protocol.Reply(
        "chunk", "Hel", {"chunk": "Hel"}
    )
    assert protocol.parse_reply(protocol.done()).final
    err = protocol.parse_reply('{"error": "model crashed"}')
    assert err.kind == "error" and err.text == "model crashed" and err.final
    rag = protocol.parse_reply(protocol.rag_context("Opening hours: 9-17"))
    assert rag.kind == "rag_context" and rag.data["context_length"] == len("Opening hours: 9-17")
    last = protocol.parse_reply('{"chunk": "bye", "done": true}')
    assert last.kind == "chunk" and last.text == "bye" and last.final
    assert protocol.parse_reply('{"status": "thinking"}').kind == "other"
    with pytest.raises(protocol.ProtocolError):
        protocol.parse_reply("<html>")
