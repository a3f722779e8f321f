"""One JSON object per line, in the shape Cloud Logging turns into a structured LogEntry.

The logging agents of Cloud Run and GKE parse each stdout/stderr line that is a JSON object
and lift these keys out of ``jsonPayload``:

==========================================  ===============================================
``severity``                                DEBUG, INFO, WARNING, ERROR, CRITICAL
``message``                                 the text shown in Logs Explorer (with the traceback)
``time``                                    RFC 3339, microseconds, UTC
``logging.googleapis.com/labels``           ``call_id``, ``transport``, ``profile`` (+ static labels)
``logging.googleapis.com/trace``            ``projects/PROJECT/traces/TRACE_ID``
``logging.googleapis.com/spanId``           16 hex digits
``logging.googleapis.com/trace_sampled``    the trace's sampled flag
``logging.googleapis.com/sourceLocation``   ``{"file", "line", "function"}``
==========================================  ===============================================

Everything else a record carries (``logger``, core's ``data``...) stays in ``jsonPayload``.
Errors with a traceback get Error Reporting's ``@type`` and ``serviceContext`` so they are
grouped there too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from vc_gcp.calls import CallDirectory, CallLabels
from vc_gcp.trace import TraceContext, current_trace, from_params, parse_cloud_trace, parse_traceparent

LABELS = "logging.googleapis.com/labels"
TRACE = "logging.googleapis.com/trace"
SPAN = "logging.googleapis.com/spanId"
SAMPLED = "logging.googleapis.com/trace_sampled"
SOURCE = "logging.googleapis.com/sourceLocation"
ERROR_EVENT = "type.googleapis.com/google.devtools.clouderrorreporting.v1beta1.ReportedErrorEvent"

#: Record attributes every LogRecord has; anything else came in through ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
#: Extras this formatter turns into labels or trace fields instead of copying them.
_CONSUMED = {"call_id", "transport", "profile", "trace"}

_SEVERITIES = ((50, "CRITICAL"), (40, "ERROR"), (30, "WARNING"), (20, "INFO"), (10, "DEBUG"))


def severity(levelno: int) -> str:
    """Cloud Logging's severity for a Python level (custom levels round down)."""
    for floor, name in _SEVERITIES:
        if levelno >= floor:
            return name
    return "DEFAULT"


def rfc3339(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="microseconds").replace(
        "+00:00", "Z"
    )


class CloudLoggingFormatter(logging.Formatter):
    """Formats records as Cloud Logging structured JSON (see the module docstring)."""

    def __init__(
        self,
        *,
        project: str = "",
        calls: CallDirectory | None = None,
        labels: Mapping[str, str] | None = None,
        source_location: bool = True,
        service: str = "",
        version: str = "",
        max_message_chars: int = 100_000,
    ) -> None:
        super().__init__()
        #: Google Cloud project id for trace resource names (may be filled in later).
        self.project = project
        self.calls = calls if calls is not None else CallDirectory()
        self.labels = {str(k): str(v) for k, v in (labels or {}).items()}
        self.source_location = source_location
        self.service = service
        self.version = version
        self.max_message_chars = max_message_chars

    def format(self, record: logging.LogRecord) -> str:
        try:
            return json.dumps(self.entry(record), ensure_ascii=False, default=str)
        except Exception as e:  # a log line must never be lost to a formatting problem
            fallback = {
                "severity": severity(record.levelno),
                "message": f"{record.msg!r} (unformattable log record: {type(e).__name__}: {e})",
                "time": rfc3339(record.created),
                "logger": record.name,
            }
            return json.dumps(fallback, ensure_ascii=False, default=repr)

    def entry(self, record: logging.LogRecord) -> dict[str, Any]:
        """The JSON object for ``record``."""
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        elif record.exc_text:
            message = f"{message}\n{record.exc_text}"
        if record.stack_info:
            message = f"{message}\n{self.formatStack(record.stack_info)}"
        out: dict[str, Any] = {
            "severity": severity(record.levelno),
            "message": message,
            "time": rfc3339(record.created),
            "logger": record.name,
        }
        if len(message) > self.max_message_chars:
            out["message"] = message[: self.max_message_chars] + " [truncated]"
            out["message_chars"] = len(message)

        labels = dict(self.labels)
        call_id = getattr(record, "call_id", None)
        call = self.calls.get(str(call_id)) if call_id else None
        if call_id:
            labels["call_id"] = str(call_id)
        if call is None and call_id:
            call = _from_event(getattr(record, "data", None))
        if call is not None:
            labels["transport"] = call.transport
            labels["profile"] = call.profile
        for key in ("transport", "profile"):
            value = getattr(record, key, None)
            if value:
                labels[key] = str(value)
        if call_id and "transport" not in labels and record.name.startswith("vc.transport."):
            # a transport's lines before the call starts (the webhook, the stream's start)
            labels["transport"] = record.name.split(".")[2]
        if labels:
            out[LABELS] = labels

        trace = _record_trace(record) or current_trace.get() or (call.trace if call else None)
        if trace is not None:
            if self.project:
                out[TRACE] = trace.resource_name(self.project)
            else:
                out["trace_id"] = trace.trace_id  # no project known: searchable, not linked
            if trace.span_id:
                out[SPAN] = trace.span_id
            out[SAMPLED] = trace.sampled

        if self.source_location:
            out[SOURCE] = {"file": record.pathname, "line": record.lineno, "function": record.funcName}

        if record.exc_info and record.levelno >= logging.ERROR:
            out["@type"] = ERROR_EVENT
            if self.service:
                out["serviceContext"] = {"service": self.service, "version": self.version or "unknown"}

        for key, value in vars(record).items():
            if key in _STANDARD or key in _CONSUMED or key.startswith("_") or key in out:
                continue
            out[key] = value
        return out


def _from_event(data: Any) -> CallLabels | None:
    """Core's "call started" event line carries the call (it may come before our observer hears of it)."""
    if not isinstance(data, dict) or not isinstance(data.get("transport"), str):
        return None
    params = data.get("params")
    trace = from_params(params) if isinstance(params, dict) else None
    return CallLabels(data["transport"], str(data.get("profile") or ""), trace)


def _record_trace(record: logging.LogRecord) -> TraceContext | None:
    """A trace given with the record itself (``extra={"trace": ...}``): a context or a header."""
    value = getattr(record, "trace", None)
    if isinstance(value, TraceContext):
        return value
    if isinstance(value, str) and value:
        return parse_traceparent(value) or parse_cloud_trace(value)
    return None
