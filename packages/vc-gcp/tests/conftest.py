"""Fixtures for vc-gcp's tests."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from vc_gcp.observer import CloudLoggingObserver, CloudLoggingSettings


@pytest.fixture
def cloud_logs() -> Iterator[tuple[CloudLoggingObserver, io.StringIO]]:
    """The observer installed (mode always) on a buffer; the root logger restored afterwards."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    buf = io.StringIO()
    observer = CloudLoggingObserver(
        CloudLoggingSettings(mode="always", metadata_lookup=False),
        env={"GOOGLE_CLOUD_PROJECT": "vc-test-project"},
        stream=buf,
    )
    root.setLevel(logging.DEBUG)
    try:
        yield observer, buf
    finally:
        observer.uninstall()
        root.handlers[:] = handlers
        root.setLevel(level)
