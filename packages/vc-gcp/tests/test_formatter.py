"""The Cloud Logging JSON format, through real loggers and handlers."""

from __future__ import annotations

import io
import logging
import threading
from datetime import datetime

import pytest
from gcp_helpers import parse_lines
from vc_gcp.calls import CallDirectory, CallLabels
from vc_gcp.formatter import ERROR_EVENT, CloudLoggingFormatter, severity
from vc_gcp.trace import TraceContext, current_trace

REQUIRED = ("severity", "message", "time", "logging.googleapis.com/sourceLocation")
TRACE = "0af7651916cd43dd8448eb211c80319c"


@pytest.fixture
def logger():
    """A private logger writing through the formatter into a buffer."""
    buf = io.StringIO()
    calls = CallDirectory(keep_ended=2)
    formatter = CloudLoggingFormatter(project="proj-1", calls=calls, labels={"env": "test"},
                                      service="vc", version="1.2.3", max_message_chars=2000)
    handler = logging.StreamHandler(buf)
    handler.setFormatter(formatter)
    log = logging.Logger("vc.test.formatter", level=1)  # outside the hierarchy: only this handler
    log.addHandler(handler)
    yield log, buf, calls, formatter


def test_every_line_is_one_json_object_with_the_special_keys(logger) -> None:
    log, buf, _, _ = logger
    log.debug("d")
    log.info("multi\nline \"quoted\" message with ünïcode")
    log.warning("w %s %d", "args", 3)
    log.error("e")
    log.critical("c")
    log.log(25, "custom level")
    log.log(5, "below debug")
    text = buf.getvalue()
    assert text.count("\n") == 7  # one line per record, embedded newlines escaped
    entries = parse_lines(text)
    for e in entries:
        for key in REQUIRED:
            assert key in e, (key, e)
        parsed = datetime.fromisoformat(e["time"].replace("Z", "+00:00"))
        assert parsed.tzinfo is not None and e["time"].endswith("Z")
        assert len(e["time"].split(".")[1]) == 7  # microseconds + Z
        src = e["logging.googleapis.com/sourceLocation"]
        assert src["file"].endswith("test_formatter.py") and src["function"] == (
            "test_every_line_is_one_json_object_with_the_special_keys")
        assert isinstance(src["line"], int) and src["line"] > 0
        assert e["logging.googleapis.com/labels"] == {"env": "test"}
        assert e["logger"] == "vc.test.formatter"
    assert [e["severity"] for e in entries] == [
        "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "INFO", "DEFAULT"]
    assert entries[1]["message"] == "multi\nline \"quoted\" message with ünïcode"
    assert entries[2]["message"] == "w args 3"


def test_severity_mapping_edges() -> None:
    assert severity(logging.NOTSET) == "DEFAULT"
    assert severity(logging.WARNING + 1) == "WARNING"
    assert severity(100) == "CRITICAL"


def test_call_labels_and_trace_from_the_call_directory(logger) -> None:
    log, buf, calls, _ = logger
    trace = TraceContext(TRACE, "00000000000000ff", True)
    calls.started("CA1", CallLabels("twilio", "sales", trace))
    calls.started("CA2", CallLabels("opensips", "default", None))
    log.info("turn", extra={"call_id": "CA1", "data": {"text": "hello"}})
    log.info("other call", extra={"call_id": "CA2"})
    log.info("unknown call", extra={"call_id": "CA9"})
    logging.LoggerAdapter(log, {"call_id": "CA1"}).info("through core's adapter")
    e1, e2, e3, e4 = parse_lines(buf.getvalue())
    assert e4["logging.googleapis.com/labels"]["profile"] == "sales"
    assert e1["logging.googleapis.com/labels"] == {
        "env": "test", "call_id": "CA1", "transport": "twilio", "profile": "sales"}
    assert e1["logging.googleapis.com/trace"] == f"projects/proj-1/traces/{TRACE}"
    assert e1["logging.googleapis.com/spanId"] == "00000000000000ff"
    assert e1["logging.googleapis.com/trace_sampled"] is True
    assert e1["data"] == {"text": "hello"}
    assert "call_id" not in e1  # it is a label, not payload
    assert e2["logging.googleapis.com/labels"]["transport"] == "opensips"
    assert "logging.googleapis.com/trace" not in e2
    assert e3["logging.googleapis.com/labels"] == {"env": "test", "call_id": "CA9"}


def test_ended_calls_keep_labels_for_a_while(logger) -> None:
    log, buf, calls, _ = logger
    for i in range(4):
        calls.started(f"CA{i}", CallLabels("twilio", "default"))
        calls.ended(f"CA{i}")
    calls.ended("never-started")  # harmless
    for i in range(4):
        log.info("late line", extra={"call_id": f"CA{i}"})
    labels = [e["logging.googleapis.com/labels"] for e in parse_lines(buf.getvalue())]
    # keep_ended=2: the two most recent ended calls still have their labels
    assert ["transport" in lab for lab in labels] == [False, False, True, True]
    assert len(calls) == 0


def test_trace_precedence_record_then_context_then_call(logger) -> None:
    log, buf, calls, _ = logger
    calls.started("CA1", CallLabels("twilio", "default", TraceContext("1" * 32, "", False)))
    token = current_trace.set(TraceContext("2" * 32, "0000000000000002", False))
    try:
        log.info("a", extra={"call_id": "CA1"})
        log.info("b", extra={"call_id": "CA1", "trace": f"00-{'3' * 32}-{'4' * 16}-01"})
        log.info("c", extra={"trace": f"{'5' * 32}/9;o=1"})
    finally:
        current_trace.reset(token)
    log.info("d", extra={"call_id": "CA1"})
    a, b, c, d = (e["logging.googleapis.com/trace"].rsplit("/", 1)[1] for e in parse_lines(buf.getvalue()))
    assert (a, b, c, d) == ("2" * 32, "3" * 32, "5" * 32, "1" * 32)


def test_without_a_project_the_trace_id_is_logged_but_not_linked(logger) -> None:
    log, buf, _, formatter = logger
    formatter.project = ""
    log.info("x", extra={"trace": f"{TRACE}/1;o=1"})
    (e,) = parse_lines(buf.getvalue())
    assert "logging.googleapis.com/trace" not in e
    assert e["trace_id"] == TRACE and e["logging.googleapis.com/spanId"] == "0000000000000001"


def test_exceptions_reach_error_reporting(logger) -> None:
    log, buf, _, _ = logger
    try:
        raise RuntimeError("model exploded")
    except RuntimeError:
        log.exception("call failed")
        log.warning("handled", exc_info=True)
    err, warn = parse_lines(buf.getvalue())
    assert err["severity"] == "ERROR"
    assert err["message"].startswith("call failed\nTraceback (most recent call last):")
    assert "RuntimeError: model exploded" in err["message"]
    assert err["@type"] == ERROR_EVENT
    assert err["serviceContext"] == {"service": "vc", "version": "1.2.3"}
    assert "Traceback" in warn["message"] and "@type" not in warn  # not an error


def test_extras_unserialisable_values_and_reserved_keys(logger) -> None:
    log, buf, _, _ = logger

    class Thing:
        def __str__(self) -> str:
            return "a thing"

    log.info("x", extra={"data": {"obj": Thing(), "n": 1}, "outcome": "completed",
                         "severity_hint": "ignored-not-reserved"})
    log.info("y", extra={"profile": "night", "transport": "twilio"})
    x, y = parse_lines(buf.getvalue())
    assert x["data"] == {"obj": "a thing", "n": 1}
    assert x["outcome"] == "completed"
    assert x["severity"] == "INFO"
    assert y["logging.googleapis.com/labels"] == {"env": "test", "profile": "night", "transport": "twilio"}


def test_long_messages_are_cut(logger) -> None:
    log, buf, _, _ = logger
    log.info("x" * 5000)
    (e,) = parse_lines(buf.getvalue())
    assert e["message"] == "x" * 2000 + " [truncated]"
    assert e["message_chars"] == 5000


def test_a_broken_record_still_gives_a_json_line(logger) -> None:
    log, buf, _, _ = logger

    class Explodes:
        def __str__(self) -> str:
            raise ValueError("no str for you")

    log.info(Explodes())  # getMessage() raises inside format()
    (e,) = parse_lines(buf.getvalue())
    assert e["severity"] == "INFO"
    assert "unformattable log record" in e["message"] and "ValueError" in e["message"]


def test_threads_each_line_whole(logger) -> None:
    log, buf, calls, _ = logger
    calls.started("CA1", CallLabels("twilio", "default"))

    def work(n: int) -> None:
        for i in range(200):
            log.info("thread %d line %d %s", n, i, "y" * 50, extra={"call_id": "CA1"})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = parse_lines(buf.getvalue())
    assert len(entries) == 800
    assert all(e["logging.googleapis.com/labels"]["transport"] == "twilio" for e in entries)
