"""Issue 12: property-based tests for the Piper WebSocket protocol. ``classify`` never raises
(it documents so): whatever the server sends is a start, an end, an error or ignored.

The number of examples per property is ``VC_FUZZ_EXAMPLES`` (default 150; ``nox -s fuzz``: 5000).
"""

from __future__ import annotations

import json
import os

from hypothesis import example, given, settings
from hypothesis import strategies as st
from vc_tts_piper import protocol

FUZZ = settings(max_examples=int(os.environ.get("VC_FUZZ_EXAMPLES", "150")), deadline=None)

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
words = sorted(protocol.START_TYPES | protocol.END_TYPES | protocol.START_STATUS
               | protocol.END_STATUS | {"error", "ERROR", "Start"})
near_valid = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(words) | json_values,
        "status": st.sampled_from(words) | json_values,
        "error": json_values,
        "message": json_values,
        "detail": json_values,
    },
)
messages = (
    near_valid.map(lambda d: json.dumps(d, allow_nan=True))
    | st.text(max_size=200)
    | st.integers(1, 3000).map(lambda n: "[" * n)
    | st.integers(1, 3000).map(lambda n: '{"type": ' + "{\"a\":" * n)
)


@given(messages)
@example('{"error": {"code": 1}}')
@example('{"type": ["start"]}')
@FUZZ
def test_classify_never_raises(message: str) -> None:
    kind, text = protocol.classify(message)
    assert kind in ("start", "end", "error", "other")
    assert isinstance(text, str)
    if kind != "error":
        assert text == message


@given(st.text(), st.text(max_size=30), st.integers(1, 192000))
@FUZZ
def test_request_is_json_and_controls_classify(text: str, voice: str, rate: int) -> None:
    assert json.loads(protocol.request(text, voice, rate)) == {
        "text": text, "voice": voice, "sample_rate": rate, "format": "pcm16"}
    assert protocol.classify(json.dumps(protocol.STARTED))[0] == "start"
    assert protocol.classify(json.dumps(protocol.COMPLETED))[0] == "end"
    assert protocol.classify(json.dumps(protocol.error(text))) == ("error", text or "unknown error")
