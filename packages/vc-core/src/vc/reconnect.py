"""Providers of another program's service: start order does not matter.

In compose or Kubernetes vc and the services it talks to (the Vosk, Llama and Piper WebSocket
services, Ollama) start in any order and restart independently. A provider of such a service
derives from :class:`RemoteProvider` and implements :meth:`RemoteProvider.probe` (reach the
service and get ready to serve: open the pooled connections, check the models). Then, the same
for every such provider:

* ``start()`` tries once. A service that cannot be reached (the probe raises
  :class:`ServiceUnavailable`) is a warning, not a startup failure: vc starts, ``ready()`` is
  False and ``/readyz`` names the provider and why, while the probe is retried in the
  background with capped exponential backoff (0.5 s doubling to 10 s). Any other
  :class:`~vc.providers.ProviderError` from the first probe (a reachable service that is
  misconfigured: a model it lacks) still stops the start.
* once a probe succeeds the provider is ready; the provider reports what its calls find
  (:meth:`RemoteService.lost` when a connection to the service fails, :meth:`RemoteService.reached`
  when one succeeds), so readiness follows a service that goes away and comes back, and the
  same retry loop brings it back.

Calls are not held back by any of this: each provider's per-call code already fails a turn
cleanly (the LLM apologises, the STT holds and replays audio) and reconnects on the next turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, ClassVar

from vc.providers import Provider, ProviderContext, ProviderError

#: Backoff between attempts to reach a service: first delay, and the cap it doubles up to.
RETRY_INITIAL = 0.5
RETRY_MAX = 10.0


class ServiceUnavailable(ProviderError):
    """The service cannot be reached now (refused, timed out, dropped): try again later."""


def backoff(initial: float = RETRY_INITIAL, maximum: float = RETRY_MAX) -> Iterator[float]:
    """Delays between attempts: ``initial``, doubling, capped at ``maximum``."""
    delay = initial
    while True:
        yield delay
        delay = min(delay * 2, maximum)


class RemoteService:
    """Whether one remote service is reachable, and the background loop that retries it."""

    def __init__(
        self,
        what: str,
        probe: Callable[[], Awaitable[None]],
        log: logging.Logger | logging.LoggerAdapter[Any],
        *,
        initial: float = RETRY_INITIAL,
        maximum: float = RETRY_MAX,
    ) -> None:
        self.what = what
        self._probe = probe
        self.log = log
        self.initial = initial
        self.maximum = maximum
        self.ready = False
        #: why it is not ready ("" when ready)
        self.reason = "not started"
        self.attempts = 0
        self._last_failure = ""  # what the last probe said (logged again only when it changes)
        self._down_since: float | None = None
        self._retry: asyncio.Task[None] | None = None
        self._stopped = False

    async def start(self) -> None:
        """Probe once; if the service is unreachable, warn and keep retrying in the background.

        Raises the probe's ProviderError when the service answered but cannot serve.
        """
        self._stopped = False
        self.attempts += 1
        try:
            await self._probe()
        except ServiceUnavailable as e:
            self.ready = False  # whatever got through before, the probe did not
            self.reason = self._last_failure = str(e)
            self._down_since = time.monotonic()
            self.log.warning(
                "%s: %s; starting without it (/readyz says not ready) and retrying every "
                "%g-%g s", self.what, e, self.initial, self.maximum,
            )
            self._ensure_retrying()
            return
        self.reached()

    def reached(self) -> None:
        """The provider got through to the service: ready."""
        if self.ready:
            return
        self.ready = True
        self.reason = self._last_failure = ""
        if self._down_since is not None:
            self.log.info("%s: reachable again after %.1fs", self.what,
                          time.monotonic() - self._down_since)
            self._down_since = None

    def lost(self, reason: str) -> None:
        """The provider could not reach the service: not ready until a retry gets through."""
        if self._stopped:
            return
        self.reason = reason
        if self.ready:
            self.ready = False
            self._down_since = time.monotonic()
            self.log.warning("%s: %s; retrying in the background", self.what, reason)
        self._ensure_retrying()

    def _ensure_retrying(self) -> None:
        if self._stopped or (self._retry is not None and not self._retry.done()):
            return
        try:
            self._retry = asyncio.get_running_loop().create_task(
                self._retry_loop(), name=f"retry {self.what}")
        except RuntimeError:  # no event loop (stopping): nothing to retry for
            pass

    async def _retry_loop(self) -> None:
        for delay in backoff(self.initial, self.maximum):
            await asyncio.sleep(delay)
            if self.ready or self._stopped:
                return
            self.attempts += 1
            try:
                await self._probe()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a reachable but failing service is retried too
                message = str(e) if isinstance(e, ProviderError) else f"{type(e).__name__}: {e}"
                if message != self._last_failure:
                    self.log.warning("%s: %s; retrying", self.what, message)
                else:
                    self.log.debug("%s: %s; retrying in %gs", self.what, message, delay)
                self.reason = self._last_failure = message
                continue
            self.reached()
            return

    async def stop(self) -> None:
        self._stopped = True
        task, self._retry = self._retry, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class RemoteProvider(Provider):
    """Base (combined with STTProvider, LLMProvider or TTSProvider) for a provider of a remote
    service. Subclasses implement :meth:`probe`, call ``await super().start()`` at the end of
    their ``start`` and ``await super().stop()`` in their ``stop``, and report what their
    connections find to ``self.remote`` (``reached()`` / ``lost(reason)``)."""

    #: backoff of the background retries (tests shorten it)
    retry_initial: ClassVar[float] = RETRY_INITIAL
    retry_max: ClassVar[float] = RETRY_MAX

    def __init__(self, settings: Any, context: ProviderContext) -> None:
        super().__init__(settings, context)
        self.remote = RemoteService(self.describe_service(), self.probe, self.log,
                                    initial=self.retry_initial, maximum=self.retry_max)

    def describe_service(self) -> str:
        """How logs name the service (``llm llama-ws`` by default)."""
        return f"{self.kind} {self.name}"

    async def probe(self) -> None:
        """Reach the service and get ready to serve; raise ServiceUnavailable if it cannot be
        reached now, ProviderError if it answers but cannot serve this configuration."""
        raise NotImplementedError

    async def start(self) -> None:
        await self.remote.start()

    async def stop(self) -> None:
        await self.remote.stop()

    def ready(self) -> bool:
        return self.remote.ready

    def not_ready_reason(self) -> str:
        return "" if self.remote.ready else self.remote.reason
