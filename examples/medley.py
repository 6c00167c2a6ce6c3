"""Medley: one content image restyled by several styles in turn, as one video of the optimisations.

    python3 examples/medley.py photo.jpg starry.jpg scream.jpg -o medley.mp4 --size 256 --steps 150

For each style the engine runs ``--steps`` steps from the content image and saves a frame every
``--every`` steps into ``WORKSPACE/NN-STYLE/`` (as ``pastiche --workspace`` does); the final image
is held for ``--hold`` seconds. Then :func:`pastiche.video.frames_to_video` joins everything into
one MP4 or GIF. Needs PyAV: ``pip install av``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tqdm.auto import tqdm

from pastiche import PasticheError, StyleTransfer, save_image
from pastiche.video import check_video_output, frames_to_video


def medley(content: str, styles: list, output: str, *, size: int, steps: int, every: int, fps: float,
           hold: float, workspace: Path, device: str = None) -> Path:
    check_video_output(output)  # fail before any work
    frames = []
    for i, style in enumerate(styles):
        folder = workspace / f"{i:02d}-{Path(style).stem}"
        folder.mkdir(parents=True, exist_ok=True)
        job = StyleTransfer(content, style, size=size, device=device)
        # this run's frames, not whatever else the folder holds (an earlier run's with more steps)
        done = [save_image(job.image_tensor(), folder / f"{0:05d}.png")]
        for step in tqdm(range(1, steps + 1), desc=Path(style).name, unit="step"):
            job.step()
            if step % every == 0 or step == steps:
                done.append(save_image(job.image_tensor(), folder / f"{step:05d}.png"))
        frames += done + [done[-1]] * round(hold * fps)  # hold the finished picture
    return frames_to_video(frames, output, fps=fps)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("content", help="content image")
    p.add_argument("styles", nargs="+", help="style images, in the order they appear")
    p.add_argument("--output", "-o", default="medley.mp4", help="video (.mp4, .gif, ...)")
    p.add_argument("--size", type=int, default=256, help="long edge in px")
    p.add_argument("--steps", type=int, default=150, help="steps per style")
    p.add_argument("--every", type=int, default=5, help="save a frame every N steps")
    p.add_argument("--fps", type=float, default=15)
    p.add_argument("--hold", type=float, default=1.5, help="seconds to show each finished picture")
    p.add_argument("--workspace", help="where frames go (default: a temporary directory)")
    p.add_argument("--device", help="cpu, cuda, mps (default: the best available)")
    args = p.parse_args()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = medley(args.content, args.styles, args.output, size=args.size, steps=args.steps,
                         every=args.every, fps=args.fps, hold=args.hold,
                         workspace=Path(args.workspace or tmp), device=args.device)
    except PasticheError as e:
        print(f"medley: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
