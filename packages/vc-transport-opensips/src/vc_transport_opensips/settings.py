"""Settings of the OpenSIPS transport (``[transport.opensips]``).

The key names are fixed: :mod:`vc.legacy` translates the existing system's ``[engine]``,
``[opensips]`` and ``[rtp]`` sections into them (``[rtp] min_port`` -> ``rtp_min_port``...).
"""

from __future__ import annotations

from typing import Literal

import attrs

from vc.settings import setting

SUPPORTED_CODECS = ("PCMU", "PCMA")


def _check_codecs(instance: object, attribute: attrs.Attribute, value: list[str]) -> None:
    unknown = [c for c in value if c.upper() not in SUPPORTED_CODECS]
    if unknown:
        raise ValueError(
            f"codecs: unsupported {', '.join(unknown)} (supported: {', '.join(SUPPORTED_CODECS)})"
        )
    if not value:
        raise ValueError("codecs: name at least one codec")


def _check_port(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(f"{attribute.name}: {value} is not a UDP port (0-65535)")


@attrs.define
class OpenSIPSSettings:
    mode: Literal["proxy", "b2b"] = setting(
        "proxy",
        help="proxy: OpenSIPS relays INVITEs to vc's own SIP UAS (sip_ip:sip_port); "
        "b2b: OpenSIPS terminates SIP (b2b_entities) and drives vc through E_UA_SESSION "
        "events and MI commands",
    )
    # -- proxy mode: vc's SIP user agent -------------------------------------------------
    sip_ip: str = setting("0.0.0.0", help="proxy mode: address the SIP UAS listens on (UDP)")
    sip_port: int = setting(
        8089,
        help="proxy mode: UDP port of the SIP UAS (0: any free port)",
        validator=_check_port,
        min=0,
        max=65535,
    )
    sip_advertised_ip: str = setting(
        "",
        help="proxy mode: address put in Contact/Via (empty: sip_ip if it is a real address, "
        "else the advertised RTP address, else the interface that routes to the caller)",
    )
    sip_advertised_port: int = setting(
        0,
        help="proxy mode: port put in Contact/Via (0: the port listened on)",
        validator=_check_port, min=0, max=65535,
    )
    user_agent: str = setting("vc", help="User-Agent/Server header value")
    answer_delay: float = setting(
        0.0,
        min=0,
        max=60,
        help="seconds to ring (180 Ringing) before answering an INVITE (both modes; in b2b "
        "mode the 180 goes out through ua_session_reply)",
    )
    # -- b2b mode: event_datagram + mi_datagram --------------------------------------------
    event_ip: str = setting(
        "127.0.0.1", help="b2b mode: address the E_UA_SESSION event socket listens on (UDP)"
    )
    event_port: int = setting(
        8090,
        help="b2b mode: UDP port of the event socket (0: any free port)",
        validator=_check_port, min=0, max=65535,
    )
    event_advertised_ip: str = setting(
        "",
        help="b2b mode: address OpenSIPS sends events to, used in event_subscribe "
        "(empty: event_ip, or the interface that routes to OpenSIPS when event_ip is 0.0.0.0)",
    )
    mi_ip: str = setting("127.0.0.1", help="b2b mode: address of OpenSIPS's mi_datagram socket")
    mi_port: int = setting(
        8080,
        help="b2b mode: UDP port of OpenSIPS's mi_datagram socket",
        validator=_check_port,
        min=0,
        max=65535,
        remote=True,
    )
    mi_transport: str = setting(
        "datagram", help="b2b mode: MI transport; only datagram (JSON-RPC over UDP) is supported"
    )
    mi_timeout: float = setting(2.0, min=0.01, max=60, help="b2b mode: seconds to wait for an MI reply")
    subscription_expire: int = setting(
        120, min=1, max=86400, help="b2b mode: lifetime in seconds asked for in event_subscribe"
    )
    subscription_refresh: float = setting(
        30.0,
        min=0.1,
        max=86400,
        help="b2b mode: seconds between re-subscriptions; capped below subscription_expire "
        "(with probe_interval = 0 also how fast a restarted OpenSIPS is noticed)",
    )
    subscription_retry: float = setting(
        1.0,
        min=0.01,
        max=3600,
        help="b2b mode: seconds between subscription attempts while OpenSIPS is unreachable",
    )
    probe_interval: float = setting(
        1.0,
        min=0,
        max=3600,
        help="b2b mode: seconds between MI uptime probes; an OpenSIPS that stops answering "
        "makes the transport not ready, a restarted one (new start time) is subscribed to again "
        "at once and its lost calls are ended (0: no probes, rely on subscription_refresh)",
    )
    # -- media -----------------------------------------------------------------------------
    rtp_min_port: int = setting(
        35000,
        help="lowest RTP port (0: let the OS pick any free port per call)",
        validator=_check_port, min=0, max=65535,
    )
    rtp_max_port: int = setting(35100, help="highest RTP port", validator=_check_port, min=0, max=65535)
    rtp_bind_ip: str = setting("0.0.0.0", help="address RTP sockets bind to")
    rtp_ip: str = setting(
        "",
        help="address advertised in SDP (c=); empty: $RTP_HOST_IP, $EXTERNAL_RTP_IP, $HOST_IP, "
        "rtp_bind_ip if it is a real address, else the interface that routes to the caller",
    )
    codecs: list[str] = setting(
        factory=lambda: ["PCMU", "PCMA"],
        help="codecs in order of preference (PCMU, PCMA); the first one the caller offers wins",
        validator=_check_codecs,
    )
    ptime: int = setting(20, min=10, max=60, help="packet time in ms when the offer has no a=ptime (10-60)")
    jitter_min_ms: int = setting(
        20, min=0, max=2000, help="shortest wait for a missing RTP packet before it is concealed"
    )
    jitter_max_ms: int = setting(
        200, min=0, max=5000, help="longest wait for a missing RTP packet (the wait adapts to late packets)"
    )
    rtp_timeout: float = setting(
        0.0, min=0, max=86400, help="hang up after this many seconds without caller RTP (0: never)"
    )

    def check_settings(self) -> list[tuple[str, str]]:
        """Fields checked against each other (after each one's own range)."""
        problems = []
        if self.rtp_min_port and self.rtp_max_port < self.rtp_min_port:
            problems.append(
                ("rtp_min_port", f"rtp_min_port {self.rtp_min_port} is above rtp_max_port "
                 f"{self.rtp_max_port}; the RTP port range must be low..high")
            )
        if self.jitter_max_ms < self.jitter_min_ms:
            problems.append(
                ("jitter_min_ms", f"jitter_min_ms {self.jitter_min_ms} is above jitter_max_ms "
                 f"{self.jitter_max_ms}")
            )
        return problems
