"""Run the tests' Ollama-API stand-in (packages/vc-llm-ollama/tests/ollama_server.py) as a process.

It answers ``/api/chat`` from the real SmolLM2 GGUF through llama.cpp. The model is loaded
before the ready line ``ollama stand-in listening on http://127.0.0.1:PORT`` is printed; SIGTERM
stops it. Usage: ``python ollama_standin.py [PORT]`` (default 0: any free port).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "packages" / "vc-llm-ollama" / "tests"))

from ollama_server import FakeOllama, llama, release_llama  # noqa: E402


async def main(port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.to_thread(llama)
    server = await FakeOllama().start(port)
    print(f"ollama stand-in listening on {server.host}", flush=True)
    await stop.wait()
    await server.stop()
    release_llama()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
