"""Trace context: parsing ``traceparent`` and ``X-Cloud-Trace-Context``, and carrying it.

Google's front ends (the Cloud Run front end, the GKE Ingress load balancer) add
``X-Cloud-Trace-Context: TRACE_ID/SPAN_ID;o=1`` to every request they forward, WebSocket
upgrades included, and pass on (or add) a W3C ``traceparent``. A log entry whose
``logging.googleapis.com/trace`` names that trace is shown under the request in Logs Explorer
and Cloud Trace.

The trace of the request being served lives in :data:`current_trace` (a context variable, so
every task a request starts - a whole call's pipeline - inherits it). :class:`TraceContextMiddleware`
sets it from the request headers.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import attrs

_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX16 = re.compile(r"[0-9a-f]{16}")
_HEX2 = re.compile(r"[0-9a-f]{2}")
_CLOUD = re.compile(r"([0-9a-fA-F]{32})(?:/([0-9]{1,20}))?(?:;o=([0-9]+))?")
_MAX_SPAN = 2**64 - 1

#: Header names, lower case, in the order they are preferred.
HEADERS = ("traceparent", "x-cloud-trace-context")


@attrs.frozen
class TraceContext:
    """One trace id (32 hex digits), optionally a span id (16 hex digits) and the sampled flag."""

    trace_id: str
    span_id: str = ""
    sampled: bool = False

    def resource_name(self, project: str) -> str:
        """``projects/PROJECT/traces/TRACE_ID``: the form ``logging.googleapis.com/trace`` takes."""
        return f"projects/{project}/traces/{self.trace_id}"


def parse_traceparent(value: str) -> TraceContext | None:
    """A W3C ``traceparent`` (``00-<trace-id>-<parent-id>-<flags>``); None if it is invalid."""
    parts = value.strip().lower().split("-")
    if len(parts) < 4:
        return None
    version, trace_id, span_id, flags = parts[:4]
    if not _HEX2.fullmatch(version) or version == "ff":
        return None
    if version == "00" and len(parts) != 4:
        return None
    if not _HEX32.fullmatch(trace_id) or trace_id == "0" * 32:
        return None
    if not _HEX16.fullmatch(span_id) or span_id == "0" * 16:
        return None
    if not _HEX2.fullmatch(flags):
        return None
    return TraceContext(trace_id, span_id, bool(int(flags, 16) & 1))


def parse_cloud_trace(value: str) -> TraceContext | None:
    """``X-Cloud-Trace-Context: TRACE_ID[/SPAN_ID][;o=OPTIONS]`` (span id in decimal)."""
    m = _CLOUD.fullmatch(value.strip())
    if m is None:
        return None
    trace_id = m.group(1).lower()
    if trace_id == "0" * 32:
        return None
    span_id = ""
    if m.group(2):
        span = int(m.group(2))
        if span > _MAX_SPAN:
            return None
        span_id = f"{span:016x}" if span else ""
    sampled = m.group(3) is not None and bool(int(m.group(3)) & 1)
    return TraceContext(trace_id, span_id, sampled)


def from_headers(headers: Mapping[str, str] | Iterable[tuple[Any, Any]]) -> TraceContext | None:
    """The trace of a request: ``traceparent`` if valid, else ``X-Cloud-Trace-Context``.

    ``headers`` is a mapping or ASGI-style ``(name, value)`` pairs (bytes or str).
    """
    found: dict[str, str] = {}
    items = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in items:
        key = (name.decode("latin-1") if isinstance(name, bytes) else str(name)).lower()
        if key in HEADERS and key not in found:
            found[key] = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return _first(found)


def from_params(params: Mapping[str, str]) -> TraceContext | None:
    """A trace passed along with a call (``traceparent`` / ``x_cloud_trace_context`` parameters)."""
    found = {}
    for name, value in params.items():
        key = name.lower().replace("_", "-")
        if key in HEADERS and key not in found:
            found[key] = str(value)
    return _first(found)


def _first(found: Mapping[str, str]) -> TraceContext | None:
    if "traceparent" in found:
        ctx = parse_traceparent(found["traceparent"])
        if ctx is not None:
            return ctx
    if "x-cloud-trace-context" in found:
        return parse_cloud_trace(found["x-cloud-trace-context"])
    return None


#: The trace of the request (and so of the call) the current task serves.
current_trace: contextvars.ContextVar[TraceContext | None] = contextvars.ContextVar(
    "vc_gcp_trace", default=None
)

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]


class TraceContextMiddleware:
    """ASGI middleware: each HTTP request or WebSocket runs with its trace in :data:`current_trace`.

    A Twilio Media Stream is one WebSocket that lasts the whole call, so every line the call
    logs - from the transport, the pipeline, the providers - carries the trace of that upgrade
    request, and Logs Explorer shows them under it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        trace = from_headers(scope.get("headers") or ())
        if trace is None:
            await self.app(scope, receive, send)
            return
        token = current_trace.set(trace)
        try:
            await self.app(scope, receive, send)
        finally:
            current_trace.reset(token)
