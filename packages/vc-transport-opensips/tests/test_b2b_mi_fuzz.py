"""Issue 12: property-based tests for the B2B event handler and MI replies.

* B2B: arbitrary and near-valid E_UA_SESSION datagrams fed to ``B2BController.received`` (and
  the parsed params to ``_event`` directly, since ``received`` logs what ``_event`` raises):
  nothing escapes, nothing is logged as a handler failure, every MI action it starts is a
  coroutine (closed here, never sent), the header and extra_params parsers never raise.
* MI: arbitrary reply datagrams fed to ``MIClient._reply`` with a request waiting: the
  request ends with its result, with MIError (the module's one error type) or still waits.

The number of examples per property is ``VC_FUZZ_EXAMPLES`` (default 150; ``nox -s fuzz``: 5000).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from vc_transport_opensips import b2b
from vc_transport_opensips.b2b import B2BController, call_params, content_type_line, parse_headers
from vc_transport_opensips.mi import MIClient, MIError
from vc_transport_opensips.settings import OpenSIPSSettings

from vc import jsonsafe
from vc.providers import CallHost

FUZZ = settings(max_examples=int(os.environ.get("VC_FUZZ_EXAMPLES", "150")), deadline=None)
ADDR = ("192.0.2.1", 5060)

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
methods = st.sampled_from(sorted(b2b.REQUEST_METHODS | {"ACK", "NOTIFY", "bye", ""})) | json_values
etypes = st.sampled_from(["NEW", "UPDATED", "TERMINATED", "REJECTED", "ANSWERED", "EARLY",
                          "new", "OTHER", ""]) | json_values
keys = st.sampled_from(["B2B.1.2.3", "k"]) | st.text(max_size=12) | json_values
headers_text = st.lists(
    st.tuples(st.sampled_from(["From", "To", "X-Lang", "x-", "Call-ID", " ", ""]) | st.text(max_size=8),
              st.text(max_size=30)),
    max_size=5,
).map(lambda hs: "\r\n".join(f"{k}: {v}" for k, v in hs)) | st.text(max_size=80)
params = st.fixed_dictionaries(
    {"key": keys},
    optional={
        "event_type": etypes,
        "method": methods,
        "body": st.sampled_from(["", "SIP/2.0 200 OK\r\n", "SIP/2.0 180 Ringing", "v=0\r\n"])
        | st.text(max_size=60) | json_values,
        "headers": headers_text | json_values,
        "extra_params": json_values.map(json.dumps) | json_values,
        "status": json_values,
        "reason": json_values,
    },
)
events = st.fixed_dictionaries(
    {"jsonrpc": st.just("2.0"), "method": st.just(b2b.EVENT) | st.text(max_size=10), "params": params}
) | st.dictionaries(st.text(max_size=8), json_values, max_size=4)


def datagram(value: Any) -> st.SearchStrategy[bytes]:
    raw = json.dumps(value, allow_nan=True).encode()
    return st.sampled_from([raw, raw[: len(raw) // 2], raw + b"\xff"])


datagrams = (
    events.flatmap(datagram)
    | st.binary(max_size=300)
    | st.integers(1, 3000).map(lambda n: b'{"params": ' + b"[" * n)
)


class Host(CallHost):
    async def run_call(self, connection: Any) -> str:  # pragma: no cover - calls are not run
        raise AssertionError("no call is run")


class Controller(B2BController):
    """The real handler; the MI actions it starts are recorded and closed, not run."""

    def __init__(self) -> None:
        super().__init__(OpenSIPSSettings(mode="b2b"), media=None, host=Host())  # type: ignore[arg-type]
        self.spawned: list[str] = []

    def spawn(self, coro: Any) -> None:
        assert asyncio.iscoroutine(coro), coro
        self.spawned.append(coro.__qualname__)
        coro.close()


class Failures(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def failures():
    handler = Failures()
    logger = logging.getLogger(b2b.log.name)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@given(st.lists(datagrams, min_size=1, max_size=6))
@example([json.dumps({"method": b2b.EVENT, "params": {"key": "k", "event_type": "NEW",
                                                      "method": ["INVITE"]}}).encode()])
@example([json.dumps({"method": b2b.EVENT, "params": {"key": "k", "event_type": "UPDATED",
                                                      "method": "NOTIFY",
                                                      "body": "SIP/2.0 200 OK"}}).encode()])
@FUZZ
def test_b2b_event_datagrams_never_break_the_handler(failures, data: list[bytes]) -> None:
    failures.records.clear()
    ctl = Controller()
    for d in data:
        ctl.received(d, ADDR)
        try:
            msg = jsonsafe.loads(d)
        except ValueError:
            continue
        p = msg.get("params") if isinstance(msg, dict) else None
        if isinstance(p, dict) and isinstance(p.get("key"), str) and p["key"]:
            ctl._event(p)  # raises nothing either
    assert not failures.records, [r.getMessage() for r in failures.records]
    assert sum(ctl.drops.values()) <= len(data)
    assert set(ctl.spawned) <= {"B2BController.reply", "B2BController._new",
                                "B2BController._cancelled", "B2BController.release",
                                "B2BController._reoffer", "B2BSession.hangup"}
    assert ctl.mi.transport is None and ctl.transport is None  # nothing opened


@given(headers_text, json_values | st.text(max_size=40))
@FUZZ
def test_header_and_param_parsers_never_raise(text: str, extra: Any) -> None:
    headers = parse_headers(text)
    assert all(isinstance(k, str) and k and isinstance(v, str) for k, v in headers)
    out = call_params(extra, headers)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in out.items())
    line = content_type_line(text)
    assert line is None or line.endswith("\r\n")


replies = (
    st.fixed_dictionaries(
        {"jsonrpc": st.just("2.0"), "id": st.just("p-1") | json_values},
        optional={"result": json_values,
                  "error": json_values | st.fixed_dictionaries({}, optional={"code": json_values,
                                                                             "message": json_values})},
    ).flatmap(datagram)
    | st.binary(max_size=200)
    | st.integers(1, 3000).map(lambda n: b'{"id": "p-1", "result": ' + b"[" * n)
)


@given(st.lists(replies, min_size=1, max_size=4))
@example([b'{"id": "p-1", "error": {"code": "x", "message": []}}'])
@example([b'{"id": "p-1", "error": "boom"}', b'{"id": "p-1", "result": 1}'])
@FUZZ
def test_mi_replies_end_a_request_only_with_its_result_or_mierror(data: list[bytes]) -> None:
    loop = asyncio.new_event_loop()
    try:
        client = MIClient("127.0.0.1", 8080)
        fut = loop.create_future()
        client._pending["p-1"] = fut
        for d in data:
            client._reply(d)
        if fut.done():
            exc = fut.exception()
            assert exc is None or isinstance(exc, MIError), repr(exc)
            if isinstance(exc, MIError):
                assert exc.replied and (exc.code is None or isinstance(exc.code, int))
        loop.run_until_complete(client.close())  # releases what waits; nothing was opened
        assert fut.done() and not client._pending
        assert fut.exception() is None or isinstance(fut.exception(), MIError)
    finally:
        loop.close()
