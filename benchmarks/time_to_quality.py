"""Wall time to reach each judge level: pastiche 1.6.0 against ours, side by side in one run.

Both tools run as command-line programs on the same content, style and size, one after the
other, dumping --workspace frames; every frame is scored by benchmarks/judge.py (a fixed objective
on the saved 8-bit image, at the output size: our coarse levels' frames come upsampled to it, and
frames of an older pastiche, saved at their level's size, are upsampled here). For each judge
level that pastiche 1.6.0 reaches at its checkpoints, the table gives the wall time each tool
needs to first reach it. The times come from a second run of each tool without the frames (the
same seed gives the same losses step by step, which is checked): writing a frame every 2 steps
is the benchmark's instrument, not something a user's run pays for.

    python benchmarks/time_to_quality.py                 # both pairs at --size 256 and ≈500² px
    python benchmarks/time_to_quality.py --sizes 256 --pairs tubingen:starry_night

Writes benchmarks/results/time_to_quality.md, .png (the plot) and .json (every judged frame).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from judge import SHARED, Judge  # noqa: E402
from rows import step_rows  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IMAGES = SHARED / "data" / "images"
PEER = SHARED / "tools" / "peer-pastiche"
RESULTS = ROOT / "benchmarks" / "results"

Curve = List[Tuple[float, float, int]]  # (seconds, judge loss, step)


def run_tool(command: List[str], workspace: Path, output: Path) -> Dict[int, float]:
    """Run one tool twice, with ``--workspace workspace`` frames and without; return {step: wall
    seconds since the second run's launch} for its 'step elapsed loss' rows.

    Each row is timed as it arrives (the programs' output unbuffered), not by its own elapsed
    column: both tools start that clock after Python and torch have loaded, ~1.2-1.4 s that a
    user waits too (session 36)."""
    runs = []
    for extra in (["--workspace", str(workspace)], []):
        print("$", " ".join(shlex.quote(c) for c in command + extra), flush=True)
        start, arrived, lines = time.perf_counter(), {}, []
        # Run outside the repo so that PYTHONPATH (e.g. a snapshot of pastiche) decides what runs.
        # stderr to a file: a pipe nobody reads while stdout is read could fill and stall the child
        with tempfile.TemporaryFile("w+") as errors, subprocess.Popen(
                command + extra + ["-o", str(output)], stdout=subprocess.PIPE, stderr=errors, text=True,
                cwd=workspace.parent, env={**os.environ, "PYTHONUNBUFFERED": "1"}) as child:
            for line in child.stdout:
                lines.append(line)
                for step in step_rows(line):
                    arrived[step] = time.perf_counter() - start
            if child.wait():
                errors.seek(0)
                sys.exit(f"{command[0]} failed ({child.returncode}): {errors.read().strip()[-2000:]}")
        print(f"  finished in {time.perf_counter() - start:.0f} s", flush=True)
        runs.append((step_rows("".join(lines)), arrived))
    (framed, _), (timed, arrived) = runs
    if {s: loss for s, (_, loss) in framed.items()} != {s: loss for s, (_, loss) in timed.items()}:
        sys.exit(f"{command[0]} printed other losses without --workspace than with it, so the frames"
                 " judged are not those of the timed run; is it deterministic with --seed?")
    return arrived


def curve(judge: Judge, workspace: Path, times: Dict[int, float], size: Tuple[int, int]) -> Curve:
    points = []
    for frame in sorted(workspace.glob("*.png")):
        step = int(frame.stem)
        if step not in times:
            continue
        image = Image.open(frame).convert("RGB")
        if image.size != size:  # an older pastiche's coarse level: judge it at the output size
            image = image.resize(size, Image.BICUBIC)
            # beside the workspace, not in it: a second curve() over it must see only frames
            frame = workspace.parent / f"judge-{workspace.name}-{frame.name}"
            image.save(frame)
        points.append((times[step], judge.score(str(frame)), step))
    return points


def check_inputs() -> None:
    """Exit with one line unless the shared images and the peer tool are there: found at the
    first run's start, not as a traceback after the others."""
    if not IMAGES.is_dir():
        sys.exit(f"needs {IMAGES} (the shared test data)")
    if not os.access(PEER, os.X_OK):
        sys.exit(f"needs {PEER} (it runs pastiche 1.6.0)")


def first_time(points: Curve, level: float):
    return next(((t, s) for t, loss, s in points if loss <= level), (None, None))


def frames(every: int) -> List[str]:
    """Options for a 'step elapsed loss' row and a workspace frame every ``every`` steps."""
    return ["--info-step", str(every), "--workspace-step", str(every)]


def measure(pair: Tuple[str, str], size_args: List[str], label: str, peer_steps: int,
            our_args: List[str], every: int, our_every: int, tmp: Path):
    content, style = (str(IMAGES / f"{name}.jpg") for name in pair)
    common = ["--content", content, "--seed", "0", "--device", "cpu"] + size_args
    peer_ws, our_ws = tmp / f"peer-{label}", tmp / f"ours-{label}"
    peer_times = run_tool([str(PEER), *common, *frames(every), "--styles", style, "--num-steps", str(peer_steps)],
                          peer_ws, tmp / f"peer-{label}.png")
    our_times = run_tool([sys.executable, "-m", "pastiche", *common, *frames(our_every), "--style", style,
                          *our_args], our_ws, tmp / f"ours-{label}.png")
    size = Image.open(tmp / f"peer-{label}.png").size
    judge = Judge(content, style)
    return size, curve(judge, peer_ws, peer_times, size), curve(judge, our_ws, our_times, size)


def table(label: str, size, peer: Curve, ours: Curve, checkpoints: int) -> List[str]:
    rows = [f"### {label} ({size[0]}x{size[1]})", "",
            "| pastiche 1.6.0 step | judge level | pastiche 1.6.0 s | ours s (our step) | speed-up |",
            "|---:|---:|---:|---:|---:|"]
    picks = [p for p in peer if p[2] > 0]
    stride = max(1, len(picks) // checkpoints)
    for _, level, step in picks[stride - 1::stride]:
        # pastiche 1.6.0's own first time at this level: its saved image's judge can rise late in
        # a run (it optimises unclamped pixels), so its time at step N can be past that
        t_peer = first_time(peer, level)[0]
        t_ours, our_step = first_time(ours, level)
        ours_text = f"{t_ours:.0f} ({our_step})" if t_ours is not None else "not reached"
        speed = f"{t_peer / t_ours:.1f}x" if t_ours else "-"
        rows.append(f"| {step} | {level:,.0f} | {t_peer:.0f} | {ours_text} | {speed} |")
    (tp, lp, sp), (to, lo, so) = (min(points, key=lambda p: p[1]) for points in (peer, ours))
    rows += ["", f"Best judge: pastiche 1.6.0 {lp:,.0f} at step {sp} ({tp:.0f} s; run {peer[-1][0]:.0f} s);"
             f" ours {lo:,.0f} at step {so} ({to:.0f} s; run {ours[-1][0]:.0f} s).", ""]
    return rows


def plot(results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, (label, size, peer, ours) in zip(axes[0], results):
        for name, points in (("pastiche 1.6.0", peer), ("pastiche (this)", ours)):
            ax.plot([t for t, _, _ in points if _ > 0], [l for _, l, s in points if s > 0], label=name)
        ax.set(title=f"{label} {size[0]}x{size[1]}", xlabel="wall time (s)", ylabel="judge loss", yscale="log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="tubingen:starry_night,golden_gate:the_scream")
    parser.add_argument("--sizes", default="256,250000", help="long edge (≤ 4096) or pixel count")
    parser.add_argument("--peer-steps", default="300,150", help="pastiche 1.6.0's steps per size")
    parser.add_argument("--our-steps", default="", help="our --num-steps per size (default: our default)")
    parser.add_argument("--ours", default="", help="extra options for our CLI (default: its defaults)")
    parser.add_argument("--every", type=int, default=10, help="pastiche 1.6.0's frame interval in steps")
    # Ours is sampled finer: a level is reached at the first frame at or below it, so a coarse
    # interval would add up to that many steps to our times (its levels sit on its own frames).
    # The frames cost no time in the table: it is taken from a run without them (see run_tool).
    parser.add_argument("--our-every", type=int, default=2, help="our frame interval in steps")
    parser.add_argument("--checkpoints", type=int, default=6, help="judge levels per table")
    parser.add_argument("--out", default=str(RESULTS / "time_to_quality"))
    args = parser.parse_args()
    if importlib.util.find_spec("matplotlib") is None:  # the plot comes last, after an hour of runs
        raise SystemExit("time_to_quality.py draws its plot with matplotlib: pip install 'pastiche[bench]'")
    check_inputs()
    if len(args.peer_steps.split(",")) != len(args.sizes.split(",")) or (
            args.our_steps and len(args.our_steps.split(",")) != len(args.sizes.split(","))):
        sys.exit("--peer-steps (and --our-steps) need one value per --sizes entry")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)  # before the runs, not after them
    results, lines = [], ["# Time to quality: pastiche 1.6.0 vs this pastiche", "",
                          f"Command: `python {' '.join(map(shlex.quote, sys.argv))}` on {os.cpu_count()} CPU cores.",
                          "Judge: benchmarks/judge.py. Times are wall seconds since each program's launch"
                          " (Python, torch and the model loading included), when its 'step elapsed loss'"
                          " rows arrive from a run without --workspace frames (a second run, same seed,"
                          " same losses step by step); pastiche 1.6.0's is the first time it reached the"
                          " level.", ""]
    curves = {}
    with tempfile.TemporaryDirectory() as tmp:
        sizes = args.sizes.split(",")
        our_steps = args.our_steps.split(",") if args.our_steps else [""] * len(sizes)
        for size_text, peer_steps, steps in zip(sizes, map(int, args.peer_steps.split(",")), our_steps):
            size_args = ["--size", size_text] if int(size_text) <= 4096 else ["--size-pixels", size_text]
            extra = shlex.split(args.ours) + (["--num-steps", steps] if steps else [])
            for pair_text in args.pairs.split(","):
                pair = tuple(pair_text.split(":"))
                label = f"{pair[0]} x {pair[1]}"
                size, peer, ours = measure(pair, size_args, f"{pair[0]}-{size_text}", peer_steps,
                                           extra, args.every, args.our_every, Path(tmp))
                results.append((label, size, peer, ours))
                curves[f"{label} {size[0]}x{size[1]}"] = {"pastiche-1.6.0": peer, "ours": ours}
                lines += table(label, size, peer, ours, args.checkpoints)
                print("\n".join(lines[-(args.checkpoints + 6):]), flush=True)
    Path(args.out + ".md").write_text("\n".join(lines) + f"\n![plot]({Path(args.out).name}.png)\n")
    Path(args.out + ".json").write_text(json.dumps(curves, indent=1))  # (seconds, judge, step) points
    plot(results, Path(args.out + ".png"))
    print(f"wrote {args.out}.md and {args.out}.png")


if __name__ == "__main__":
    main()
