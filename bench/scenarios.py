"""The benchmark scenarios: what the simulated caller does and what it measures.

Every scenario talks to a server (vc, or the baseline bot) through the Twilio simulator, over
real sockets on 127.0.0.1, exactly as Twilio would, and takes its timings on the caller's
side: end of speech is known from the audio sent, bot audio is timed as it arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import sys
import tempfile
import time
from typing import Any

import aiohttp
from utterances import (
    BACKCHANNELS,
    CAPACITY_LINE,
    INTERRUPTIONS,
    LONG_ANSWERS,
    PAUSE_MS,
    PAUSED,
    QUESTIONS,
    cough,
    line_noise,
    paused,
    utterance,
)
from vc_transport_twilio.conversation import Turn, fill_from_server, speak, wait_quiet
from vc_transport_twilio.demo_server import ServerProcess
from vc_transport_twilio.simulator import SimulatedCall, TwilioCloud

ANSWER_TIMEOUT = 30.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- stage times -------------------------------------------------------------------------------


def fill_from_stages(turn: Turn, events: list[dict[str, Any]]) -> None:
    """The baseline's stages: chained back from the first synthesised audio of the answer."""

    def last(stage: str, before: float, after: float) -> dict[str, Any] | None:
        found = [e for e in events if e.get("stage") == stage and after < e["at"] <= before]
        return found[-1] if found else None

    if turn.first_audio is None:
        return
    tts = [e for e in events if e.get("stage") == "tts_first" and turn.end - 1.0 < e["at"]
           <= turn.first_audio]
    if not tts:
        return
    turn.tts_first = tts[0]["at"]
    token = last("first_token", turn.tts_first, turn.onset)
    if token is None:
        return
    turn.first_token = token["at"]
    transcript = last("transcript", turn.first_token, turn.onset)
    if transcript is None:
        return
    turn.transcript = transcript["at"]
    turn.heard = transcript.get("text", "")
    stop = last("vad_stop", turn.transcript, turn.onset)
    turn.vad_stop = stop["at"] if stop else None


def fill(turn: Turn, server: ServerProcess, call: SimulatedCall, nxt: Turn | None) -> None:
    events = server.of(call.call_sid)
    if any(e["event"] == "stage" for e in events):
        fill_from_stages(turn, events)
        return
    until = nxt.onset if nxt else float("inf")
    reply_until = until
    if nxt is not None:
        heard = [e["t"] for e in events if e["event"] == "transcript" and e["t"] > nxt.onset]
        reply_until = heard[0] if heard else nxt.end + 1.0
    fill_from_server(turn, events, until, reply_until)


async def greeting_latency(call: SimulatedCall) -> float | None:
    assert call.connected_at is not None
    try:
        first = await call.wait_for_bot_speech(after=call.connected_at, within=ANSWER_TIMEOUT)
    except TimeoutError:
        return None
    return first - call.connected_at


# -- 1. voice-to-voice latency -----------------------------------------------------------------


async def ask(cloud: TwilioCloud, server: ServerProcess, questions: list[tuple[int, str]],
              label: str = "") -> tuple[float | None, list[dict[str, Any]]]:
    """One call: after the greeting, each (number, question) after the previous answer.
    Returns the greeting's latency and the turns (``Turn.as_dict()``, their stages filled
    from the server, plus ``stall``: the longest gap in the reply's audio, ``longest_stall``,
    and ``stall_at``: how far into the reply's playout it began)."""
    call = await cloud.place_call()
    greeting = await greeting_latency(call)
    await wait_quiet(call)
    mine: list[Turn] = []
    for number, text in questions:
        await wait_quiet(call, within=ANSWER_TIMEOUT * 2)
        await asyncio.sleep(0.3)
        onset, end = await speak(call, utterance(text))
        turn = Turn(text, onset, end)
        with contextlib.suppress(TimeoutError):
            turn.first_audio = await call.wait_for_bot_speech(after=end, within=ANSWER_TIMEOUT)
        mine.append(turn)
        total = f"{turn.total:.3f} s" if turn.total is not None else "UNANSWERED"
        log(f"  {label}turn {number:2d}: {total}  {text}")
    await wait_quiet(call, within=ANSWER_TIMEOUT)
    await call.hangup()
    with contextlib.suppress(TimeoutError):
        await call.wait_closed(within=10)
    await asyncio.sleep(0.3)
    records = []
    for i, turn in enumerate(mine):
        nxt = mine[i + 1] if i + 1 < len(mine) else None
        fill(turn, server, call, nxt)
        stall, at = (None, None) if turn.first_audio is None else stall_and_offset(
            call.media, turn.first_audio, nxt.onset if nxt else float("inf"))
        records.append({**turn.as_dict(), "stall": None if stall is None else round(stall, 4),
                        "stall_at": None if at is None else round(at, 3)})
    return greeting, records


