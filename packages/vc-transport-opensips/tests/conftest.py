"""Shared test setup: quiet pipecat's debug logging (loguru) so failures stay readable; a
caller's RTP phone and SIP user agent on 127.0.0.1, each closed after its test."""

from __future__ import annotations

import sys

import pytest
from loguru import logger
from opensips_kit import RtpPhone, SipCaller
from real_opensips import opensips_prefix  # noqa: F401  (one cached build for all real_opensips tests)

logger.remove()
logger.add(sys.stderr, level="WARNING")


@pytest.fixture
async def phone():
    p = await RtpPhone().start()
    yield p
    await p.close()


@pytest.fixture
async def caller():
    c = await SipCaller().start()
    yield c
    await c.close()
