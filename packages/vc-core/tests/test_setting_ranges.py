"""Issue 12 bug 9: ranges and choices declared on settings, checked by ``vc config check``.

Each reproducer from the issue is refused with a message naming section and key; a default
configuration still passes; ``vc config reference`` shows the ranges.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
from click.testing import CliRunner

from vc import cli
from vc.settings import build, check_settings, describe, setting

CASES = [
    ("[server]\nport = 70000\n", "[server] port = '70000'", "0..65535"),
    ("[server]\nport = -1\n", "[server] port = '-1'", "0..65535"),
    ("[server]\ndrain_timeout = nan\n", "[server] drain_timeout = 'nan'", "finite"),
    ("[server]\ndrain_timeout = inf\n", "[server] drain_timeout = 'inf'", "finite"),
    ("[server]\nmax_calls = -1\n", "[server] max_calls = '-1'", "0..100000"),
    ("[vad]\nconfidence = 1.5\n", "[vad] confidence = '1.5'", "0..1"),
    ("[profile.default]\ntemperature = inf\n", "temperature = 'inf'", "finite"),
    (
        "[vc]\ntransports = opensips\n[transport.opensips]\nrtp_min_port = 40000\n"
        "rtp_max_port = 30000\n",
        "[transport.opensips] rtp_min_port",
        "above rtp_max_port",
    ),
    ("[vc]\ntransports = opensips\n[transport.opensips]\nptime = 5\n",
     "[transport.opensips] ptime = '5'", "10..60"),
    ("[vc]\ntransports = opensips\n[transport.opensips]\nptime = 100\n",
     "[transport.opensips] ptime = '100'", "10..60"),
    ("[llm]\nprovider = llama-ws\n[llm.llama-ws]\ntemperature = inf\n",
     "[llm.llama-ws] temperature = 'inf'", "finite"),
    ("[llm]\nprovider = llama-ws\n[llm.llama-ws]\nmax_tokens = 0\n",
     "[llm.llama-ws] max_tokens = '0'", "1..8192"),
    ("[tts]\nprovider = piper-websocket\n[tts.piper-websocket]\nsample_rate = 1000000\n",
     "[tts.piper-websocket] sample_rate", ""),
]


def check(tmp_path: Path, text: str) -> tuple[int, str]:
    ini = tmp_path / "vc.ini"
    ini.write_text(text)
    result = CliRunner().invoke(cli.cli, ["config", "check", str(ini)])
    return result.exit_code, result.output


@pytest.mark.parametrize(("ini", "where", "why"), CASES)
def test_config_check_refuses_the_reproducer(tmp_path: Path, ini: str, where: str, why: str) -> None:
    code, output = check(tmp_path, ini)
    assert code != 0, output
    assert where in output and why in output, output
    assert "Traceback" not in output


def test_a_default_config_still_passes(tmp_path: Path) -> None:
    code, output = check(tmp_path, "")
    assert code == 0, output
    code, output = check(tmp_path, "[server]\nport = 65535\ndrain_timeout = 0\nmax_calls = 0\n"
                         "[vc]\ntransports = opensips\n[transport.opensips]\nptime = 60\n"
                         "rtp_min_port = 0\nrtp_max_port = 0\n")
    assert code == 0, output


def test_reference_shows_the_ranges() -> None:
    result = CliRunner().invoke(cli.cli, ["config", "reference"])
    assert result.exit_code == 0, result.output
    assert "| `port` | int (0..65535) |" in result.output
    assert "| `ptime` | int (10..60) |" in result.output


@attrs.define
class _Demo:
    rate: int = setting(16000, choices=(8000, 16000), help="rate")
    low: int = setting(1, min=0, max=10, help="low")
    high: int = setting(5, min=0, max=10, help="high")
    gain: float = setting(1.0, help="no range, but finite")
    wild: float = setting(1.0, finite=False, help="may be inf")

    def check_settings(self) -> list[tuple[str, str]]:
        return [("low", "low must not exceed high")] if self.low > self.high else []


def test_setting_keywords_and_cross_field_hook() -> None:
    def errors(**values: str) -> list[str]:
        _, errs = build(_Demo, {k: (v, "test") for k, v in values.items()}, "demo")
        return [str(e) for e in errs]

    assert errors(rate="8000", low="0", high="10", gain="-3.5", wild="inf") == []
    assert errors(rate="22050") == ["[demo] rate = '22050' (from test): expected one of 8000, 16000"]
    assert errors(low="11") == ["[demo] low = '11' (from test): expected a number in 0..10"]
    assert errors(gain="nan") == ["[demo] gain = 'nan' (from test): expected a finite number"]
    assert errors(low="7", high="6") == ["[demo] low: low must not exceed high"]
    assert check_settings(_Demo(low=-1), "demo")[0].key == "low"  # defaults/objects checked too
    assert [f.allowed for f in describe(_Demo)] == ["one of 8000, 16000", "0..10", "0..10", "", ""]
