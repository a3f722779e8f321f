from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "plugins"))


@pytest.fixture(autouse=True)
def _quiet_pipecat() -> None:
    from vc import logs

    logs.route_loguru("warning")


@pytest.fixture
async def make_engine():
    """``await make_engine(ini)``: a started Engine on the fake providers, drained and stopped
    after the test."""
    from vc.engine import Engine
    from vc.testing import config_from_ini, fake_registry

    engines: list[Engine] = []

    async def make(ini: str) -> Engine:
        reg = fake_registry()
        engine = Engine(config_from_ini(ini, reg), reg)
        await engine.start()
        await engine.apologies_rendered()  # tests of failed turns expect them
        engines.append(engine)
        return engine

    yield make
    for e in engines:
        await e.drain(2.0)
        await e.stop()