async def latency(server: ServerProcess, turns: int, per_call: int = 8,
                  asked: tuple[str, ...] = QUESTIONS) -> dict[str, Any]:
    """``turns`` of the ``asked`` questions, ``per_call`` per call, each after the previous
    answer."""
    questions = [(i + 1, asked[i % len(asked)]) for i in range(turns)]
    results: list[dict[str, Any]] = []
    greetings: list[float | None] = []
    async with TwilioCloud(server.url, public_url=server.url) as cloud:
        for start in range(0, turns, per_call):
            greeting, mine = await ask(cloud, server, questions[start : start + per_call])
            greetings.append(greeting)
            results += mine
    return {"turns": results, "greetings": greetings}


async def compare(servers: dict[str, ServerProcess], turns: int, block: int = 4,
                  asked: tuple[str, ...] = QUESTIONS) -> dict[str, dict[str, Any]]:
    """Latency of several vc configurations under the same background load: calls of
    ``block`` turns go to each server in turn (the others idle meanwhile), ``turns`` each."""
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
    greetings: dict[str, list[float | None]] = {name: [] for name in servers}
    clouds = {}
    async with contextlib.AsyncExitStack() as stack:
        for name, server in servers.items():
            clouds[name] = await stack.enter_async_context(
                TwilioCloud(server.url, public_url=server.url))
        for done in range(0, turns, block):
            questions = [(i + 1, asked[i % len(asked)])
                         for i in range(done, min(turns, done + block))]
            for name, server in servers.items():
                greeting, mine = await ask(clouds[name], server, questions, f"{name:>16} ")
                greetings[name].append(greeting)
                out[name] += mine
    return {name: {"turns": out[name], "greetings": greetings[name]} for name in servers}


# -- 2. pauses inside a sentence ----------------------------------------------------------------


def answer_ready_times(server: ServerProcess, call_id: str) -> list[float]:
    """When the server had a turn's first answer audio for the transport (vc's ``turn`` event,
    the baseline's ``tts_first`` stage), on the machine's monotonic clock."""
    return [e["t"] if e["event"] == "turn" else e.get("at", e["t"]) for e in server.events
            if e.get("call_id") == call_id and (e["event"] == "turn" or (
                e["event"] == "stage" and e.get("stage") == "tts_first"))]


async def pauses(server: ServerProcess, repeats: int = 1) -> dict[str, Any]:
    """Every PAUSED sentence with every PAUSE_MS pause inside, ``repeats`` times: is the bot
    heard before the sentence ended (a premature answer), and how soon after its end.

    ``cut_inside``: the server had an answer's audio ready between the pause and the sentence's
    end (its own events), even if the caller never heard it because speech resumed and paused
    the bot: the turn was ended at the pause and the rest of the sentence became a new turn."""
    trials: list[dict[str, Any]] = []
    async with TwilioCloud(server.url, public_url=server.url) as cloud:
        for _ in range(repeats):
            call = await cloud.place_call()
            await greeting_latency(call)
            for (first, second), ms in [(p, ms) for p in PAUSED for ms in PAUSE_MS]:
                await wait_quiet(call, within=ANSWER_TIMEOUT * 2)
                await asyncio.sleep(0.3)
                onset, end = await speak(call, paused(first, second, ms))
                first_end = onset + utterance(first).seconds
                answer = None
                with contextlib.suppress(TimeoutError):
                    answer = await call.wait_for_bot_speech(after=first_end, within=ANSWER_TIMEOUT)
                early = answer is not None and answer < end
                cut = any(first_end < t < end for t in answer_ready_times(server, call.call_sid))
                trials.append({"said": f"{first} | {second}", "pause_ms": ms, "premature": early,
                               "cut_inside": cut,
                               "answered": answer is not None,
                               "total": None if answer is None or early else answer - end})
                verdict = "PREMATURE" if early else "CUT AT THE PAUSE (not heard)" if cut else (
                    f"{answer - end:.3f} s" if answer is not None else "UNANSWERED")
                log(f"  pause {ms} ms: {verdict}  {first} | {second}")
            await wait_quiet(call, within=ANSWER_TIMEOUT)
            await call.hangup()
            with contextlib.suppress(TimeoutError):
                await call.wait_closed(within=10)
    return {"trials": trials,
            "premature": sum(t["premature"] for t in trials),
            "cut_inside": sum(t["cut_inside"] for t in trials),
            "unanswered": sum(not t["answered"] for t in trials)}


