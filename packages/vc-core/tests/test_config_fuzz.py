"""Issue 12: property-based tests for the INI + environment loader. ``vc.config.load`` with
arbitrary INI text and ``VC_*`` environment mappings returns ``(Config, [])`` or
``(None, [ConfigError, ...])``, the documented error list, and never raises; the file it
opens is closed again.

The number of examples per property is ``VC_FUZZ_EXAMPLES`` (default 150; ``nox -s fuzz``: 5000).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from vc.config import CORE_SECTIONS, Config, env_name, load
from vc.settings import ConfigError
from vc.testing import FAKE_STACK, fake_registry

FUZZ = settings(max_examples=int(os.environ.get("VC_FUZZ_EXAMPLES", "150")), deadline=None)
REGISTRY = fake_registry()

SECTIONS = [*CORE_SECTIONS, "stt", "llm", "tts", "transport.twilio", "profile.default", "profile.x",
            "observer.log", "VAD", "general", "asr", "stt.fake", "tts.fake", "llm.fake"]
KEYS = ["provider", "transports", "log_level", "max_calls", "port", "host", "drain_timeout",
        "threshold", "min_words", "greeting", "goodbye", "match.to", "ms_per_char", "language",
        "sample_rate", "rtp_min_port", "rtp_max_port", "observers", "profile", "system_prompt"]
VALUES = (st.sampled_from(["", "0", "-1", "1e309", "nan", "inf", "fake", "true", "twilio",
                           "99999999999999999999", "0.5", "%(x)s", "a\n b", "debug"])
          | st.text(max_size=20))
names = st.sampled_from(SECTIONS) | st.text(max_size=10)
keys = st.sampled_from(KEYS) | st.text(max_size=10)


@st.composite
def ini_text(draw) -> str:
    lines: list[str] = []
    if draw(st.booleans()):
        lines.append(FAKE_STACK)
    for _ in range(draw(st.integers(0, 5))):
        lines.append(f"[{draw(names)}]")
        for _ in range(draw(st.integers(0, 4))):
            sep = draw(st.sampled_from([" = ", "=", ": ", " "]))
            lines.append(f"{draw(keys)}{sep}{draw(VALUES)}")
    text = "\n".join(lines)
    if draw(st.booleans()):  # arbitrary damage
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.text(max_size=20)) + text[at:]
    return text


env_vars = st.dictionaries(
    st.builds(env_name, st.sampled_from(SECTIONS), st.sampled_from(KEYS))
    | st.sampled_from(["VC_PLUGIN_MODULES", "VC_CONFIG_FILE", "OAVC_CONFIG_FILE", "VC_"])
    | st.text(max_size=10).map(lambda s: "VC_" + s),
    VALUES,
    max_size=5,
)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def check(result: tuple[Config | None, list[ConfigError]]) -> None:
    cfg, errors = result
    assert isinstance(errors, list)
    assert all(isinstance(e, ConfigError) for e in errors)
    assert (cfg is None) == bool(errors)
    if cfg is not None:
        assert isinstance(cfg, Config)
    for e in errors:
        assert isinstance(str(e), str)


@given(ini_text(), env_vars, st.sampled_from(["utf-8", "latin-1", "bytes"]))
@example("[vc]\nmax_calls = 1e309\n", {}, "utf-8")
@example("[server]\nport = \n", {env_name("server", "port"): "nan"}, "utf-8")
@example("\ufeff[vc", {}, "utf-8")
@FUZZ
def test_load_returns_config_or_the_error_list(text: str, env: dict[str, str], encoding: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vc.ini"
        if encoding == "bytes":
            path.write_bytes(text.encode("utf-8", "surrogatepass")[:50] + b"\xff\xfe" + text.encode(
                "utf-8", "surrogatepass")[50:])
        else:
            path.write_bytes(text.encode(encoding, "replace") if encoding != "utf-8"
                             else text.encode("utf-8", "surrogatepass"))
        before = open_fds()
        check(load(path, REGISTRY, env))
        env_path = {**env, "VC_CONFIG_FILE": str(path)}
        check(load(None, REGISTRY, env_path))
        assert open_fds() == before  # the INI file was closed again


@given(env_vars)
@FUZZ
def test_environment_alone(env: dict[str, str]) -> None:
    env = {k: v for k, v in env.items() if k not in ("VC_CONFIG_FILE", "OAVC_CONFIG_FILE")}
    check(load(None, REGISTRY, env))
    check(load("/nonexistent/vc.ini", REGISTRY, env))
