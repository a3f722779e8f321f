"""Summaries, the Markdown table and the plots of one benchmark run."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np

STAGES = ("vad_stop", "stt", "llm", "tts", "transport")
STAGE_NAMES = {
    "vad_stop": "end of speech -> VAD stop",
    "stt": "VAD stop -> transcript",
    "llm": "transcript -> first token",
    "tts": "first token -> first TTS audio",
    "transport": "first TTS audio -> caller",
}
#: The targets of issue 17 (the old system's 1.5 / 2.0 s were the first ones).
TARGETS = {
    "voice_to_voice_p50": 0.9,
    "voice_to_voice_p95": 1.2,
    "barge_in_clear_p95": 0.15,
    "greeting_after_connect": 0.1,
    "ready_after_start": 3.0,
}


#: A gap in a reply's audio longer than this is counted as a stall (an audible hiccup).
STALL_S = 0.05


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def dist(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": _r(pct(values, 50)), "p95": _r(pct(values, 95)),
        "mean": _r(statistics.fmean(values)) if values else None,
        "min": _r(min(values)) if values else None, "max": _r(max(values)) if values else None,
    }


def _r(v: float | None, n: int = 4) -> float | None:
    return None if v is None else round(v, n)


def summarise_latency(run: dict[str, Any]) -> dict[str, Any]:
    turns = run["turns"]
    totals = [t["total"] for t in turns if t["total"] is not None]
    stages = {s: [t["stages"][s] for t in turns if t["stages"].get(s) is not None] for s in STAGES}
    greetings = [g for g in run.get("greetings", []) if g is not None]
    return {
        "voice_to_voice": dist(totals),
        "unanswered": sum(1 for t in turns if not t["answered"]),
        "split": sum(1 for t in turns if t.get("segments", 1) > 1),
        # replies whose audio ran dry for more than STALL_S somewhere (scenarios.longest_stall)
        "stalled": sum(1 for t in turns if (t.get("stall") or 0.0) > STALL_S),
        "longest_stall": _r(max((t.get("stall") or 0.0 for t in turns), default=None)),
        "turns": len(turns),
        "stages_p50": {s: _r(pct(v, 50)) for s, v in stages.items()},
        "stages_p95": {s: _r(pct(v, 95)) for s, v in stages.items()},
        "greeting_after_connect": dist(greetings),
    }


def summarise_barge_in(run: dict[str, Any]) -> dict[str, Any]:
    trials = run["trials"]
    clear = [t["clear"] for t in trials if t["clear"] is not None]
    last = [t["last_bot_frame"] for t in trials if t["last_bot_frame"] is not None]
    return {"clear": dist(clear), "last_bot_frame": dist(last),
            "no_clear": sum(1 for t in trials if t["clear"] is None), "trials": len(trials),
            "skipped": run.get("skipped", 0)}


def summarise_cold(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "ready": dist([r["ready"] for r in runs]),
        "greeting_after_connect": dist([r["greeting_after_connect"] for r in runs
                                        if r["greeting_after_connect"] is not None]),
    }


def overhead(latency: dict[str, Any], models: dict[str, Any]) -> dict[str, Any]:
    """Measured voice-to-voice minus the sum of the pure model times (medians)."""
    p50 = latency["voice_to_voice"]["p50"]
    pure = models["sum_of_pure_model_times"]
    m = models["median"]
    st = latency["stages_p50"]
    return {
        "voice_to_voice_p50": p50,
        "sum_of_pure_model_times": pure,
        "remaining_overhead": _r(p50 - pure) if p50 is not None else None,
        "per_stage_p50_minus_pure": {
            "vad_stop": (_r(st["vad_stop"] - models["vad_stop_secs"])
                         if st.get("vad_stop") is not None else None),
            "stt": _r(st["stt"] - m["stt"]) if st.get("stt") is not None else None,
            "llm+tts (first token -> first audio) vs first clause + TTS chunk":
                _r(st["llm"] + st["tts"] - m["llm_first_clause"] - m["tts_first_chunk"])
                if st.get("llm") is not None and st.get("tts") is not None else None,
            "transport": st.get("transport"),
        },
    }


# -- Markdown -----------------------------------------------------------------------------------


def _s(v: float | None, unit: str = "s") -> str:
    if v is None:
        return "–"
    return f"{v * 1000:.0f} ms" if unit == "ms" else f"{v:.2f} s"


def _ratio(a: float | None, b: float | None) -> str:
    return "–" if a is None or not b else f"{a / b:.2f}"


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    s = results["summary"]
    lines = [
        f"# Benchmark run {meta['date']} on {meta['machine']}",
        "",
        f"{meta['cpu']}, {meta['cores']} cores, **CPU only (no GPU on this machine)**; "
        f"shared with other work: load average {meta['load_before']} before, "
        f"{meta['load_after']} after (per phase in the JSON). vc {meta['versions'].get('vc-core')}"
        f"{' at ' + meta['commit'] if meta.get('commit') else ''}, "
        f"pipecat {meta['versions'].get('pipecat-ai')}. Configuration: {meta['vc_config']}.",
        "",
    ]
    if results.get("baseline_vad_stop_secs") is not None:
        lines += [f"The baseline ends a turn after {results['baseline_vad_stop_secs']} s of silence "
                  "(the same turn-taking policy as vc unless the run says otherwise).", ""]
    vc, base = s.get("vc", {}), s.get("baseline", {})
    lat, blat = vc.get("latency"), base.get("latency")
    rows = [("| | vc | baseline (plain pipecat) | vc / baseline | target |"),
            ("|---|---|---|---|---|")]
    if lat:
        for key, label, target in (("p50", "voice to voice p50", "voice_to_voice_p50"),
                                   ("p95", "voice to voice p95", "voice_to_voice_p95")):
            b = blat["voice_to_voice"][key] if blat else None
            rows.append(f"| {label} | {_s(lat['voice_to_voice'][key])} | {_s(b)} | "
                        f"{_ratio(lat['voice_to_voice'][key], b)} | ≤ {TARGETS[target]} s |")
        rows.append(f"| unanswered questions | {lat['unanswered']} of {lat['turns']} | "
                    f"{blat['unanswered'] if blat else '–'} of {blat['turns'] if blat else '–'} | | 0 |")
        if "stalled" in lat:
            rows.append(f"| replies whose audio stalled > {STALL_S * 1000:.0f} ms (longest) | "
                        f"{lat['stalled']} ({_s(lat['longest_stall'], 'ms')}) | "
                        f"{blat.get('stalled', '–') if blat else '–'} | | |")
    rows += _turn_taking_rows(vc, base)
    bi, bbi = vc.get("barge_in"), base.get("barge_in")
    if bi:
        for key, label in (("clear", "barge-in: onset -> clear"),
                           ("last_bot_frame", "barge-in: onset -> last bot frame")):
            for q in ("p50", "p95"):
                b = bbi[key][q] if bbi else None
                target = "≤ 150 ms" if key == "clear" and q == "p95" else ""
                rows.append(f"| {label} {q} | {_s(bi[key][q], 'ms')} | {_s(b, 'ms')} | "
                            f"{_ratio(bi[key][q], b)} | {target} |")
    cold, bcold = vc.get("cold_start"), base.get("cold_start")
    if cold:
        rows.append(f"| process start -> ready (median) | {_s(cold['ready']['p50'])} | "
                    f"{_s(bcold['ready']['p50']) if bcold else '–'} (HTTP up; models load per call) "
                    "| | ≤ 3 s |")
        busy = vc.get("cold_start_busy")
        if busy:
            rows.append(f"| process start -> ready, one core busy (median, max) | "
                        f"{_s(busy['ready']['p50'])}, {_s(busy['ready']['max'])} | | | ≤ 3 s |")
        g = cold["greeting_after_connect"]["p50"]
        bg = bcold["greeting_after_connect"]["p50"] if bcold else None
        rows.append(f"| call connected -> greeting audio (median) | {_s(g, 'ms')} | {_s(bg, 'ms')} | "
                    f"{_ratio(g, bg)} | ≤ 100 ms |")
    for key, starts in (vc.get("container_start") or {}).items():
        what = {"empty": "empty cache", "empty_busy": "empty cache, one core busy",
                "seeded": "cache seeded from the image", "seeded_busy":
                "cache seeded from the image, one core busy"}.get(key, key)
        rows.append(f"| new container ({what}): start -> ready (median, max) | "
                    f"{_s(starts['ready']['p50'])}, {_s(starts['ready']['max'])} | | | ≤ 3 s |")
    cap, bcap = vc.get("capacity"), base.get("capacity")
    if cap:
        rows.append(f"| calls one core carries (pacing p99 ≤ {cap['limit_ms']:.0f} ms) | "
                    f"{cap['max_calls_one_core']} | {bcap['max_calls_one_core'] if bcap else '–'} | | |")
        per = _cpu_per_call(cap)
        bper = _cpu_per_call(bcap) if bcap else None
        rows.append(f"| CPU per call (fake AI, % of a core) | {per} | {bper or '–'} | | |")
    lines += [*rows, ""]

    if lat:
        lines += ["## Where the time goes (medians per stage)", "",
                  "| stage | vc | baseline |", "|---|---|---|"]
        for st in STAGES:
            b = blat["stages_p50"].get(st) if blat else None
            lines.append(f"| {STAGE_NAMES[st]} | {_s(lat['stages_p50'].get(st), 'ms')} | "
                         f"{_s(b, 'ms')} |")
        lines.append("")
    lines += server_stages_markdown({"vc": results.get("vc", {}).get("server_stages") or {}})
    oh = s.get("overhead")
    if oh:
        m = results["vc"]["models"]["median"]
        lines += [
            "## Pure model times and the remaining overhead", "",
            f"Each model alone, warm, on the reference questions (medians): STT "
            f"{_s(m['stt'], 'ms')}, LLM first token {_s(m['llm_first_token'], 'ms')} / first "
            f"clause {_s(m['llm_first_clause'], 'ms')}, Piper first chunk "
            f"{_s(m['tts_first_chunk'], 'ms')}; VAD stop delay "
            f"{_s(results['vc']['models']['vad_stop_secs'], 'ms')}. Sum: "
            f"{_s(oh['sum_of_pure_model_times'])}; measured voice to voice p50 "
            f"{_s(oh['voice_to_voice_p50'])}; **remaining overhead "
            f"{_s(oh['remaining_overhead'], 'ms')}**.", "",
        ]
        for k, v in oh["per_stage_p50_minus_pure"].items():
            lines.append(f"* {k}: {_s(v, 'ms')}")
        lines.append("")
    if cap:
        lines += ["## Media-path capacity (server pinned to one core, fake AI)", "",
                  "| calls | vc server CPU (cores) | vc pacing p99 / max | baseline CPU "
                  "| baseline pacing p99 / max |",
                  "|---|---|---|---|---|"]
        bsteps = {r["calls"]: r for r in (bcap or {}).get("steps", [])}
        for r in cap["steps"]:
            b = bsteps.get(r["calls"])
            lines.append(
                f"| {r['calls']} | {r['server_cpu_core_fraction']:.2f} | {r['lateness_ms_p99']} / "
                f"{r['lateness_ms_max']} ms | {b['server_cpu_core_fraction'] if b else '–'} | "
                f"{(str(b['lateness_ms_p99']) + ' / ' + str(b['lateness_ms_max']) + ' ms') if b else '–'} |")
        for n, b in bsteps.items():
            if n not in {r["calls"] for r in cap["steps"]}:
                lines.append(f"| {n} | – | – | {b['server_cpu_core_fraction']} | "
                             f"{b['lateness_ms_p99']} / {b['lateness_ms_max']} ms |")
        lines.append("")
    lines += ["Plots: " + ", ".join(f"`{p}`" for p in results.get("plots", [])), ""]
    return "\n".join(lines)


def _turn_taking_rows(vc: dict[str, Any], base: dict[str, Any]) -> list[str]:
    """Premature answers to a mid-sentence pause and sounds taken for a turn (targets: 0, 5 %)."""
    rows = []
    p, bp = vc.get("pauses"), base.get("pauses")
    if p:
        b = f"{bp['premature']} of {bp['trials']} ({bp.get('cut_inside') or 0})" if bp else "–"
        rows.append(f"| pause inside a sentence: premature answers (turn ended at the pause, "
                    f"answer not heard) | {p['premature']} of {p['trials']} "
                    f"({p.get('cut_inside') or 0}) | {b} | | 0 |")
    f, bf = vc.get("false_interruptions"), base.get("false_interruptions")
    if f:
        b = f"{bf['interrupted']} of {bf['trials']}" if bf else "–"
        rows.append(f"| cough, noise or backchannel over an answer: bot interrupted | "
                    f"{f['interrupted']} of {f['trials']} | {b} | | ≤ 5 % |")
    return rows


def _cpu_per_call(cap: dict[str, Any]) -> str:
    ok = [r for r in cap["steps"] if r["calls"] >= 4] or cap["steps"]
    if not ok:
        return "–"
    return f"{statistics.median(r['cpu_per_call'] for r in ok) * 100:.1f}%"


# -- plots ---------------------------------------------------------------------------------------


def plots(results: dict[str, Any], stem: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out: list[str] = []
    sides = [(name, results.get(name, {})) for name in ("vc", "baseline")]
    colors = {"vc": "#1f77b4", "baseline": "#d62728"}

    def save(fig: Any, what: str) -> None:
        path = stem.with_name(f"{stem.name}-{what}.png")
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        out.append(path.name)

    latency = {n: r["latency"]["turns"] for n, r in sides if r.get("latency")}
    if latency:
        save(latency_figure(plt, latency, colors), "latency")
    if any(r.get("barge_in") for _, r in sides):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, r in sides:
            if r.get("barge_in"):
                _cdf(ax, [t["clear"] for t in r["barge_in"]["trials"] if t["clear"] is not None],
                     f"{name}: clear", colors[name])
                _cdf(ax, [t["last_bot_frame"] for t in r["barge_in"]["trials"]
                         if t["last_bot_frame"] is not None],
                     f"{name}: last bot frame", colors[name], ls="--")
        ax.axvline(0.2, color="gray", ls="--", lw=0.8)
        ax.set_xlabel("caller speech onset -> (s)")
        ax.set_ylabel("fraction of trials")
        ax.set_title("barge-in")
        ax.legend(fontsize=8)
        save(fig, "barge-in")
    if any(r.get("capacity") for _, r in sides):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.5))
        for name, r in sides:
            steps = (r.get("capacity") or {}).get("steps", [])
            if not steps:
                continue
            n = [s["calls"] for s in steps]
            a1.plot(n, [s["lateness_ms_p99"] for s in steps], "o-", color=colors[name], label=name)
            a2.plot(n, [s["server_cpu_core_fraction"] for s in steps], "o-", color=colors[name],
                    label=name)
        a1.axhline(5, color="gray", ls="--", lw=0.8)
        a1.set_xlabel("concurrent calls")
        a1.set_ylabel("outbound pacing lateness p99 (ms)")
        a1.set_title("pacing (server on one core, fake AI)")
        a1.legend()
        a2.set_xlabel("concurrent calls")
        a2.set_ylabel("server CPU (cores)")
        a2.set_title("CPU")
        a2.legend()
        save(fig, "capacity")
    return out


def _cdf(ax: Any, values: list[float], label: str, color: str | None, ls: str = "-") -> None:
    if not values:
        return
    v = np.sort(values)
    ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=label, color=color, ls=ls)


def latency_figure(plt: Any, runs: dict[str, list[dict[str, Any]]],
                   colors: dict[str, str] | None = None) -> Any:
    """Voice-to-voice CDF per run and the median of each stage, side by side."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.5))
    for name, turns in runs.items():
        _cdf(a1, [t["total"] for t in turns if t["total"] is not None], name,
             (colors or {}).get(name))
    a1.axvline(0.9, color="gray", ls="--", lw=0.8)
    a1.axvline(1.2, color="gray", ls=":", lw=0.8)
    a1.set_xlabel("end of speech -> first bot audio at the caller (s)")
    a1.set_ylabel("fraction of turns")
    a1.set_title("voice-to-voice latency (targets p50 0.9 s, p95 1.2 s)")
    a1.legend()
    names = list(runs)
    bottom = np.zeros(len(names))
    for st in STAGES:
        vals = []
        for n in names:
            v = [t["stages"][st] for t in runs[n] if t["stages"].get(st) is not None]
            vals.append(float(np.median(v)) if v else 0.0)
        a2.bar(names, vals, bottom=bottom, label=STAGE_NAMES[st])
        bottom += np.array(vals)
    a2.set_ylabel("seconds (median per stage)")
    a2.set_title("where the time goes")
    a2.legend(fontsize=7)
    return fig


