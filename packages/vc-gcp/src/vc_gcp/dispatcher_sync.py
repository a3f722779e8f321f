"""Keep OpenSIPS's dispatcher set equal to the ready vc pods (``vc-dispatcher-sync``).

On GKE (deploy/gke/services/opensips), OpenSIPS spreads new INVITEs over vc pods with the
``dispatcher`` module, reading its destinations from a ``db_text`` table. This command runs as a
sidecar beside OpenSIPS: every ``interval`` seconds it resolves the vc headless Service's DNS
name (a headless Service publishes only *ready* pods, so a pod that is starting, failing its
readiness probe or terminating is not there), and when the set of addresses changed it rewrites
the table (atomically) and asks OpenSIPS to reload it (MI ``ds_reload`` over ``mi_datagram``).
Nothing happens while the set stays the same.

A DNS failure other than "no such name" keeps the last set (a resolver hiccup must not empty
the dispatcher); "no such name" means no ready pod, and the set becomes empty (OpenSIPS then
answers new INVITEs itself, see the script). The resolver is injectable for tests.

Calls in progress do not depend on the dispatcher: in-dialog requests follow the Record-Route
to the pod that took the call, so removing a pod from the set only stops *new* calls to it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("vc.gcp.dispatcher_sync")

#: Seconds between two resolutions; the drain arithmetic (deploy/gke, test_deploy.py) counts it.
DEFAULT_INTERVAL = 5.0

#: The db_text header of OpenSIPS 3.6's ``dispatcher`` table (table version 9).
TABLE_HEADER = ("id(int,auto) setid(int) destination(string) socket(string,null) state(int) "
                "probe_mode(int) weight(string) priority(int) attrs(string,null) "
                "description(string,null)")
#: The db_text ``version`` table row OpenSIPS checks before it reads the dispatcher table.
VERSION_HEADER = "table_name(string) table_version(int)"
DISPATCHER_TABLE_VERSION = 9

#: A resolver: DNS name -> the addresses it has now. Raises ResolveError when it cannot tell.
Resolver = Callable[[str], Awaitable[frozenset[str]]]


class ResolveError(Exception):
    """The name could not be resolved for a reason that says nothing about the pods."""


class MICaller(Protocol):
    async def call(self, method: str, params: Any = None, limit: float | None = None) -> Any: ...


async def resolve_dns(host: str) -> frozenset[str]:
    """Every address ``host`` resolves to now; empty when the name does not exist (no ready pod)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except socket.gaierror as e:
        if e.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            return frozenset()
        raise ResolveError(f"resolving {host}: {e}") from e
    return frozenset(str(info[4][0]) for info in infos)


def destination(address: str, port: int) -> str:
    ip = ipaddress.ip_address(address)
    return f"sip:[{ip}]:{port}" if ip.version == 6 else f"sip:{ip}:{port}"


def destinations(addresses: Iterable[str], port: int) -> tuple[str, ...]:
    """The SIP URIs of the addresses, in a stable order (numeric, IPv4 first)."""
    ips = sorted({ipaddress.ip_address(a) for a in addresses}, key=lambda i: (i.version, int(i)))
    return tuple(destination(str(ip), port) for ip in ips)


def _escape(value: str) -> str:
    # db_text separates columns with ':' and escapes it (and the backslash) inside strings.
    return value.replace("\\", "\\\\").replace(":", "\\:")


def render_table(dests: Iterable[str], setid: int = 1) -> str:
    """The db_text ``dispatcher`` table: one active destination per row, equal weights."""
    rows = [TABLE_HEADER]
    for n, uri in enumerate(dests, 1):
        # id:setid:destination:socket:state:probe_mode:weight:priority:attrs:description
        rows.append(f"{n}:{setid}:{_escape(uri)}::0:0:1:0::vc")
    return "\n".join(rows) + "\n"


def render_version_table() -> str:
    return f"{VERSION_HEADER}\ndispatcher:{DISPATCHER_TABLE_VERSION}\n"


