"""jsonl (installed, found through its entry point) against vc's observer contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonl_observer import JsonLinesObserver, JsonLinesSettings

from vc import events
from vc.testing.contracts import ObserverContract


class TestJsonLinesObserver(ObserverContract):
    observer = JsonLinesObserver

    @pytest.fixture(autouse=True)
    def _in_tmp(self, tmp_path: Path) -> None:
        self.path = tmp_path / "logs" / "events.jsonl"

    def make_settings(self) -> JsonLinesSettings:
        return JsonLinesSettings(path=str(self.path))

    @pytest.mark.asyncio
    async def test_hears_every_event_of_a_real_call_without_slowing_it(self) -> None:
        await super().test_hears_every_event_of_a_real_call_without_slowing_it()
        lines = [json.loads(line) for line in self.path.read_text().splitlines()]
        assert lines[0]["event"] == events.CALL_STARTED and lines[-1]["event"] == events.CALL_ENDED
        assert set(events.CATALOGUE) <= {line["event"] for line in lines}
