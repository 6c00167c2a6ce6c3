"""Tests for pastiche/memory.py: the command's process-wide memory settings."""

import json
import os
import re
import subprocess
import sys

import pytest

from pastiche.memory import _CUDA_LIBRARY, release_cuda_libraries


@pytest.mark.parametrize("name", ["libcublasLt.so.13", "libcudnn_graph.so.9", "libnvJitLink.so.13", "libnvrtc.so.13",
                                  "libtorch_cuda.so", "libc10_cuda.so", "libnccl.so.2", "libcusparseLt.so.0",
                                  "libnvshmem_host.so.3", "libcudart-d0da41ae.so.11.0"])
def test_cuda_libraries_are_recognised(name):
    assert _CUDA_LIBRARY.match(name)


@pytest.mark.parametrize("name", ["libtorch_cpu.so", "libtorch.so", "libc10.so", "libtorch_python.so", "libgomp.so.1",
                                  "libpython3.11.so.1.0", "libstdc++.so.6.0.30", "libc.so.6", "cuda.py",
                                  "_multiarray_umath.cpython-311-x86_64-linux-gnu.so"])
def test_other_libraries_are_left(name):
    assert not _CUDA_LIBRARY.match(name)


@pytest.mark.parametrize("devices", [["cuda"], ["cpu", "cuda:1"]])
def test_nothing_released_for_a_run_on_cuda(devices):
    assert release_cuda_libraries(devices) is False


def test_nothing_released_without_proc(monkeypatch, tmp_path):
    """A chroot or container without /proc: the run goes on as it would have, no traceback."""
    monkeypatch.setattr("pastiche.memory._MAPS", str(tmp_path / "no-proc" / "maps"))
    assert release_cuda_libraries(["cpu"]) is False


def _filesystem(path) -> str:
    """The type of the filesystem ``path`` is on ("ext4", "tmpfs", ...), from /proc/mounts."""
    with open("/proc/mounts") as mounts:  # "device mount-point type options ..." per line
        points = [line.split()[1:3] for line in mounts]
    within = [m for m in points if os.path.commonpath([str(path), m[0]]) == m[0]]
    return max(within, key=lambda m: len(m[0]))[1]


# In a child: pytest's own process maps torch's CUDA libraries too, and the kernel leaves pages
# that another process maps. So the child maps a file of its own under a CUDA library's name,
# reads it in, and reports that mapping's resident KB before and after, with what the call said
# and whether a convolution gives the same result after it (the code torch runs still works).
_CHILD = r"""
import json, mmap, re, sys, torch
from pastiche.memory import release_cuda_libraries

def resident(path):
    kb, ours = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            if re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):  # a mapping's first line; its fields follow
                ours = line.rstrip().endswith(path)
            elif ours and line.startswith("Rss:"):
                kb += int(line.split()[1])
    return kb

with open(sys.argv[1], "rb") as f:
    library = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
sum(library[i] for i in range(0, len(library), 4096))  # every page read in
x = torch.nn.functional.conv2d(torch.ones(1, 3, 8, 8), torch.ones(4, 3, 3, 3))
before = resident(sys.argv[1])
taken = release_cuda_libraries(["cpu"])
y = torch.nn.functional.conv2d(torch.ones(1, 3, 8, 8), torch.ones(4, 3, 3, 3))
print(json.dumps([before, resident(sys.argv[1]), taken, torch.equal(x, y)]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_a_cpu_run_hands_back_the_cuda_libraries_pages(tmp_path):
    library = tmp_path / "libcublasLt.so.13"
    with open(library, "wb") as f:
        f.write(bytes(range(256)) * (8 << 12))  # 8 MB
        f.flush()
        os.fsync(f.fileno())  # clean pages: dirty ones would have to be written back first
    done = subprocess.run([sys.executable, "-c", _CHILD, str(library)], capture_output=True, text=True, check=True)
    before, after, taken, same = json.loads(done.stdout)
    assert same
    assert before >= 8 << 10
    release = re.match(r"(\d+)\.(\d+)", os.uname().release)
    if not release or tuple(map(int, release.groups())) < (5, 4):
        pytest.skip("this kernel has no MADV_PAGEOUT (Linux 5.4+)")
    assert taken
    if _filesystem(library) == "tmpfs":
        pytest.skip("tmpfs pages cannot be reclaimed without swap")
    assert after < before / 8, (before, after)
