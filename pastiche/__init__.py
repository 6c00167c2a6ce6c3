"""pastiche: neural style transfer (Gatys et al.) with a compressed VGG19 inside the package.

    >>> import pastiche
    >>> image = pastiche.transfer("photo.jpg", "painting.jpg", size=256, num_steps=200)
    >>> image.save("out.png")
"""

__version__ = "2.0.0.dev0"

import importlib as _importlib  # noqa: E402
import os as _os  # noqa: E402
import sys as _sys  # noqa: E402
from typing import TYPE_CHECKING as _TYPE_CHECKING, Any as _Any  # noqa: E402


def _cpuinfo() -> tuple[str, set]:
    """The CPU's vendor ("GenuineIntel", "AuthenticAMD"; "" where unknown) and its feature flags,
    from /proc/cpuinfo (none where there is none): this runs before torch is imported, so it
    cannot ask torch."""
    if not _os.path.exists("/proc/cpuinfo"):
        return "", set()
    fields = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
            if "vendor_id" in fields and "flags" in fields:
                break
    return fields.get("vendor_id", ""), set(fields.get("flags", "").split())


def _float32_on_nnpack(vendor: str, flags: set) -> bool:
    """Whether the default precision's convolutions run on NNPACK: float32 (no AVX512-BF16 or
    AMX, see devices.native_bfloat16) anywhere but on an Intel CPU with the AVX-512 that torch
    needs to send float32 to oneDNN instead (devices.onednn_float32)."""
    bfloat16 = bool({"avx512_bf16", "amx_tile"} & flags)
    avx512 = {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags
    return not bfloat16 and not (vendor == "GenuineIntel" and avx512)


# float32 convolutions (but on an Intel CPU with AVX-512) run on NNPACK's thread pool and the
# other ops on OpenMP's.
# OpenMP threads that spin while waiting for work steal the cores NNPACK needs: at 256 px on 2
# cores a float32 step takes 0.23 s with OMP_WAIT_POLICY=PASSIVE and 0.29-0.30 s spinning. Where
# the convolutions run on oneDNN, which uses OpenMP too (bfloat16, and float32 on an Intel CPU
# with AVX-512), spinning only helps: passive waits cost ~40 us per small op (waking a thread),
# 17-18 instead of 11-12 ms per 64 px bfloat16 step, 124 instead of 114-122 ms at 256 px (AMD
# EPYC, 2 cores; README), 0.33 instead of 0.31 s per float32 step at 256 px on an AVX-512 Xeon
# (session 31). Both only take effect if set before torch is first imported, so a user's own
# setting or an earlier import wins.
# THP_MEM_ALLOC_ENABLE asks the kernel for 2 MB pages for torch's CPU tensors of 2 MB or more: a
# new feature map then costs one page fault per 2 MB instead of per 4 KB, and the big maps are new
# on every step (at 577x433 with --low-memory: 2.1 instead of 2.85 s per step;
# benchmarks/PERFORMANCE.md).
# MKL_DISABLE_FAST_MM stops MKL (the Gram products, L-BFGS's sums) keeping its own pools of
# buffers for reuse: 48 MB less in use at rest at 256 px (glibc's mallinfo2, 5 runs), peak RSS
# 755-756 instead of 781-827 MB in bfloat16 and 902-917 instead of 972-984 MB in float32, the same
# losses to the digit and the same step time (an AVX-512 Xeon, session 30; benchmarks/PERFORMANCE.md).
# MKL reads any value, 0 included, as 'off'; set it empty to keep the pools.
if "torch" not in _sys.modules:
    if _float32_on_nnpack(*_cpuinfo()):
        _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    _os.environ.setdefault("MKL_DISABLE_FAST_MM", "1")

# The public names are imported at first use (PEP 562), so that ``import pastiche`` alone does
# not load torch: the command (pastiche.__main__) handles Ctrl-C from its first instant, before
# torch's second of loading.
_EXPORTS = {"StyleTransfer": "engine", "run": "schedule", "transfer": "schedule", "PasticheError": "errors",
            "PasticheWarning": "errors", "load_image": "imageio", "save_image": "imageio", "LAYER_NAMES": "vgg",
            "VGG19": "vgg", "vgg19": "vgg", "stylize_video": "video_transfer", "frames_to_video": "video"}
_SUBMODULES = ("calibrate", "checks", "cli", "color", "compress", "console", "conv", "devices", "engine", "errors",
               "files", "flow", "imageio", "kmeans", "losses", "optim", "quantized", "schedule", "vgg", "video",
               "video_transfer")

__all__ = ["LAYER_NAMES", "PasticheError", "PasticheWarning", "StyleTransfer", "VGG19", "__version__",
           "frames_to_video", "load_image", "run", "save_image", "stylize_video", "transfer", "vgg19"]

if _TYPE_CHECKING:
    from .engine import StyleTransfer
    from .errors import PasticheError, PasticheWarning
    from .imageio import load_image, save_image
    from .schedule import run, transfer
    from .vgg import LAYER_NAMES, VGG19, vgg19
    from .video import frames_to_video
    from .video_transfer import stylize_video


def __getattr__(name: str) -> _Any:
    if name in _EXPORTS:
        value = getattr(_importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # later reads find it directly
        return value
    if name in _SUBMODULES:  # pastiche.schedule.plan without importing pastiche.schedule first
        return _importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'pastiche' has no attribute '{name}'")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))