# -- 3. barge-in -------------------------------------------------------------------------------


async def barge_in(server: ServerProcess, trials: int, seed: int = 7,
                   max_attempts: int | None = None) -> dict[str, Any]:
    """Talk over the bot at a random point of its answer; time ``clear`` and the audio's end."""
    rng = random.Random(seed)
    done: list[dict[str, Any]] = []
    skipped = 0
    attempts = 0
    max_attempts = max_attempts or trials * 2
    async with TwilioCloud(server.url, public_url=server.url) as cloud:
        call: SimulatedCall | None = None
        while len(done) < trials and attempts < max_attempts:
            attempts += 1
            if call is None or attempts % 6 == 1:
                if call is not None:
                    await call.hangup()
                    with contextlib.suppress(TimeoutError):
                        await call.wait_closed(within=10)
                call = await cloud.place_call()
                await greeting_latency(call)
            await wait_quiet(call, within=ANSWER_TIMEOUT * 2)
            await asyncio.sleep(0.3)
            question = LONG_ANSWERS[attempts % len(LONG_ANSWERS)]
            _, end = await speak(call, utterance(question))
            try:
                started = await call.wait_for_bot_speech(after=end, within=ANSWER_TIMEOUT)
            except TimeoutError:
                skipped += 1
                log(f"  trial {attempts}: no answer to talk over")
                continue
            delay = rng.uniform(0.2, 2.0)
            await asyncio.sleep(max(0.0, started + delay - time.monotonic()))
            if time.monotonic() - (call.media[-1][0] if call.media else 0.0) > 0.15:
                skipped += 1
                log(f"  trial {attempts}: the answer ended before {delay:.2f} s")
                continue
            clears_before = len(call.clears)
            onset, end = await speak(call, utterance(INTERRUPTIONS[attempts % len(INTERRUPTIONS)]))
            clears = call.clears[clears_before:]
            clear = clears[0] if clears else None
            limit = (clear if clear is not None else end) + 0.3
            frames = [t for t, _ in call.media if t <= limit]
            last = frames[-1] if frames else None
            trial = {
                "delay_into_answer": round(delay, 3),
                "clear": None if clear is None else round(clear - onset, 4),
                "last_bot_frame": None if last is None else round(last - onset, 4),
            }
            done.append(trial)
            log(f"  trial {len(done):2d}: clear {trial['clear']}  last frame {trial['last_bot_frame']}"
                f"  ({delay:.2f} s into the answer)")
        if call is not None:
            await call.hangup()
    return {"trials": done, "skipped": skipped}


