"""vc's transport contract in B2B mode, against the real OpenSIPS 3.6 running the shipped
``deploy/opensips/opensips-b2b.cfg``: the caller dials OpenSIPS, whose B2B logic hands the
call to vc over MI and events; media flows between the caller and vc directly.

Proxy mode runs the same contract in ``test_contract.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
from opensips_kit import LOCAL, RtpPhone
from real_opensips import RealOpenSIPS, RoutedCaller
from test_contract import PhoneCaller
from test_real_opensips_b2b import b2b_call, opensips, pytestmark  # noqa: F401 (fixture)
from vc_transport_opensips.settings import OpenSIPSSettings
from vc_transport_opensips.transport import OpenSIPSTransport

from vc.providers import TransportProvider
from vc.testing.contracts import TransportContract


class TestOpenSIPSB2BContract(TransportContract):
    provider = OpenSIPSTransport

    @pytest.fixture(autouse=True)
    def _real_opensips(self, opensips: RealOpenSIPS) -> None:  # noqa: F811 (the fixture)
        self.server = opensips

    def make_settings(self) -> OpenSIPSSettings:
        return OpenSIPSSettings(
            mode="b2b", sip_ip=LOCAL, sip_port=0, rtp_bind_ip=LOCAL, rtp_min_port=0,
            event_ip=LOCAL, event_port=0, mi_ip=LOCAL, mi_port=self.server.mi_port,
            mi_timeout=0.5, subscription_retry=0.3, probe_interval=0.5,
        )

    async def connect_caller(self, transport: TransportProvider, http_url: str) -> Any:
        assert isinstance(transport, OpenSIPSTransport)
        sip, phone = await RoutedCaller().start(), await RtpPhone().start()
        caller = PhoneCaller(sip, phone, self.server.sip_addr)
        try:
            await b2b_call(self.server, sip, phone)
        except BaseException:
            await caller.close()
            raise
        return caller
