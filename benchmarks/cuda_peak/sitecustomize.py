"""Imported by every Python started with this folder on PYTHONPATH (benchmarks/step_time.py puts
it there for runs on a GPU, for pastiche 1.6.0 and ours alike): at exit, writes the peak memory
torch's CUDA allocator reserved, in bytes, to the file $PASTICHE_CUDA_PEAK_FILE names."""

import atexit
import os
import sys


def _write_peak() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        with open(os.environ["PASTICHE_CUDA_PEAK_FILE"], "w") as f:
            f.write(str(torch.cuda.max_memory_reserved()))


if os.environ.get("PASTICHE_CUDA_PEAK_FILE"):
    atexit.register(_write_peak)