async def false_interruptions(server: ServerProcess, trials: int, seed: int = 11
                              ) -> dict[str, Any]:
    """Sounds that are not a turn over a long answer (a cough, line noise, "mm-hmm"): is the
    bot interrupted (it answers the sound, or its answer does not go on), or does it play on
    (a pause, then the same answer from where it stopped)?"""
    rng = random.Random(seed)
    sounds = [cough(), line_noise(), *[utterance(b) for b in BACKCHANNELS]]
    done: list[dict[str, Any]] = []
    async with TwilioCloud(server.url, public_url=server.url) as cloud:
        call = await cloud.place_call()
        await greeting_latency(call)
        for i in range(trials):
            await wait_quiet(call, within=ANSWER_TIMEOUT * 2)
            await asyncio.sleep(0.3)
            _, end = await speak(call, utterance(LONG_ANSWERS[i % len(LONG_ANSWERS)]))
            try:
                started = await call.wait_for_bot_speech(after=end, within=ANSWER_TIMEOUT)
            except TimeoutError:
                continue
            await asyncio.sleep(max(0.0, started + rng.uniform(0.5, 2.0) - time.monotonic()))
            sound = sounds[i % len(sounds)]
            heard_before = len(server.of(call.call_sid))
            onset, sound_end = await speak(call, sound)
            await asyncio.sleep(2.5)
            frames = [t for t, _ in call.media if onset <= t <= sound_end + 2.5]
            gaps = [b - a for a, b in zip([onset, *frames], frames, strict=False)]
            # The bot answered a caller turn: vc's "turn" event, the baseline's TTS stage (a
            # transcript alone is not an answer).
            answered = any(e.get("event") == "turn" or e.get("stage") == "tts_first"
                           for e in server.of(call.call_sid)[heard_before:])
            goes_on = bool(frames) and frames[-1] >= sound_end + 2.0
            # vc also says when it cut its answer (the baseline does not): "not going on" can
            # be an answer that was simply over within 2 s of the sound.
            cut = any(e.get("event") == "barge_in" for e in server.of(call.call_sid)[heard_before:])
            trial = {"sound": sound.text, "interrupted": answered or not goes_on,
                     "answered_the_sound": answered, "barge_in_event": cut,
                     "longest_gap": round(max(gaps, default=0.0), 3)}
            done.append(trial)
            log(f"  {sound.text:>14}: {'INTERRUPTED' if trial['interrupted'] else 'played on'}"
                f"  (longest gap {trial['longest_gap']} s)")
            await wait_quiet(call, within=ANSWER_TIMEOUT * 2)
        await call.hangup()
    return {"trials": done, "interrupted": sum(t["interrupted"] for t in done),
            "cut_by_the_sound": sum(t["answered_the_sound"] or t["barge_in_event"] for t in done)}


# -- 4. cold start ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def busy_core() -> Any:
    """One core kept busy by another process (a pure-Python spin loop) meanwhile."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "while True: pass")
    try:
        await asyncio.sleep(0.5)
        yield
    finally:
        proc.kill()
        await proc.wait()


async def cold_start_vc(runs: int, env: dict[str, str] | None = None, busy: bool = False
                        ) -> list[dict[str, Any]]:
    """``vc serve`` (no configuration file): process start -> /readyz 200, then a call's greeting;
    with ``busy``, while another process keeps one core busy."""
    out = []
    for _ in range(runs):
        async with busy_core() if busy else contextlib.nullcontext():
            out.append(await _cold_start_once(env))
    return out


async def prepare_cache_seed(folder: str, env: dict[str, str]) -> None:
    """What deploy/Dockerfile does when it builds the image: every installed model prepared
    into ``folder`` (``vc models prepare --installed``), the cache its containers are seeded
    from."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vc.cli", "models", "prepare", "--installed",
        env={**env, "VC_CACHE_DIR": folder},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"vc models prepare --installed failed: {err.decode()[-2000:]}")


async def container_start_vc(runs: int, env: dict[str, str], seed: str | None,
                             busy: bool = False) -> list[dict[str, Any]]:
    """``vc serve`` as a new container starts it: its cache directory empty (a GKE pod's /tmp
    emptyDir, a new Cloud Run instance), seeded from ``seed`` (``VC_CACHE_SEED``) when given;
    with ``busy``, while another process keeps one core busy."""
    out = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="vc-container-cache-") as cache:
            run_env = {k: v for k, v in env.items() if k != "VC_CACHE_SEED"}
            run_env["VC_CACHE_DIR"] = cache
            if seed:
                run_env["VC_CACHE_SEED"] = seed
            async with busy_core() if busy else contextlib.nullcontext():
                out.append(await _cold_start_once(run_env))
    return out


