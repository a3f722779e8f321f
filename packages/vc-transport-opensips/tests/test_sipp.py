"""Proxy mode against SIPp (Debian sip-tester), a real third-party SIP/RTP caller."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from opensips_kit import VC, free_udp_port

from vc.audio import pcm_to_alaw, pcm_to_ulaw
from vc.testing import until
from vc.testing.calls import speech

HERE = Path(__file__).parent / "sipp"
pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp is not installed")


def read_logs(cwd: Path) -> str:
    return "\n".join(p.read_text(errors="replace")[-3000:] for p in cwd.glob("*_messages.log"))


async def run_sipp(
    scenario: str,
    target: tuple[str, int],
    keys: dict[str, str],
    cwd: Path,
    timeout: float = 60,
) -> tuple[int, str]:
    # SIPp does not expand -key values inside <exec> attributes: render the template here.
    text = (HERE / scenario).read_text()
    for k, v in keys.items():
        text = text.replace(f"[{k}]", v)
    rendered = cwd / scenario
    rendered.write_text(text)
    args = [
        "sipp",
        "-sf",
        str(rendered),
        "-m",
        "1",
        "-i",
        "127.0.0.1",
        "-p",
        str(free_udp_port()),
        "-mp",
        str(free_udp_port() & ~1),
        "-nostdin",
        "-timeout",
        f"{int(timeout)}s",
        "-timeout_error",
        "-trace_err",
        "-trace_msg",
    ]
    args.append(f"{target[0]}:{target[1]}")
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout + 30)
    logs = read_logs(cwd)
    return proc.returncode or 0, out.decode(errors="replace")[-2000:] + logs


@pytest.mark.parametrize("codec, pt", [("PCMU", "0"), ("PCMA", "8")])
async def test_sipp_caller_asks_a_question(tmp_path: Path, codec: str, pt: str) -> None:
    pcm = bytes(8000) + speech("What time is it now, please?") + bytes(8000)
    audio = tmp_path / f"question.{codec.lower()}"
    audio.write_bytes(pcm_to_ulaw(pcm) if codec == "PCMU" else pcm_to_alaw(pcm))
    async with VC(script="what time is it") as vc:
        rc, out = await run_sipp(
            "uac_speech.xml",
            vc.sip_addr,
            {"codec_pt": pt, "codec_name": codec, "audio": str(audio), "hold_ms": "7000"},
            tmp_path,
        )
        assert rc == 0, out
        await until(lambda: vc.recorder.ended, what="call end")
        info, _ = vc.recorder.started[0]
        assert info.from_ == "+15550001111"
        # vc heard the question (a VAD segment reached the STT) and answered it.
        assert vc.recorder.named("transcript") or vc.recorder.named("turn"), vc.recorder.events
        assert not vc.transport.media.pool.in_use
        # SIPp's rtp_stream paced every packet of the file over loopback: none lost or late.
        [quality] = vc.recorder.named("media_quality")
        assert quality["expected"] == quality["received"] >= len(pcm) // 320 - 1, quality
        assert quality["lost"] == quality["late"] == quality["concealed_seconds"] == 0, quality
        assert "200 OK" in out or rc == 0


async def test_sipp_cancel_before_answer(tmp_path: Path) -> None:
    async with VC(transport="answer_delay = 3") as vc:
        rc, out = await run_sipp("uac_cancel.xml", vc.sip_addr, {}, tmp_path, timeout=30)
        assert rc == 0, out
        assert not vc.recorder.started
        await until(lambda: not vc.transport.media.streams, what="media released")
