"""Where vc runs on Google Cloud, and which project it runs in.

Cloud Run sets ``K_SERVICE``/``K_REVISION``; every Kubernetes pod (GKE) gets
``KUBERNETES_SERVICE_HOST``. The project id comes from the environment when someone set it
(``GOOGLE_CLOUD_PROJECT`` and its older spellings) and otherwise from the metadata server,
which answers on Cloud Run, GKE (with or without Workload Identity) and Compute Engine:
``GET http://metadata.google.internal/computeMetadata/v1/project/project-id`` with the header
``Metadata-Flavor: Google``. ``GCE_METADATA_HOST`` points it elsewhere (as Google's client
libraries honour it).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping

PROJECT_VARIABLES = ("GOOGLE_CLOUD_PROJECT", "GCP_PROJECT", "GCLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT")
METADATA_HOST = "metadata.google.internal"
PROJECT_PATH = "/computeMetadata/v1/project/project-id"


def platform(env: Mapping[str, str]) -> str:
    """``cloud-run``, ``kubernetes`` or ``""`` (not on a platform whose stdout Cloud Logging reads)."""
    if env.get("K_SERVICE"):
        return "cloud-run"
    if env.get("KUBERNETES_SERVICE_HOST"):
        return "kubernetes"
    return ""


def project_from_env(env: Mapping[str, str]) -> str:
    for name in PROJECT_VARIABLES:
        value = env.get(name, "").strip()
        if value:
            return value
    return ""


def metadata_host(env: Mapping[str, str]) -> str:
    return env.get("GCE_METADATA_HOST", "").strip() or METADATA_HOST


def project_from_metadata(env: Mapping[str, str], timeout: float = 2.0) -> str:
    """Ask the metadata server for the project id; ``""`` when it cannot be reached or is not one."""
    url = f"http://{metadata_host(env)}{PROJECT_PATH}"
    request = urllib.request.Request(url, headers={"Metadata-Flavor": "Google"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if response.headers.get("Metadata-Flavor") != "Google":
                return ""  # something else answered (a captive proxy, a wrong host)
            value = response.read(256).decode("utf-8", "replace").strip()
    except (OSError, urllib.error.URLError, ValueError):
        return ""
    return value if _valid_project(value) else ""


def _valid_project(value: str) -> bool:
    # Project ids: 6-30 lowercase letters, digits, hyphens (domain-scoped ones contain ':' and '.').
    return 0 < len(value) <= 100 and all(c.isalnum() or c in "-:." for c in value)
