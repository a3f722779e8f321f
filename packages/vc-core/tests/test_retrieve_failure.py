"""vc.providers.retrieve_failure: work started ahead and then not wanted fails quietly (debug),
never as asyncio's "exception was never retrieved"; whoever still awaits it gets the failure."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from vc.providers import retrieve_failure


async def fail() -> bytes:
    raise OSError("synthesiser gone")


async def asyncio_reports(callback: bool) -> list[str]:
    """What asyncio's exception handler is told of a failed task nobody awaits, once the task
    is collected (``callback``: with ``retrieve_failure`` added)."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        task = asyncio.ensure_future(fail())
        if callback:
            task.add_done_callback(retrieve_failure)
        await asyncio.sleep(0.01)
        del task
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    return [str(c["message"]) for c in reported]


async def test_an_unawaited_failure_is_logged_at_debug_only(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    assert await asyncio_reports(callback=True) == []  # asyncio's "never retrieved": none
    said = [r for r in caplog.records if r.name == "vc.providers"]
    assert [(r.levelno, r.getMessage()) for r in said] == [
        (logging.DEBUG, "work nobody awaited ended with OSError: synthesiser gone")]


async def test_without_it_asyncio_reports_the_failure() -> None:
    """The check above can fail: an unawaited failed task is reported when collected."""
    assert await asyncio_reports(callback=False) == ["Task exception was never retrieved"]


async def test_whoever_awaits_still_gets_the_failure() -> None:
    task = asyncio.ensure_future(fail())
    task.add_done_callback(retrieve_failure)
    with pytest.raises(OSError, match="synthesiser gone"):
        await task


async def test_a_cancelled_future_is_left_alone(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    future.add_done_callback(retrieve_failure)
    future.cancel()
    await asyncio.sleep(0)
    assert not [r for r in caplog.records if r.name == "vc.providers"]
