"""Trace context parsing, and the ASGI middleware on a real server with real clients."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
import uvicorn
import websockets
from fastapi import FastAPI, WebSocket
from gcp_helpers import parse_lines
from hypothesis import given
from hypothesis import strategies as st
from vc_gcp.trace import (
    TraceContext,
    TraceContextMiddleware,
    current_trace,
    from_headers,
    from_params,
    parse_cloud_trace,
    parse_traceparent,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_traceparent_valid() -> None:
    ctx = parse_traceparent(f"00-{TRACE}-00f067aa0ba902b7-01")
    assert ctx == TraceContext(TRACE, "00f067aa0ba902b7", True)
    assert parse_traceparent(f"00-{TRACE}-00f067aa0ba902b7-00") == TraceContext(
        TRACE, "00f067aa0ba902b7", False
    )
    # a future version may append fields; its first four are read
    assert parse_traceparent(f"01-{TRACE}-00f067aa0ba902b7-01-extra") is not None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        f"00-{TRACE}-00f067aa0ba902b7",  # no flags
        f"00-{'0' * 32}-00f067aa0ba902b7-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero span id
        f"ff-{TRACE}-00f067aa0ba902b7-01",  # forbidden version
        f"00-{TRACE[:-1]}-00f067aa0ba902b7-01",  # short trace id
        f"00-{TRACE}-00f067aa0ba902b7-01-extra",  # version 00 has exactly four fields
        f"00-{TRACE[:-1]}g-00f067aa0ba902b7-01",  # not hex
    ],
)
def test_traceparent_invalid(value: str) -> None:
    assert parse_traceparent(value) is None


def test_cloud_trace_context() -> None:
    assert parse_cloud_trace(f"{TRACE}/1;o=1") == TraceContext(TRACE, "0000000000000001", True)
    assert parse_cloud_trace(f"{TRACE.upper()}/12345") == TraceContext(TRACE, f"{12345:016x}", False)
    assert parse_cloud_trace(TRACE) == TraceContext(TRACE, "", False)
    assert parse_cloud_trace(f"{TRACE};o=0") == TraceContext(TRACE, "", False)
    assert parse_cloud_trace(f"{TRACE}/{2**64 - 1};o=1").span_id == "ffffffffffffffff"
    for bad in ("", "xyz/1;o=1", f"{TRACE}/{2**64}", f"{TRACE}/-1", f"{'0' * 32}/1;o=1", f"{TRACE}/1;o=x"):
        assert parse_cloud_trace(bad) is None, bad


@given(st.binary(min_size=16, max_size=16), st.integers(1, 2**64 - 1), st.booleans())
def test_cloud_trace_round_trip(trace: bytes, span: int, sampled: bool) -> None:
    trace_id = trace.hex()
    ctx = parse_cloud_trace(f"{trace_id}/{span};o={int(sampled)}")
    if trace_id == "0" * 32:
        assert ctx is None
        return
    assert ctx == TraceContext(trace_id, f"{span:016x}", sampled)


@given(st.text(max_size=80))
def test_parsers_never_raise(value: str) -> None:
    parse_traceparent(value)
    parse_cloud_trace(value)


def test_traceparent_wins_over_cloud_header_unless_invalid() -> None:
    other = "0af7651916cd43dd8448eb211c80319c"
    both = {"X-Cloud-Trace-Context": f"{other}/5;o=1", "traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}
    assert from_headers(both).trace_id == TRACE
    both["traceparent"] = "00-broken"
    assert from_headers(both).trace_id == other
    asgi = [(b"x-cloud-trace-context", f"{other}/5".encode())]
    assert from_headers(asgi) == TraceContext(other, f"{5:016x}", False)
    assert from_headers({}) is None
    assert from_params({"x_cloud_trace_context": f"{other}/7;o=1"}).span_id == f"{7:016x}"
    assert from_params({"caller": "x"}) is None


class _Uvicorn(uvicorn.Server):
    def install_signal_handlers(self) -> None:
        pass


@pytest.fixture
async def traced_app(cloud_logs):
    """A FastAPI app behind TraceContextMiddleware, served by uvicorn on 127.0.0.1:0."""
    app = FastAPI()
    log = logging.getLogger("vc.test.app")

    @app.get("/hello")
    async def hello() -> dict[str, str | None]:
        log.info("handling hello")
        await asyncio.sleep(0.05)  # overlap concurrent requests
        log.info("still handling hello")
        trace = current_trace.get()
        return {"trace": trace.trace_id if trace else None}

    @app.websocket("/ws")
    async def ws(sock: WebSocket) -> None:
        await sock.accept()

        async def later() -> None:  # a task the connection starts inherits its trace
            log.info("from a task of the websocket")

        await asyncio.create_task(later())
        text = await sock.receive_text()
        log.info("websocket got %s", text)
        await sock.send_text("bye")
        await sock.close()

    app.add_middleware(TraceContextMiddleware)
    server = _Uvicorn(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}", cloud_logs[1]
    finally:
        server.should_exit = True
        await task


async def test_middleware_http_requests_keep_their_own_trace(traced_app) -> None:
    addr, buf = traced_app
    traces = [f"{i:032x}" for i in range(1, 6)]
    async with httpx.AsyncClient(base_url=f"http://{addr}") as client:
        replies = await asyncio.gather(*[
            client.get("/hello", headers={"X-Cloud-Trace-Context": f"{t}/{i + 1};o=1"})
            for i, t in enumerate(traces)
        ])
        plain = await client.get("/hello")
    assert [r.json()["trace"] for r in replies] == traces
    assert plain.json()["trace"] is None  # nothing leaks from one request into the next
    lines = [e for e in parse_lines(buf.getvalue()) if e["logger"] == "vc.test.app"]
    assert len(lines) == 12
    by_trace: dict[str, list[dict]] = {}
    for e in lines:
        by_trace.setdefault(e.get("logging.googleapis.com/trace", "none"), []).append(e)
    for i, t in enumerate(traces):
        entries = by_trace[f"projects/vc-test-project/traces/{t}"]
        assert len(entries) == 2  # both lines of that request, none of another's
        assert {e["logging.googleapis.com/spanId"] for e in entries} == {f"{i + 1:016x}"}
        assert all(e["logging.googleapis.com/trace_sampled"] is True for e in entries)
    assert len(by_trace["none"]) == 2


async def test_middleware_websocket_trace_covers_the_connection(traced_app) -> None:
    addr, buf = traced_app
    header = f"00-{TRACE}-00f067aa0ba902b7-01"
    async with websockets.connect(f"ws://{addr}/ws", additional_headers={"traceparent": header}) as ws:
        await ws.send("hello")
        assert await ws.recv() == "bye"
    lines = [e for e in parse_lines(buf.getvalue()) if e["logger"] == "vc.test.app"]
    assert [e["message"] for e in lines] == ["from a task of the websocket", "websocket got hello"]
    for e in lines:
        assert e["logging.googleapis.com/trace"] == f"projects/vc-test-project/traces/{TRACE}"
        assert e["logging.googleapis.com/spanId"] == "00f067aa0ba902b7"
