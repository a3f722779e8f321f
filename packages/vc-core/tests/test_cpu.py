"""vc.cpu: the cores vc may use, with a container's CPU limit read from cgroup files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vc.cpu import cgroup_cpu_limit, usable_cores


def v2(tmp_path: Path, text: str) -> Path:
    (tmp_path / "cpu.max").write_text(text)
    return tmp_path


def v1(tmp_path: Path, quota: str, period: str = "100000") -> Path:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(quota + "\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(period + "\n")
    return tmp_path


@pytest.mark.parametrize(("text", "limit"), [
    ("200000 100000\n", 2.0),
    ("150000 100000\n", 1.5),
    ("50000 100000\n", 0.5),
    ("max 100000\n", None),
    ("", None),
    ("garbage here\n", None),
])
def test_cgroup_v2_limit(tmp_path: Path, text: str, limit: float | None) -> None:
    assert cgroup_cpu_limit(v2(tmp_path, text)) == limit


def test_cgroup_v1_limit(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(v1(tmp_path, "300000")) == 3.0


def test_cgroup_v1_without_a_quota(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(v1(tmp_path, "-1")) is None


def test_no_cgroup_files_means_no_limit(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path) is None


def test_usable_cores_is_the_affinity_capped_by_the_limit(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert usable_cores(tmp_path) == 16  # no limit
    assert usable_cores(v2(tmp_path, "250000 100000")) == 2  # 2.5 CPUs: 2 threads
    assert usable_cores(v2(tmp_path, "50000 100000")) == 1  # half a CPU: still one thread
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert usable_cores(v2(tmp_path, "400000 100000")) == 1  # pinned to one core


def _after_numpy(env: dict[str, str], first: str) -> tuple[str | None, int]:
    """A fresh Python's OPENBLAS_NUM_THREADS and thread count once ``first`` has run and
    numpy has been imported."""
    code = (f"{first}\nimport os, numpy\n"
            "print(os.environ.get('OPENBLAS_NUM_THREADS'), len(os.listdir('/proc/self/task')))")
    setting, threads = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
        timeout=120).stdout.split()
    return (None if setting == "None" else setting), int(threads)


needs_proc_tasks = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="Linux /proc")
several_cores = len(os.sched_getaffinity(0)) > 1 if hasattr(os, "sched_getaffinity") else False


@needs_proc_tasks
def test_importing_vc_keeps_numpys_openblas_to_one_thread() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    assert _after_numpy(env, "import vc")[1] == 1
    if several_cores:  # without vc, OpenBLAS starts a thread per core
        assert _after_numpy(env, "pass")[1] > 1


@needs_proc_tasks
def test_an_operators_openblas_setting_is_kept() -> None:
    setting, threads = _after_numpy({**os.environ, "OPENBLAS_NUM_THREADS": "2"}, "import vc")
    assert setting == "2"
    if several_cores:
        assert threads > 1
