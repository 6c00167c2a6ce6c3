"""Bits per weight vs style transfer: VGG19 compressed at 1..8 bits and data-aware, side by side.

    python3 benchmarks/bits_grid.py            # defaults below; ≈ 40 min on a 2-core CPU

Use ``--variants 8,4,4bit-cal --check-pairs ''`` for a quicker look.

For each variant it compresses ../shared/data/vgg19/...pth with ``pastiche-compress`` (the exact
command is in the table), runs the same style transfer with each (same content, style, size, steps
and seed), and measures against the 8-bit file (which equals the source exactly):

* file size and load time (median of ``--repeats`` loads of the whole network);
* relative Gram error ‖G - G₈‖/‖G₈‖ at each default style layer and the relative content-feature
  error ‖F - F₈‖/‖F₈‖ at block4_relu2, the largest over the evaluation images (both contents and
  both styles) each resized to the transfer's pixel count;
* the judge loss of the saved transfer (``benchmarks/judge.py``: pastiche 1.6.0's default loss on
  the saved 8-bit PNG with the float reference VGG19), and its ratio to the 8-bit transfer's.

Calibration and evaluation images are disjoint: the data-aware variants are calibrated on
boston.jpg only; evaluation uses tubingen.jpg and golden_gate.jpg (contents) with
starry_night.jpg and the_scream.jpg (styles). ``--check-pairs`` transfers (by default
golden_gate × the_scream) run for the 8-bit reference and ``--check-variants`` only. Transfers use
pastiche's own schedule (coarse-to-fine levels, then ``--num-steps`` at ``--size``) on the CPU.

Writes ``benchmarks/results/bits_grid.png`` (the transfers, labelled by bit width) and
``benchmarks/results/bits_grid.md`` (the table and the command that made it). Compressed files,
transfers and their scores are cached in ``--cache`` (keyed by file hash, settings and the
hash of pastiche's source).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SOURCE = SHARED / "data" / "vgg19" / "vgg19-caffe-imagenet-features.pth"
IMAGES = SHARED / "data" / "images"
RESULTS = REPO / "benchmarks" / "results"
STYLE_LAYERS = ("block1_relu1", "block2_relu1", "block3_relu1", "block4_relu1", "block5_relu1")
CONTENT_LAYER = "block4_relu2"
DEEPEST = "block5_relu4"  # no default loss reads it: shows what the unused layers' bits do
CALIBRATION = ("boston.jpg",)
EVAL_CONTENTS = ("tubingen.jpg", "golden_gate.jpg")
EVAL_STYLES = ("starry_night.jpg", "the_scream.jpg")

sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from pastiche.schedule import DEFAULT_COARSE_STEPS, DEFAULT_NUM_STEPS  # noqa: E402
from pastiche.quantized import read_header  # noqa: E402
from load_time import time_ours  # noqa: E402  (benchmarks/load_time.py: warm-up, then timed loads)

# The data-aware variants: name → (label, pastiche-compress options). {calibrate} is replaced by
# the calibration image paths.
EXACT_SMALL = "block1_conv1=8,block1_conv2=8,block2_conv1=8,block2_conv2=8"
CALIBRATED = {
    # Every layer at 3 bits or more (the unused block5_conv2-4 at the plain 4): no use is made of
    # which layers the default losses read.
    "4bit-cal-all": ("data-aware ≈4 bits, all layers ≥ 3 bits",
                     ["--bits", f"4,{EXACT_SMALL},block3_conv2=3,block3_conv3=3,block3_conv4=3,"
                                "block4_conv2=3,block5_conv1=5",
                      "--calibrate", "{calibrate}"]),
    # Bits go where the default layers need them, and block5_conv2-4, which no default layer reads
    # (block5_relu1 is the deepest), are left out. This is the bundled vgg19-4bit.
    "4bit-cal": ("data-aware ≈4 bits, up to block5_relu1 (bundled vgg19-4bit)",
                 ["--bits", f"6,{EXACT_SMALL},block4_conv1=5,block4_conv2=4,block4_conv3=5,"
                            "block4_conv4=6,block5_conv1=7",
                  "--up-to", "block5_relu1", "--calibrate", "{calibrate}"]),
}


def short(layer: str) -> str:
    """block3_relu1 → relu3_1"""
    block, relu = layer.split("_")
    return f"relu{block[5:]}_{relu[4:]}"


def variant_args(name: str) -> List[str]:
    if name.isdigit():
        return ["--bits", name]
    calibrate = [str(IMAGES / n) for n in CALIBRATION]
    out: List[str] = []
    for a in CALIBRATED[name][1]:
        out += calibrate if a == "{calibrate}" else [a]
    return out


def variant_label(name: str) -> str:
    return f"{name} bit{'s' if name != '1' else ''}" + (" (reference)" if name == "8" else "") \
        if name.isdigit() else CALIBRATED[name][0]


def compress_command(name: str, output: Path) -> List[str]:
    return ["pastiche-compress", str(SOURCE), str(output)] + variant_args(name)


def shown_command(name: str) -> str:
    """The command with repo-relative paths, as someone would type it from the repo root."""
    rel = lambda p: os.path.relpath(p, REPO) if os.path.isabs(p) else p  # noqa: E731
    args = [rel(a) if a.startswith(str(SHARED)) else a for a in variant_args(name)]
    return " ".join(shlex.quote(a) for a in ["pastiche-compress", rel(str(SOURCE)), f"vgg19-{name}.pqw"] + args)


def build(name: str, cache: Path) -> Path:
    """Compress variant ``name`` into the cache (reused when the same command made it)."""
    path = cache / f"vgg19-{name}.pqw"
    stamp = path.with_suffix(".cmd")
    command = compress_command(name, path)
    if path.is_file() and stamp.is_file() and stamp.read_text() == json.dumps(command):
        return path
    print(f"[bits_grid] {' '.join(command)}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    print(f"[bits_grid]   {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    stamp.write_text(json.dumps(command))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# Cached transfers are only comparable when made by the same engine: the key includes this.
CODE = hashlib.sha256(b"".join(p.read_bytes() for p in sorted((REPO / "pastiche").glob("*.py")))).hexdigest()


# ---------------------------------------------------------------------------- measurements

def eval_images(size: int) -> Dict[str, "object"]:
    """Evaluation images at the transfer's pixel count (the content at long edge ``size``)."""
    from PIL import Image

    from pastiche.imageio import load_image, resized_dims

    content = Image.open(IMAGES / EVAL_CONTENTS[0])
    pixels = 1
    for d in resized_dims(*content.size, size=size):
        pixels *= d
    return {name: load_image(IMAGES / name, pixels=pixels) for name in EVAL_CONTENTS + EVAL_STYLES}


