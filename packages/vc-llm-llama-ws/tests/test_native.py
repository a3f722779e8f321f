"""The installed llama.cpp is the portable build, on whatever machine this runs.

Nothing is built here: the installed libraries are read. A build tuned for the build machine's
CPU (llama.cpp's default ``GGML_NATIVE=ON``) reports AVX-512/AMX in its system info and
contains their instructions; either check fails, so CI catches a native build on any machine,
including one whose own CPU has AVX-512 (where such a build would run fine until copied).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from vc_llm_llama_ws import native

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed ([embedded] extra)")

ZEN4 = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 0 | AVX2 = 1 | F16C = 1 | FMA = 1 | "
    "BMI2 = 1 | AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | "
    "LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
)
SAPPHIRE_RAPIDS = ZEN4 + "AMX_INT8 = 1 | "
PORTABLE = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
HASWELL_FLAGS = "flags\t\t: fpu sse sse2 pni ssse3 fma avx f16c avx2 bmi2 sse4_2\n"
SPR_FLAGS = HASWELL_FLAGS.rstrip() + " avx512f avx512vbmi avx512_vnni avx512_bf16 amx_int8\n"


def libraries() -> list[Path]:
    lib = native.library_dir()
    assert lib is not None, "llama_cpp/lib not found next to the installed llama_cpp package"
    found = sorted(p for p in lib.glob("*.so*") if p.is_file() and not p.is_symlink())
    assert any(p.name.startswith("libggml-cpu") for p in found), found
    return found


def test_installed_build_reports_only_portable_features() -> None:
    uses = native.build_features(native.system_info())
    assert {"AVX2", "FMA", "F16C"} <= uses, f"not the x86-64-v3 build: {uses}"
    assert uses <= native.PORTABLE, (
        f"llama.cpp was built for one CPU ({sorted(uses - native.PORTABLE)}): rebuild it with "
        "scripts/llama-cpp.sh"
    )


@pytest.mark.parametrize("library", libraries(), ids=lambda p: p.name)
def test_installed_libraries_contain_no_avx512_or_amx_instructions(library: Path) -> None:
    try:
        counts = native.disassembled_features(library)
    except RuntimeError as e:
        pytest.skip(str(e))
    assert counts == {"AVX512": 0, "AMX": 0}, f"{library.name}: {counts}"


def test_disassembly_patterns_find_avx512_and_amx() -> None:
    beyond = native.BEYOND_PORTABLE
    assert beyond["AVX512"].search("vfmadd231ps %zmm1,%zmm2,%zmm3")
    assert beyond["AVX512"].search("vpaddd %ymm17,%ymm2,%ymm3")
    assert beyond["AVX512"].search("kmovw %k1,%eax")
    assert beyond["AMX"].search("ldtilecfg (%rax)")
    assert beyond["AMX"].search("tdpbssd %tmm1,%tmm2,%tmm0")
    assert not beyond["AVX512"].search("vfmadd231ps %ymm1,%ymm2,%ymm15")
    assert not beyond["AMX"].search("vpmaddubsw %ymm1,%ymm2,%ymm3")


def test_report_reads_features_and_what_the_cpu_lacks() -> None:
    def report(info: str, flags: str, amx: bool = True) -> native.NativeReport:
        return native.NativeReport("lib", native.build_features(info), native.cpu_flags(flags), amx)

    ok = report(PORTABLE, HASWELL_FLAGS)
    assert ok.portable and ok.missing == []
    zen4_on_haswell = report(ZEN4, HASWELL_FLAGS)
    assert not zen4_on_haswell.portable
    assert zen4_on_haswell.missing == ["AVX512", "AVX512_BF16", "AVX512_VBMI", "AVX512_VNNI"]
    # The VM of the crash: the CPU advertises AMX, the OS does not grant it to processes.
    assert report(SAPPHIRE_RAPIDS, SPR_FLAGS, amx=False).missing == ["AMX_INT8"]
    assert report(SAPPHIRE_RAPIDS, SPR_FLAGS, amx=True).missing == []
    assert "AVX_VNNI" not in native.build_features(ZEN4)  # "= 0" is not in use
