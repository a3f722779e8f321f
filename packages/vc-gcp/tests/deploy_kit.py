"""Reading deploy/: YAML documents, kustomize rendering, schema validation, the Dockerfile."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from gcp_helpers import DEPLOY, REPO, SCHEMAS

#: Kubernetes versions GKE's release channels carry; every built-in object must be valid in each.
K8S_VERSIONS = ("1.30", "1.33")
GKE = DEPLOY / "gke"
OVERLAYS = sorted(p for p in (GKE / "overlays").iterdir() if (p / "kustomization.yaml").is_file())


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """Our minimal schemas for the custom resources (the fields we use; unknown fields fail)."""
    out = {}
    for f in SCHEMAS.glob("*.json"):
        schema = json.loads(f.read_text())
        props = schema["properties"]
        out[(props["apiVersion"]["const"], props["kind"]["const"])] = schema
    return out


def validate(obj: dict[str, Any]) -> None:
    """Strict validation: Kubernetes' own schemas for built-in kinds, ours for CRDs and Knative."""
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    schema = crd_schemas().get(key)
    if schema is not None:
        jsonschema.Draft202012Validator(schema).validate(obj)
        return
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            raise AssertionError(
                f"{key[1]} {obj.get('metadata', {}).get('name')} invalid for Kubernetes {version}: "
                f"{e.message} at {'/'.join(str(p) for p in e.path)}") from None


def kubectl() -> str | None:
    return shutil.which("kubectl")


def render(overlay: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize`` (offline) of one overlay."""
    exe = kubectl()
    assert exe is not None
    proc = subprocess.run([exe, "kustomize", str(overlay)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def one(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


# -- kustomization structure (no renderer needed) --------------------------------------------------

def kustomization(directory: Path) -> dict[str, Any]:
    return yaml.safe_load((directory / "kustomization.yaml").read_text())


def patch_files(directory: Path) -> set[Path]:
    k = kustomization(directory)
    return {directory / p["path"] for p in k.get("patches", []) if "path" in p} | {
        directory / p for p in k.get("patchesStrategicMerge", [])}


def resources(directory: Path) -> list[dict[str, Any]]:
    """Every object an overlay's resources name, following directories (bases) recursively."""
    out: list[dict[str, Any]] = []
    for entry in kustomization(directory).get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            out += resources(path)
        else:
            out += load_docs(path)
    return out


def generated_files(directory: Path) -> list[Path]:
    out = []
    for gen in kustomization(directory).get("configMapGenerator", []):
        out += [directory / f.split("=")[-1] for f in gen.get("files", [])]
    return out


# -- Dockerfile ----------------------------------------------------------------------------------------

class Dockerfile:
    """The instructions of a Dockerfile, continuation lines joined, comments dropped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.instructions: list[tuple[str, str]] = []
        buf = ""
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if line.startswith("#") and not buf:
                continue
            if line.startswith("#"):
                continue
            if line.endswith("\\"):
                buf += line[:-1] + " "
                continue
            buf += line
            if buf.strip():
                word, _, rest = buf.strip().partition(" ")
                self.instructions.append((word.upper(), rest.strip()))
            buf = ""
        self.stages: list[dict[str, Any]] = []
        self.global_args: dict[str, str] = {}
        for word, rest in self.instructions:
            if word == "FROM":
                parts = rest.split()
                name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else ""
                self.stages.append({"image": parts[0], "name": name, "instructions": []})
            elif not self.stages:
                if word == "ARG":
                    k, _, v = rest.partition("=")
                    self.global_args[k] = v.strip('"')
            else:
                self.stages[-1]["instructions"].append((word, rest))

    def stage(self, name: str) -> dict[str, Any]:
        (s,) = [s for s in self.stages if s["name"] == name]
        return s

    def args(self, stage: dict[str, Any]) -> dict[str, str]:
        out = {}
        for word, rest in stage["instructions"]:
            if word == "ARG":
                k, _, v = rest.partition("=")
                out[k] = v.strip('"')
        return out

    def all_args(self) -> set[str]:
        names = set(self.global_args)
        for s in self.stages:
            names |= set(self.args(s))
        return names

    def runs(self, stage: dict[str, Any]) -> list[str]:
        return [rest for word, rest in stage["instructions"] if word == "RUN"]

    def last(self, stage: dict[str, Any], word: str) -> str | None:
        found = [rest for w, rest in stage["instructions"] if w == word]
        return found[-1] if found else None


def pip_installs(command: str) -> list[list[str]]:
    """The arguments of each ``pip install`` in a shell command."""
    out = []
    for part in re.split(r"&&|;|\bthen\b|\bfi\b|\bdo\b|\bdone\b", command):
        words = shlex.split(part, posix=True) if part.strip() else []
        for i, w in enumerate(words):
            if w == "pip" and words[i + 1 : i + 2] == ["install"]:
                out.append(words[i + 2 :])
    return out


def apt_installs(command: str) -> list[str]:
    out = []
    for part in command.split("&&"):
        words = part.split()
        if words[:2] == ["apt-get", "install"]:
            out += [w for w in words[2:] if not w.startswith("-")]
    return out


def ignore_patterns(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def ignored(relative: str, patterns: list[str]) -> bool:
    """Whether a path (relative to the context) is excluded by .dockerignore patterns."""
    parts = relative.split("/")
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _glob(pattern.lstrip("!"))
        hit = any(regex.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1))
        if hit and not negate:
            return True
    return False


def _glob(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def package_extras(dist: str) -> set[str]:
    import tomllib

    data = tomllib.loads((REPO / "packages" / dist / "pyproject.toml").read_text())
    return set(data["project"].get("optional-dependencies", {}))


def package_scripts(dist: str) -> set[str]:
    import tomllib

    data = tomllib.loads((REPO / "packages" / dist / "pyproject.toml").read_text())
    return set(data["project"].get("scripts", {}))


def split_spec(spec: str) -> tuple[str, set[str]]:
    m = re.fullmatch(r"(?:\./packages/)?([a-z0-9-]+)(?:\[([a-z0-9,-]+)\])?", spec)
    assert m, f"not a distribution spec: {spec!r}"
    return m.group(1), set(filter(None, (m.group(2) or "").split(",")))
