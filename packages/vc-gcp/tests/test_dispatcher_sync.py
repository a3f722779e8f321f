"""vc-dispatcher-sync: unit tests (table, DNS path, change detection) and the real thing.

The ``real_opensips`` test runs the REAL OpenSIPS 3.6.8 (built with dispatcher, db_text and
mi_datagram by scripts/build-opensips-dispatcher.sh from ../shared/peers, cached) with the GKE
ConfigMap's own script (deploy/gke/services/opensips/opensips.cfg, adapted to 127.0.0.1 and free
ports), the sync with a fake resolver standing for the headless Service, and UDP SIP responders
on 127.0.0.2/127.0.0.3/127.0.0.4 standing for vc pods: after each change of the set, new INVITEs
reach only the pods of the current set.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from vc_gcp import dispatcher_sync as ds
from vc_gcp.dispatcher_sync import DispatcherSync, ResolveError

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "scripts" / "build-opensips-dispatcher.sh"
CFG = REPO / "deploy" / "gke" / "services" / "opensips" / "opensips.cfg"
DEPLOYMENT = CFG.with_name("deployment.yaml")
#: What the test's LoadBalancer address is (TEST-NET-1: nothing answers there).
ADVERTISED_IP = "192.0.2.10"


def opensips_args(cfg: Path, advertised_ip: str) -> list[str]:
    """The OpenSIPS container's own args from the Deployment, with this test's script, and
    $(SIP_ADVERTISED_IP) expanded as the kubelet expands it from the container's env."""
    import yaml

    docs = [d for d in yaml.safe_load_all(DEPLOYMENT.read_text()) if d]
    pod = docs[0]["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "opensips"]
    names = [e["name"] for e in container["env"]]
    assert "SIP_ADVERTISED_IP" in names
    args = [a.replace("$(SIP_ADVERTISED_IP)", advertised_ip) for a in container["args"]]
    return [str(cfg) if a == "/etc/opensips/opensips.cfg" else a for a in args]
TARBALL = REPO.parent / "shared" / "peers" / "opensips-3.6.8.tar.xz"


class FakeResolver:
    def __init__(self, *addresses: str) -> None:
        self.addresses = frozenset(addresses)
        self.error: Exception | None = None

    async def __call__(self, host: str) -> frozenset[str]:
        if self.error is not None:
            raise self.error
        return self.addresses


class FakeMI:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail = False

    async def call(self, method, params=None, limit=None):
        if self.fail:
            raise TimeoutError("no reply")
        self.calls.append(method)
        return "OK"


# -- unit ------------------------------------------------------------------------------------------

def test_table_is_db_text_with_escaped_uris() -> None:
    text = ds.render_table(ds.destinations(["10.0.0.12", "10.0.0.3", "fd00::1"], 8089), setid=1)
    lines = text.splitlines()
    assert lines[0] == ds.TABLE_HEADER and len(lines[0].split()) == 10
    assert lines[1:] == ["1:1:sip\\:10.0.0.3\\:8089::0:0:1:0::vc",
                         "2:1:sip\\:10.0.0.12\\:8089::0:0:1:0::vc",
                         "3:1:sip\\:[fd00\\:\\:1]\\:8089::0:0:1:0::vc"]
    for row in lines[1:]:
        assert len(re.split(r"(?<!\\):", row)) == 10


def test_write_moves_mtime_forward_within_one_second(tmp_path: Path) -> None:
    # db_text re-reads a table only when its mtime (seconds) grew
    f = tmp_path / "t"
    first = ds.write_atomically(f, "a")
    second = ds.write_atomically(f, "b", first)
    assert second > first and int(os.stat(f).st_mtime) == second and f.read_text() == "b"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


async def test_sync_reloads_only_when_the_set_changes(tmp_path: Path) -> None:
    resolver, mi = FakeResolver("10.0.0.1", "10.0.0.2"), FakeMI()
    sync = DispatcherSync("vc-sip", 8089, tmp_path, mi, resolver=resolver)
    assert await sync.sync_once() and mi.calls == ["ds_reload"]
    assert (tmp_path / "version").read_text() == "table_name(string) table_version(int)\ndispatcher:9\n"
    assert not await sync.sync_once() and mi.calls == ["ds_reload"]
    resolver.addresses = frozenset({"10.0.0.2"})
    assert await sync.sync_once() and len(mi.calls) == 2
    assert "10.0.0.1" not in (tmp_path / "dispatcher").read_text()
    # a resolver failure keeps the set; a failed reload is retried next round
    resolver.error = ResolveError("SERVFAIL")
    assert not await sync.sync_once() and sync.current == ("sip:10.0.0.2:8089",)
    resolver.error, resolver.addresses, mi.fail = None, frozenset(), True
    with pytest.raises(TimeoutError):
        await sync.sync_once()
    assert sync.current == ("sip:10.0.0.2:8089",)
    mi.fail = False
    assert await sync.sync_once() and sync.current == ()


async def test_dns_resolver_reads_the_name_and_treats_nxdomain_as_no_pods(monkeypatch) -> None:
    loop = asyncio.get_running_loop()
    assert "127.0.0.1" in await ds.resolve_dns("localhost")  # the real resolver, no mock

    async def answer(host, port, type=0):
        assert (host, port, type) == ("vc-sip.vc.svc.cluster.local", None, socket.SOCK_DGRAM)
        return [(socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("10.4.0.7", 0)),
                (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("10.4.1.9", 0)),
                (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("10.4.0.7", 0))]

    monkeypatch.setattr(loop, "getaddrinfo", answer)
    assert await ds.resolve_dns("vc-sip.vc.svc.cluster.local") == {"10.4.0.7", "10.4.1.9"}

    async def nxdomain(host, port, type=0):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(loop, "getaddrinfo", nxdomain)
    assert await ds.resolve_dns("vc-sip") == frozenset()

    async def again(host, port, type=0):
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(loop, "getaddrinfo", again)
    with pytest.raises(ResolveError):
        await ds.resolve_dns("vc-sip")


def test_once_without_reload_writes_the_table(tmp_path: Path, monkeypatch) -> None:
    async def two(host: str) -> frozenset[str]:
        assert host == "vc-sip.vc.svc.cluster.local"
        return frozenset({"10.0.0.5"})

    monkeypatch.setattr(ds, "resolve_dns", two)
    ds.main(["--host", "vc-sip.vc.svc.cluster.local", "--db-dir", str(tmp_path), "--once",
             "--no-reload"])
    assert "sip\\:10.0.0.5\\:8089" in (tmp_path / "dispatcher").read_text()


# -- the real OpenSIPS -------------------------------------------------------------------------------

def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def dispatcher_prefix() -> Path:
    if not TARBALL.is_file():
        pytest.skip(f"cannot build OpenSIPS 3.6.8: {TARBALL} is missing (shared/ beside the repo)")
    missing = [t for t in ("gcc", "make", "bison", "flex", "pkg-config") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"cannot build OpenSIPS 3.6.8: {', '.join(missing)} missing")
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return Path(proc.stdout.strip().splitlines()[-1])


class Pod(asyncio.DatagramProtocol):
    """A vc pod's SIP user agent as far as the proxy sees it: records INVITEs, answers 486."""

    def __init__(self) -> None:
        self.invites: list[str] = []
        self.record_routes: list[str] = []

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        text = data.decode(errors="replace")
        if not text.startswith("INVITE "):
            return
        self.invites.append(re.search(r"(?mi)^Call-ID:\s*(\S+)", text).group(1))
        self.record_routes += re.findall(r"(?mi)^Record-Route:\s*(.+?)\s*$", text)
        self.transport.sendto(_reply(text, "486 Busy Here"), addr)


def _reply(request: str, status: str) -> bytes:
    head = request.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
    keep = [h for h in head if h.split(":", 1)[0].strip().lower() in ("via", "from", "call-id", "cseq")]
    to = next(h for h in head if h.lower().startswith("to:"))
    return (f"SIP/2.0 {status}\r\n" + "\r\n".join(keep) + f"\r\n{to};tag={secrets.token_hex(4)}\r\n"
            "Content-Length: 0\r\n\r\n").encode()


class Caller(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.finals: dict[str, asyncio.Future[int]] = {}

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        text = data.decode(errors="replace")
        m = re.match(r"SIP/2\.0 (\d{3})", text)
        call_id = re.search(r"(?mi)^Call-ID:\s*(\S+)", text)
        if m and call_id and int(m.group(1)) >= 200:
            fut = self.finals.get(call_id.group(1))
            if fut is not None and not fut.done():
                fut.set_result(int(m.group(1)))

    async def invite(self, proxy: tuple[str, int]) -> tuple[str, int]:
        call_id = secrets.token_hex(8)
        port = self.transport.get_extra_info("sockname")[1]
        branch = "z9hG4bK" + secrets.token_hex(6)
        msg = (f"INVITE sip:ai@127.0.0.1:{proxy[1]} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch={branch}\r\n"
               "Max-Forwards: 70\r\n"
               f"From: <sip:caller@127.0.0.1>;tag={secrets.token_hex(4)}\r\n"
               f"To: <sip:ai@127.0.0.1:{proxy[1]}>\r\n"
               f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
               f"Contact: <sip:caller@127.0.0.1:{port}>\r\nContent-Length: 0\r\n\r\n")
        self.finals[call_id] = asyncio.get_running_loop().create_future()
        self.transport.sendto(msg.encode(), proxy)
        return call_id, await asyncio.wait_for(self.finals[call_id], 5)


def _script(db: Path, modules: Path, sip_port: int, mi_port: int) -> str:
    text = CFG.read_text()
    for pattern, repl in [
        (r"(?m)^socket = udp:0\.0\.0\.0:5060 as @SIP_ADVERTISED_IP@:5060$",
         f"socket = udp:127.0.0.1:{sip_port} as @SIP_ADVERTISED_IP@:5060\nudp_workers = 2"),
        (r'(?m)^mpath = ".*"$', f'mpath = "{modules}/"'),
        (r'"text:///var/lib/opensips/db"', f'"text://{db}"'),
        (r'"udp:127\.0\.0\.1:8888"', f'"udp:127.0.0.1:{mi_port}"'),
    ]:
        text, n = re.subn(pattern, repl, text)
        assert n == 1, f"opensips.cfg changed: {pattern!r} is not there exactly once"
    return text


@pytest.mark.real_opensips
async def test_real_opensips_dispatches_new_calls_to_the_current_set_only(
        dispatcher_prefix: Path, tmp_path: Path) -> None:
    from vc_transport_opensips.mi import MIClient

    loop = asyncio.get_running_loop()
    pod_port, sip_port, mi_port = _free_udp_port(), _free_udp_port(), _free_udp_port()
    pods: dict[str, Pod] = {}
    transports = []
    for ip in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        t, pods[ip] = await loop.create_datagram_endpoint(Pod, local_addr=(ip, pod_port))
        transports.append(t)
    caller_t, caller = await loop.create_datagram_endpoint(Caller, local_addr=("127.0.0.1", 0))
    transports.append(caller_t)

    db = tmp_path / "db"
    db.mkdir()
    resolver = FakeResolver("127.0.0.2", "127.0.0.3")
    mi = MIClient("127.0.0.1", mi_port, timeout=2)
    await mi.start()
    sync = DispatcherSync("vc-sip", pod_port, db, mi, resolver=resolver, interval=0.2)
    sync.mi = None  # the init container: write the table before OpenSIPS starts, no reload
    assert await sync.sync_once()
    sync.mi = mi

    cfg = tmp_path / "opensips.cfg"
    cfg.write_text(_script(db, dispatcher_prefix / "lib64" / "opensips" / "modules", sip_port, mi_port))
    log = (tmp_path / "opensips.log").open("w")
    proc = await asyncio.create_subprocess_exec(
        str(dispatcher_prefix / "sbin" / "opensips"), *opensips_args(cfg, ADVERTISED_IP),
        stdout=log, stderr=subprocess.STDOUT)
    proxy = ("127.0.0.1", sip_port)

    async def calls(n: int) -> dict[str, int]:
        got: dict[str, int] = {}
        for _ in range(n):
            call_id, status = await caller.invite(proxy)
            assert status == 486, status
            (ip,) = [ip for ip, p in pods.items() if call_id in p.invites]
            got[ip] = got.get(ip, 0) + 1
        return got

    def logs() -> str:
        return (tmp_path / "opensips.log").read_text()[-3000:]

    try:
        for _ in range(100):
            try:
                await mi.call("ds_list", limit=0.2)
                break
            except Exception:
                assert proc.returncode is None, logs()
                await asyncio.sleep(0.1)
        else:
            pytest.fail("OpenSIPS did not answer MI:\n" + logs())
        assert await calls(4) == {"127.0.0.2": 2, "127.0.0.3": 2}, logs()
        # In-dialog requests come back through the load balancer's address, not the pod's.
        routes = pods["127.0.0.2"].record_routes
        assert routes and all(f"sip:{ADVERTISED_IP}:5060;" in r for r in routes), routes

        # a pod comes: it gets calls after the next round
        resolver.addresses = frozenset({"127.0.0.2", "127.0.0.3", "127.0.0.4"})
        assert await sync.sync_once()
        assert await calls(6) == {"127.0.0.2": 2, "127.0.0.3": 2, "127.0.0.4": 2}, logs()

        # a pod drains (not ready: gone from the headless DNS): no new call reaches it;
        # twice within one second (db_text sees whole-second mtimes)
        resolver.addresses = frozenset({"127.0.0.3", "127.0.0.4"})
        assert await sync.sync_once()
        resolver.addresses = frozenset({"127.0.0.4"})
        assert await sync.sync_once()
        before = len(pods["127.0.0.2"].invites), len(pods["127.0.0.3"].invites)
        assert await calls(3) == {"127.0.0.4": 3}, logs()
        assert (len(pods["127.0.0.2"].invites), len(pods["127.0.0.3"].invites)) == before
        listed = str(await mi.call("ds_list"))
        assert "127.0.0.4" in listed and "127.0.0.2" not in listed, listed

        # no ready pod: OpenSIPS answers 503 itself
        resolver.addresses = frozenset()
        assert await sync.sync_once()
        call_id, status = await caller.invite(proxy)
        assert status == 503 and not any(call_id in p.invites for p in pods.values())

        # the loop form: a pod comes back within a few intervals
        stop = asyncio.Event()
        task = asyncio.create_task(sync.run(stop))
        resolver.addresses = frozenset({"127.0.0.2"})
        deadline = time.monotonic() + 5
        while sync.current != (f"sip:127.0.0.2:{pod_port}",) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await task
        assert await calls(2) == {"127.0.0.2": 2}, logs()
        assert proc.returncode is None, logs()
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()
        await mi.close()
        for t in transports:
            t.close()
