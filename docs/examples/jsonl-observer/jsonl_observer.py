"""A JSON-lines observer: one line per call start, call end, latency and event, in a file.

The worked example of docs/plugin-guide.md ("Observers"). The methods the engine calls on the
call's path only put a dict on a queue; a thread started in ``start()`` does the writing, and
``stop()`` drains it. Tested with ``vc.testing.contracts.ObserverContract``
(packages/vc-core/tests/test_observer_example.py).
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from pathlib import Path
from typing import Any

import attrs

from vc import events
from vc.call import CallInfo
from vc.hookspecs import hookimpl
from vc.providers import Observer
from vc.settings import setting


@attrs.define
class JsonLinesSettings:
    path: str = setting("vc-events.jsonl", help="file the lines are appended to")


class JsonLinesObserver(Observer):
    """Appends every call event to a JSON-lines file, off the call's path."""

    name = "jsonl"
    Settings = JsonLinesSettings
    description = "call events as JSON lines in a file"

    def __init__(self, settings: JsonLinesSettings | None = None) -> None:
        super().__init__(settings or JsonLinesSettings())
        self._lines: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None

    async def start(self) -> None:
        path = Path(self.settings.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = threading.Thread(target=self._write, args=(path,), daemon=True)
        self._writer.start()

    async def stop(self) -> None:
        if self._writer is not None:
            self._lines.put(None)  # the writer ends after the lines queued before it
            await asyncio.to_thread(self._writer.join)
            self._writer = None

    def _write(self, path: Path) -> None:
        with path.open("a", encoding="utf-8") as f:
            while (line := self._lines.get()) is not None:
                f.write(json.dumps(line) + "\n")
                if self._lines.empty():
                    f.flush()

    def _put(self, info: CallInfo, name: str, **data: Any) -> None:
        self._lines.put({"time": time.time(), "call_id": info.call_id, "event": name, **data})

    # -- what the engine calls (on the call's path: queue and return) ----------------------

    def call_started(self, info: CallInfo, profile: str) -> None:
        self._put(info, events.CALL_STARTED, profile=profile, transport=info.transport)

    def call_ended(self, info: CallInfo, outcome: str, duration: float) -> None:
        self._put(info, events.CALL_ENDED, outcome=outcome, duration=round(duration, 3))

    def latency(self, info: CallInfo, stage: str, seconds: float) -> None:
        self._put(info, "latency", stage=stage, seconds=round(seconds, 4))

    def event(self, info: CallInfo, name: str, data: dict[str, Any]) -> None:
        self._put(info, name, data=data)


@hookimpl
def register_observers(register):
    register(JsonLinesObserver)
