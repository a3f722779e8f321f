"""The fixed reference utterances every benchmark speaks (espeak-ng, deterministic)."""

from __future__ import annotations

import functools

import numpy as np
from vc_transport_twilio.conversation import Utterance, espeak

#: Questions of the latency benchmark: one sentence each, no pause a VAD could cut at.
QUESTIONS = (
    "What is the capital of France?",
    "How many days are there in a week?",
    "What color is the sky on a clear day?",
    "Can you recommend a good book to read?",
    "What is the weather usually like in spring?",
    "How do I make a good cup of tea?",
    "What time does the store open tomorrow?",
    "Can you help me reset my password?",
    "What is two plus two?",
    "Where is the nearest train station?",
    "Tell me something interesting about the ocean.",
    "Do you know a good name for a pet dog?",
)
#: Questions that end on a word that could go on ("from", "with", "about", "to", "for"): the
#: adaptive end of turn waits ``[turn] incomplete_secs`` (1.0 s) after them, as after a caller
#: pausing mid-sentence (``--questions trailing``). Callers ask this way; these are vc's slow
#: turns, and the reply is written, held, while the turn waits.
TRAILING = (
    "Where are you calling from?",
    "Who am I speaking with?",
    "What is this call about?",
    "Which department should I talk to?",
    "What can I pay with?",
    "What are these charges for?",
)
#: The question sets of the latency benchmark, by ``--questions`` name.
QUESTION_SETS = {"reference": QUESTIONS, "trailing": TRAILING}
#: Questions whose answers run long enough to be talked over (barge-in trials).
LONG_ANSWERS = (
    "Can you tell me a long story about a dragon and a brave knight?",
    "Please describe in detail how to plant a vegetable garden.",
    "Tell me everything you know about the history of the city of Rome.",
    "Can you explain how airplanes fly, step by step?",
)
#: What the caller says over the bot.
INTERRUPTIONS = (
    "Wait, stop please, I have another question.",
    "Sorry, hold on a second.",
    "No, no, stop, that is enough.",
)
#: Sentences said with a pause inside (``pauses`` benchmark): the caller is not done at the
#: pause, so an answer that starts before the second part ends is premature. The last one
#: pauses after words that could end a sentence: no word-based end of turn can tell.
PAUSED = (
    ("I would like to book a table for", "two people tonight."),
    ("My account number is", "three four five six seven."),
    ("Can you tell me the opening hours of the pharmacy and", "the bakery?"),
    ("I was wondering if", "you could help me with my bill."),
    ("What is the weather like in", "London today?"),
    ("I need to change my flight", "to next Tuesday."),
)
#: The pauses inside them, in milliseconds (issue 17: 300 to 600 ms).
PAUSE_MS = (300, 450, 600)
#: What a listener says over the bot without meaning to interrupt it (``false-interruptions``).
BACKCHANNELS = ("Mm-hmm.", "Uh-huh.", "Yeah.", "Okay.")
#: The capacity benchmark's caller line (the fake STT "hears" its own script).
CAPACITY_LINE = "Hello, I would like some help please."


@functools.cache
def utterance(text: str) -> Utterance:
    return espeak(text)


def paused(first: str, second: str, pause_ms: int) -> Utterance:
    """``first``, ``pause_ms`` of silence, ``second``: one sentence with a pause inside."""
    silence = bytes(int(8000 * pause_ms / 1000) * 2)
    a, b = utterance(first), utterance(second)
    return Utterance(f"{first} {second}", a.pcm + silence + b.pcm)


def cough(seconds: float = 0.25, seed: int = 1) -> Utterance:
    """A cough: a burst of low-passed noise that rises fast and decays (not speech)."""
    rng = np.random.default_rng(seed)
    n = int(8000 * seconds)
    noise = np.convolve(rng.standard_normal(n), np.ones(4) / 4, mode="same")
    envelope = np.minimum(np.arange(n) / 80, 1.0) * np.exp(-np.arange(n) / (n / 3))
    pcm = (noise * envelope / np.abs(noise).max() * 0.5 * 32767).astype("<i2").tobytes()
    return Utterance("(cough)", pcm)


def line_noise(seconds: float = 0.3, seed: int = 2) -> Utterance:
    """Crackle on the line: sparse clicks over a hiss at about -30 dBFS."""
    rng = np.random.default_rng(seed)
    n = int(8000 * seconds)
    x = rng.standard_normal(n) * 0.01
    clicks = rng.choice(n, size=n // 200, replace=False)
    x[clicks] += rng.uniform(-0.4, 0.4, size=len(clicks))
    return Utterance("(line noise)", (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