def feature_errors(path: Path, reference: Dict, images: Dict) -> Tuple[List[float], float, Optional[float]]:
    """Largest over the images of: relative Gram error per style layer, relative content-feature
    error, relative Gram error at DEEPEST (None when the file stops before it, --up-to)."""
    import torch

    from pastiche.losses import gram
    from pastiche.vgg import vgg19

    model = vgg19(weights=path)  # every layer the file holds
    held = DEEPEST in model.layers
    grams, content, deepest = [0.0] * len(STYLE_LAYERS), 0.0, 0.0
    rel = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    with torch.no_grad():
        for name, image in images.items():
            acts = model(image, STYLE_LAYERS + (CONTENT_LAYER,) + ((DEEPEST,) if held else ()))
            ref = reference[name]
            for i, layer in enumerate(STYLE_LAYERS):
                grams[i] = max(grams[i], rel(gram(acts[layer]), gram(ref[layer])))
            content = max(content, rel(acts[CONTENT_LAYER], ref[CONTENT_LAYER]))
            if held:
                deepest = max(deepest, rel(gram(acts[DEEPEST]), gram(ref[DEEPEST])))
    return grams, content, deepest if held else None


def reference_features(path: Path, images: Dict) -> Dict:
    import torch

    from pastiche.vgg import vgg19

    model = vgg19(weights=path, up_to=DEEPEST)
    with torch.no_grad():
        return {name: model(image, STYLE_LAYERS + (CONTENT_LAYER, DEEPEST)) for name, image in images.items()}


