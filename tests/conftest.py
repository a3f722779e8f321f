"""Repository-level tests: quiet pipecat (loguru) so failure reports stay readable."""

from __future__ import annotations

import pytest

from vc.logs import route_loguru

route_loguru("warning")


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.hasplugin("timeout"):  # pytest-timeout is optional
        config.addinivalue_line("markers", "timeout(seconds): limit for one test (pytest-timeout)")