async def _cold_start_once(env: dict[str, str] | None) -> dict[str, Any]:
    """One ``vc serve`` start: listening and ready times, then one call's greeting."""
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vc.cli", "serve", "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )
    assert proc.stdout is not None
    url = ""
    lines: list[str] = []
    while not url:
        line = (await asyncio.wait_for(proc.stdout.readline(), 300)).decode()
        if not line:
            raise RuntimeError("vc serve exited:\n" + "".join(lines[-30:]))
        lines.append(line)
        m = re.search(r"listening on (http://\S+)", line)
        url = m.group(1) if m else ""
    listening = time.monotonic() - t0
    drain = asyncio.create_task(_drain(proc.stdout))
    ready = None
    async with aiohttp.ClientSession() as session:
        while ready is None:
            async with session.get(url + "/readyz") as r:
                if r.status == 200:
                    ready = time.monotonic() - t0
                    break
            if proc.returncode is not None:
                raise RuntimeError("vc serve exited before it was ready")
            await asyncio.sleep(0.01)
    async with TwilioCloud(url, public_url=url) as cloud:
        call = await cloud.place_call()
        greeting = await greeting_latency(call)
        await call.hangup()
    proc.terminate()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), 30)
    drain.cancel()
    log(f"  cold start: listening {listening:.2f} s, ready {ready:.2f} s, greeting "
        f"{greeting if greeting is None else round(greeting * 1000)} ms")
    return {"listening": round(listening, 3), "ready": round(ready, 3),
            "greeting_after_connect": None if greeting is None else round(greeting, 4)}


async def cold_start_baseline(runs: int, command: list[str]) -> list[dict[str, Any]]:
    """The baseline bot: process start -> HTTP up; a call's greeting (models load per call)."""
    out = []
    for _ in range(runs):
        t0 = time.monotonic()
        server = ServerProcess(command=command, log=asyncio.subprocess.DEVNULL)
        await server.start()
        await server.ready(300)
        ready = time.monotonic() - t0
        async with TwilioCloud(server.url, public_url=server.url) as cloud:
            call = await cloud.place_call()
            greeting = await greeting_latency(call)
            await call.hangup()
        await server.stop()
        out.append({"listening": round(ready, 3), "ready": round(ready, 3),
                    "greeting_after_connect": None if greeting is None else round(greeting, 4)})
        log(f"  baseline cold start: ready {ready:.2f} s, greeting "
            f"{greeting if greeting is None else round(greeting * 1000)} ms")
    return out


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


# -- 5. capacity of the media path -------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pacing(call: SimulatedCall, since: float, lead_s: float = 0.12
           ) -> tuple[list[float], list[float]]:
    """(lateness, jitter) of every bot audio frame received after ``since``, in seconds.

    Bot audio arrives in bursts (one per utterance; a new burst starts after 150 ms without a
    frame). The caller plays a burst continuously from its first frame, so frame ``k`` is
    needed at ``first + (audio before it)``: *lateness* is how long after that it arrived
    (positive: the caller heard a gap; a transport that sends ahead, as vc does with
    ``send_ahead_ms``, shows negative values). *Jitter* is how far each inter-arrival time
    strays from the previous frame's duration, past the first ``lead_s`` of each burst (where
    a transport may send ahead at once).
    """
    frames = [(t, len(p) / 2 / 8000) for t, p in call.media]
    late: list[float] = []
    jitter: list[float] = []
    first = cum = 0.0
    prev: tuple[float, float] | None = None
    for t, dur in frames:
        if prev is None or t - prev[0] > 0.15:
            first, cum = t, 0.0
        elif t >= since:  # bursts that began earlier count from their own first frame
            late.append(t - (first + cum))
            if cum >= lead_s:
                jitter.append(abs(t - prev[0] - prev[1]))
        cum += dur
        prev = (t, dur)
    return late, jitter


def longest_stall(media: list[tuple[float, bytes]], since: float, until: float) -> float:
    return stall_and_offset(media, since, until)[0]


