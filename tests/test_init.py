"""Tests for pastiche/__init__.py: the allocator and threading settings made before torch loads, and the
public names, loaded at first use."""

import ast
import os
import platform
import subprocess
import sys

_SETTINGS = ("THP_MEM_ALLOC_ENABLE", "MKL_DISABLE_FAST_MM")
_PRINT = "import os; print([os.environ.get(k) for k in %r])" % (_SETTINGS,)


def _environment_after(code: str, **env: str) -> list:
    clean = {k: v for k, v in os.environ.items() if k not in _SETTINGS}
    done = subprocess.run([sys.executable, "-c", f"{code}\n{_PRINT}"], capture_output=True, text=True,
                          env={**clean, **env}, check=True)
    return ast.literal_eval(done.stdout)


def test_settings_made_when_pastiche_loads_first():
    assert _environment_after("import pastiche, torch") == ["1", "1"]


def test_a_users_own_setting_wins():
    """MKL reads any value of MKL_DISABLE_FAST_MM, 0 included, as 'off': an empty one keeps its pools."""
    assert _environment_after("import pastiche", MKL_DISABLE_FAST_MM="") == ["1", ""]


def test_nothing_set_once_torch_is_loaded():
    """Both only take effect before torch's first import, so after it pastiche leaves them alone."""
    assert _environment_after("import torch, pastiche") == [None, None]


def test_openmp_waits_passively_only_where_float32_runs_on_nnpack():
    """OMP_WAIT_POLICY=PASSIVE is for NNPACK's thread pool: CPUs without bfloat16 arithmetic but
    Intel's with AVX-512 (F, BW, VL, DQ), whose float32 convolutions are oneDNN's (and no
    /proc/cpuinfo)."""
    from pastiche import _cpuinfo, _float32_on_nnpack

    avx512 = {"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"}
    intel, amd = "GenuineIntel", "AuthenticAMD"
    assert _float32_on_nnpack(intel, {"avx2", "fma"}) and _float32_on_nnpack("", set())
    assert _float32_on_nnpack(intel, {"avx2", "avx512f"})  # AVX-512 F alone (Knights Landing): not torch's AVX512
    assert not _float32_on_nnpack(intel, avx512)  # Skylake-SP, Cascade Lake, Ice Lake: float32 on oneDNN
    assert _float32_on_nnpack(amd, avx512)  # AVX-512 in two halves: NNPACK's (devices.onednn_float32)
    for vendor in (intel, amd):
        assert not _float32_on_nnpack(vendor, avx512 | {"avx512_bf16"}) and not _float32_on_nnpack(vendor, {"amx_tile"})
    vendor, flags = _cpuinfo()  # this host's, read as the import reads them
    if os.path.exists("/proc/cpuinfo") and platform.machine() == "x86_64":
        assert vendor and {"sse2", "avx2"} & flags


def test_the_public_names_load_at_first_use_and_import_pastiche_alone_loads_no_torch():
    code = ("import sys, pastiche\n"
            "assert 'torch' not in sys.modules\n"
            "assert all(getattr(pastiche, name) is not None for name in pastiche.__all__)\n"
            "from pastiche.video_transfer import stylize_video\n"
            "assert pastiche.stylize_video is stylize_video and 'stylize_video' in dir(pastiche)\n")
    subprocess.run([sys.executable, "-c", code], check=True)
