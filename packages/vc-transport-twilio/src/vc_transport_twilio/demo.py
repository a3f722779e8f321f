"""``vc demo``: a phone call into vc's embedded default stack, placed the way Twilio places it.

1. vc starts in a child process exactly as ``vc serve`` runs it with no configuration file
   (Twilio transport on 127.0.0.1 in local development mode, Silero VAD, faster-whisper
   tiny.en, SmolLM2 on llama.cpp, Piper joe-medium), showing each model as it becomes ready.
2. The Twilio simulator fetches the voice webhook, opens the Media Stream and streams µ-law
   audio every 20 ms like a phone line.
3. The caller speaks a short conversation (espeak-ng reading the text below, or the user's own
   recordings with ``--wav``); the last utterance is spoken over the bot's answer (barge-in).
4. Per turn it prints what the caller said, what vc heard, what the bot answered and where the
   time went; it writes the call as a stereo WAV (caller left, bot right), a timeline plot
   and a JSON summary. The exit status is 1 if a turn went unanswered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

from vc.audio import ulaw_to_pcm
from vc_transport_twilio.conversation import (
    RATE,
    STAGE_LABELS,
    STAGES,
    Turn,
    Utterance,
    espeak,
    fill_from_server,
    read_wav,
    speak,
    wait_quiet,
)
from vc_transport_twilio.demo_server import ServerProcess
from vc_transport_twilio.simulator import SimulatedCall, TwilioCloud

#: What the caller says (espeak-ng reads it). The last line is spoken over the bot's answer.
CONVERSATION = (
    "Hello, what is the capital of France?",
    "Can you tell me a short story about a brave little cat?",
    "Sorry to interrupt, that is all for today, thank you and goodbye!",
)
ANSWER_TIMEOUT = 30.0
#: What the header says the server runs (``vc demo --language tr`` names its own).
DEFAULT_STACK = "Silero VAD, faster-whisper tiny.en, SmolLM2 on llama.cpp, Piper joe-medium"
#: Seconds of the bot's answer the caller lets play before talking over it.
INTERRUPT_AFTER = 1.5


class Printer:
    """Progress and results on the terminal."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self._ticker = False

    def line(self, text: str = "") -> None:
        if self._ticker:
            self.stream.write("\r\033[K")
            self._ticker = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def tick(self, text: str) -> None:
        if not self.tty:
            return
        self.stream.write("\r\033[K" + text)
        self.stream.flush()
        self._ticker = True


def _provider_label(key: str) -> str:
    kind, _, name = key.partition(".")
    return f"{kind} {name}"


def _ms(value: float | None) -> str:
    return "  -  " if value is None else f"{value * 1000:.0f} ms"


# -- the call ----------------------------------------------------------------------------------


async def converse(
    call: SimulatedCall,
    utterances: list[Utterance],
    *,
    interrupt: bool = True,
    interrupt_after: float = INTERRUPT_AFTER,
    answer_timeout: float = ANSWER_TIMEOUT,
    on_turn: Any = None,
) -> list[Turn]:
    """Speak each utterance after the bot's previous answer; the last one over the answer."""
    turns: list[Turn] = []
    for i, utterance in enumerate(utterances):
        if call.closed_at is not None:  # the bot hung up early: the rest goes unsaid
            break
        over_bot = interrupt and i == len(utterances) - 1 and i > 0
        if over_bot and turns[-1].first_audio is not None:
            await asyncio.sleep(max(0.0, turns[-1].first_audio + interrupt_after - time.monotonic()))
            last = call.media[-1][0] if call.media else 0.0
            over_bot = time.monotonic() - last < 0.2  # the bot is still talking
        if not over_bot:
            await wait_quiet(call, within=answer_timeout * 2)
            await asyncio.sleep(0.3)
        onset, end = await speak(call, utterance)
        turn = Turn(utterance.text, onset, end, interrupted_bot=over_bot)
        turns.append(turn)
        try:
            turn.first_audio = await call.wait_for_bot_speech(after=end, within=answer_timeout)
        except TimeoutError:
            turn.first_audio = None
        if on_turn is not None:
            on_turn(turn)
    return turns


