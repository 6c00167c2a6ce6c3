"""Process-wide memory settings that the ``pastiche`` command makes, not the library: each changes
the whole process, which in a notebook belongs to the user. Both are Linux's (glibc's heap, the
kernel's page reclaim) and do nothing elsewhere.
"""

from __future__ import annotations

import ctypes
import platform
import re
import sys
from typing import Iterable

# The CUDA build of torch loads NVIDIA's libraries with its own (pip's nvidia-* packages, or a
# conda prefix's lib/), whatever the device: libcublasLt, libnvJitLink, libnvrtc, libcudnn*, ...,
# and torch's own CUDA side (libtorch_cuda, libc10_cuda).
_CUDA_LIBRARY = re.compile(r"^lib(torch_cuda|torch_nvshmem|c10_cuda|caffe2_nvrtc|cu[A-Za-z]+|nv[A-Za-z_]+|nccl)"
                           r"[-_.].*so")
_MAPS = "/proc/self/maps"
MADV_PAGEOUT = 21  # Linux's number for it (asm-generic/mman-common.h); Python's mmap module names it only
                   # where it was built with headers from Linux 5.4 or later


def release_freed_memory(*, low_memory: bool) -> None:
    """Fix glibc's mmap threshold, so that freed feature maps go back to the system, and, except
    with ``low_memory``, keep one malloc arena.

    By default glibc raises its mmap threshold to the size of each large block freed (up to
    32 MB), and its trim threshold to twice that, so later feature maps come from a heap that
    fragments and keeps its free memory: peak RSS 1,488-1,515 MB at 577x433 px. A fixed
    threshold stops both: at 16 MB (the default here) maps of 16 MB or more get their own mapping,
    1,294-1,336 MB. Fixing it also fixes the trim threshold, at 128 KiB unless set: the heap's top
    then went back to the system after every step and was faulted in again on the next, so it is
    set to 32 MB: 600 instead of 660-680 ms per step at 577x433 and 115-120 instead of 125-135 ms
    at 256 px (``--single-scale``, bfloat16, session 14), peak RSS 1,174-1,210 instead of
    1,157-1,185 MB and 858-860 instead of 851-867 MB. At 128 KiB (``--low-memory``) every
    tensor-sized block is mapped and the heap trimmed, 1,099 MB for ~24 % more time
    (benchmarks/PERFORMANCE.md).
    One arena: the weights loader's threads would each get an arena of their own, whose ~54 MB
    freed after loading stay resident and are never reused by the steps, which allocate in the
    main thread's. Peak RSS 749-789 instead of 807-861 MB at 256 px and 1,169-1,190 instead of
    1,219-1,271 MB at ~500^2 px, the same step time (session 16, in-process and CLI A/B runs).
    Not with ``--low-memory``: its blocks are mapped, so its peak did not move (626 against 627
    MB at 256 px).
    """
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024 if low_memory else 16 * 1024 * 1024)
        if not low_memory:
            libc.mallopt(M_TRIM_THRESHOLD, 32 * 1024 * 1024)
            libc.mallopt(M_ARENA_MAX, 1)


def release_cuda_libraries(devices: Iterable[str]) -> bool:
    """Hand back to the system the pages of CUDA's libraries that ``import torch`` read in, when
    none of ``devices`` (torch's names) is a CUDA device; whether the kernel took them.

    On the CUDA build of torch, importing it maps NVIDIA's libraries, and loading them reads in
    ~145 MB of their code and data (62 MB of libcublasLt alone), which a CPU run never touches
    again but holds to its exit. ``MADV_PAGEOUT`` (Linux 5.4+) reclaims such clean file pages at
    once; one that is needed after all is read in again from the file, so nothing can break, only
    slow down. Pages that another process maps too are left to it by the kernel. Pages written to
    stay (libcublasLt's 81 MB of data among them): there is nothing to read them back from.
    """
    if not sys.platform.startswith("linux") or any(str(device).startswith("cuda") for device in devices):
        return False
    try:
        maps = open(_MAPS)  # "start-end perms offset dev inode path" per mapping
    except OSError:  # a chroot or container without /proc: nothing to go by
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    taken = False
    with maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and _CUDA_LIBRARY.match(fields[5].rstrip("\n").rsplit("/", 1)[-1]):
                start, end = (int(address, 16) for address in fields[0].split("-"))
                # 0 where taken; an old kernel's EINVAL leaves the pages where they were
                taken |= libc.madvise(start, end - start, MADV_PAGEOUT) == 0
    return taken
