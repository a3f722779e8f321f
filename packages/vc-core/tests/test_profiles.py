"""Per-call profile selection: explicit parameter, rules in file order, default."""

from __future__ import annotations

from vc.call import CallInfo
from vc.testing import FAKE_STACK, config_from_ini, fake_registry

INI = FAKE_STACK + """
[profile.sales]
greeting = Sales here.
match.to = +1555100*, sales
[profile.tr-tenant]
language = tr
greeting = Merhaba.
match.param.tenant = acme-tr
match.transport = opensips
[profile.support]
match.from = +4420*
[profile.default]
greeting = Hello.
"""


def select(**kw) -> str:
    reg = fake_registry()
    cfg = config_from_ini(INI, reg)
    from vc.profiles import select_profile

    return select_profile(cfg.profiles, CallInfo(call_id="c", **kw)).name


def test_called_number_and_sip_user_globs() -> None:
    assert select(transport="twilio", to="+15551001234") == "sales"
    assert select(transport="opensips", user="sales") == "sales"
    assert select(transport="twilio", to="+15559999999") == "default"


def test_all_rules_of_a_profile_must_match() -> None:
    assert select(transport="opensips", params={"tenant": "acme-tr"}) == "tr-tenant"
    assert select(transport="twilio", params={"tenant": "acme-tr"}) == "default"


def test_first_matching_profile_in_file_order_wins() -> None:
    # matches both sales (to) and support (from): sales comes first in the file
    assert select(transport="twilio", to="+15551001234", from_="+442071234567") == "sales"
    assert select(transport="twilio", to="+15550000000", from_="+442071234567") == "support"


def test_explicit_profile_parameter_selects_directly() -> None:
    assert select(transport="twilio", to="+15551001234", params={"profile": "support"}) == "support"
    # an unknown name falls back to the rules
    assert select(transport="twilio", to="+15551001234", params={"profile": "nope"}) == "sales"


def test_profile_settings_and_built_in_default() -> None:
    reg = fake_registry()
    cfg = config_from_ini(INI, reg)
    tr = next(p for p in cfg.profiles if p.name == "tr-tenant")
    assert (tr.language, tr.greeting, tr.match_params) == ("tr", "Merhaba.", {"tenant": ["acme-tr"]})
    bare = config_from_ini(FAKE_STACK, reg)
    assert [p.name for p in bare.profiles] == ["default"]
    assert bare.profiles[0].greeting == "Hello! How can I help you today?"
