"""pastiche's notebook API, as a script: one call with a progress callback, then a StyleTransfer
object stepped by hand (what a notebook cell would do to watch the image change).

    python3 examples/notebook_api.py out.png                 # about 64 px, a few seconds on a CPU
    python3 examples/notebook_api.py out.png --size 256 --steps 200

Writes OUTPUT (the hand-stepped result) and OUTPUT's name with "-transfer" (the one-call result).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pastiche
from pastiche import StyleTransfer

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="where to save the result (.png, .jpg, ...)")
    parser.add_argument("--content", default=HERE / "content.jpg")
    parser.add_argument("--style", default=HERE / "style.jpg")
    parser.add_argument("--size", type=int, default=64, help="long edge of the result in px")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    first = args.output.with_name(f"{args.output.stem}-transfer{args.output.suffix}")
    try:  # both outputs checked before any work: a missing folder is said now, not after the run
        for path in (args.output, first):
            pastiche.imageio.check_output_path(path, inputs=[args.content, args.style])
    except pastiche.PasticheError as e:
        parser.error(str(e))

    # 1. One call. The callback sees the job after every step; returning True would stop early.
    def report(job: StyleTransfer) -> bool:
        if job.step_count % 5 == 0:
            print(f"  step {job.step_count:>4}  loss {job.loss:.4g}")
        return False

    print("pastiche.transfer:")
    image = pastiche.transfer(args.content, args.style, size=args.size, num_steps=args.steps, seed=0,
                              callback=report)
    pastiche.save_image(image, first)  # a PIL image: show it in a notebook with display(image)
    print(f"  saved {first}")

    # 2. By hand: build the job, step it, look at it whenever you like, save it.
    print("StyleTransfer, stepped by hand:")
    job = StyleTransfer(args.content, args.style, size=args.size, content_weight=1.0, tv_weight=0.0,
                        init="content")
    start = job.evaluate()  # the loss of the starting image
    for _ in range(args.steps):
        loss = job.step()  # one L-BFGS step; returns the loss before it
        if job.step_count % 5 == 0:
            print(f"  step {job.step_count:>4}  loss {loss:.4g}  size {job.size[0]}x{job.size[1]}")
    print(f"  loss {start:.4g} -> {job.evaluate():.4g}")
    pastiche.save_image(job.image_tensor(), args.output)  # or job.image(): a PIL image
    print(f"  saved {args.output}")


if __name__ == "__main__":
    main()