def analyse(call: SimulatedCall, turns: list[Turn], events: list[dict[str, Any]]) -> None:
    """Fill in what the server reported and the barge-in timings."""
    for i, turn in enumerate(turns):
        nxt = turns[i + 1] if i + 1 < len(turns) else None
        stage_until = nxt.onset if nxt else float("inf")
        # An interrupted answer joins the conversation when it is cut, just after the next
        # utterance started: replies count until the next utterance was transcribed.
        reply_until = float("inf")
        if nxt is not None:
            heard_next = [e["t"] for e in events
                          if e["event"] == "transcript" and e["t"] > nxt.onset]
            reply_until = heard_next[0] if heard_next else nxt.end + 1.0
        fill_from_server(turn, events, stage_until, reply_until)
        if turn.interrupted_bot:
            clears = [t for t in call.clears if t > turn.onset]
            turn.clear_at = clears[0] if clears else None
            limit = (turn.clear_at if turn.clear_at is not None else turn.end) + 0.3
            frames = [t for t, _ in call.media if t <= limit]
            turn.last_bot_frame = frames[-1] if frames else None


# -- outputs -----------------------------------------------------------------------------------


def write_wav(path: Path, call: SimulatedCall, t0: float, t1: float) -> None:
    """Stereo 8 kHz: the caller's audio as sent (left), the bot's as played (right)."""
    n = int((t1 - t0) * RATE) + RATE // 50
    left = np.zeros(n, dtype=np.int16)
    right = np.zeros(n, dtype=np.int16)

    def place(track: np.ndarray, t_end: float, pcm: bytes) -> None:
        x = np.frombuffer(pcm, dtype="<i2")
        start = round((t_end - t0) * RATE) - len(x)
        if start < 0:
            x, start = x[-start:], 0
        x = x[: max(0, n - start)]
        track[start : start + len(x)] = x

    for t, frame in call.sent:  # a frame leaves when its 20 ms have been captured
        place(left, t, ulaw_to_pcm(frame))
    for t, pcm in call.played:  # a frame is played over the 20 ms after it is taken
        place(right, t + len(pcm) / 2 / RATE, pcm)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.stack([left, right], axis=1).astype("<i2").tobytes())


