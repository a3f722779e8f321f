"""Keep pipecat's debug chatter (loguru) out of failure reports."""

from __future__ import annotations

import sys

from loguru import logger

logger.remove()
logger.add(sys.stderr, level="WARNING")
