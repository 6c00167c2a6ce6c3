import re
import sys

import numpy as np
import pytest
import torch

from pastiche import devices
from pastiche.devices import (available_devices, compute_dtype, default_device, device_memory, resolve_device,
                              seed_everything)
from pastiche.errors import PasticheError, command_line
from pastiche.vgg import vgg19


def test_cpu_is_always_available_and_resolves():
    assert available_devices()[0] == "cpu"
    assert default_device() in available_devices()
    assert resolve_device("cpu") == torch.device("cpu")


def test_an_absent_device_names_the_ones_present():
    with pytest.raises(PasticheError) as info:
        resolve_device("cuda:99")
    assert str(info.value) == (f"device 'cuda:99' is not available here; available:"
                               f" {', '.join(available_devices())} (choose one with device)")
    with pytest.raises(PasticheError, match=r"\(choose one with --supplemental-device\)$"), command_line():
        resolve_device("cuda:99", keyword="supplemental_devices")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/meminfo")
def test_cpu_memory_is_the_physical_ram():
    with open("/proc/meminfo") as f:
        total_kb = int(next(line for line in f if line.startswith("MemTotal:")).split()[1])
    # MemTotal leaves out what the kernel reserved at boot: a few percent at most.
    assert 0.9 < total_kb * 1024 / device_memory(torch.device("cpu")) <= 1.0


@pytest.mark.parametrize("seed", [2 ** 64, -2 ** 63 - 1, 1.5, True, "7"])
def test_seeds_torch_cannot_take_are_named(seed):
    with pytest.raises(PasticheError, match=re.escape(f"seed {seed!r} is not a whole number from -2**63 to 2**64")):
        seed_everything(seed)


def test_seeds_at_the_ends_of_the_range_are_taken():
    assert seed_everything(2 ** 64 - 1) == 2 ** 64 - 1 and seed_everything(-2 ** 63) == -2 ** 63
    assert seed_everything(np.int64(3)) == 3


def test_seed_makes_runs_repeat_and_none_draws_one():
    assert seed_everything(7) == 7
    first = torch.rand(3)
    seed_everything(7)
    assert torch.equal(torch.rand(3), first)
    drawn = seed_everything(None)
    assert 0 <= drawn < 2 ** 32


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bfloat16_only_where_every_device_is_a_cpu_that_has_it(monkeypatch, native):
    monkeypatch.setattr(devices, "native_bfloat16", lambda: native)
    monkeypatch.setattr(devices, "bfloat16_convolutions", lambda: True)  # AVX-512: emulated if not native
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert compute_dtype("auto", [cpu]) == (torch.bfloat16 if native else torch.float32)
    assert compute_dtype("auto", [cpu, gpu]) == torch.float32  # a GPU as a supplemental device
    assert compute_dtype("float32", [cpu]) == torch.float32
    assert compute_dtype("bfloat16", [cpu]) == torch.bfloat16  # emulated where not native: slow, not wrong


def test_bfloat16_is_refused_where_onednn_cannot_compute_it(monkeypatch):
    """An AVX2-only CPU: oneDNN's bfloat16 convolutions fail there and torch's fallback is 8-460x
    slower than float32, so forcing bfloat16 is an error that names the way out."""
    monkeypatch.setattr(devices, "bfloat16_convolutions", lambda: False)
    with pytest.raises(PasticheError) as info:
        compute_dtype("bfloat16", [torch.device("cpu")])
    assert str(info.value) == ("precision='bfloat16' needs a CPU with AVX-512 or AVX-NE-CONVERT for bfloat16"
                               " convolutions, and this one has neither; use precision='auto' or precision='float32'")
    with pytest.raises(PasticheError) as info:
        vgg19(dtype=torch.bfloat16)
    assert str(info.value) == ("dtype=torch.bfloat16 needs a CPU with AVX-512 or AVX-NE-CONVERT for bfloat16"
                               " convolutions, and this one has neither; use torch.float32")


def test_bfloat16_convolutions_is_onednns_own_answer():
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if probe is None:
        pytest.skip("this torch does not say")
    assert devices.bfloat16_convolutions() == probe()
    # a CPU with bfloat16 in hardware has the AVX-512 that oneDNN's bfloat16 path needs
    assert devices.bfloat16_convolutions() or not devices.native_bfloat16()


def test_bfloat16_off_the_cpu_and_unknown_precisions_are_refused():
    with pytest.raises(PasticheError) as info:
        compute_dtype("bfloat16", [torch.device("cpu"), torch.device("cuda")])
    assert str(info.value) == ("precision='bfloat16' runs on CPUs only; use precision='float32' or"
                               " precision='auto' on a GPU")
    with pytest.raises(PasticheError) as info, command_line():
        compute_dtype("bfloat16", [torch.device("cuda")])
    assert str(info.value) == ("--precision bfloat16 runs on CPUs only; use --precision float32 or --precision auto"
                               " on a GPU")
    with pytest.raises(PasticheError) as info:
        compute_dtype("half", [torch.device("cpu")])
    assert str(info.value) == "unknown precision 'half'; use auto, float32, bfloat16"


@pytest.mark.parametrize("vendor, capability, mkldnn, expected", [
    ("GenuineIntel", "AVX512", True, True), ("GenuineIntel", "AVX2", True, False),
    ("GenuineIntel", "DEFAULT", True, False), ("GenuineIntel", "AVX512", False, False),
    ("AuthenticAMD", "AVX512", True, False), ("", "AVX512", True, False)])
def test_float32_goes_to_onednn_only_where_torch_runs_on_intels_avx512(monkeypatch, vendor, capability, mkldnn,
                                                                       expected):
    monkeypatch.setattr(devices, "_cpuinfo", lambda: (vendor, {"avx512f"}))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: mkldnn)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    decide = devices.onednn_float32.__wrapped__  # the answer, not the process's cached one
    assert decide() is expected
    for isa, allowed in (("AVX2", False), ("avx512_core_vnni", True), ("AVX10_1_512_AMX", True), ("ALL", True)):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)  # a user's limit on oneDNN's instructions
        assert decide() is (expected and allowed)


def test_the_process_keeps_its_first_answer_on_float32(monkeypatch):
    """Kernels are laid out when the model is built and maps at every layer: the answer must not
    change mid-process, as oneDNN's own reading of its ISA limit does not."""
    first = devices.onednn_float32()
    # what would make the answer the opposite now
    monkeypatch.setattr(devices, "_cpuinfo", lambda: ("AuthenticAMD" if first else "GenuineIntel", set()))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2" if first else "AVX512")
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "ALL")
    assert devices.onednn_float32.__wrapped__() is not first
    assert devices.onednn_float32() is first


def test_ctrl_c_while_deterministic_mode_loads_leaves_torch_usable():
    """The first deterministic call imports torch._dynamo (~1 s); a Ctrl-C cut that import short
    and every later call in the process (a notebook's kernel) failed on half-made modules."""
    import subprocess

    script = """
import os, signal, threading, time
import torch
from pastiche.devices import seed_everything
threading.Timer(0.05, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
try:
    seed_everything(0, deterministic=True)
    time.sleep(1)
except KeyboardInterrupt:
    pass
seed_everything(0, deterministic=True)
print(torch.are_deterministic_algorithms_enabled())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "True\n", done.stderr
