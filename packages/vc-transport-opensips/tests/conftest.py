"""Shared test setup: quiet pipecat's debug logging (loguru) so failures stay readable."""

from __future__ import annotations

import sys

from loguru import logger

logger.remove()
logger.add(sys.stderr, level="WARNING")
