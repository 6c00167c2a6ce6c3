"""In-process step time and peak device memory of this pastiche's engine (no command line, no
pastiche 1.6.0): for comparing two versions of the code on one machine, e.g. on a GPU

    PYTHONPATH=/path/to/old/tree python benchmarks/engine_step.py --device cuda --size 1024
    PYTHONPATH=/path/to/new/tree python benchmarks/engine_step.py --device cuda --size 1024

tubingen × starry_night, pastiche 1.6.0's default layers and weights, L-BFGS, single scale:
--warm steps first (a CUDA graph's capture, cuDNN's plans), then --steps timed ones, then the
loss of the image reached (so that a change which alters the arithmetic shows in it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pastiche  # first: it sets torch's thread-wait and page-size switches, read at torch's import

import torch  # noqa: E402  (after pastiche, as above)
from pastiche.engine import StyleTransfer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from time_to_quality import IMAGES  # noqa: E402  (the shared test images, as every benchmark)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=256, help="long edge in px")
    parser.add_argument("--warm", type=int, default=10)
    parser.add_argument("--steps", type=int, default=70)
    parser.add_argument("--no-cuda-graphs", action="store_true")
    parser.add_argument("--profile", action="store_true", help="then print torch.profiler's table for 5 steps")
    args = parser.parse_args()
    if not IMAGES.is_dir():
        sys.exit(f"needs {IMAGES} (the shared test data)")
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.manual_seed(0)
    job = StyleTransfer(IMAGES / "tubingen.jpg", IMAGES / "starry_night.jpg", size=args.size, device=args.device)
    if args.no_cuda_graphs:
        job.use_cuda_graphs = False  # (a tree older than CUDA graphs has no such attribute to read)
    job.evaluate()  # targets and the starting image
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.warm):
        job.step()
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        job.step()
    sync()
    seconds = (time.perf_counter() - start) / args.steps
    peak = f", peak allocated {torch.cuda.max_memory_allocated() / 2 ** 20:,.0f} MB" if cuda else ""
    print(f"{pastiche.__file__}: {job.size[0]}x{job.size[1]} px on {args.device}: {seconds * 1000:.2f} ms/step"
          f"{peak}; loss after {args.warm + args.steps} steps {job.evaluate():,.0f}")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            for _ in range(5):
                job.step()
            sync()
        print(prof.key_averages().table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total",
                                        row_limit=25, max_name_column_width=60))


if __name__ == "__main__":
    main()