def compare_plots(results: dict[str, Any], stem: Path) -> list[str]:
    """``<stem>-latency.png`` for a ``--compare`` run: one CDF and stage bar per configuration."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    runs = {k: v["run"]["turns"] for k, v in results.get("compare", {}).items()}
    if not runs:
        return []
    path = stem.with_name(f"{stem.name}-latency.png")
    fig = latency_figure(plt, runs)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return [path.name]


def compare_markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        f"# Configuration comparison {meta['date']} on {meta['machine']}", "",
        f"{meta['cpu']}, {meta['cores']} cores, CPU only; load average during the run: "
        f"{results['load']}. Calls alternate between the configurations (blocks of turns), "
        "so each sees the same background load.", "",
        "| configuration | v2v p50 | v2v p95 | unanswered | cut in two | VAD stop | STT | "
        f"first token | first TTS audio | to caller | replies stalled > {STALL_S * 1000:.0f} ms "
        "(longest) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["compare"].items():
        s = r["summary"]
        st = s["stages_p50"]
        lines.append(
            f"| {name} | {_s(s['voice_to_voice']['p50'])} | {_s(s['voice_to_voice']['p95'])} | "
            f"{s['unanswered']}/{s['turns']} | {s.get('split', 0)} | "
            + " | ".join(_s(st.get(k), "ms") for k in STAGES)
            + f" | {s.get('stalled', '–')} ({_s(s.get('longest_stall'), 'ms')}) |")
    lines += ["", *server_stages_markdown({name: r.get("server_stages") or {}
                                           for name, r in results["compare"].items()})]
    return "\n".join([*lines, ""])


def server_stages_markdown(runs: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """vc's own stage means (``/metrics``) per server: mean ms (count), one row per stage."""
    stages = sorted({st for r in runs.values() for st in r})
    if not stages:
        return []
    lines = ["## vc's own stage means (`vc_stage_latency_seconds`, every turn of the run)", "",
             "| stage | " + " | ".join(runs) + " |", "|---" * (len(runs) + 1) + "|"]
    for st in stages:
        cells = [f"{_s(r[st]['mean_s'], 'ms')} ({r[st]['count']})" if st in r else "–"
                 for r in runs.values()]
        lines.append(f"| {st} | " + " | ".join(cells) + " |")
    return [*lines, ""]
