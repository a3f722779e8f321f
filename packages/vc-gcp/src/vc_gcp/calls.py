"""What the log formatter knows about each call: its labels and its trace.

Log lines of a call carry only ``call_id`` (core's ``LoggerAdapter``); the transport and the
profile come from the observer's ``call_started``. Ended calls are remembered a little longer
(a bounded number of them) so that lines logged while a call winds down keep their labels.
Logging may happen on any thread, so every access takes a lock.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import attrs

from vc_gcp.trace import TraceContext


@attrs.frozen
class CallLabels:
    transport: str
    profile: str
    trace: TraceContext | None = None


class CallDirectory:
    """Active calls by call id, plus the ``keep_ended`` most recently ended ones."""

    def __init__(self, keep_ended: int = 1024) -> None:
        self.keep_ended = keep_ended
        self._active: dict[str, CallLabels] = {}
        self._ended: OrderedDict[str, CallLabels] = OrderedDict()
        self._lock = threading.Lock()

    def started(self, call_id: str, labels: CallLabels) -> None:
        with self._lock:
            self._ended.pop(call_id, None)
            self._active[call_id] = labels

    def ended(self, call_id: str) -> None:
        with self._lock:
            labels = self._active.pop(call_id, None)
            if labels is None:
                return
            self._ended[call_id] = labels
            while len(self._ended) > self.keep_ended:
                self._ended.popitem(last=False)

    def get(self, call_id: str) -> CallLabels | None:
        with self._lock:
            return self._active.get(call_id) or self._ended.get(call_id)

    def __len__(self) -> int:
        with self._lock:
            return len(self._active)
