"""Where the computation runs: which devices exist, how much memory they have, and seeding.

Device names are torch's: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``. An absent device is a
PasticheError naming the ones present, not torch's own error on first use.
"""

from __future__ import annotations

import numbers
import os
import random
import warnings
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator, Optional, Sequence, Tuple, Union

import torch

from . import _cpuinfo
from .errors import PasticheError, option_name


def available_devices() -> Tuple[str, ...]:
    devices = ["cpu"]
    with warnings.catch_warnings():  # a CUDA build without a GPU warns on this query
        warnings.simplefilter("ignore")
        if torch.cuda.is_available():
            devices += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        devices.append("mps")
    return tuple(devices)


def default_device() -> str:
    devices = available_devices()
    return "cuda" if "cuda" in devices else "mps" if "mps" in devices else "cpu"


def device_memory(device: torch.device) -> Optional[int]:
    """Total memory of ``device`` in bytes: the GPU's own for CUDA, physical RAM otherwise (MPS
    shares it); None where the platform does not say (os.sysconf is POSIX only)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def fits_in_ram(nbytes: int) -> bool:
    """Whether ``nbytes`` could be held in this machine's RAM at all (True where it does not say):
    a size past it is refused at once rather than allocated for minutes and then failed."""
    ram = device_memory(torch.device("cpu"))
    return ram is None or nbytes <= ram


def resolve_device(spec: Union[str, int, torch.device], *, keyword: str = "device") -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` (or N, as torch takes it) or ``"mps"`` → a device that
    exists, or PasticheError naming the option ``keyword`` (see :func:`~pastiche.errors.option_name`)."""
    if isinstance(spec, numbers.Integral) and not isinstance(spec, bool) and spec >= 0:
        spec = f"cuda:{spec}"
    if isinstance(spec, (str, torch.device)) and str(spec) == "cpu:0":  # torch's name for the one CPU device
        spec = "cpu"
    if not isinstance(spec, (str, torch.device)) or str(spec) not in available_devices():
        raise PasticheError(f"device {str(spec)!r} is not available here; available: "
                            f"{', '.join(available_devices())} (choose one with {option_name(keyword)})")
    return torch.device(spec)


PRECISIONS = ("auto", "float32", "bfloat16")


def native_bfloat16() -> bool:
    """Whether this CPU does bfloat16 arithmetic in hardware (AVX512-BF16 or AMX), where oneDNN's
    bfloat16 convolutions run 2x faster than any float32 one; elsewhere oneDNN emulates them
    (see :func:`bfloat16_convolutions`)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private: absent in some versions
    return any(bool(getattr(torch.cpu, probe, lambda: False)()) for probe in probes)


def bfloat16_convolutions() -> bool:
    """Whether oneDNN runs bfloat16 convolutions on this CPU: in hardware (:func:`native_bfloat16`)
    or emulated, which needs AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT. Without them torch falls back
    to its reference convolution: 8x slower than float32 on channels-last maps and 460x on
    NCHW ones (64 channels at 128x128 px, AVX2, 2 cores), and oneDNN's weight packing fails."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)  # private: absent in some versions
    return bool(probe()) if probe is not None else native_bfloat16()


@lru_cache(maxsize=None)
def onednn_float32() -> bool:
    """Whether float32 convolutions on this CPU go to oneDNN, on channels-last maps with kernels
    packed once, rather than to NNPACK and our Winograd: where torch runs on AVX-512 on an Intel
    CPU. There oneDNN's float32 kernels are AVX-512 and NNPACK's AVX2, and a kernel packed for one
    map size serves every size (as bfloat16 kernels do); on AVX2 the layout depends on the size and
    NNPACK wins 2-2.5x. At 256 px on an AVX-512 Xeon: 0.27-0.29 instead of 0.33-0.38 s per float32
    step, with oneDNN limited to a Cascade Lake's instructions too. Not on an AMD EPYC (Zen 4),
    whose AVX-512 runs as two 256-bit halves: there oneDNN took 1.21-1.25x NNPACK's time at ≈500²
    px (benchmarks/PERFORMANCE.md). Not where oneDNN is told to stop short of AVX-512
    (``ONEDNN_MAX_CPU_ISA=AVX2``: 0.66 instead of 0.40 s a step there, its kernels repacked at
    each call). Decided once per process, as oneDNN reads that limit once: vgg._layout asks at
    every layer, and the kernels, laid out when the model is built, must meet maps in the same
    layout (NNPACK fails on channels-last ones)."""
    cpu = getattr(torch.backends, "cpu", None)  # absent before torch 2.1: float32 stays on NNPACK
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "ALL")).upper()
    return (_cpuinfo()[0] == "GenuineIntel" and torch.backends.mkldnn.is_available() and cpu is not None
            and cpu.get_cpu_capability() == "AVX512" and isa.startswith(("ALL", "AVX512", "AVX10")))


