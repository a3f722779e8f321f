"""Helpers shared by vc-gcp's tests (imported as a module: the tests directory is on sys.path)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"
SCHEMAS = Path(__file__).parent / "schemas"


def parse_lines(text: str) -> list[dict[str, Any]]:
    """Every non-empty line must be one JSON object."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise AssertionError(f"line {n} is not JSON ({e}): {line[:300]!r}") from None
        assert isinstance(obj, dict), f"line {n} is not a JSON object: {line[:300]!r}"
        out.append(obj)
    return out


def clean_env(**extra: str) -> dict[str, str]:
    """os.environ without anything that says "you are on Google Cloud", plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("K_SERVICE", "K_REVISION", "KUBERNETES_SERVICE_HOST", "GCE_METADATA_HOST",
                        "GOOGLE_CLOUD_PROJECT", "GCP_PROJECT", "GCLOUD_PROJECT",
                        "CLOUDSDK_CORE_PROJECT")
           and not k.startswith("VC_")}
    env.update(extra)
    return env
