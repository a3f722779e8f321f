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
