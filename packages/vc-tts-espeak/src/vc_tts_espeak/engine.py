"""Running the espeak-ng program: text on stdin, a WAV stream on stdout, read as it is rendered.

espeak-ng writes its WAV header first (with an unknown length) and then the samples as it
synthesises them, so the first audio of a sentence is available ~10 ms after the process starts.
Nothing here blocks the event loop: the program runs as an asyncio subprocess, and a
:class:`Run` that is left early (barge-in cancels the task reading it) kills the process.

The text goes to the program on stdin, never on its command line, so a text that starts with
``-`` cannot be taken for an option, and its length is not limited by the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType

import attrs

from vc.providers import ProviderError

#: What espeak-ng renders (its voices are 22.05 kHz mono 16-bit); the WAV header says it too.
NATIVE_RATE = 22050
INSTALL_HINT = "install it with `apt-get install espeak-ng` (Debian/Ubuntu; `dnf install " \
    "espeak-ng` on Fedora, `brew install espeak-ng` on macOS)"
#: How long a killed or finished process gets to exit before we stop waiting for it.
EXIT_WAIT_S = 2.0


def find_binary(program: str = "espeak-ng") -> str:
    """The absolute path of the espeak-ng program (a name looked up on PATH, or a path).

    Raises :class:`ProviderError` saying how to install it when it is not there.
    """
    found = shutil.which(program)
    if found is None:
        where = f"{program!r} is not an executable file" if os.sep in program \
            else f"{program!r} is not on PATH"
        raise ProviderError(f"the espeak-ng program is not installed ({where}): {INSTALL_HINT}")
    return found


@attrs.frozen
class Voice:
    """One espeak-ng voice with its prosody: the command line of a synthesis."""

    name: str
    words_per_minute: int = 160
    pitch: int = 50
    amplitude: int = 100
    gap: int = 0

    def argv(self, binary: str) -> list[str]:
        return [binary, "--stdout", "-b", "1",  # -b 1: the text on stdin is UTF-8
                "-v", self.name, "-s", str(self.words_per_minute), "-p", str(self.pitch),
                "-a", str(self.amplitude), "-g", str(self.gap)]


def language_of(voice: str) -> str:
    """The BCP-47 primary language tag of an espeak-ng voice: ``"en-us+f3"`` -> ``"en"``."""
    name = voice.split("+")[0].rsplit("/", 1)[-1]
    return name.replace("_", "-").split("-")[0].lower()


async def list_voices(binary: str) -> set[str]:
    """Every name ``-v`` accepts for the installed espeak-ng (languages, voice names, files)."""
    proc = await asyncio.create_subprocess_exec(
        binary, "--voices", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise ProviderError(f"`{binary} --voices` failed: {err.decode(errors='replace').strip()}")
    names: set[str] = set()
    for line in out.decode(errors="replace").splitlines()[1:]:
        cols = line.split()
        if len(cols) < 5:
            continue
        # Pty Language Age/Gender VoiceName File [Other languages]
        names.update({cols[1].lower(), cols[3].lower(), cols[4].lower(),
                      cols[4].rsplit("/", 1)[-1].lower()})
        names.update(c.strip("()").lower() for c in cols[5:] if c.strip("()"))
    return names


def voice_exists(voice: str, known: set[str]) -> bool:
    """Whether ``-v voice`` names an installed voice (a ``+variant`` suffix is allowed)."""
    base = voice.split("+")[0].lower()
    return base in known or Path(base).name in known


def _wav_format(header: bytes) -> tuple[int, int] | None:
    """``(sample_rate, offset of the samples)`` once ``header`` holds the ``data`` chunk's start.

    None while more bytes are needed. Raises ValueError for what is not mono 16-bit PCM WAV.
    """
    if len(header) < 12:
        return None
    if header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        raise ValueError("espeak-ng did not write a WAV stream")
    pos, rate = 12, 0
    while len(header) >= pos + 8:
        chunk, size = header[pos : pos + 4], struct.unpack("<I", header[pos + 4 : pos + 8])[0]
        if chunk == b"data":
            if not rate:
                raise ValueError("espeak-ng's WAV stream has no fmt chunk")
            return rate, pos + 8
        if chunk == b"fmt ":
            if len(header) < pos + 8 + 16:
                return None
            fmt, channels, rate = struct.unpack("<HHI", header[pos + 8 : pos + 16])
            bits = struct.unpack("<H", header[pos + 22 : pos + 24])[0]
            if fmt != 1 or channels != 1 or bits != 16:
                raise ValueError(f"espeak-ng wrote format {fmt}, {channels} channels, {bits} "
                                 "bits; expected mono 16-bit PCM")
        pos += 8 + size + (size & 1)
        if pos > 4096:
            raise ValueError("espeak-ng's WAV header is malformed")
    return None


class Run:
    """One espeak-ng process speaking one text::

        async with Run(binary, voice, text) as run:
            async for pcm in run.pcm():   # PCM16 mono at run.sample_rate, as it is rendered
                ...

    Leaving the ``async with`` block before the end (an exception, a cancelled task, a closed
    generator) kills the process and waits for it, so no orphan keeps synthesising.
    """

    def __init__(self, binary: str, voice: Voice, text: str, chunk_bytes: int = 4096) -> None:
        self.argv = voice.argv(binary)
        self.text = text
        self.chunk_bytes = chunk_bytes
        self.sample_rate = NATIVE_RATE
        self.proc: asyncio.subprocess.Process | None = None
        self.killed = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def __aenter__(self) -> Run:
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
        except OSError as e:  # removed since start(), or not executable
            raise ProviderError(f"cannot run {self.argv[0]}: {e}; {INSTALL_HINT}") from e
        assert self.proc.stdin is not None
        # Buffered by the transport and written as the loop runs: never blocks, however long.
        self.proc.stdin.write(self.text.encode("utf-8") + b"\n")
        self.proc.stdin.close()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Kill the process if it still runs, and reap it."""
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            self.killed = True
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        # A cancellation arriving meanwhile propagates: the process is killed already.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), EXIT_WAIT_S)

    async def pcm(self) -> AsyncIterator[bytes]:
        """The samples, chunk by chunk as espeak-ng writes them (each chunk an even length)."""
        proc = self.proc
        assert proc is not None and proc.stdout is not None and proc.stderr is not None
        header = b""
        offset: int | None = None
        carry = b""
        while True:
            chunk = await proc.stdout.read(self.chunk_bytes)
            if not chunk:
                break
            if offset is None:
                header += chunk
                try:
                    fmt = _wav_format(header)
                except ValueError as e:
                    raise ProviderError(str(e)) from e
                if fmt is None:
                    continue
                self.sample_rate, offset = fmt
                chunk = header[offset:]
            chunk = carry + chunk
            even = len(chunk) & ~1
            carry = chunk[even:]
            if even:
                yield chunk[:even]
        err = (await proc.stderr.read()).decode(errors="replace").strip()
        code = await proc.wait()
        if code != 0 or (offset is None and err):
            raise ProviderError(f"espeak-ng failed (exit status {code}): {err or 'no message'}")