def perturbed_init(content: str, size: int, seed: int):
    """The content at the transfer's size with every value moved by -1, 0 or +1 gray level
    (seeded): a start no one could see, to measure how much the judge of a run varies by chance."""
    import numpy as np
    from PIL import Image

    from pastiche.imageio import resized_dims

    image = Image.open(IMAGES / content).convert("RGB")
    base = np.asarray(image.resize(resized_dims(*image.size, size=size), Image.BILINEAR), np.float32)
    noise = np.random.default_rng(seed).integers(-1, 2, base.shape)
    return np.clip(base + noise, 0, 255).astype(np.float32) / 255


def run_transfer(path: Path, content: str, style: str, args, cache: Path,
                 noise_seed: Optional[int] = None) -> Tuple[Path, float, float]:
    """Transfer (cached by weights hash and settings) → (png, judge loss, seconds). With
    ``noise_seed``, it starts from :func:`perturbed_init` instead of the content."""
    from judge import Judge

    from pastiche.schedule import transfer

    key = hashlib.sha256(json.dumps([sha256(path), CODE, content, style, args.size, args.num_steps,
                                     args.coarse, args.seed] + ([noise_seed] if noise_seed else []))
                         .encode()).hexdigest()[:16]
    png, meta = cache / "transfers" / f"{key}.png", cache / "transfers" / f"{key}.json"
    if png.is_file() and meta.is_file():
        saved = json.loads(meta.read_text())
        return png, saved["judge"], saved["seconds"]
    png.parent.mkdir(parents=True, exist_ok=True)
    print(f"[bits_grid] transfer {path.name}: {content} × {style}"
          + (f", init noise seed {noise_seed}" if noise_seed else ""), file=sys.stderr, flush=True)
    start = time.perf_counter()
    init = "content" if not noise_seed else perturbed_init(content, args.size, noise_seed)
    image = transfer(str(IMAGES / content), str(IMAGES / style), num_steps=args.num_steps,
                     coarse_steps=args.coarse, size=args.size, seed=args.seed, weights=path, device="cpu",
                     init=init)
    seconds = time.perf_counter() - start
    image.save(png)
    score = Judge(str(IMAGES / content), str(IMAGES / style)).score(str(png))
    meta.write_text(json.dumps({"judge": score, "seconds": seconds, "weights": path.name,
                                "content": content, "style": style}))
    print(f"[bits_grid]   {seconds:.0f} s, judge {score:,.0f}", file=sys.stderr, flush=True)
    return png, score, seconds


# ---------------------------------------------------------------------------- outputs

