"""``llama-ws``: a client for the Llama WebSocket LLM service (protocols.md section 5).

The existing INI's ``[llm]`` keys (url, model, temperature, max_tokens, top_p, timeout,
stream) configure it unchanged; ``vc.legacy`` selects this provider for a legacy
``[llm] url``. Each call holds one persistent connection, taken from a small pool of
connections opened ahead of time; a reply abandoned on barge-in is drained and discarded
(see :mod:`vc_llm_llama_ws.connections`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import attrs
from pipecat.frames.frames import CancelFrame, EndFrame, StartFrame
from websockets.exceptions import ConnectionClosed

from vc.llm import LLMProviderError, StreamingLLMService, ToolCallRequest, apology_for
from vc.providers import CallContext, LLMProvider, ProviderError
from vc.reconnect import RemoteProvider, ServiceUnavailable
from vc.settings import setting
from vc_llm_llama_ws import protocol
from vc_llm_llama_ws.common import (
    apology_setting,
    per_call,
    token_timeout_setting,
)
from vc_llm_llama_ws.connections import ConnectionPool, LlamaConnection, ServerUnavailable

DEFAULT_URL = "ws://127.0.0.1:8765"


@attrs.define
class LlamaWSSettings:
    url: str = setting(DEFAULT_URL, help="WebSocket URL of the Llama service (ws:// or wss://)")
    token: str = setting(
        "",
        help="shared token the service wants (vc-llama-ws-server --token), sent as "
        "Authorization: Bearer; $env:NAME or $file:/path to keep it out of the file",
        secret=True,
    )
    model: str = setting(
        "", help='model name; sent as "model" only if send_model (the old server ignores it)'
    )
    temperature: float = setting(
        0.2, min=0, max=5,
        help="sampling temperature (a profile's temperature wins)",
    )
    max_tokens: int = setting(
        80, min=1, max=8192, help="cap on a reply's length in tokens (a profile's max_tokens wins)"
    )
    top_p: float | None = setting(
        None, min=0, max=1, help="nucleus sampling probability (empty: server default, not sent)"
    )
    timeout: float = setting(
        10.0, min=0.1, max=600,
        help="seconds to connect and to wait for the first token",
    )
    token_timeout: float = token_timeout_setting(10.0)
    stream: bool = setting(
        True, help="ask for streamed chunks (false: the whole reply in one chunk)"
    )
    use_rag: bool = setting(True, help="ask the server to add its retrieval context (use_rag)")
    send_model: bool = setting(False, help="send the model name with each request")
    legacy_prompt: bool = setting(
        False, help="send the legacy {prompt, system_prompt} form (last user message only)"
    )
    pool_size: int = setting(2, min=0, max=64, help="connections kept open and ready for new calls")
    drain_timeout: float = setting(
        15.0, min=0, max=600, help="seconds to discard an interrupted reply before closing its connection"
    )
    apology: str = apology_setting()


class LlamaWSService(StreamingLLMService):
    """One call's LLM: its own connection to the service, taken when the call starts."""

    def __init__(self, provider: LlamaWSProvider, call: CallContext) -> None:
        s = provider.settings
        temperature, max_tokens = per_call(s, call)
        super().__init__(
            system_prompt=call.profile.system_prompt,
            temperature=temperature,
            max_tokens=max_tokens,
            model=call.profile.llm_model or s.model or None,
            top_p=s.top_p,
            first_token_timeout=s.timeout,
            token_timeout=s.token_timeout,
            apology=apology_for(call.profile, s.apology),
        )
        self._model_name = call.profile.llm_model or (s.model if s.send_model else "")
        self._provider = provider
        self._call = call
        self._conn: LlamaConnection | None = None
        #: rag_context messages the server sent, per reply (tests and logs)
        self.rag_contexts: list[str] = []
        self.requests: list[protocol.ChatRequest] = []

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        # Never wait here (the call is starting): take a ready connection if there is one,
        # else the first turn connects.
        self._conn = self._provider.pool.take_idle()

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)
        await self._release()

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        await self._release()

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._provider.pool.release(conn)

    async def _connection(self) -> LlamaConnection:
        """This call's connection, usable for a new request (reconnecting if needed)."""
        conn = self._conn
        if conn is not None and not conn.usable and not conn.closed:
            # an interrupted reply is still being drained: a fresh connection answers sooner
            self._provider.pool.release(conn)
            conn = None
        if conn is None or conn.closed:
            self._conn = None
            try:
                conn = await self._provider.pool.get()
            except ServerUnavailable as e:
                raise LLMProviderError(str(e)) from None
            self._conn = conn
        return conn

    def _request(self, messages: list[dict[str, Any]]) -> protocol.ChatRequest:
        s = self._provider.settings
        return protocol.ChatRequest(
            messages=to_wire_messages(messages),
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            top_p=s.top_p,
            stream=s.stream,
            use_rag=s.use_rag,
            model=self._model_name,
            legacy=s.legacy_prompt,
        )

    async def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> AsyncIterator[str | ToolCallRequest]:
        request = self._request(messages)
        self.requests.append(request)
        conn = await self._send(request)
        finished = False
        try:
            while True:
                try:
                    reply = await conn.receive()
                except ConnectionClosed as e:
                    finished = True
                    raise LLMProviderError(
                        f"the Llama service closed the connection mid-reply ({e})"
                    ) from None
                except protocol.ProtocolError as e:
                    finished = True
                    await conn.close()
                    raise LLMProviderError(str(e)) from None
                if reply.kind == "chunk" and reply.text:
                    yield reply.text
                elif reply.kind == "rag_context":
                    self.rag_contexts.append(reply.text)
                    self._call.log.debug("rag_context (%s chars)", reply.data.get("context_length"))
                elif reply.kind == "error":
                    finished = True
                    raise LLMProviderError(f"the Llama service answered an error: {reply.text}")
                if reply.final:
                    finished = True
                    return
        finally:
            if not finished:
                conn.abandon(self._provider.settings.drain_timeout)

    async def _send(self, request: protocol.ChatRequest) -> LlamaConnection:
        """Send on this call's connection; a connection found dead is replaced once."""
        for attempt in (1, 2):
            conn = await self._connection()
            try:
                await conn.send(request)
                return conn
            except ConnectionClosed:
                await conn.close()
                self._conn = None
                if attempt == 2:
                    break
                self._call.log.info("Llama service connection was closed; reconnecting")
        raise LLMProviderError(
            f"cannot send to the Llama WebSocket service at {self._provider.settings.url}"
        )


