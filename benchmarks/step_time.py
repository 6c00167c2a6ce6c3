"""Per-step time and peak RSS: pastiche 1.6.0 against ours at the same settings, in one run.

Both run as command-line programs (single scale, L-BFGS, pastiche 1.6.0's default layers and
weights) on tubingen × starry_night, alternating tool by tool for --rounds rounds so machine
noise hits both alike. Step time is the steady state over the second half of the run:
(elapsed at step N − elapsed at step N/2) / (N − N/2), from each program's own 'step elapsed
loss' rows. "ours --low-memory" is ours with that flag. Peak RSS is the child
process's ru_maxrss (os.wait4); on a GPU, peak GPU memory is what torch's CUDA allocator reserved
at most (benchmarks/cuda_peak/sitecustomize.py writes it at exit; the CUDA context is not counted).

    python benchmarks/step_time.py                      # --size 256 and ≈500² px
    python benchmarks/step_time.py --ours "--precision float32"   # our float32 path on any CPU
    python benchmarks/step_time.py --device cuda --sizes 1024 --steps 600 --rounds 3 \
        --out benchmarks/results/step_time_cuda.md      # on a GPU machine

On a GPU a step takes milliseconds and pastiche 1.6.0 prints its elapsed time to 0.1 s: 600
steps make the second half last seconds.

Writes benchmarks/results/step_time.md.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rows import step_times  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
IMAGES = SHARED / "data" / "images"
PEER = SHARED / "tools" / "peer-pastiche"
CUDA_PEAK = Path(__file__).resolve().parent / "cuda_peak"


def run(command: List[str], cwd: str) -> Tuple[float, float, float]:
    """(seconds per step, peak RSS in MB, peak CUDA memory in MB or NaN) of one run."""
    peak_file = Path(cwd) / "cuda_peak"
    peak_file.unlink(missing_ok=True)
    env = dict(os.environ, PASTICHE_CUDA_PEAK_FILE=str(peak_file),
               PYTHONPATH=os.pathsep.join(filter(None, [str(CUDA_PEAK), os.environ.get("PYTHONPATH")])))
    # cwd outside the repo: `python -m pastiche` (which peer-pastiche runs) puts the working
    # directory first on sys.path, so from the repo root the "peer" would be this pastiche.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               cwd=cwd, env=env)
    text = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"failed ({status}): {' '.join(map(shlex.quote, command))}")
    times = step_times(text)
    last = max(times)
    first = max(1, last // 2)  # the second half of the run: steady state, past any warm-up
    if times[last] <= times[first]:  # elapsed columns print tenths of a second
        raise SystemExit(f"steps {first} to {last} took no time by the printed rows; raise --steps:"
                         f" {' '.join(map(shlex.quote, command))}")
    cuda = int(peak_file.read_text()) / 2 ** 20 if peak_file.exists() else math.nan
    return (times[last] - times[first]) / (last - first), usage.ru_maxrss / 1024, cuda


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,250000", help="long edge (≤ 4096) or pixel count")
    # ≥ 21 steps: our L-BFGS history (20 pairs) is full, so its memory is counted
    parser.add_argument("--steps", default="30,24", help="steps per size")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ours", default="", help="extra options for our CLI, e.g. '--precision float32'")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "step_time.md"))
    args = parser.parse_args()
    if not IMAGES.is_dir():
        sys.exit(f"needs {IMAGES} (the shared test data)")
    steps_text = args.steps.split(",")
    if len(steps_text) != len(args.sizes.split(",")) or not all(n.isdigit() and int(n) >= 4 for n in steps_text):
        sys.exit("--steps needs a whole number of at least 4 per --sizes entry (the second half of each run is timed)")
    content, style = str(IMAGES / "tubingen.jpg"), str(IMAGES / "starry_night.jpg")
    lines = ["# Step time and peak memory: pastiche 1.6.0 vs this pastiche", "",
             f"Command: `python {' '.join(map(shlex.quote, sys.argv))}` ({os.cpu_count()} CPU cores,"
             f" device {args.device}); medians of {args.rounds} alternating rounds.", "",
             "| size | pastiche 1.6.0 s/step | ours s/step | ratio | ours --low-memory s/step |"
             " pastiche 1.6.0 peak RSS MB | ours peak RSS MB | ratio | ours --low-memory peak RSS MB | ratio |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    if args.device != "cpu":
        lines[-2] += (" pastiche 1.6.0 peak GPU MB | ours peak GPU MB | ratio | ours --low-memory peak GPU MB |"
                      " ratio |")
        lines[-1] += "---:|---:|---:|---:|---:|"
    with tempfile.TemporaryDirectory() as tmp:
        version = subprocess.run([str(PEER), "--version"], capture_output=True, text=True, cwd=tmp).stdout
        if version.strip() != "pastiche 1.6.0":
            sys.exit(f"{PEER} --version printed {version.strip()!r}, not 'pastiche 1.6.0'")
        for size, steps in zip(args.sizes.split(","), args.steps.split(",")):
            size_args = ["--size", size] if int(size) <= 4096 else ["--size-pixels", size]
            common = ["--content", content, "--num-steps", steps, "--info-step", "1", "--seed", "0",
                      "--device", args.device, *size_args]
            peer = [str(PEER), *common, "--styles", style, "-o", f"{tmp}/peer.png"]
            ours = [sys.executable, "-m", "pastiche", *common, "--style", style, "--single-scale",
                    *shlex.split(args.ours), "-o", f"{tmp}/ours.png"]
            tools = {"peer": peer, "ours": ours, "low": ours + ["--low-memory"]}
            results: Dict[str, List[Tuple[float, float, float]]] = {name: [] for name in tools}
            for _ in range(args.rounds):
                for name, command in tools.items():
                    results[name].append(run(command, tmp))
                    print(name, size, results[name][-1], flush=True)
            (p_t, o_t, l_t), (p_m, o_m, l_m), (p_g, o_g, l_g) = (
                [statistics.median(r[i] for r in results[n]) for n in tools] for i in (0, 1, 2))
            label = f"--size {size}" if int(size) <= 4096 else f"--size-pixels {size}"
            digits = 2 if p_t >= 0.1 else 4  # a GPU's steps take milliseconds
            lines.append(f"| {label} | {p_t:.{digits}f} | {o_t:.{digits}f} | {o_t / p_t:.2f} | {l_t:.{digits}f} |"
                         f" {p_m:.0f} | {o_m:.0f} | {o_m / p_m:.2f} | {l_m:.0f} | {l_m / p_m:.2f} |"
                         + (f" {p_g:.0f} | {o_g:.0f} | {o_g / p_g:.2f} | {l_g:.0f} | {l_g / p_g:.2f} |"
                            if args.device != "cpu" else ""))
            print(lines[-1], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
