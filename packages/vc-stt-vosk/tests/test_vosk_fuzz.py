"""Issue 12: property-based tests for the vosk-server WebSocket protocol. ``parse_message``
never raises (it documents so): a partial, a result, or None (ignored).

The number of examples per property is ``VC_FUZZ_EXAMPLES`` (default 150; ``nox -s fuzz``: 5000).
"""

from __future__ import annotations

import json
import os

from hypothesis import example, given, settings
from hypothesis import strategies as st
from vc_stt_vosk.protocol import ServerMessage, config_message, parse_message

FUZZ = settings(max_examples=int(os.environ.get("VC_FUZZ_EXAMPLES", "150")), deadline=None)

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
near_valid = st.fixed_dictionaries(
    {},
    optional={
        "partial": json_values,
        "text": json_values,
        "result": json_values,
        "alternatives": st.lists(json_values | st.fixed_dictionaries({"text": json_values}),
                                 max_size=3) | json_values,
    },
)


def wire(value: object) -> st.SearchStrategy[str | bytes]:
    text = json.dumps(value, allow_nan=True)
    return st.sampled_from([text, text.encode(), text[: len(text) // 2]])


messages = (
    near_valid.flatmap(wire)
    | st.text(max_size=200)
    | st.binary(max_size=200)
    | st.integers(1, 3000).map(lambda n: "[" * n)
    | st.integers(1, 3000).map(lambda n: '{"partial": ' + "[" * n)
)


@given(messages)
@example(b"\xff\xfe{")
@example('{"alternatives": [{"text": ["x"]}]}')
@FUZZ
def test_parse_message_never_raises(message: str | bytes) -> None:
    msg = parse_message(message)
    if msg is not None:
        assert isinstance(msg, ServerMessage)
        assert isinstance(msg.text, str) and msg.text == msg.text.strip()
        assert isinstance(msg.raw, dict)
        assert msg.final is ("partial" not in msg.raw)


@given(st.integers(1, 1 << 20))
@FUZZ
def test_config_message(rate: int) -> None:
    assert json.loads(config_message(rate)) == {"config": {"sample_rate": rate}}
    assert parse_message(config_message(rate)) is None