def grid_image(tiles: List[Tuple[str, Path]], columns: int, output: Path) -> None:
    """Tiles in rows of ``columns``, each under its label (lines shrunk to fit the tile)."""
    from PIL import Image, ImageDraw, ImageFont

    images = [Image.open(p).convert("RGB") for _, p in tiles]
    w, h = max(i.width for i in images), max(i.height for i in images)
    size = max(10, w // 16)
    band = 2 * (size + 3) + 6
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * w, rows * (h + band)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, ((label, _), image) in enumerate(zip(tiles, images)):
        x, y = (i % columns) * w, (i // columns) * (h + band)
        sheet.paste(image, (x + (w - image.width) // 2, y + band))
        for j, line in enumerate(label.split("\n")[:2]):
            fit = size
            while fit > 8 and draw.textlength(line, font=ImageFont.load_default(size=fit)) > w - 6:
                fit -= 1
            draw.text((x + w // 2, y + 4 + j * (size + 3)), line, fill="black",
                      font=ImageFont.load_default(size=fit), anchor="ma")
    output.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(output, optimize=True)


def parse_args(argv: Optional[List[str]]):
    """The command line: (args, variant names with 8 first, --check-variants, content/style pairs)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="8,7,6,5,4,3,2,1," + ",".join(CALIBRATED),
                        help="comma-separated: bit widths and/or " + ", ".join(CALIBRATED)
                             + " (default: all; 8 is always included as the reference)")
    parser.add_argument("--content", default=EVAL_CONTENTS[0], help="content image in ../shared/data/images")
    parser.add_argument("--style", default=EVAL_STYLES[0], help="style image in ../shared/data/images")
    parser.add_argument("--check-pairs", default=f"{EVAL_CONTENTS[1]}:{EVAL_STYLES[1]}",
                        help="more CONTENT:STYLE pairs (comma-separated; '' for none), run for the"
                             " --check-variants only")
    parser.add_argument("--check-variants", default="4bit-cal",
                        help="variants also run on --check-pairs (default 4bit-cal; 8 always)")
    parser.add_argument("--size", type=int, default=256, help="long edge of the transfer (default 256)")
    parser.add_argument("--num-steps", type=int, default=DEFAULT_NUM_STEPS,
                        help=f"L-BFGS steps at full size (default {DEFAULT_NUM_STEPS}, pastiche's)")
    parser.add_argument("--coarse-steps", default=",".join(map(str, DEFAULT_COARSE_STEPS)),
                        help="steps at the coarser levels, coarsest first (default"
                             f" {','.join(map(str, DEFAULT_COARSE_STEPS))}, pastiche's; '' for none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise-runs", type=int, default=3,
                        help="extra runs of each --check-pairs transfer (8 and --check-variants) from"
                             " the content moved by ±1 gray level, to show the judge's spread by"
                             " chance (default 3; 0 for none)")
    parser.add_argument("--repeats", type=int, default=5, help="timed loads per file (default 5)")
    parser.add_argument("--columns", type=int, default=5, help="grid columns (default 5)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "pastiche-bits-grid",
                        help="folder for compressed files and transfers (default: in the temp dir)")
    parser.add_argument("--output", type=Path, default=RESULTS / "bits_grid",
                        help="writes OUTPUT.png and OUTPUT.md (default benchmarks/results/bits_grid)")
    args = parser.parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    names = ["8"] + [n for n in names if n != "8"]
    for n in names:
        if not (n.isdigit() and 1 <= int(n) <= 8) and n not in CALIBRATED:
            parser.error(f"unknown variant '{n}'")
    check = {v.strip() for v in args.check_variants.split(",")}
    args.coarse = [int(v) for v in args.coarse_steps.split(",") if v.strip()]
    pairs = [(args.content, args.style)] + [tuple(p.split(":")) for p in args.check_pairs.split(",") if p]
    return args, names, check, pairs


def measure(files: Dict[str, Path], images: Dict, repeats: int) -> Dict[str, dict]:
    """Per variant: file size, weights held, median load time and feature errors against 8 bits."""
    reference = reference_features(files["8"], images)
    rows = {}
    for n, path in files.items():
        grams, content, deepest = feature_errors(path, reference, images)
        held = sum(math.prod(e["shape"]) for e in read_header(path)[0]["layers"])  # weights in the file
        rows[n] = {"size": path.stat().st_size, "weights": held, "load": statistics.median(time_ours(path, repeats)),
                   "grams": grams, "content": content, "deepest": deepest, "judge": {}}
    return rows


def transfers(files: Dict[str, Path], pairs: List[Tuple[str, str]], check: set, rows: Dict[str, dict], args):
    """Judge each variant's transfer (the first pair: all; the others: 8 and ``check``) into
    ``rows``; returns the first pair's grid tiles and the judges of the perturbed-start runs."""
    tiles = []
    for i, (c, s) in enumerate(pairs):
        for n, path in files.items():
            if i > 0 and n != "8" and n not in check:
                continue
            png, score, _ = run_transfer(path, c, s, args, args.cache)
            rows[n]["judge"][(c, s)] = score
            if i == 0:
                title = f"{n} bit{'s' if n != '1' else ''}" if n.isdigit() else n
                tiles.append((f"{title}: {rows[n]['size'] / 1e6:.2f} MB\njudge {score:,.0f}", png))
    spread = {}  # (variant, pair) → judges of the runs from perturbed starts
    for c, s in pairs[1:]:
        for n, path in files.items():
            if n == "8" or n in check:
                spread[n, (c, s)] = [run_transfer(path, c, s, args, args.cache, noise_seed=k)[1]
                                     for k in range(1, args.noise_runs + 1)]
    return tiles, spread


def report(args, argv: Optional[List[str]], names: List[str], pairs: List[Tuple[str, str]], rows: Dict[str, dict],
           spread: Dict) -> str:
    """The Markdown table of ``rows`` and ``spread``, with the command and machine."""
    import torch

    grid = args.output.with_suffix(".png").resolve()
    grid_name = grid.relative_to(REPO) if grid.is_relative_to(REPO) else grid
    command = "python3 " + " ".join(shlex.quote(a) for a in
                                    ["benchmarks/bits_grid.py"] + list(argv if argv is not None else sys.argv[1:]))
    pct = lambda x: f"{100 * x:.1f} %" if x < 10 else f"{x:.0f}×"  # noqa: E731
    lines = [
        "# Bits per weight vs style transfer",
        "",
        f"Command: `{command}` (from the repo root)  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()},"
        f" torch {torch.__version__}, torch threads {torch.get_num_threads()}  ",
        f"Transfer: {args.content} × {args.style}, `--size {args.size} --num-steps {args.num_steps}"
        f" --seed {args.seed}` after coarse levels of {args.coarse or 'no'} steps (pastiche's"
        f" coarse-to-fine schedule), CPU; grid: `{grid_name}`  ",
        f"Calibration images (data-aware variants): {', '.join(CALIBRATION)}; evaluation images:"
        f" {', '.join(EVAL_CONTENTS)} (contents), {', '.join(EVAL_STYLES)} (styles) — disjoint  ",
        "Errors are relative to the 8-bit file (= the float source), the largest over the four"
        " evaluation images at the transfer's pixel count; judge: `benchmarks/judge.py` on the saved PNG"
        " (lower is better), ratio to the 8-bit transfer in parentheses. Bits/weight held: file bytes"
        " × 8 over the weights of the convolutions the file holds.",
        "",
        "| variant | file size (bytes) | bits/weight held | load (s) | " + " | ".join(f"Gram {short(l)}" for l in STYLE_LAYERS)
        + f" | content {short(CONTENT_LAYER)} | Gram {short(DEEPEST)}\\* | " + " | ".join(f"judge {c.split('.')[0]} × {s.split('.')[0]}" for c, s in pairs) + " |",
        "|---|---:|---:|---:|" + "---:|" * (len(STYLE_LAYERS) + 2 + len(pairs)),
    ]
    ref_judge = rows["8"]["judge"]
    for n in names:
        r = rows[n]
        judges = []
        for p in pairs:
            if p in r["judge"]:
                judges.append(f"{r['judge'][p]:,.0f} ({r['judge'][p] / ref_judge[p]:.3f})")
            else:
                judges.append("–")
        lines.append(f"| {variant_label(n)} | {r['size']:,} | {8 * r['size'] / r['weights']:.2f} | {r['load']:.3f} | "
                     + " | ".join(pct(g) for g in r["grams"]) + f" | {pct(r['content'])} | {'not held' if r['deepest'] is None else pct(r['deepest'])} | "
                     + " | ".join(judges) + " |")
    if spread:
        lines += ["", f"**Chance.** Each check transfer again from {args.noise_runs} starts that differ from"
                  " the content by ±1 gray level (invisible): judge of the plain run, then of those"
                  " runs, and the mean of all; ratios to the 8-bit mean.", "",
                  "| variant | pair | plain run | perturbed starts | mean | ratio of means |", "|---|---|---:|---|---:|---:|"]
        for (n, pair), values in spread.items():
            runs = [rows[n]["judge"][pair]] + values
            ref = [rows["8"]["judge"][pair]] + spread["8", pair]
            lines.append(f"| {variant_label(n)} | {pair[0].split('.')[0]} × {pair[1].split('.')[0]} |"
                         f" {runs[0]:,.0f} | {', '.join(f'{v:,.0f}' for v in values)} |"
                         f" {statistics.mean(runs):,.0f} | {statistics.mean(runs) / statistics.mean(ref):.3f} |")
    lines += ["", f"\\* {DEEPEST} is read by no default loss (the deepest default layer is block5_relu1);"
              " it shows what a variant does to block5_conv2-4. \"not held\": the file stops at"
              " block5_relu1 (`--up-to`), so asking it for a deeper layer is an error, not a silent"
              " approximation."]
    lines += ["", "Each file was made by (paths relative to the repo root; the output name is free):", ""]
    lines += [f"* {variant_label(n)}: `{shown_command(n)}`" for n in names]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    args, names, check, pairs = parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    files = {n: build(n, args.cache) for n in names}
    rows = measure(files, eval_images(args.size), args.repeats)
    tiles, spread = transfers(files, pairs, check, rows, args)
    grid_image(tiles, args.columns, args.output.with_suffix(".png"))
    table = report(args, argv, names, pairs, rows, spread)
    print(table)
    args.output.with_suffix(".md").write_text(table)
    print(f"wrote {args.output.with_suffix('.md')} and {args.output.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
