"""The REAL OpenSIPS 3.6.8 for the ``real_opensips`` tests (test_real_opensips_b2b.py,
test_real_opensips_proxy.py): built once per machine from ``../shared/peers``
(``build-opensips.sh``, cached), run as its own process (``opensips -F``) with a temporary copy
of a shipped script adapted to 127.0.0.1 and free ports, restartable; plus helpers to read
what SIPp put on the wire. The tests skip, saying why, only when the build is impossible."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opensips_kit import LOCAL, SipCaller, free_udp_port
from vc_transport_opensips.mi import MIClient, MIError

ROOT = Path(__file__).resolve().parents[3]
PEERS = ROOT.parent / "shared" / "peers"
DEPLOY = ROOT / "deploy" / "opensips"


def _can_install_tools() -> bool:
    if os.geteuid() == 0:
        return True
    sudo = shutil.which("sudo")
    return sudo is not None and subprocess.run([sudo, "-n", "true"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def opensips_prefix() -> Path:
    """Build OpenSIPS 3.6.8 (cached per machine) and return its install prefix."""
    script = PEERS / "build-opensips.sh"
    if not script.is_file():
        pytest.skip(f"cannot build OpenSIPS 3.6.8: {script} is missing (shared/ beside the repo)")
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("cannot build OpenSIPS 3.6.8: no C compiler (cc/gcc) on this machine")
    missing = [t for t in ("make", "bison", "flex", "pkg-config") if shutil.which(t) is None]
    if missing and not _can_install_tools():
        pytest.skip(f"cannot build OpenSIPS 3.6.8: {', '.join(missing)} missing and no root to install")
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        pytest.fail(f"building OpenSIPS 3.6.8 failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
    prefix = Path(proc.stdout.strip().splitlines()[-1])
    assert (prefix / "sbin" / "opensips").is_file(), proc.stdout
    return prefix


def substitute(text: str, name: str, subs: list[tuple[str, str]]) -> str:
    """Apply each (regex, replacement) exactly once: a shipped script that changed fails loudly."""
    for pattern, repl in subs:
        text, n = re.subn(pattern, repl, text)
        assert n == 1, f"{name} changed: {pattern!r} is not there exactly once"
    return text


def common_subs(modules: Path, sip_port: int) -> list[tuple[str, str]]:
    """127.0.0.1 and a free port for SIP (two UDP workers), this build's module path."""
    return [
        (r"(?m)^socket = udp:0\.0\.0\.0:5060$", f"socket = udp:{LOCAL}:{sip_port}\nudp_workers = 2"),
        (r'(?m)^mpath = ".*"$', f'mpath = "{modules}/"'),
    ]