def require_bfloat16(what: str, instead: str) -> None:
    """PasticheError naming ``what`` and ``instead`` unless :func:`bfloat16_convolutions`."""
    if not bfloat16_convolutions():
        raise PasticheError(f"{what} needs a CPU with AVX-512 or AVX-NE-CONVERT for bfloat16"
                            f" convolutions, and this one has neither; use {instead}")


def compute_dtype(precision: str, devices: Sequence[torch.device]) -> torch.dtype:
    """The dtype of VGG19's convolutions and activations for ``precision``: ``"float32"``,
    ``"bfloat16"`` (CPUs with :func:`bfloat16_convolutions` only), or ``"auto"``: bfloat16 where every device is a CPU with
    :func:`native_bfloat16`, else float32. Losses, Gram matrices and the image stay float32."""
    if precision not in PRECISIONS:
        raise PasticheError(f"unknown precision '{precision}'; use {', '.join(PRECISIONS)}")
    on_cpu = all(d.type == "cpu" for d in devices)
    bfloat16, auto, float32 = (option_name("precision", p) for p in ("bfloat16", "auto", "float32"))
    if precision == "bfloat16" and not on_cpu:
        raise PasticheError(f"{bfloat16} runs on CPUs only; use {float32} or {auto} on a GPU")
    if precision == "bfloat16":
        require_bfloat16(bfloat16, f"{auto} or {float32}")
    if precision == "bfloat16" or (precision == "auto" and on_cpu and native_bfloat16()):
        return torch.bfloat16
    return torch.float32


def pick_seed(seed: Optional[int]) -> int:
    """``seed`` if torch takes it (PasticheError if not), or a random one for None."""
    seed = random.randint(0, 2 ** 32 - 1) if seed is None else seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not -2 ** 63 <= seed < 2 ** 64:
        raise PasticheError(f"{option_name('seed')} {seed!r} is not a whole number from -2**63 to 2**64 - 1;"
                            " pick another")
    return seed


def seed_everything(seed: Optional[int], *, deterministic: bool = False) -> int:
    """Seed torch's generators (a random seed if None); return the seed used. Process-wide: the
    command's way; a library call goes through :func:`seeded`."""
    seed = pick_seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        _use_deterministic_algorithms(True, warn_only=True)
    return seed


def _use_deterministic_algorithms(enabled: bool, *, warn_only: bool) -> None:
    """torch.use_deterministic_algorithms, whose first call imports torch._dynamo (~1 s, ~200 MB):
    Ctrl-C is held until it is done and raised after, because an import cut short leaves modules
    half made, and every later call in the process (a notebook's kernel) then fails."""
    from .__main__ import interrupts_held

    with interrupts_held() as caught:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
    if caught:
        raise KeyboardInterrupt


@contextmanager
def seeded(seed: Optional[int], *, deterministic: bool = False) -> Iterator[int]:
    """:func:`seed_everything` for a ``with`` block, whose value is the seed: torch's generators
    and determinism switches are put back afterwards, so that pastiche.transfer() in a notebook
    leaves the caller's random state and settings as they were."""
    switches = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda):
        try:
            yield seed_everything(seed, deterministic=deterministic)
        finally:
            # only if changed: use_deterministic_algorithms imports torch._dynamo (~200 MB)
            if (torch.are_deterministic_algorithms_enabled(),
                    torch.is_deterministic_algorithms_warn_only_enabled()) != switches[:2]:
                _use_deterministic_algorithms(switches[0], warn_only=switches[1])
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = switches[2:]
