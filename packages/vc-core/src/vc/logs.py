"""Logging: readable text or one JSON object per line, with the call id on every call line."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

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
        pipecat_log.log(lvl if lvl in (10, 20, 30, 40, 50) else 20, r["message"])

    logger.remove()
    # pipecat is chatty at INFO about its own plumbing: only warnings unless debugging.
    logger.add(sink, level="DEBUG" if level.lower() == "debug" else "WARNING", format="{message}")