class _Options(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answered = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data.startswith(b"SIP/2.0 200"):
            self.answered.set()


class RealOpenSIPS:
    """One OpenSIPS process (``opensips -F``: no daemon) on 127.0.0.1, restartable on the same
    ports. ``adapt(text, modules, sip_port, mi_port)`` turns the shipped script into the test's
    copy. Up means: MI ``uptime`` answers (``mi=True``), else a SIP OPTIONS gets 200."""

    def __init__(
        self,
        prefix: Path,
        workdir: Path,
        cfg: Path,
        adapt: Callable[[str, Path, int, int], str],
        mi: bool = True,
    ) -> None:
        self.binary = prefix / "sbin" / "opensips"
        modules = next(
            p for p in (prefix / "lib64/opensips/modules", prefix / "lib/opensips/modules") if p.is_dir()
        )
        self.workdir = workdir
        self.sip_port = free_udp_port()
        self.mi_port = free_udp_port() if mi else 0
        self.cfg = workdir / cfg.name
        self.cfg.write_text(adapt(cfg.read_text(), modules, self.sip_port, self.mi_port))
        self.proc: asyncio.subprocess.Process | None = None
        self.runs = 0
        self.mi = MIClient(LOCAL, self.mi_port, timeout=0.5) if mi else None

    @property
    def sip_addr(self) -> tuple[str, int]:
        return (LOCAL, self.sip_port)

    async def start(self) -> None:
        self.runs += 1
        with (self.workdir / f"opensips-{self.runs}.log").open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                str(self.binary), "-F", "-f", str(self.cfg), stdout=out, stderr=subprocess.STDOUT
            )
        if self.mi is not None and self.mi.transport is None:
            await self.mi.start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                pytest.fail(f"OpenSIPS exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            if await self._answers():
                return
        pytest.fail(f"OpenSIPS did not answer within 15 s:\n{self.log()[-3000:]}")

    async def _answers(self) -> bool:
        if self.mi is not None:
            with contextlib.suppress(MIError):
                await self.mi.call("uptime", limit=0.3)
                return True
            return False
        return await self.options(0.3)

    async def options(self, limit: float) -> bool:
        """Whether a SIP OPTIONS to OpenSIPS gets 200 within ``limit`` seconds."""
        loop = asyncio.get_running_loop()
        t, p = await loop.create_datagram_endpoint(_Options, local_addr=(LOCAL, 0))
        port = t.get_extra_info("sockname")[1]
        branch = "z9hG4bK" + secrets.token_hex(6)
        t.sendto(
            (
                f"OPTIONS sip:{LOCAL}:{self.sip_port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {LOCAL}:{port};branch={branch};rport\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:probe@{LOCAL}>;tag={secrets.token_hex(4)}\r\n"
                f"To: <sip:{LOCAL}>\r\nCall-ID: {secrets.token_hex(8)}\r\nCSeq: 1 OPTIONS\r\n"
                f"Content-Length: 0\r\n\r\n"
            ).encode(),
            self.sip_addr,
        )
        try:
            await asyncio.wait_for(p.answered.wait(), limit)
            return True
        except TimeoutError:
            return False
        finally:
            t.close()

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()  # the main process stops its children and exits
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    async def call(self, method: str, params: Any = None) -> Any:
        assert self.mi is not None, "this OpenSIPS script has no MI socket"
        return await self.mi.call(method, params, limit=1.0)

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("opensips-*.log")))

    async def close(self) -> None:
        await self.stop()
        if self.mi is not None:
            await self.mi.close()


def sipp_messages(cwd: Path, direction: str = "received") -> list[str]:
    """SIP messages SIPp logged (-trace_msg), CRLF line ends, in order."""
    out = []
    for path in sorted(cwd.glob("*_messages.log")):
        for block in re.split(r"(?m)^-{10,}.*$", path.read_text(errors="replace")):
            head, sep, msg = block.partition(" bytes :")
            if sep and direction in head:
                msg = msg.strip("\r\n").replace("\r\n", "\n").replace("\n", "\r\n")
                out.append(msg)
    return out


class RoutedCaller(SipCaller):
    """The scripted caller of opensips_kit, sending everything to OpenSIPS: a plain INVITE
    (OpenSIPS adds its own Via and Record-Route), then in-dialog requests to vc's Contact with
    the Route set learnt from the 200 OK. It answers BYE/NOTIFY 200 and REFER 202."""

    def invite(self, target: tuple[str, int], sdp: str = "", **_: Any) -> bytes:  # type: ignore[override]
        self.invite_branch = "z9hG4bK" + secrets.token_hex(8)
        body = sdp.encode()
        return (
            f"INVITE sip:ai@{target[0]}:{target[1]} SIP/2.0\r\n"
            f"Via: {self.via(self.invite_branch)}\r\n"
            f"Max-Forwards: 70\r\n"
            f'From: "Caller" <sip:+15550001111@{LOCAL}>;tag={self.from_tag}\r\n'
            f"To: <sip:ai@{target[0]}>\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: 1 INVITE\r\n"
            f"Contact: <sip:caller@{LOCAL}:{self.port}>\r\n"
            f"Content-Type: application/sdp\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
