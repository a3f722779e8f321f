"""What a voice keeps between starts, in vc's cache directory: its gain and its set phrases.

Two things a start used to redo every time, on the way to being ready (2 cores: the voice
was the last model ready, and the greeting was made after it):

* the voice's **gain**, found by saying a calibration sentence without noise (~0.2 CPU-s;
  see ``LoadedVoice.calibrate``), kept with the pace of that first run;
* the **phrases said before any call needs them** (a profile's greeting, its apology: ~0.3
  CPU-s each), kept as the PCM the provider returned for them.

Both are kept per voice file, in ``piper-voices/<name>-<digest>`` under
``vc.providers.cache_dir()``; the digest is of the file's path, size and modification time,
so a changed or reinstalled voice starts afresh. A phrase is found by a key that names every
setting that shapes its audio (see ``PiperProvider.synthesize``). Reading or writing the cache
never fails a start: an unreadable entry is made again, one that cannot be written is not
kept (logged at debug).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from vc.providers import cache_dir

log = logging.getLogger("vc.tts.piper")

#: Bumped when the same voice, text and settings would sound different (kept entries are
#: then ignored).
LAYOUT = 1
GAIN_FILE, SOURCE_FILE = "gain.json", "source.json"
#: Phrases kept per voice; the least recently written go first (a changed greeting leaves
#: its old audio behind).
MAX_PHRASES = 64


def file_digest(model: Path, layout: int) -> str:
    """A short digest of ``model``'s path, size and modification time in whole seconds (and
    ``layout``): an image layer may keep a file's time to the second only (a tar header), and
    a cache prepared when the image was built must be found by its containers
    (``vc.cache_seed``)."""
    st = model.stat()
    key = f"{layout}|{model.resolve()}|{st.st_size}|{st.st_mtime_ns // 1_000_000_000}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def drop_replaced(folder: Path, source: Path, source_file: str) -> None:
    """Remove the folders next to ``folder`` that were kept for an older state of ``source``
    (the same path, another digest), or for a voice file that is gone. Folders of the same
    voice name installed elsewhere (another virtual environment) are left alone."""
    mine = str(source.resolve())
    for old in folder.parent.glob(f"{source.stem}-*"):
        if old == folder or old.name.startswith(".") or not old.is_dir():
            continue
        try:
            kept_for = str(json.loads((old / source_file).read_text(encoding="utf-8"))["source"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not ours to judge (being written, or from another layout)
        if kept_for == mine or not Path(kept_for).exists():
            shutil.rmtree(old, ignore_errors=True)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class VoiceCache:
    """The kept gain and phrases of one voice file."""

    def __init__(self, model: Path, root: Path | None = None) -> None:
        self.model = model
        try:
            digest = file_digest(model, LAYOUT)
        except OSError:
            digest = ""
        base = (root or cache_dir()) / "piper-voices"
        self.folder: Path | None = base / f"{model.stem}-{digest}" if digest else None

    def gain(self) -> tuple[float, float] | None:
        """The kept (gain, seconds per frame of the calibration run), or None."""
        data = self._read(GAIN_FILE)
        try:
            found = json.loads(data) if data is not None else None
            return (float(found["gain"]), float(found["pace"])) if found else None
        except (ValueError, KeyError, TypeError):
            return None

    def keep_gain(self, gain: float, pace: float) -> None:
        self._write(GAIN_FILE, json.dumps({"gain": gain, "pace": pace}).encode())

    def phrase(self, key: str) -> bytes | None:
        """The PCM kept under ``key`` (16-bit samples), or None."""
        pcm = self._read(self._phrase_file(key))
        return pcm if pcm and len(pcm) % 2 == 0 else None

    def keep_phrase(self, key: str, pcm: bytes) -> None:
        self._write(self._phrase_file(key), pcm)
        if self.folder is not None:
            self._prune()

    @staticmethod
    def _phrase_file(key: str) -> str:
        return "phrase-" + hashlib.sha256(key.encode()).hexdigest()[:32] + ".pcm"

    def _read(self, name: str) -> bytes | None:
        if self.folder is None:
            return None
        try:
            return (self.folder / name).read_bytes()
        except OSError:
            return None

    def _write(self, name: str, data: bytes) -> None:
        if self.folder is None:
            return
        try:
            fresh = not self.folder.exists()
            write_atomically(self.folder / name, data)
            if fresh:
                source = json.dumps({"source": str(self.model.resolve())}).encode()
                write_atomically(self.folder / SOURCE_FILE, source)
                drop_replaced(self.folder, self.model, SOURCE_FILE)
        except OSError as e:
            log.debug("not kept in %s: %s", self.folder, e)

    def _prune(self) -> None:
        assert self.folder is not None
        try:
            phrases = sorted(self.folder.glob("phrase-*.pcm"), key=lambda p: p.stat().st_mtime)
            for old in phrases[:-MAX_PHRASES]:
                old.unlink()
        except OSError as e:
            log.debug("pruning %s: %s", self.folder, e)
