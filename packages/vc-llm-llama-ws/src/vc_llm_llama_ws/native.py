"""Which CPU instructions the installed llama.cpp library was built for, and whether this CPU
runs them.

vc builds llama.cpp portably (``scripts/llama-cpp.sh``: x86-64-v3, no AVX-512, no AMX). A build
tuned for its build machine (llama.cpp's default ``GGML_NATIVE=ON``) crashes on a CPU that lacks
one of the instructions it was allowed to use - or that advertises AMX without the OS enabling
it. :func:`report` reads the library's own account of its build (``llama_print_system_info``)
without running any model code, and compares it with ``/proc/cpuinfo``.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import attrs

from vc.providers import package_dir

#: llama.cpp's feature names (system info) -> the Linux ``/proc/cpuinfo`` flag for it.
CPU_FLAG = {
    "SSE3": "pni",
    "SSSE3": "ssse3",
    "AVX": "avx",
    "AVX2": "avx2",
    "F16C": "f16c",
    "FMA": "fma",
    "BMI2": "bmi2",
    "AVX_VNNI": "avx_vnni",
    "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi",
    "AVX512_VNNI": "avx512_vnni",
    "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8",
}
#: What vc's portable build may use: x86-64-v3, found on every x86-64 server CPU since 2015.
PORTABLE = frozenset({"SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2"})


@attrs.frozen
class NativeReport:
    library: str  # the llama.cpp library directory
    uses: frozenset[str]  # instruction sets the build was compiled for
    cpu: frozenset[str]  # this CPU's flags
    amx_usable: bool  # the OS lets this process use AMX tiles

    @property
    def portable(self) -> bool:
        return self.uses <= PORTABLE

    @property
    def missing(self) -> list[str]:
        """Instruction sets the build uses that this machine cannot run."""
        out = [f for f in sorted(self.uses) if CPU_FLAG.get(f, f.lower()) not in self.cpu]
        if "AMX_INT8" in self.uses and not self.amx_usable and "AMX_INT8" not in out:
            out.append("AMX_INT8")
        return out

    def summary(self) -> str:
        kind = "portable" if self.portable else "tuned for one CPU"
        return f"llama.cpp build: {kind} ({', '.join(sorted(self.uses)) or 'baseline'})"


def library_dir() -> Path | None:
    """The installed ``llama_cpp/lib`` directory, found without importing llama_cpp."""
    d = package_dir("llama_cpp")
    return d / "lib" if d is not None and (d / "lib").is_dir() else None


def build_features(system_info: str) -> frozenset[str]:
    """The CPU features a ``llama_print_system_info`` line says are compiled in (``X = 1``)."""
    return frozenset(
        name
        for name, on in re.findall(r"\b([A-Z][A-Z0-9_]*) = (\d)", system_info)
        if on == "1" and name in CPU_FLAG
    )


def system_info() -> str:
    """llama.cpp's build report (loads the library; runs no model code)."""
    import llama_cpp

    raw = llama_cpp.llama_print_system_info()
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def amx_usable() -> bool:
    """Whether Linux grants this process AMX tile data (what an AMX build needs to run)."""
    ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA, SYS_ARCH_PRCTL = 0x1023, 18, 158
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0
    except (OSError, AttributeError):
        return False


def report() -> NativeReport:
    lib = library_dir()
    return NativeReport(
        library=str(lib or ""),
        uses=build_features(system_info()),
        cpu=cpu_flags(),
        amx_usable=amx_usable(),
    )


#: Instruction classes outside x86-64-v3, as they show in ``objdump -d`` (AT&T syntax): AVX-512
#: (zmm registers, mask registers, the upper 16 xmm/ymm registers only EVEX can address) and
#: AMX (tile registers and tile instructions).
BEYOND_PORTABLE = {
    "AVX512": re.compile(r"%zmm\d|%k[0-7]\b|%[xy]mm(1[6-9]|2\d|3[01])\b"),
    "AMX": re.compile(r"%tmm\d|\b(ldtilecfg|sttilecfg|tileloadd|tileloaddt1|tilestored|tdpb\w+)\b"),
}


def disassembled_features(library: Path) -> dict[str, int]:
    """How many instructions of each class beyond x86-64-v3 a shared library contains
    (``objdump`` from binutils; RuntimeError when it is not installed)."""
    objdump = shutil.which("objdump")
    if objdump is None:
        raise RuntimeError("objdump is not installed (apt-get install binutils)")
    counts = dict.fromkeys(BEYOND_PORTABLE, 0)
    with subprocess.Popen(
        [objdump, "-d", "--no-show-raw-insn", str(library)],
        stdout=subprocess.PIPE,
        text=True,
        errors="replace",
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            for name, pattern in BEYOND_PORTABLE.items():
                if pattern.search(line):
                    counts[name] += 1
    if proc.returncode != 0:
        raise RuntimeError(f"objdump failed on {library} (status {proc.returncode})")
    return counts
