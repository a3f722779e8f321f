"""How many CPU cores vc may use: the cores the process may run on, capped by its container's
CPU limit.

A pod limited to 2 CPUs on a 16-core node sees 16 cores in ``os.cpu_count()`` and in its
affinity; threads sized to 16 then share 2 cores' worth of time, and spinning ones (llama.cpp,
OpenMP) stall each other. Providers size their default thread counts from
:func:`usable_cores`.

numpy's OpenBLAS starts a thread per core when numpy is imported, and they spin after every
matrix product. vc's only sizable ones are Whisper's mel filter bank (one per transcription),
where the spinning thread took a core from CTranslate2's threads: one transcription of a
3-second question cost 0.33 CPU-s and 200 ms instead of 0.23 CPU-s and 155 ms (2 cores). So
importing vc keeps OpenBLAS to one thread (:func:`single_threaded_blas`) unless
``OPENBLAS_NUM_THREADS`` is set already.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def single_threaded_blas() -> None:
    """Ask numpy's OpenBLAS for one thread, unless ``OPENBLAS_NUM_THREADS`` is set. OpenBLAS
    reads it once, when numpy is first imported: ``import vc`` does this before that in every
    vc program; where numpy was imported first it changes nothing."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def usable_cores(cgroup: Path = CGROUP) -> int:
    """The process's CPU affinity, capped by the cgroup CPU limit (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit(cgroup)
    if limit is not None:
        cores = min(cores, max(1, math.floor(limit)))
    return max(1, cores)


def cgroup_cpu_limit(cgroup: Path = CGROUP) -> float | None:
    """CPUs' worth of time the cgroup may use (``cpu.max`` in v2, the CFS quota in v1), or
    None where there is no limit or no cgroup to read."""
    try:
        fields = (cgroup / "cpu.max").read_text().split()
    except OSError:
        fields = _cgroup_v1(cgroup / "cpu")
    if len(fields) < 2 or fields[0] == "max":
        return None
    try:
        quota, period = float(fields[0]), float(fields[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _cgroup_v1(cpu: Path) -> list[str]:
    try:
        return [(cpu / "cpu.cfs_quota_us").read_text().strip(),
                (cpu / "cpu.cfs_period_us").read_text().strip()]
    except OSError:
        return []
