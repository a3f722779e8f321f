"""deploy/docker-compose*.yml start, and deploy/cloudbuild.yaml builds and deploys what it says.

There is no Docker engine on the machines these tests run on. What runs for real instead: for
every compose service built from deploy/Dockerfile, a venv is built by replaying that image's
own RUN lines (the same constraints file, extras, model packages, llama.cpp build script and
``vc list-plugins``/VC_FORBID checks; ``pip`` is ``uv pip`` for speed and apt-get lines are
skipped), then the service's ENTRYPOINT + compose ``command`` runs in it with its ports moved to
free ports on 127.0.0.1 and its compose hosts mapped there, and must answer its health check.

The venvs are cached per content hash of (the RUN lines and build args, constraints, the llama.cpp
script, the packages' sources) under $VC_COMPOSE_VENVS (default ~/.cache/vc/compose-venvs).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_kit import (
    Dockerfile,
    build_runs,
    cloudbuild_problems,
    compose_env,
    compose_problems,
    compose_volumes,
    dockerfile_env,
    entrypoint,
    listen_port,
    replay_run,
    with_port,
)
from gcp_helpers import DEPLOY, REPO, clean_env, parse_lines

DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE_FILES = sorted(DEPLOY.glob("docker-compose*.yml"))
CACHE = Path(os.environ.get("VC_COMPOSE_VENVS", Path.home() / ".cache" / "vc" / "compose-venvs"))
UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
#: services from upstream images: not built here; vc's check of them is expected to fail
UPSTREAM_NOT_RUN = {"vosk-server": "stt.vosk-websocket"}
#: what a user sets in the shell before ``docker compose up`` (docker-compose.cloud.yml says so)
SHELL = {"TWILIO_PUBLIC_URL": "https://vc.example.com", "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
         "TWILIO_AUTH_TOKEN": "test-token", "RTP_HOST_IP": "127.0.0.1"}


def compose(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def built_services() -> list[tuple[str, str]]:
    return [(p.name, name) for p in COMPOSE_FILES for name, svc in compose(p)["services"].items()
            if "build" in svc]


# -- the venv an image is built as -----------------------------------------------------------------

def _sources_hash(h: Any) -> None:
    for rel in ("requirements/constraints.txt", "scripts/llama-cpp.sh"):
        h.update((REPO / rel).read_bytes())
    for pkg in sorted((REPO / "packages").iterdir()):
        for f in sorted([pkg / "pyproject.toml", pkg / "README.md",
                         *(pkg / "src").rglob("*")] if (pkg / "src").is_dir() else []):
            if f.is_file() and "__pycache__" not in f.parts:
                h.update(str(f.relative_to(REPO)).encode())
                h.update(f.read_bytes())


def image_venv(target: str, build_args: dict[str, str]) -> Path:
    """A venv holding what the image ``target`` (with ``build_args``) holds in /opt/vc."""
    assert UV, "uv is missing (it is in the dev venv: scripts/setup.sh)"
    docker = Dockerfile(DOCKERFILE)
    runs, args = build_runs(docker, target, build_args)
    h = hashlib.sha256(json.dumps([runs, sorted(args.items())]).encode())
    _sources_hash(h)
    venv = CACHE / f"{target}-{h.hexdigest()[:16]}"
    if (venv / ".vc-complete").is_file():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    # the images' Python: python:3.11-slim; this interpreter's base is 3.11 too
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([UV, "venv", "-q", "--seed", "-p", base, str(venv)], check=True)
    shims = venv / "vc-shims"
    shims.mkdir()
    (shims / "pip").write_text(f'#!/bin/sh\nexec "{UV}" pip "$@"\n')
    (shims / "pip").chmod(0o755)
    env = {**clean_env(), **args, "VIRTUAL_ENV": str(venv), "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "PATH": f"{shims}:{venv / 'bin'}:{os.environ['PATH']}"}
    log = []
    for run in runs:
        line = replay_run(run, venv, shims)
        if line is None:
            continue
        proc = subprocess.run(["/bin/sh", "-c", line], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=900)
        log.append(f"$ {line}\n{proc.stdout}{proc.stderr}")
        if proc.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            raise AssertionError(f"image {target} {args}: RUN failed ({proc.returncode}):\n"
                                 + "\n".join(log)[-6000:])
    (venv / "build.log").write_text("\n".join(log))
    stamp = json.dumps({"target": target, "args": args}, sort_keys=True)
    (venv / ".vc-complete").write_text(stamp)
    for old in CACHE.glob(f"{target}-*"):  # this image's venvs of older sources
        with contextlib.suppress(OSError):
            if old != venv and (old / ".vc-complete").read_text() == stamp:
                shutil.rmtree(old, ignore_errors=True)
    return venv


# -- running a compose service -----------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 3) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Service:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, log: Path):
        self.name, self.port, self.log = name, port, log
        self.proc = subprocess.Popen(argv, env=env, cwd=log.parent, stdout=log.open("wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, path: str, ok: Any, timeout: float) -> tuple[int, str]:
        deadline = time.monotonic() + timeout
        last: tuple[int, str] = (0, "")
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (
                f"{self.name} exited ({self.proc.returncode}):\n{self.output()[-4000:]}")
            with contextlib.suppress(OSError):
                last = get(f"http://127.0.0.1:{self.port}{path}")
                if ok(*last):
                    return last
            time.sleep(0.5)
        raise AssertionError(f"{self.name}: {path} not as expected after {timeout:.0f}s: {last}\n"
                             f"{self.output()[-4000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def internal_port(doc: dict[str, Any], name: str, docker: Dockerfile) -> int | None:
    """The port a service listens on inside its container (its ``--port``, vc's 8080)."""
    svc = doc["services"][name]
    build = svc.get("build")
    if not isinstance(build, dict):
        return {"vosk-server": 2700}.get(name)
    argv = entrypoint(docker, build.get("target", "vc"), svc.get("command"))
    return listen_port(argv, 8080)


def rewrite_config(text: str, hosts: dict[str, str]) -> str:
    """A mounted INI with compose hosts mapped to 127.0.0.1 and every ``*port`` key moved to a
    free port (SIP, events, RTP range, HTTP)."""
    for name, target in hosts.items():
        text = re.sub(rf"//{re.escape(name)}(?=[:/\s])", f"//{target}", text)
    out = []
    rtp_min = None
    for line in text.splitlines():
        m = re.match(r"^(\s*(\w*port)\s*=\s*)(\d+)\s*$", line)
        if m:
            port = free_port() if m.group(2) != "max_port" else (rtp_min or free_port()) + 20
            if m.group(2) == "min_port":
                rtp_min = port
            line = f"{m.group(1)}{port}"
        out.append(line)
    return "\n".join(out) + "\n"


@contextlib.contextmanager
def run_stack(path: Path, tmp: Path, services: list[str]) -> Iterator[dict[str, Service]]:
    """Start ``services`` of one compose file (dependencies first), each in its image's venv."""
    doc = compose(path)
    docker = Dockerfile(DOCKERFILE)
    ports = {name: free_port() for name in doc["services"]}
    hosts = {}  # "name:internal" -> "127.0.0.1:free" (extra_hosts / the compose network)
    for name in doc["services"]:
        internal = internal_port(doc, name, docker)
        if internal is not None:
            hosts[f"{name}:{internal}"] = f"127.0.0.1:{ports[name]}"
    started: dict[str, Service] = {}
    try:
        for name in services:
            svc = doc["services"][name]
            build = svc["build"]
            target = build.get("target", "vc")
            venv = image_venv(target, {k: str(v) for k, v in (build.get("args") or {}).items()})
            home = tmp / name
            (home / "cache").mkdir(parents=True)
            env = clean_env(**{k: v for k, v in dockerfile_env(docker, target).items()
                               if not k.startswith(("PATH", "HOME", "XDG_"))})
            env.update(PATH=f"{venv / 'bin'}:{os.environ['PATH']}", HOME=str(home),
                       XDG_CACHE_HOME=str(home / "cache"))
            env.update(compose_env(svc, SHELL))
            for inside, outside in compose_volumes(svc, path.parent).items():
                copy_ = home / outside.name
                copy_.write_text(rewrite_config(outside.read_text(), hosts))
                env = {k: v.replace(inside, str(copy_)) for k, v in env.items()}
            argv = entrypoint(docker, target, svc.get("command"))
            if target == "vc":  # vc serve: [server] port / host from the environment
                env.update(VC_SERVER__PORT=str(ports[name]), VC_SERVER__HOST="127.0.0.1")
            else:
                argv = with_port(argv, ports[name])
            argv[0] = str(venv / "bin" / argv[0])
            started[name] = Service(name, argv, env, ports[name], home / "output.log")
            if target != "vc":
                started[name].wait("/health", lambda s, _b: s == 200, 180)
        yield started
    finally:
        for s in reversed(started.values()):
            s.stop()


# -- the tests -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_file_validates(path: Path) -> None:
    assert compose_problems(compose(path), Dockerfile(DOCKERFILE), path.parent) == []


def _cloud_vc(d: dict[str, Any]) -> dict[str, Any]:
    return d["services"]["vc"]


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d["services"]["llama"].update(command=["--host", "0.0.0.0", "--port", "8766"]),
     "reaches llama:8765"),
    (lambda d: d["services"]["piper"]["build"].update(target="piper-srv"), "build target piper-srv"),
    (lambda d: _cloud_vc(d)["build"]["args"].update(VC_PLUGIN="x"), "build arg VC_PLUGIN"),
    (lambda d: _cloud_vc(d).update(volumes=["./compose/vc-clod.ini:/etc/vc/vc.ini:ro"]),
     "does not exist"),
    (lambda d: _cloud_vc(d).update(depends_on=["llama", "pipr"]), "depends_on pipr"),
    (lambda d: d["services"].update(lama=d["services"].pop("llama")), "names llama"),
], ids=["port", "target", "build-arg", "mount", "depends-on", "service-name"])
def test_cloud_compose_mutations_fail(mutate: Any, needle: str) -> None:
    path = DEPLOY / "docker-compose.cloud.yml"
    doc = copy.deepcopy(compose(path))
    mutate(doc)
    problems = compose_problems(doc, Dockerfile(DOCKERFILE), path.parent)
    assert any(needle in p for p in problems), problems