def write_atomically(path: Path, text: str, not_before: int = 0) -> int:
    """Write ``path`` by rename; its mtime (whole seconds) is later than ``not_before``.

    db_text (``db_mode`` 1) re-reads a table only when the file's mtime, in seconds, grew:
    two changes within one second would otherwise leave OpenSIPS with the older one.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    mtime = max(int(time.time()), not_before + 1)
    os.utime(tmp, (mtime, mtime))
    os.replace(tmp, path)
    return mtime


class DispatcherSync:
    """Resolve, compare, write the table, ``ds_reload``; one step per :meth:`sync_once`."""

    def __init__(self, host: str, port: int, db_dir: Path, mi: MICaller | None, *,
                 setid: int = 1, resolver: Resolver = resolve_dns,
                 interval: float = DEFAULT_INTERVAL) -> None:
        self.host = host
        self.port = port
        self.table = db_dir / "dispatcher"
        self.version_table = db_dir / "version"
        self.mi = mi
        self.setid = setid
        self.resolver = resolver
        self.interval = interval
        #: the set OpenSIPS has loaded (None: unknown, the first sync writes and reloads)
        self.current: tuple[str, ...] | None = None
        self._mtime = 0
        self.reloads = 0

    def write(self, dests: tuple[str, ...]) -> None:
        if not self.version_table.is_file() or self.version_table.read_text() != render_version_table():
            write_atomically(self.version_table, render_version_table())
        self._mtime = write_atomically(self.table, render_table(dests, self.setid), self._mtime)

    async def sync_once(self) -> bool:
        """One round; True when the set changed and OpenSIPS reloaded it."""
        try:
            addresses = await self.resolver(self.host)
        except ResolveError as e:
            log.warning("%s; keeping the %s destinations", e, len(self.current or ()))
            return False
        dests = destinations(addresses, self.port)
        if dests == self.current:
            return False
        self.write(dests)
        if self.mi is not None:
            # raises on failure: self.current stays as it was, so the next round retries
            await self.mi.call("ds_reload")
            self.reloads += 1
        log.info("dispatcher set %d now %s", self.setid, ", ".join(dests) or "empty")
        self.current = dests
        return True

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sync_once()
            except Exception as e:  # MI timeout, unwritable table: log, retry next round
                log.warning("dispatcher sync failed: %s", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="vc-dispatcher-sync",
        description="Keep OpenSIPS's dispatcher db_text table equal to the addresses a (headless "
        "Service) DNS name resolves to, and ds_reload over mi_datagram when they change. Every "
        "option also reads VC_DISPATCHER_<OPTION>.")
    p.add_argument("--host", default=env("VC_DISPATCHER_HOST", "vc-sip"),
                   help="DNS name of vc's headless Service (ready pods only)")
    p.add_argument("--port", type=int, default=int(env("VC_DISPATCHER_PORT", "8089")),
                   help="vc's SIP port ([transport.opensips] sip_port)")
    p.add_argument("--db-dir", type=Path, default=Path(env("VC_DISPATCHER_DB_DIR", "/var/lib/opensips/db")),
                   help="db_text database directory (db_url text://<dir>)")
    p.add_argument("--setid", type=int, default=int(env("VC_DISPATCHER_SETID", "1")))
    p.add_argument("--mi", default=env("VC_DISPATCHER_MI", "127.0.0.1:8888"),
                   help="OpenSIPS mi_datagram address ip:port")
    p.add_argument("--interval", type=float,
                   default=float(env("VC_DISPATCHER_INTERVAL", str(DEFAULT_INTERVAL))),
                   help="seconds between resolutions")
    p.add_argument("--once", action="store_true", help="one round, then exit (an init container)")
    p.add_argument("--no-reload", action="store_true",
                   help="write the table only (before OpenSIPS starts, it reads it then)")
    p.add_argument("--check", action="store_true",
                   help="exit 0 when OpenSIPS answers MI ds_list, else 1 (a readiness probe)")
    p.add_argument("--log-level", default=env("VC_DISPATCHER_LOG_LEVEL", "info"))
    return p.parse_args(argv)


async def _main(args: argparse.Namespace) -> None:
    mi = None
    if args.check or not args.no_reload:
        try:
            from vc_transport_opensips.mi import MIClient
        except ImportError:  # pragma: no cover - the vc image has it
            raise SystemExit("vc-dispatcher-sync needs vc-transport-opensips (its MI client)") from None
        ip, _, port = args.mi.rpartition(":")
        mi = MIClient(ip.strip("[]"), int(port))
        await mi.start()
    sync = DispatcherSync(args.host, args.port, args.db_dir, mi, setid=args.setid,
                          resolver=resolve_dns, interval=args.interval)
    try:
        if args.check:
            assert mi is not None
            try:
                await mi.call("ds_list")
            except Exception as e:
                raise SystemExit(f"OpenSIPS MI at {args.mi} does not answer: {e}") from None
            return
        if args.once:
            await sync.sync_once()
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await sync.run(stop)
    finally:
        if mi is not None:
            await mi.close()


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(_main(args))


if __name__ == "__main__":  # pragma: no cover
    main()
