"""`vc doctor`'s llama.cpp build check, from llama.cpp's own system-info line and /proc/cpuinfo."""

from __future__ import annotations

import pytest
from vc_llm_llama_ws import checks
from vc_llm_llama_ws.native import NativeReport, build_features, cpu_flags

from vc.plugins import load_plugins

PORTABLE_INFO = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
    "AVX512 = 0 | AMX_INT8 = 0 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 |"
)
AVX512_INFO = PORTABLE_INFO.replace("AVX512 = 0", "AVX512 = 1")
AMX_INFO = PORTABLE_INFO.replace("AVX512 = 0", "AVX512 = 1").replace("AMX_INT8 = 0", "AMX_INT8 = 1")
X86_64_V3 = "flags\t\t: fpu sse2 pni ssse3 fma cx16 sse4_1 sse4_2 avx f16c avx2 bmi2"
AVX512_CPU = X86_64_V3 + " avx512f avx512dq avx512bw avx512vl"
AMX_CPU = AVX512_CPU + " amx_bf16 amx_tile amx_int8"


def report(info: str, cpuinfo: str, amx_usable: bool = False) -> NativeReport:
    return NativeReport(library="/venv/llama_cpp/lib", uses=build_features(info),
                        cpu=cpu_flags(cpuinfo), amx_usable=amx_usable)


def test_portable_build_is_ok() -> None:
    check = checks.build_check(report(PORTABLE_INFO, X86_64_V3))
    assert check.status == "ok" and check.name == "llama.cpp build"
    assert check.detail == "llama.cpp build: portable (AVX, AVX2, BMI2, F16C, FMA, SSE3, SSSE3)"


def test_avx512_build_on_a_cpu_without_avx512f_fails() -> None:
    check = checks.build_check(report(AVX512_INFO, X86_64_V3))
    assert check.status == "fail"
    assert "this llama.cpp build uses AVX512 which this CPU/OS does not enable" in check.detail
    assert "scripts/llama-cpp.sh" in check.fix
    # only installed, not configured: the stack can still run
    assert checks.build_check(report(AVX512_INFO, X86_64_V3), used=False).status == "warn"


def test_avx512_build_on_an_avx512_cpu_warns_it_is_tied_to_this_cpu() -> None:
    check = checks.build_check(report(AVX512_INFO, AVX512_CPU))
    assert check.status == "warn" and "built for one CPU (uses AVX512)" in check.detail
    assert "do not copy this environment or image to another machine" in check.fix


def test_amx_build_where_the_os_does_not_grant_amx_fails() -> None:
    check = checks.build_check(report(AMX_INFO, AMX_CPU, amx_usable=False))
    assert check.status == "fail" and "uses AMX_INT8 which this CPU/OS does not enable" in check.detail
    granted = checks.build_check(report(AMX_INFO, AMX_CPU, amx_usable=True))
    assert granted.status == "warn"


class _Config:
    providers = {"llm": {"llama-cpp": object()}, "stt": {}, "tts": {}}


def test_the_plugin_registers_the_check_and_it_inspects_the_real_build(monkeypatch) -> None:
    reg = load_plugins(env={"VC_LOAD_PLUGINS": "vc-llm-llama-ws"})
    assert [fn for fn, _ in reg.checks] == [checks.check_llama_build]
    monkeypatch.setattr(checks, "probe", lambda: report(AVX512_INFO, X86_64_V3))
    (failed,) = checks.check_llama_build(_Config())
    assert failed.status == "fail"
    (warned,) = checks.check_llama_build(None)  # configuration unknown: installed only
    assert warned.status == "warn"


def test_missing_library_only_matters_when_configured(monkeypatch) -> None:
    monkeypatch.setattr(checks, "installed", lambda: False)
    assert list(checks.check_llama_build(None)) == []
    (failed,) = checks.check_llama_build(_Config())
    assert failed.status == "fail" and "llama-cpp-python" in failed.detail


@pytest.mark.skipif(not checks.installed(), reason="llama-cpp-python is not installed")
def test_probe_reads_the_installed_build_in_a_child_process() -> None:
    real = checks.probe()
    assert real.uses  # a real build reports at least its baseline instruction sets
    assert checks.build_check(real).name == "llama.cpp build"
