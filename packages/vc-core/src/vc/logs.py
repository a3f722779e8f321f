"""Logging: readable text or one JSON object per line, with the call id on every call line."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

#: The call on whose behalf the running task works (set by the call's session for its task,
#: inherited by every task pipecat starts inside it): log lines without a ``call_id`` of their
#: own get this one (pipecat's loguru lines included, see :func:`route_loguru`).
current_call_id: ContextVar[str | None] = ContextVar("vc_call_id", default=None)


class CallIdFilter(logging.Filter):
    """Adds the running call's id to records that carry none."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "call_id", None) is None:
            call = current_call_id.get()
            if call:
                record.call_id = call
        return True

_STD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        call = getattr(record, "call_id", None)
        data = getattr(record, "data", None)
        ts = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        line = f"{ts} {record.levelname:<7} {record.name}"
        if call:
            line += f" [{call}]"
        line += f" {record.getMessage()}"
        if data:
            line += " " + json.dumps(data, ensure_ascii=False, default=str)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JSONFormatter(logging.Formatter):
    """One JSON object per line; ``severity``/``message``/``time`` as Cloud Logging expects."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "logger": record.name,
        }
        for key, value in vars(record).items():
            if key not in _STD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class _Held(logging.Handler):
    """Keeps records logged before the log format is known (plugins loading at startup)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_held: _Held | None = None


class LogThrottle:
    """Rate limit for one kind of log line that a peer can trigger at will.

    The first ``burst`` lines of each ``interval`` seconds are logged; the rest are only
    counted, and the next line that is logged says how many were suppressed before it
    (``... (1234 more like this suppressed)``). :meth:`flush` logs a pending count on its own,
    for when the owner (a call, a connection) ends. One instance per kind of line::

        self._unknown = LogThrottle()
        self._unknown.log(log, logging.WARNING, "unknown mark %r", name)
    """

    def __init__(
        self, burst: int = 5, interval: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst = burst
        self.interval = interval
        self._clock = clock
        self._window = float("-inf")
        self._count = 0
        #: Lines suppressed since the last one logged.
        self.suppressed = 0
        #: Lines suppressed in all.
        self.total_suppressed = 0

    def log(self, logger: Any, level: int, msg: str, *args: Any) -> bool:
        """Log ``msg % args`` at ``level`` unless over the limit; True if it was logged."""
        now = self._clock()
        if now - self._window >= self.interval:
            self._window = now
            self._count = 0
        if self._count >= self.burst:
            self.suppressed += 1
            self.total_suppressed += 1
            return False
        self._count += 1
        if self.suppressed:
            msg += " (%d more like this suppressed)"
            args = (*args, self.suppressed)
            self.suppressed = 0
        logger.log(level, msg, *args)
        return True

    def flush(self, logger: Any, level: int, what: str) -> None:
        """Log how many lines were suppressed since the last one, if any (``what``: the kind)."""
        if self.suppressed:
            logger.log(level, "%d more %s suppressed", self.suppressed, what)
            self.suppressed = 0


def hold() -> None:
    """Keep what is logged from now on until :func:`setup` (or :func:`release`) says where to."""
    global _held
    if _held is None:
        _held = _Held()
        logging.getLogger().addHandler(_held)


def _take_held() -> list[logging.LogRecord]:
    global _held
    held, _held = _held, None
    if held is None:
        return []
    logging.getLogger().removeHandler(held)
    return held.records


def release() -> None:
    """Stop holding records; show the held ones as Python would have (message, on stderr).

    Records are shown only when no other handler saw them (the root logger had no other).
    """
    records = _take_held()
    last = logging.lastResort
    if last is None or logging.getLogger().handlers:
        return
    for record in records:
        if record.levelno >= last.level:
            last.handle(record)


def setup(level: str = "info", fmt: str = "text", stream: Any = None) -> None:
    """Configure stdlib logging and route pipecat's loguru output into it.

    Records held since :func:`hold` are written first, in this format.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(CallIdFilter())
    held = _take_held()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    numeric = logging.getLevelName(level.upper())
    root.setLevel(numeric if isinstance(numeric, int) else logging.INFO)
    for record in held:
        if record.levelno >= root.level:
            handler.handle(record)
    for noisy in ("uvicorn.access", "websockets", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    route_loguru(level)


def route_loguru(level: str = "info") -> None:
    from loguru import logger

    pipecat_log = logging.getLogger("pipecat")

    def sink(message: Any) -> None:
        r = message.record
        lvl = r["level"].no
        call = r["extra"].get("call_id") or current_call_id.get()
        pipecat_log.log(lvl if lvl in (10, 20, 30, 40, 50) else 20, r["message"],
                        extra={"call_id": call} if call else None)

    logger.remove()
    # pipecat is chatty at INFO about its own plumbing: only warnings unless debugging.
    logger.add(sink, level="DEBUG" if level.lower() == "debug" else "WARNING", format="{message}")
