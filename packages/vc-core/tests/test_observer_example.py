"""The plugin guide's worked observer (docs/examples/jsonl-observer) through ObserverContract."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from vc import events
from vc.testing.contracts import ObserverContract

EXAMPLE = Path(__file__).resolve().parents[3] / "docs" / "examples" / "jsonl-observer"
sys.path.insert(0, str(EXAMPLE))

from jsonl_observer import JsonLinesObserver, JsonLinesSettings  # noqa: E402


class TestJsonLinesObserver(ObserverContract):
    observer = JsonLinesObserver
    # Not installed here: the registration check loads the module as a plugin instead.
    plugin_env = {"VC_LOAD_PLUGINS": "", "VC_PLUGIN_MODULES": "jsonl_observer"}

    @pytest.fixture(autouse=True)
    def _in_tmp(self, tmp_path: Path) -> None:
        self.path = tmp_path / "logs" / "events.jsonl"

    def make_settings(self) -> JsonLinesSettings:
        return JsonLinesSettings(path=str(self.path))

    async def test_hears_every_event_of_a_real_call_without_slowing_it(self) -> None:
        await super().test_hears_every_event_of_a_real_call_without_slowing_it()
        lines = [json.loads(line) for line in self.path.read_text().splitlines()]
        names = {line["event"] for line in lines}
        assert set(events.CATALOGUE) | {events.CALL_STARTED, events.CALL_ENDED, "latency"} <= names
        assert lines[0]["event"] == events.CALL_STARTED and lines[-1]["event"] == events.CALL_ENDED
        assert {line["call_id"] for line in lines} == {lines[0]["call_id"]}
        # the key the caller pressed (and the contract's sample): both on the call's line
        assert [x["data"] for x in lines if x["event"] == events.DTMF] == [{"digit": "5"}] * 2


def test_the_guide_shows_the_tested_code() -> None:
    guide = (EXAMPLE.parents[2] / "docs" / "plugin-guide.md").read_text()
    code = (EXAMPLE / "jsonl_observer.py").read_text()
    listing = code[code.index("@attrs.define"):]
    assert f"```python\n{listing}```" in guide, "docs/plugin-guide.md's observer example is stale"
