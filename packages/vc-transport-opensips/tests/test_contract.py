"""vc's transport contract, for proxy mode (B2B mode needs OpenSIPS to be ready; see test_b2b)."""

from __future__ import annotations

from vc_transport_opensips.settings import OpenSIPSSettings
from vc_transport_opensips.transport import OpenSIPSTransport

from vc.testing.contracts import TransportContract


class TestOpenSIPSProxyContract(TransportContract):
    provider = OpenSIPSTransport

    def make_settings(self) -> OpenSIPSSettings:
        return OpenSIPSSettings(
            sip_ip="127.0.0.1", sip_port=0, rtp_bind_ip="127.0.0.1", rtp_min_port=0
        )
