"""Which address to advertise (SDP c=, SIP Contact/Via, event_subscribe socket).

Order for RTP: ``rtp_ip`` setting, then ``$RTP_HOST_IP``, ``$EXTERNAL_RTP_IP``, ``$HOST_IP``
(the existing system's variables), then ``rtp_bind_ip`` if it is a real address, then the
local address of the interface that routes to the peer. A wildcard (0.0.0.0) is never
advertised, and a loopback address only when configured explicitly or when the peer itself
is on loopback.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping

ENV_RTP = ("RTP_HOST_IP", "EXTERNAL_RTP_IP", "HOST_IP")


class AddressError(Exception):
    """No address can be advertised to this peer; the message says what to configure."""


def is_wildcard(ip: str) -> bool:
    return ip.strip() in ("", "0.0.0.0", "::", "[::]")


def is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip.strip("[]")).is_loopback
    except ValueError:
        return ip == "localhost"


def route_to(peer: str) -> str:
    """The local address the kernel would use to reach ``peer`` (no packet is sent)."""
    family = socket.AF_INET6 if ":" in peer else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect((peer, 9))
            return str(s.getsockname()[0])
        except OSError:
            return ""


def configured_rtp_ip(setting: str, env: Mapping[str, str] | None = None) -> str:
    """The explicitly configured RTP address (setting, then environment), or ''."""
    if setting.strip():
        return setting.strip()
    env = os.environ if env is None else env
    for name in ENV_RTP:
        value = env.get(name, "").strip()
        if value:
            return value
    return ""


def advertise(explicit: str, bind_ip: str, peer: str, what: str) -> str:
    """Pick the address to advertise to ``peer``; raises AddressError if none is usable."""
    if explicit:
        return explicit
    if not is_wildcard(bind_ip) and (not is_loopback(bind_ip) or is_loopback(peer)):
        return bind_ip
    local = route_to(peer) if peer else ""
    if local and not is_wildcard(local) and (not is_loopback(local) or is_loopback(peer)):
        return local
    raise AddressError(
        f"no address to advertise for {what} to {peer or 'the peer'}: set it explicitly "
        f"({'[transport.opensips] rtp_ip or $RTP_HOST_IP' if what == 'RTP' else what})"
    )
