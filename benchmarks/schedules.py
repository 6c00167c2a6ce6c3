"""Coarse-to-fine schedules against pastiche 1.6.0: speed-up at each of its judge levels.

For each pair, pastiche 1.6.0 runs once and each of our schedules runs once, all from the command
line with --workspace frames judged by benchmarks/judge.py (the same machinery as
time_to_quality.py). The table gives, per schedule, how many times sooner ours reaches each judge
level pastiche 1.6.0 reaches, and the best judge ours shows by a few wall times: the trade-off
between early levels (short coarse levels) and later quality (long ones).

    python benchmarks/schedules.py                       # both pairs, --size 256
    python benchmarks/schedules.py --schedules '150,30;20,20;single'   # other schedules

Writes benchmarks/results/schedules.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import List, Tuple

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from judge import Judge  # noqa: E402
from time_to_quality import IMAGES, PEER, RESULTS, check_inputs, curve, first_time, frames, run_tool  # noqa: E402

from pastiche.schedule import DEFAULT_COARSE_STEPS  # noqa: E402

# Our schedules: coarse steps per level as --schedule takes them, "single" for single scale, or
# "default" for whatever the engine's default is; each then runs --num-steps full-size steps (200
# unless set), so that every run lasts about as long.
SCHEDULES = "default;150,100;100,20;20,20;single"


def schedule_run(schedule: str, num_steps: int) -> Tuple[str, List[str]]:
    """A schedule's (label, our options)."""
    if schedule == "default":  # labelled with what the default is, not a literal
        return (f"default ({','.join(map(str, DEFAULT_COARSE_STEPS))}) + {num_steps}",
                ["--num-steps", str(num_steps)])
    options = ["--single-scale"] if schedule == "single" else ["--schedule", schedule]
    return f"{schedule} + {num_steps}", options + ["--num-steps", str(num_steps)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="tubingen:starry_night,golden_gate:the_scream")
    parser.add_argument("--size", default="256")
    parser.add_argument("--peer-steps", type=int, default=300)
    parser.add_argument("--levels", default="10,20,50,100,150,200,300", help="pastiche 1.6.0 steps to compare at")
    parser.add_argument("--at", default="30,45,60", help="wall times (s) to show our best judge at")
    parser.add_argument("--schedules", default=SCHEDULES, help="';'-separated coarse steps per schedule, 'single'"
                        " or 'default' (e.g. '150,30;50,10;single'), each + --num-steps full-size steps")
    parser.add_argument("--num-steps", type=int, default=200, help="full-size steps after each schedule's"
                        " coarse ones")
    parser.add_argument("--out", default=str(RESULTS / "schedules.md"))
    args = parser.parse_args()
    schedules = dict(schedule_run(text, args.num_steps) for text in args.schedules.split(";"))
    check_inputs()
    levels, at = [int(s) for s in args.levels.split(",")], [float(t) for t in args.at.split(",")]
    lines = ["# Coarse-to-fine schedules against pastiche 1.6.0", "",
             f"Command: `python {' '.join(map(shlex.quote, sys.argv))}` on {os.cpu_count()} CPU cores."
             " Speed-up = pastiche 1.6.0's time to its judge level after N steps / ours to the same level;"
             " times from each program's 'step elapsed loss' rows in a run without --workspace frames"
             " (see time_to_quality.run_tool).", ""]
    with tempfile.TemporaryDirectory() as tmp_text:
        tmp = Path(tmp_text)
        for pair_text in args.pairs.split(","):
            content, style = (str(IMAGES / f"{name}.jpg") for name in pair_text.split(":"))
            common = ["--content", content, "--size", args.size, "--seed", "0", "--device", "cpu", *frames(5)]
            judge = Judge(content, style)
            runs = {"pastiche 1.6.0": [str(PEER), *common, "--styles", style, "--num-steps", str(args.peer_steps)]}
            runs.update({label: [sys.executable, "-m", "pastiche", *common, "--style", style, *options]
                         for label, options in schedules.items()})
            curves, size = {}, None
            for i, (label, command) in enumerate(runs.items()):
                run_dir = tmp / f"{pair_text.replace(':', '-')}-{i}"
                run_dir.mkdir()
                workspace, output = run_dir / "ws", run_dir / "out.png"
                times = run_tool(command, workspace, output)
                size = size or Image.open(output).size  # pastiche 1.6.0's output size first
                curves[label] = curve(judge, workspace, times, size)
            peer_curve = curves.pop("pastiche 1.6.0")
            peer = {step: (t, level) for t, level, step in peer_curve}
            lines += [f"## {pair_text.replace(':', ' x ')} ({size[0]}x{size[1]})", "",
                      "| ours | " + " | ".join(f"{n} steps" for n in levels) + " | "
                      + " | ".join(f"best by {t:.0f} s" for t in at) + " | run |",
                      "|---|" + "---:|" * (len(levels) + len(at) + 1),
                      "| pastiche 1.6.0 (judge, s) | " + " | ".join(
                          f"{peer[n][1]:,.0f}, {peer[n][0]:.0f} s" if n in peer else "-" for n in levels)
                      + " | " + " | ".join("-" for _ in at) + " | - |"]
            for label, points in curves.items():
                speedups = []
                for n in levels:  # pastiche 1.6.0's first time at its level after n steps (see time_to_quality)
                    t_ours = first_time(points, peer[n][1])[0] if n in peer else None
                    t_peer = first_time(peer_curve, peer[n][1])[0] if n in peer else None
                    speedups.append(f"{t_peer / t_ours:.1f}x" if t_ours else "-")
                best = [min((loss for t, loss, _ in points if t <= limit), default=None) for limit in at]
                lines.append(f"| {label} | " + " | ".join(speedups) + " | "
                             + " | ".join(f"{b:,.0f}" if b else "-" for b in best)
                             + f" | {points[-1][1]:,.0f} after {points[-1][0]:.0f} s |")
            lines.append("")
            print("\n".join(lines), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