def stall_and_offset(media: list[tuple[float, bytes]], since: float, until: float
                     ) -> tuple[float, float]:
    """The longest the caller's playout ran dry inside one reply, in seconds: the reply's
    frames (8 kHz µ-law decoded to PCM16, arriving between ``since`` and ``until``) played
    back to back from the first one, each as soon as it has arrived and the one before has
    played. A reply whose next piece came late has a stall; a whole reply sent on time has
    none (vc sends ahead of playout, so arrivals lead the playout clock).
    ``stall_and_offset`` also says how far into the reply's playout it began."""
    frames = [(t, len(p) / 2 / 8000) for t, p in media if since <= t < until]
    longest, at, played_until = 0.0, 0.0, None
    for t, dur in frames:
        if played_until is not None and t - played_until > longest:
            longest, at = t - played_until, played_until - frames[0][0]
        played_until = max(played_until or t, t) + dur
    return longest, at


async def _capacity_caller(call: SimulatedCall, line: Any, stop: asyncio.Event) -> None:
    """Say the line, wait for the bot's answer to finish, pause a little, again."""
    await asyncio.sleep(random.random())
    while not stop.is_set():
        end = call.say(line.pcm)
        with contextlib.suppress(TimeoutError):
            await call.wait_for_bot_speech(after=end, within=10)
            await call.wait_for_bot_silence(quiet=0.3, within=20)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5 + random.random())


async def capacity_step(server: ServerProcess, n: int, measure_s: float = 12.0) -> dict[str, Any]:
    line = utterance(CAPACITY_LINE)
    stop = asyncio.Event()
    async with TwilioCloud(server.url, public_url=server.url) as cloud:
        calls: list[SimulatedCall] = []
        for _ in range(n):
            calls.append(await cloud.place_call())
            await asyncio.sleep(0.02)
        callers = [asyncio.create_task(_capacity_caller(c, line, stop)) for c in calls]
        await asyncio.sleep(3.0)  # greetings, first turns
        since = time.monotonic()
        cpu0 = cpu_seconds(server.pid)
        me0 = time.process_time()
        await asyncio.sleep(measure_s)
        cpu1 = cpu_seconds(server.pid)
        me1 = time.process_time()
        wall = time.monotonic() - since
        stop.set()
        await asyncio.gather(*callers, return_exceptions=True)
        measured = [pacing(c, since) for c in calls]
        lateness = sorted(x for late, _ in measured for x in late)
        jitter = sorted(x for _, jit in measured for x in jit)
        frames = sum(1 for c in calls for t, _ in c.media if t >= since)
        alive = sum(1 for c in calls if c.closed_at is None)
        for c in calls:
            await c.hangup()
        await asyncio.sleep(0.5)

    def q(values: list[float], p: float) -> float | None:
        return round(values[min(len(values) - 1, int(p * len(values)))] * 1000, 2) \
            if values else None

    return {
        "calls": n, "alive": alive, "server_cpu_core_fraction": round((cpu1 - cpu0) / wall, 3),
        "cpu_per_call": round((cpu1 - cpu0) / wall / n, 4),
        "caller_cpu_core_fraction": round((me1 - me0) / wall, 3),
        "bot_frames": frames, "lateness_ms_p50": q(lateness, 0.5),
        "lateness_ms_p99": q(lateness, 0.99),
        "lateness_ms_max": round(lateness[-1] * 1000, 2) if lateness else None,
        "jitter_ms_p99": q(jitter, 0.99),
    }


async def capacity(server: ServerProcess, steps: list[int], limit_ms: float = 5.0,
                   measure_s: float = 12.0) -> dict[str, Any]:
    rows = []
    best = 0
    for n in steps:
        row = await capacity_step(server, n, measure_s)
        ok = (row["lateness_ms_p99"] is not None and row["lateness_ms_p99"] <= limit_ms
              and row["alive"] == n and row["server_cpu_core_fraction"] < 0.98)
        row["within_limit"] = ok
        rows.append(row)
        log(f"  {n:3d} calls: server {row['server_cpu_core_fraction']:.2f} core "
            f"({row['cpu_per_call'] * 100:.1f}% per call), pacing p99 {row['lateness_ms_p99']} ms, "
            f"max {row['lateness_ms_max']} ms, jitter p99 {row['jitter_ms_p99']} ms, "
            f"caller {row['caller_cpu_core_fraction']:.2f} core"
            + ("" if ok else "  <- over the limit"))
        if ok:
            best = n
        else:
            break
    return {"steps": rows, "max_calls_one_core": best, "limit_ms": limit_ms}
