"""vc.cpu: the cores vc may use, with a container's CPU limit read from cgroup files."""

from __future__ import annotations

import os
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