def plot_timeline(path: Path, call: SimulatedCall, turns: list[Turn], t0: float, t1: float,
                  greeting: str) -> bool:
    """A PNG of both sides' audio with the stage markers of every turn (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from vc.audio import rms

    def envelope(frames: list[tuple[float, bytes]], decode: bool) -> tuple[list[float], list[float]]:
        xs, ys = [], []
        for t, f in frames:
            pcm = ulaw_to_pcm(f) if decode else f
            xs.append(t - t0)
            ys.append(rms(pcm))
        return xs, ys

    fig, (ax_c, ax_b) = plt.subplots(2, 1, figsize=(14, 6), sharex=True,
                                     gridspec_kw={"hspace": 0.45})
    cx, cy = envelope(call.sent, True)
    bx, by = envelope(call.played, False)
    ax_c.bar(cx, cy, width=0.02, color="#1f77b4", align="edge")
    ax_b.bar(bx, by, width=0.02, color="#d62728", align="edge")
    top = max([0.05, *cy, *by]) * 1.25
    for ax, title in ((ax_c, "caller (sent)"), (ax_b, "bot (played to the caller)")):
        ax.set_ylim(0, top)
        ax.set_ylabel("level")
        ax.set_title(title, loc="left", fontsize=10)
    marks = (("vad_stop", "VAD stop", "#ff7f0e"), ("transcript", "transcript", "#2ca02c"),
             ("first_token", "first token", "#9467bd"), ("tts_first", "first TTS audio", "#8c564b"),
             ("first_audio", "first audio at caller", "#d62728"))
    used: set[str] = set()
    for i, turn in enumerate(turns, 1):
        ax_c.axvspan(turn.onset - t0, turn.end - t0, color="#1f77b4", alpha=0.08)
        ax_c.text(turn.onset - t0, top * 0.92, f"{i}: {turn.said[:48]}", fontsize=7, va="top")
        if turn.heard:
            ax_c.text(turn.end - t0, top * 0.72, f"heard: {turn.heard[:48]}", fontsize=7,
                      va="top", color="#2ca02c")
        if turn.answer:
            start = (turn.first_audio or turn.end) - t0
            ax_b.text(start, top * 0.92, turn.answer[:70], fontsize=7, va="top", color="#d62728")
        for attr, label, color in marks:
            t = getattr(turn, attr)
            if t is None:
                continue
            for ax in (ax_c, ax_b):
                ax.axvline(t - t0, color=color, lw=0.9, ls="--",
                           label=label if label not in used and ax is ax_c else None)
            used.add(label)
        if turn.clear_at is not None:
            ax_b.axvline(turn.clear_at - t0, color="black", lw=1.2)
            ax_b.text(turn.clear_at - t0, top * 0.6, " clear (barge-in)", fontsize=7)
    if greeting:
        ax_b.text(0, top * 0.72, f"greeting: {greeting[:50]}", fontsize=7, va="top")
    ax_b.set_xlabel("seconds since the call was connected")
    ax_b.set_xlim(0, t1 - t0)
    ax_c.legend(loc="upper right", fontsize=7, ncol=5)
    fig.suptitle("vc demo: one simulated Twilio call", fontsize=11)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows), encoding="utf-8")


def report_turn(p: Printer, i: int, turn: Turn, answer_timeout: float = ANSWER_TIMEOUT) -> None:
    note = " (spoken over the bot)" if turn.interrupted_bot else ""
    p.line(f"turn {i}{note}")
    p.line(f"  caller said   {turn.said}")
    p.line(f"  bot heard     {turn.heard or '(nothing)'}")
    p.line(f"  bot answered  {turn.answer or '(nothing)'}")
    if not turn.answered:
        p.line("  latency       UNANSWERED: no bot audio within "
               f"{answer_timeout:g} s of the end of speech")
    else:
        stages = turn.stages()
        chain = " -> ".join(f"{STAGE_LABELS[s]} +{_ms(stages[s])}" for s in STAGES)
        p.line(f"  latency       {_ms(turn.total)} from end of speech to the first bot audio "
               "at the caller:")
        p.line(f"                end of speech -> {chain}")
    if turn.interrupted_bot:
        b = turn.barge_in()
        p.line(f"  barge-in      caller started speaking -> clear {_ms(b['clear'])}, "
               f"-> last bot audio {_ms(b['last_bot_frame'])}")
    p.line()


# -- the command -------------------------------------------------------------------------------


async def run_demo(
    utterances: list[Utterance],
    out_dir: Path,
    *,
    config_file: str | None,
    interrupt: bool,
    plot: bool,
    verbose: bool,
    p: Printer,
    log: Any = None,
    log_path: Path | None = None,
    answer_timeout: float = ANSWER_TIMEOUT,
    what: str = "vc's embedded default stack",
    stack: str = DEFAULT_STACK,
) -> int:
    p.line(f"vc demo: a simulated Twilio phone call into {what}")
    p.line(f"  ({stack + '; ' if stack else ''}{os.cpu_count()} CPU cores, no GPU used)")
    p.line()
    p.line("starting vc (models load once; nothing is downloaded):")
    shown: set[str] = set()

    def on_event(e: dict[str, Any]) -> None:
        if e["event"] == "progress":
            for key, seconds in sorted(e["done"].items(), key=lambda kv: kv[1]):
                if key not in shown:
                    shown.add(key)
                    p.line(f"  {e['seconds']:5.1f} s  {_provider_label(key)} ready "
                           f"(started in {seconds:.2f} s)")
            if e["waiting"]:
                p.tick(f"  {e['seconds']:5.1f} s  loading: "
                       + ", ".join(_provider_label(w) for w in e["waiting"]))

    server = ServerProcess(config_file, log=log, log_level="info" if verbose else "warning",
                           on_event=on_event)
    try:
        await server.start()
        ticker = asyncio.create_task(_tick(p, server, shown))
        try:
            ready = await server.ready()
        except RuntimeError as e:
            p.line(f"error: vc did not start: {e}")
            if log_path is not None and log is not None:
                p.line(f"  (server log: {log_path})")
            return 2
        finally:
            ticker.cancel()
        p.line(f"vc is ready {ready['seconds']:.1f} s after it was started, on {server.url}")
        p.line("  (Twilio transport in local development mode: signatures are not checked, "
               "only this machine can call)")
        p.line()
        return await _call(server, utterances, out_dir, interrupt=interrupt, plot=plot, p=p,
                           answer_timeout=answer_timeout)
    finally:
        await server.stop()


async def _tick(p: Printer, server: ServerProcess, shown: set[str]) -> None:
    while True:
        await asyncio.sleep(0.25)
        if server.url and not shown:
            p.tick(f"  {time.monotonic() - server.started_at:5.1f} s  loading models...")


async def _call(server: ServerProcess, utterances: list[Utterance], out_dir: Path, *,
                interrupt: bool, plot: bool, p: Printer,
                answer_timeout: float = ANSWER_TIMEOUT) -> int:
    async with TwilioCloud(server.url, public_url=server.url) as cloud:
        p.line("calling in as Twilio would (voice webhook, then the Media Stream)...")
        call = await cloud.place_call()
        if call.webhook_status != 200 or call.connected_at is None:
            p.line(f"error: the call was not connected (webhook answered {call.webhook_status})")
            return 2
        t0 = call.connected_at
        try:
            greeted = await call.wait_for_bot_speech(after=t0, within=ANSWER_TIMEOUT)
        except TimeoutError:
            greeted = None
        await wait_quiet(call)
        greeting = next((e["text"] for e in server.of(call.call_sid, "reply")), "")
        if greeted is None:
            p.line("  connected; no greeting was heard")
        else:
            p.line(f"  connected; the greeting reached the caller {_ms(greeted - t0)} later: "
                   f"\"{greeting}\"")
        p.line()
        turns = await converse(call, utterances, interrupt=interrupt,
                               answer_timeout=answer_timeout)
        # A caller saying goodbye is hung up by the bot once the goodbye has been heard.
        with contextlib.suppress(TimeoutError):
            await call.wait_closed(within=20)
        if call.closed_at is None:
            await wait_quiet(call, within=20)
            await call.hangup()
            with contextlib.suppress(TimeoutError):
                await call.wait_closed(within=10)
        t1 = max([time.monotonic() if call.closed_at is None else call.closed_at,
                  *(t + 0.02 for t, _ in call.played[-1:])])
        await asyncio.sleep(0.3)  # the server's last events (call ended)
        events = server.of(call.call_sid)
        analyse(call, turns, events)
        for i, turn in enumerate(turns, 1):
            report_turn(p, i, turn, answer_timeout)
        ended = {"caller": "the caller hung up", "rest-hangup": "the bot hung up (REST)",
                 "server": "vc closed the stream"}.get(call.ended_by, call.ended_by)
        p.line(f"call ended: {ended}")

        wav = out_dir / "call.wav"
        write_wav(wav, call, t0, t1)
        files = [f"{wav} (stereo: caller left, bot right)"]
        if plot:
            png = out_dir / "timeline.png"
            if plot_timeline(png, call, turns, t0, t1, greeting):
                files.append(f"{png} (timeline)")
            else:
                p.line("(no timeline plot: matplotlib is not installed; "
                       "pip install 'vc-transport-twilio[demo]')")
        summary: dict[str, Any] = {
            "server_ready_seconds": next((e["seconds"] for e in server.events
                                          if e["event"] == "ready"), None),
            "providers": next((e["providers"] for e in server.events
                               if e["event"] == "ready"), {}),
            "greeting": greeting,
            "greeting_after_connect": None if greeted is None else round(greeted - t0, 4),
            "turns": [t.as_dict() for t in turns],
            "ended_by": call.ended_by,
            "protocol_errors": call.protocol_errors,
        }
        write_jsonl(out_dir / "events.jsonl", events)
        js = out_dir / "demo.json"
        js.write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
        files.append(f"{js} (numbers)")
        p.line("wrote " + "\n      ".join(files))
        unanswered = [i for i, t in enumerate(turns, 1) if not t.answered]
        if unanswered:
            p.line(f"FAILED: turn(s) {', '.join(map(str, unanswered))} went unanswered")
            return 1
        return 0


def main(wavs: tuple[str, ...], texts: tuple[str, ...], out_dir: str, config_file: str | None,
         interrupt: bool, plot: bool, verbose: bool,
         answer_timeout: float = ANSWER_TIMEOUT) -> int:
    """``vc demo`` (options parsed by :mod:`vc_transport_twilio.cli`); returns the exit status."""
    p = Printer()
    try:
        if wavs:
            utterances = [read_wav(w) for w in wavs]
        else:
            utterances = [espeak(t) for t in (texts or CONVERSATION)]
    except (RuntimeError, ValueError, OSError, EOFError, wave.Error) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "vc-server.log"
    with contextlib.ExitStack() as stack:
        log = None if verbose else stack.enter_context(open(log_path, "w", encoding="utf-8"))
        return asyncio.run(run_demo(utterances, out, config_file=config_file,
                                    interrupt=interrupt, plot=plot, verbose=verbose, p=p,
                                    log=log, log_path=log_path,
                                    answer_timeout=answer_timeout))
