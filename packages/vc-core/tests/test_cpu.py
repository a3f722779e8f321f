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


def _threads_after_numpy(env: dict[str, str], first: str) -> int:
    """Threads of a fresh Python once ``first`` has run and numpy has been imported."""
    code = f"{first}\nimport os, numpy\nprint(len(os.listdir('/proc/self/task')))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=120).stdout
    return int(out)


needs_proc_tasks = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="Linux /proc")


@needs_proc_tasks
def test_importing_vc_keeps_numpys_openblas_to_one_thread() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    assert _threads_after_numpy(env, "import vc") == 1
    if len(os.sched_getaffinity(0)) > 1:  # without vc, OpenBLAS starts a thread per core
        assert _threads_after_numpy(env, "pass") > 1


@needs_proc_tasks
def test_an_operators_openblas_setting_is_kept() -> None:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2"}
    code = ("import vc, os, numpy\n"
            "print(os.environ['OPENBLAS_NUM_THREADS'], len(os.listdir('/proc/self/task')))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    assert out[0] == "2"
    if len(os.sched_getaffinity(0)) > 1:
        assert int(out[1]) > 1
