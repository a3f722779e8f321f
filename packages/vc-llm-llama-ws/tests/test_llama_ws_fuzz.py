"""Issue 12: property-based tests for the llama-ws protocol. ``parse_request`` and
``parse_reply`` raise ProtocolError (a ValueError) and nothing else, whatever arrives.

The number of examples per property is ``VC_FUZZ_EXAMPLES`` (default 150; ``nox -s fuzz``: 5000).
"""

from __future__ import annotations

import json
import os

from hypothesis import example, given, settings
from hypothesis import strategies as st
from vc_llm_llama_ws.protocol import ROLES, ChatRequest, ProtocolError, parse_reply, parse_request

FUZZ = settings(max_examples=int(os.environ.get("VC_FUZZ_EXAMPLES", "150")), deadline=None)

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
role = st.sampled_from(sorted(ROLES)) | json_values
message = st.fixed_dictionaries({}, optional={"role": role, "content": json_values})
KEYS = ["messages", "prompt", "system_prompt", "temperature", "max_tokens", "top_p", "seed",
        "stream", "use_rag", "model", "done", "chunk", "error", "rag_context"]
near_valid = st.fixed_dictionaries(
    {},
    optional={
        **{k: json_values for k in KEYS},
        "messages": st.lists(message | json_values, max_size=4) | json_values,
    },
)


def wire(value: object) -> st.SearchStrategy[str | bytes]:
    text = json.dumps(value, allow_nan=True)
    return st.sampled_from([text, text.encode(), text[: len(text) // 2]])


frames = (
    near_valid.flatmap(wire)
    | st.text(max_size=200)
    | st.binary(max_size=200)
    | st.integers(1, 3000).map(lambda n: "[" * n)
    | st.integers(1, 3000).map(lambda n: '{"messages": ' + "[" * n)
)


@given(frames)
@example('{"messages": [{"role": []}]}')  # found by this test: TypeError (unhashable role)
@example('{"prompt": "hi", "temperature": NaN}')
@FUZZ
def test_parse_request_raises_only_protocol_error(raw: str | bytes) -> None:
    try:
        req = parse_request(raw)
    except ProtocolError:
        return
    assert req.messages and all(m["role"] in ROLES and isinstance(m["content"], str)
                                for m in req.messages)
    assert any(m["role"] in ("user", "tool") for m in req.messages)
    assert parse_request(req.to_json()) == req  # what we accept, we can send on


@given(frames)
@FUZZ
def test_parse_reply_raises_only_protocol_error(raw: str | bytes) -> None:
    try:
        reply = parse_reply(raw)
    except ProtocolError:
        return
    assert reply.kind in ("chunk", "done", "error", "rag_context", "other")
    assert isinstance(reply.text, str) and isinstance(reply.data, dict)
    assert reply.final in (True, False)


@given(
    st.lists(st.fixed_dictionaries({"role": st.sampled_from(sorted(ROLES)), "content": st.text()}),
             min_size=1, max_size=4).filter(lambda ms: any(m["role"] in ("user", "tool") for m in ms)),
    st.none() | st.floats(0, 5), st.none() | st.integers(1, 1 << 20), st.none() | st.floats(0, 1),
    st.none() | st.integers(-(1 << 31), (1 << 32) - 1), st.booleans(), st.booleans(), st.text(max_size=10),
)
@FUZZ
def test_request_round_trips(messages, temperature, max_tokens, top_p, seed, stream, use_rag,
                             model) -> None:
    req = ChatRequest(messages, temperature, max_tokens, top_p, seed, stream, use_rag, model)
    assert parse_request(req.to_json()) == req
    assert parse_request(req.to_json().encode()) == req