def to_wire_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """OpenAI-style messages as the service takes them: role + string content only."""
    out = []
    for m in messages:
        role = m.get("role", "user")
        content = m.get("content")
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        if role == "developer":
            role = "system"
        if role == "tool" or (role == "assistant" and not content):
            continue  # the service knows no tools
        out.append({"role": role, "content": str(content or "")})
    return out


class LlamaWSProvider(RemoteProvider, LLMProvider):
    """The existing Llama WebSocket service (``[llm] url``).

    The service may start after vc, or restart: vc starts anyway and the shared retry loop
    (:mod:`vc.reconnect`) fills the pool once it answers; meanwhile calls hear the apology.
    """

    name = "llama-ws"
    Settings = LlamaWSSettings
    description = "Llama WebSocket LLM service client (the existing [llm] url protocol)"
    supports_tools = False

    def __init__(self, settings: LlamaWSSettings, context: Any) -> None:
        super().__init__(settings, context)
        self.pool = ConnectionPool(settings.url, settings.pool_size, settings.timeout,
                                   service=self.remote, token=settings.token)

    async def start(self) -> None:
        url = self.settings.url
        if not url.startswith(("ws://", "wss://")):
            raise ProviderError(f"[llm] url must start with ws:// or wss://, got {url!r}")
        await super().start()

    async def probe(self) -> None:
        try:
            if self.pool.size:
                await self.pool.fill()
            else:  # no pool: check that the service accepts a connection
                await (await self.pool.open()).close()
        except ServerUnavailable as e:
            raise ServiceUnavailable(str(e)) from None

    async def stop(self) -> None:
        await super().stop()
        await self.pool.close()

    def create_service(self, call: CallContext) -> LlamaWSService:
        return LlamaWSService(self, call)
