"""What block 5 costs a step: the loss and its gradient with and without block5_relu1's style term.

pastiche leaves block 5's style layers out of the first steps of a level upsampled from a coarser
one (``pastiche.engine.BLOCK5_DELAY``); without them the network stops at block4_relu2 (the
content layer), skipping conv4_3, conv4_4 and conv5_1 and their backward. This times one
evaluation of the default loss and its backward (what a step computes besides L-BFGS's few
vector operations) both ways, alternating, at the default schedule's sizes for ``--size``, on
tubingen x starry_night from ../shared/data/images, and prints the fastest of ``--rounds``:

    python benchmarks/block5_cost.py --size 256 --rounds 4
"""

from __future__ import annotations

import argparse
import time

import torch

from judge import SHARED
from pastiche import StyleTransfer
from pastiche.schedule import DEFAULT_COARSE_STEPS, DEFAULT_NUM_STEPS, plan

IMAGES = SHARED / "data" / "images"


def time_loss(job: StyleTransfer, style_layers, repeats: int) -> float:
    """Seconds for one loss and backward at the job's current image, averaged over ``repeats``."""
    start = time.perf_counter()
    for _ in range(repeats):
        job.pixels.grad = None
        job.objective(job.pixels, style_layers=style_layers).backward()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="long edge of the output in px")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    job = StyleTransfer(IMAGES / "tubingen.jpg", IMAGES / "starry_night.jpg", size=args.size, device="cpu")
    every = list(job.style_layers)
    without = [layer for layer in every if not layer.startswith("block5")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {job.dtype}")
    print("| level | with block5_relu1 | without | ratio |\n|---|---:|---:|---:|")
    for (width, height), _ in plan(job.full_size, DEFAULT_NUM_STEPS, DEFAULT_COARSE_STEPS):
        job.resize(width, height)
        repeats = max(3, round(40 * 64 * 48 / (width * height)))
        time_loss(job, every, 2)  # warm up: oneDNN's kernels for this size
        best = {"with": [], "without": []}
        for _ in range(args.rounds):
            best["with"].append(time_loss(job, every, repeats))
            best["without"].append(time_loss(job, without, repeats))
        a, b = min(best["with"]), min(best["without"])
        print(f"| {width}x{height} px | {a * 1000:.1f} ms | {b * 1000:.1f} ms | {b / a:.2f} |", flush=True)


if __name__ == "__main__":
    main()