def test_compose_files_cover_the_built_targets() -> None:
    targets = {compose(p)["services"][s]["build"]["target"] for p in COMPOSE_FILES
               for s in compose(p)["services"] if "build" in compose(p)["services"][s]}
    assert targets == {"vc", "llama-server", "piper-server"}


def test_cloud_compose_is_the_cloud_topology() -> None:
    doc = compose(DEPLOY / "docker-compose.cloud.yml")
    services = doc["services"]
    assert not any("network_mode" in s for s in services.values()), "the compose network, as on GKE"
    vc = services["vc"]
    plugins = vc["build"]["args"]["VC_PLUGINS"].split()
    assert "vc-transport-twilio" in plugins and not any("[" in p for p in plugins), (
        "vc carries the WebSocket clients only; llama.cpp and Piper are their own containers")
    assert {"llama", "piper"} <= set(vc["depends_on"])
    assert "VC_VC__LOG_FORMAT" not in vc.get("environment", {}), "JSON logs: the image's default"
    scrape = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    targets = [t for job in scrape["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]]
    assert targets == ["vc:8080"] and scrape["scrape_configs"][0]["metrics_path"] == "/metrics"
    ini = (DEPLOY / "compose" / "vc-cloud.ini").read_text()
    assert "ws://llama:8765" in ini and "ws://piper:8000/tts" in ini
    assert "--port" in services["llama"]["command"] and "8765" in services["llama"]["command"]
    assert "8000" in services["piper"]["command"]


def test_cloud_vc_config_resolves_with_vcs_loader(tmp_path: Path) -> None:
    """``vc config check`` of the mounted INI, by the vc image's own venv (its plugins only)."""
    svc = compose(DEPLOY / "docker-compose.cloud.yml")["services"]["vc"]
    venv = image_venv("vc", svc["build"]["args"])
    env = clean_env(**compose_env(svc, SHELL))
    env.pop("VC_CONFIG_FILE")
    proc = subprocess.run([str(venv / "bin" / "vc"), "config", "check",
                           str(DEPLOY / "compose" / "vc-cloud.ini")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "transports: twilio" in proc.stdout
    assert "llm: llama-ws" in proc.stdout and "tts: piper-websocket" in proc.stdout, proc.stdout


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_stack_starts_and_answers_health_checks(path: Path, tmp_path: Path) -> None:
    """Every built service starts from its image's venv and answers its health check; vc's
    /readyz is ready but for the services of upstream images, which are not run here."""
    doc = compose(path)
    order = [n for n, s in doc["services"].items() if "build" in s and n != "vc"] + ["vc"]
    with run_stack(path, tmp_path, order) as stack:
        for name, s in stack.items():
            if name != "vc":
                status, body = get(f"http://127.0.0.1:{s.port}/health")
                assert status == 200, body
        vc = stack["vc"]
        vc.wait("/healthz", lambda s, _b: s == 200, 120)
        unrun = {UPSTREAM_NOT_RUN[n] for n in doc["services"] if n in UPSTREAM_NOT_RUN}

        def ready(status: int, body: str) -> bool:
            with contextlib.suppress(ValueError):
                failing = {k for k, v in json.loads(body)["checks"].items() if not v}
                return failing == unrun
            return False

        _, body = vc.wait("/readyz", ready, 120)
        status, metrics = get(f"http://127.0.0.1:{vc.port}/metrics")
        assert status == 200 and "vc_active_calls" in metrics
        env = doc["services"]["vc"].get("environment", {})
        if env.get("VC_VC__LOG_FORMAT") != "text":  # the image's JSON logs
            time.sleep(0.5)
            lines = parse_lines(vc.output())
            assert lines and all("message" in rec or "msg" in rec for rec in lines), lines[:3]


# -- Cloud Build -------------------------------------------------------------------------------------------

CLOUDBUILD = DEPLOY / "cloudbuild.yaml"
RUN_SERVICES = {yaml.safe_load(p.read_text())["metadata"]["name"]: p
                for p in sorted((DEPLOY / "cloudrun").glob("*.yaml"))}
GKE_OVERLAYS = sorted(p.name for p in (DEPLOY / "gke" / "overlays").iterdir()
                      if (p / "kustomization.yaml").is_file())


def cloudbuild() -> dict[str, Any]:
    return yaml.safe_load(CLOUDBUILD.read_text())


def image_names(doc: dict[str, Any]) -> set[str]:
    """The names (no registry, no tag) of the images a build pushes."""
    from deploy_kit import cloudbuild_substitute, cloudbuild_values

    values = cloudbuild_values(doc)
    return {cloudbuild_substitute(t, values).rsplit("/", 1)[1].split(":")[0] for t in doc["images"]}


def deploy_steps(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in doc["steps"] if str(s.get("id", "")).startswith("deploy-")]


def run_step(step: dict[str, Any], doc: dict[str, Any], workdir: Path, **subs: str) -> list[list[str]]:
    """Run a bash step as Cloud Build would (its substitutions applied) with ``gcloud`` stubbed
    (recorded) and ``kubectl apply -k DIR`` replaced by the real ``kubectl kustomize DIR``
    (offline); returns the recorded commands, ``["rendered", text]`` for each kustomize."""
    from deploy_kit import cloudbuild_substitute, cloudbuild_values, kubectl

    assert step.get("entrypoint") == "bash" and step["args"][0] == "-c", step.get("id")
    script = cloudbuild_substitute(step["args"][1], cloudbuild_values(doc, **subs))
    stubs = workdir / "stubs"
    stubs.mkdir(exist_ok=True)
    record = workdir / "calls.jsonl"
    rec = (f'{sys.executable} -c "import json,sys; print(json.dumps(sys.argv[1:]))" '
           f'"$(basename "$0")" "$@" >> {record}')
    (stubs / "gcloud").write_text(f"#!/bin/sh\n{rec}\n")
    (stubs / "kubectl").write_text(
        f'#!/bin/sh\n{rec}\nif [ "$1 $2" = "apply -k" ]; then {kubectl()} kustomize "$3" '
        f'> "{workdir}/rendered-$(basename "$3").yaml" || exit 1; fi\n')
    for f in stubs.iterdir():
        f.chmod(0o755)
    proc = subprocess.run(["bash", "-c", script], cwd=workdir, capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}"}, timeout=120)
    assert proc.returncode == 0, f"step {step['id']}: {proc.stdout}{proc.stderr}"
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def test_cloudbuild_validates() -> None:
    from deploy_kit import cloudbuild_image_problems

    doc = cloudbuild()
    assert cloudbuild_problems(doc) == []
    assert cloudbuild_image_problems(doc, Dockerfile(DOCKERFILE)) == []


def test_llama_cpp_is_built_once_by_the_script_the_build_stage_installs_from() -> None:
    """The replayed venvs take the wheel from ~/.cache/vc/wheels, which scripts/llama-cpp.sh
    fills; the images take it from the llama-build stage, which runs that same script."""
    docker = Dockerfile(DOCKERFILE)
    (run,) = docker.runs(docker.stage("llama-build"))[-1:]
    assert "scripts/llama-cpp.sh wheel" in run
    copies = [rest for w, rest in docker.stage("build")["instructions"] if w == "COPY"]
    assert "--from=llama-build /wheels /root/.cache/vc/wheels" in copies
    assert any("scripts/llama-cpp.sh install /opt/vc/bin/python" in r
               for r in docker.runs(docker.stage("build")))


def check_deploy_step(step: dict[str, Any], doc: dict[str, Any], work: Path) -> None:
    """Run one deploy step (stubbed) and check what it deploys; AssertionError if wrong."""
    built = image_names(doc)
    values = cloudbuild_values_for_test(doc)
    assert step.get("waitFor") == ["push"], f"{step['id']}: deploys before the images are pushed"
    shutil.copytree(DEPLOY, work / "deploy")
    # not this target: nothing runs
    assert run_step(step, doc, work, _DEPLOY_TARGET="") == []
    if step["id"].startswith("deploy-run-"):
        name = step["id"].removeprefix("deploy-run-")
        calls = run_step(step, doc, work, _DEPLOY_TARGET="cloud-run")
        assert len(calls) == 1, calls
        call = calls[0]
        assert call[:4] == ["gcloud", "run", "deploy", name], call
        image = call[call.index("--image") + 1]
        declared = yaml.safe_load(RUN_SERVICES[name].read_text())
        (container,) = declared["spec"]["template"]["spec"]["containers"]
        want = container["image"].rsplit("/", 1)[1].split(":")[0]
        assert image == (f"{values['_REGION']}-docker.pkg.dev/test-project/"
                         f"{values['_REPOSITORY']}/{want}:{values['_TAG']}"), image
        assert want in built
        assert call[call.index("--region") + 1] == values["_REGION"]
        return
    overlay = step["id"].removeprefix("deploy-gke-")
    calls = run_step(step, doc, work, _DEPLOY_TARGET="gke", _TAG="v9", _CLUSTER="c1",
                     _CLUSTER_LOCATION="europe-west4-a")
    assert [c[:3] for c in calls] == [["gcloud", "container", "clusters"],
                                      ["kubectl", "apply", "-k"]], calls
    assert calls[0][3:5] == ["get-credentials", "c1"]
    assert calls[0][calls[0].index("--location") + 1] == "europe-west4-a"
    rendered = list(work.glob("rendered-*.yaml"))
    assert len(rendered) == 1, rendered
    objs = [o for o in yaml.safe_load_all(rendered[0].read_text()) if o]
    assert any(o["kind"] == "Deployment" for o in objs), overlay
    assert ({o["metadata"].get("namespace") for o in objs if o["kind"] == "Deployment"}
            == {"vc"}), overlay
    images = {c["image"] for o in objs if o["kind"] in ("Deployment", "StatefulSet")
              for c in o["spec"]["template"]["spec"]["containers"]}
    ours = {i for i in images if "docker.pkg.dev" in i}
    assert ours, images
    for image in ours:
        assert image.startswith(f"{values['_REGION']}-docker.pkg.dev/test-project/"
                                f"{values['_REPOSITORY']}/") and image.endswith(":v9"), image
        assert image.rsplit("/", 1)[1].split(":")[0] in built, f"{image} is not built"
    wrapper = work / "deploy" / "gke" / f"release-{overlay}" / "kustomization.yaml"
    assert f"../overlays/{overlay}" in wrapper.read_text()


def test_cloudbuild_deploys_every_cloud_run_service_and_gke_overlay(tmp_path: Path) -> None:
    doc = cloudbuild()
    steps = deploy_steps(doc)
    assert {s["id"] for s in steps} == ({f"deploy-run-{n}" for n in RUN_SERVICES}
                                        | {f"deploy-gke-{o}" for o in GKE_OVERLAYS})
    for step in steps:
        check_deploy_step(step, doc, tmp_path / step["id"])


def cloudbuild_values_for_test(doc: dict[str, Any]) -> dict[str, str]:
    from deploy_kit import cloudbuild_values

    return cloudbuild_values(doc)


def test_push_step_pushes_every_deployed_image() -> None:
    doc = cloudbuild()
    (push,) = [s for s in doc["steps"] if s.get("id") == "push"]
    built_steps = {s["id"] for s in doc["steps"] if s.get("args", [None])[0] == "build"} - {"llama-cpp"}
    assert set(push["waitFor"]) == built_steps
    pushed = set(re.search(r"for i in ([^;]+);", push["args"][1]).group(1).split())
    images = image_names(doc) - {"vc-llama-cpp-build"}
    assert pushed == images


def _step(doc: dict[str, Any], sid: str) -> dict[str, Any]:
    return next(s for s in doc["steps"] if s.get("id") == sid)


def _set_arg(doc: dict[str, Any], sid: str, flag: str, value: str) -> None:
    args = _step(doc, sid)["args"]
    args[args.index(flag) + 1] = value


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: _set_arg(d, "vc-llama", "--target", "llama-srv"), "--target llama-srv"),
    (lambda d: _set_arg(d, "vc-twilio", "--build-arg", "VC_PLUGIN=x"), "VC_PLUGIN"),
    (lambda d: _step(d, "vc").update(waitFor=["-"]), "does not wait for step"),
    (lambda d: _set_arg(d, "vc-gpl-free", "--cache-from", "x"), "without --cache-from"),
    (lambda d: _set_arg(d, "llama-cpp", "--build-arg", "BUILDKIT_INLINE_CACHE=0"), "inline cache"),
    (lambda d: _set_arg(d, "vc-piper", "-t", "x/vc-piper:${_TAG}"), "never pushed"),
    (lambda d: d["substitutions"].pop("_CLUSTER"), "$_CLUSTER"),
    (lambda d: _step(d, "deploy-gke-twilio")["args"].__setitem__(
        1, _step(d, "deploy-gke-twilio")["args"][1].replace("${_CLUSTER}", "${_CLUSTR}")), "$_CLUSTR"),
], ids=["target", "build-arg", "waitfor", "cache-from", "inline-cache", "tag", "subst-undeclared",
        "subst-typo"])
def test_cloudbuild_mutations_fail(mutate: Any, needle: str) -> None:
    from deploy_kit import cloudbuild_image_problems

    doc = copy.deepcopy(cloudbuild())
    mutate(doc)
    problems = cloudbuild_problems(doc) + cloudbuild_image_problems(doc, Dockerfile(DOCKERFILE))
    assert any(needle in p for p in problems), problems


@pytest.mark.parametrize("mutate", [
    lambda s: s.replace("../overlays/twilio", "../overlays/twillio"),
    lambda s: s.replace("kubectl apply -k deploy/gke/release-twilio", "kubectl apply -k deploy/gke/release"),
    lambda s: s.replace('= gke ]', '= gke-prod ]'),
    lambda s: s.replace("newTag: ${_TAG}", "newTag: latest"),
    lambda s: s.replace("--location ${_CLUSTER_LOCATION}", "--location ${_REGION}"),
], ids=["overlay-typo", "apply-path", "guard", "tag", "location"])
def test_cloudbuild_deploy_step_mutations_fail(mutate: Any, tmp_path: Path) -> None:
    doc = copy.deepcopy(cloudbuild())
    step = _step(doc, "deploy-gke-twilio")
    step["args"][1] = mutate(step["args"][1])
    with pytest.raises(AssertionError):
        check_deploy_step(step, doc, tmp_path)


def test_pip_installs_pin_the_constraints_file_mutation() -> None:
    from deploy_kit import cloudbuild_image_problems

    class Mutated(Dockerfile):
        def __init__(self) -> None:
            super().__init__(DOCKERFILE)
            stage = self.stage("piper-build")
            stage["instructions"] = [(w, r.replace("-c requirements/constraints.txt ", "", 1))
                                     for w, r in stage["instructions"]]

    problems = cloudbuild_image_problems(cloudbuild(), Mutated())
    assert any("piper-build" in p and "constraints" in p for p in problems), problems
