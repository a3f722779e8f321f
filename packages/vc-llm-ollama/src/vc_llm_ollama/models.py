"""Ollama model management: list, show, pull with progress; ``vc models`` integration."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx

from vc.providers import ModelCatalog, ModelInfo, ProviderError

if TYPE_CHECKING:
    import ollama

DEFAULT_HOST = "http://127.0.0.1:11434"


def configured_host() -> str:
    """The host ``vc models`` talks to: [llm.ollama] host from the environment, else default."""
    return os.environ.get("VC_LLM_OLLAMA__HOST") or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST


def describe_error(e: BaseException, host: str, model: str) -> str:
    """One clear line for what went wrong talking to Ollama."""
    import ollama  # in the functions that use it: every `vc` command loads this plugin

    if isinstance(e, ollama.ResponseError):
        text = str(e.error)
        if e.status_code == 404 or "not found" in text:
            return (
                f"model {model!r} is not on the Ollama server at {host} ({text}): run "
                f"`vc models prepare ollama:{model}` or `ollama pull {model}`"
            )
        return f"Ollama at {host} answered an error: {text} (HTTP {e.status_code})"
    if isinstance(e, (ConnectionError, httpx.ConnectError)):
        return f"cannot connect to Ollama at {host} (is `ollama serve` running there?)"
    if isinstance(e, (httpx.TimeoutException, TimeoutError)):
        return f"Ollama at {host} did not answer in time ({type(e).__name__})"
    if isinstance(e, (httpx.RemoteProtocolError, httpx.ReadError)):
        return f"Ollama at {host} dropped the connection mid-reply ({type(e).__name__}: {e})"
    if isinstance(e, httpx.HTTPError):
        return f"HTTP error talking to Ollama at {host}: {type(e).__name__}: {e}"
    return f"Ollama request failed: {type(e).__name__}: {e}"


async def pull_model(
    client: ollama.AsyncClient,
    name: str,
    progress: Callable[[int, int], None] | None = None,
    host: str = "",
) -> None:
    """Pull ``name`` on the server, reporting bytes done/total across its layers."""
    import ollama

    layers: dict[str, tuple[int, int]] = {}
    try:
        stream = await client.pull(name, stream=True)
        async for part in stream:
            if part.digest and part.total:
                layers[part.digest] = (part.completed or 0, part.total)
            if progress and layers:
                progress(sum(d for d, _ in layers.values()), sum(t for _, t in layers.values()))
            if part.status == "success":
                if progress:
                    progress(1, 1)
                return
    except ollama.ResponseError as e:
        raise ProviderError(f"pulling {name!r} failed: {e.error}") from None
    except (ConnectionError, httpx.HTTPError) as e:
        raise ProviderError(f"pulling {name!r}: {describe_error(e, host, name)}") from None
    raise ProviderError(f"pulling {name!r}: the server ended without reporting success")


def _size(n: Any) -> str:
    try:
        value = float(n)
    except (TypeError, ValueError):
        return ""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000:
            return f"{value:.0f} {unit}"
        value /= 1000
    return f"{value:.0f} PB"


class OllamaModels(ModelCatalog):
    """``vc models list`` shows the server's models; ``vc models prepare ollama:NAME`` pulls."""

    name = "ollama"

    def __init__(self, host: str | None = None) -> None:
        self._host = host

    @property
    def host(self) -> str:
        return self._host or configured_host()

    def list(self) -> list[ModelInfo]:
        import ollama

        try:
            listed = ollama.Client(host=self.host, timeout=10).list()
        except Exception as e:
            raise ProviderError(describe_error(e, self.host, "")) from None
        rows = []
        for m in listed.models:
            d = m.details
            detail = " ".join(
                x
                for x in (
                    _size(m.size),
                    d.family if d else "",
                    d.parameter_size if d else "",
                    d.quantization_level if d else "",
                )
                if x
            )
            rows.append(ModelInfo(f"ollama:{m.model}", "llm", True, self.host, detail))
        return rows

    def show(self, model: str) -> dict[str, Any]:
        import ollama

        name = model.removeprefix("ollama:")
        try:
            info = ollama.Client(host=self.host, timeout=30).show(name)
        except Exception as e:
            raise ProviderError(describe_error(e, self.host, name)) from None
        return info.model_dump(exclude_none=True, by_alias=True)

    def prepare(self, model: str, progress: Callable[[int, int], None]) -> str:
        name = model.removeprefix("ollama:")

        async def run() -> None:
            import ollama

            client = ollama.AsyncClient(host=self.host, timeout=httpx.Timeout(10.0, read=None))
            try:
                await pull_model(client, name, progress, self.host)
            finally:
                await client._client.aclose()

        asyncio.run(run())
        return f"{self.host} ({name})"
