"""The compressor: VGG19 float32 weights → a quantized weights file (``pastiche-compress``).

Reads a torchvision-layout ``.pth`` or Keras ``.h5`` source, quantizes each convolution — by
optimal 1-D k-means (:mod:`pastiche.kmeans`, layers in parallel processes) or, with calibration
images, against the float network's outputs (:mod:`pastiche.calibrate`) — and writes the weights
file (:mod:`pastiche.quantized`) with the source's hash and a per-layer report.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing
import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import __version__
from .__main__ import termination_as_interrupt
from .calibrate import CALIBRATION_SIZES, calibrated_quantize, calibration_images
from .checks import whole
from .console import OneLineParser
from .errors import PasticheError
from .files import check_readable, check_writable
from .kmeans import LayerReport, layer_report, quantize
from .quantized import QuantizedLayer, WeightsFile, save_file
from .vgg import CONV_NAMES, LAYER_INDEX, PREPROCESSING, check_layers

ATTRIBUTION = ("VGG19 by Karen Simonyan and Andrew Zisserman, 'Very Deep Convolutional Networks"
               " for Large-Scale Image Recognition' (2014); weights licensed CC BY 4.0")

Layers = Dict[str, Tuple[np.ndarray, np.ndarray]]


def _quantize_job(job: Tuple[str, np.ndarray, np.ndarray, int]) -> Tuple[str, QuantizedLayer, LayerReport]:
    name, weight, bias, bits = job
    start = time.perf_counter()
    layer, method = quantize(weight, bias, bits)
    return name, layer, layer_report(name, weight, layer, method, start)


def _ignore_ctrl_c() -> None:
    """In a worker: Ctrl-C is the parent's to handle (it stops the workers); a worker that took it
    too would hand it back as a result and go on to the next layer. SIGTERM ends a worker, as the
    pool's terminate() expects, not as the Ctrl-C the parent's main() makes of it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


# ---------------------------------------------------------------------------- sources

def read_source(path: Union[str, os.PathLike]) -> Layers:
    """Read VGG19 convolutions from a torchvision-layout ``.pth`` or a Keras ``.h5`` file.

    Returns {block1_conv1: (weight (out, in, 3, 3), bias (out,)), ...} as float32 numpy arrays,
    checked: 3x3 kernels that chain from 3 input channels, finite values. The widths are not
    VGG19's necessarily (the tests use narrow networks); pastiche's loader takes VGG19's only.
    """
    path = Path(path)
    check_readable(path, f"source weights '{path}'", expected="the .pth or .h5 file")
    layers = _read_keras(path) if path.suffix.lower() in (".h5", ".hdf5") else _read_torch(path)
    in_channels = 3
    for name in CONV_NAMES:
        weight, bias = layers[name]
        out = weight.shape[0] if weight.ndim == 4 else 0
        if out < 1 or weight.shape != (out, in_channels, 3, 3) or bias.shape != (out,):
            wanted = f"({out}, {in_channels}, 3, 3) and ({out},)" if out else f"(N, {in_channels}, 3, 3) and (N,)"
            raise PasticheError(f"source weights '{path}': {name} is {weight.shape} with bias {bias.shape},"
                                f" where {wanted} would follow the layer before; expected VGG19's"
                                " convolutions in order")
        in_channels = out
        if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
            raise PasticheError(f"source weights '{path}': {name} holds NaN or infinite values;"
                                " the source is damaged")
    return layers


def _read_torch(path: Path) -> Layers:
    import torch

    try:
        with warnings.catch_warnings():  # torch warns about a pickle it then refuses: the error says it
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises many types for a bad file; all mean the same to a user
        raise PasticheError(f"cannot read source weights '{path}': not a tensor state dict; expected a"
                            " torchvision-layout .pth saved with torch.save, or a Keras .h5") from None
    if not isinstance(state, Mapping):
        raise PasticheError(f"source weights '{path}' is not a state dict")
    if not all(isinstance(k, str) for k in state):
        raise PasticheError(f"source weights '{path}' has keys that are not names; expected torchvision's"
                            " features.N.weight layout")
    state = {k.removeprefix("features."): v for k, v in state.items()}
    convs = sorted({int(k.split(".")[0]) for k in state if k.split(".")[0].isdigit() and k.endswith(".weight")})
    if len(convs) != len(CONV_NAMES):
        raise PasticheError(f"source weights '{path}' has {len(convs)} convolutions, VGG19 has"
                            f" {len(CONV_NAMES)}; expected torchvision's features.N.weight layout")
    missing = [f"features.{i}.bias" for i in convs if f"{i}.bias" not in state]
    if missing:
        raise PasticheError(f"source weights '{path}' has no '{missing[0]}'; expected torchvision's"
                            " features.N.weight and features.N.bias for every convolution")

    def array(key: str) -> np.ndarray:
        value = state[key]
        if not (isinstance(value, torch.Tensor) and value.layout == torch.strided and value.is_floating_point()):
            raise PasticheError(f"source weights '{path}': features.{key} is not a dense tensor of real"
                                f" floating-point numbers ({type(value).__name__}"
                                f"{', ' + str(value.dtype) if isinstance(value, torch.Tensor) else ''})")
        return value.float().numpy()

    return {name: (array(f"{i}.weight"), array(f"{i}.bias")) for name, i in zip(CONV_NAMES, convs)}


def _read_keras(path: Path) -> Layers:
    try:
        import h5py
    except ImportError:
        raise PasticheError(f"reading '{path}' needs h5py: pip install 'pastiche[keras]' (or pip install h5py)") from None
    layers = {}
    try:
        with h5py.File(path, "r") as f:
            for name in CONV_NAMES:
                group = f[name] if name in f else f["layers"][name]
                arrays = {}

                def keep(key: str, item: object) -> None:  # None: visititems stops at any other value
                    if isinstance(item, h5py.Dataset):
                        arrays[key] = item

                group.visititems(keep)
                kernel = next(a for a in arrays.values() if len(a.shape) == 4)[()]
                bias = next(a for a in arrays.values() if len(a.shape) == 1)[()]
                if not (kernel.dtype.kind in "fiu" and bias.dtype.kind in "fiu"):  # not text, nor complex
                    raise TypeError(kernel.dtype)
                # Keras kernels are (3, 3, in, out); torch wants (out, in, 3, 3).
                layers[name] = (np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), np.float32),
                                np.asarray(bias, np.float32))
    # KeyError, StopIteration: no such group or array; AttributeError: a dataset where a group
    # belongs; TypeError: arrays that are not real numbers
    except (OSError, KeyError, StopIteration, AttributeError, TypeError) as e:
        what = "not an HDF5 file" if isinstance(e, OSError) else f"no kernel and bias of real numbers for {name}"
        raise PasticheError(f"cannot read source weights '{path}': {what}; expected a Keras VGG19 .h5"
                            " (layers block1_conv1 ... block5_conv4)") from None
    return layers


# ---------------------------------------------------------------------------- whole network

def compress(source: Union[str, os.PathLike], output: Union[str, os.PathLike], *,
             bits: Union[int, Mapping[str, int]] = 8, preprocessing: str = "caffe",
             jobs: Optional[int] = None, progress: bool = True,
             calibrate: Sequence[Union[str, os.PathLike]] = (),
             calibration_sizes: Sequence[int] = CALIBRATION_SIZES, positions: int = 16384,
             damp: float = 0.1, refit: int = 1, seed: int = 0, up_to: Optional[str] = None) -> List[LayerReport]:
    """Compress ``source`` into the weights file ``output``; ``bits`` is one width or per layer
    (key ``"*"``: the unnamed layers' width, default 8).

    ``up_to``: keep only the convolutions that layer needs (e.g. ``"block5_relu1"``, the deepest
    layer pastiche's default losses read); the file then serves layers up to there only.

    Without ``calibrate``, each layer gets optimal 1-D k-means of its weights (in parallel
    processes). With calibration images (each used at every long edge in ``calibration_sizes``),
    layers are quantized in order against the float network's outputs on them: see
    :func:`calibrated_quantize`. ``positions``, ``damp``, ``refit`` and ``seed`` tune that.
    """
    output = check_writable(output, inputs=[source, *calibrate], kind="weights file", input_kind="input",
                            option="output path")
    if jobs is not None and not whole(jobs):
        raise PasticheError(f"--jobs must be a whole number of processes, at least 1, got {jobs!r}")
    per_layer = _bits_per_layer(bits, up_to)
    _check_calibration(positions, refit, damp, calibration_sizes)
    if preprocessing not in PREPROCESSING:
        raise PasticheError(f"--preprocessing '{preprocessing}' is not one of {', '.join(sorted(PREPROCESSING))}")
    layers = read_source(source)
    sha = hashlib.sha256(Path(source).read_bytes()).hexdigest()
    metadata = {"attribution": ATTRIBUTION, "created_by": f"pastiche-compress {__version__}"}
    if calibrate:
        done = _calibrated(layers, per_layer, calibration_images(calibrate, calibration_sizes), jobs,
                           preprocessing=preprocessing, positions=positions, damp=damp, refit=refit, seed=seed,
                           progress=progress)
        metadata["calibration"] = json.dumps(
            {"images": [{"name": Path(p).name, "sha256": hashlib.sha256(Path(p).read_bytes()).hexdigest()}
                        for p in calibrate],
             "sizes": list(calibration_sizes), "positions": positions, "damp": damp, "refit": refit,
             "seed": seed, "method": "activation-weighted k-means codebook, GPTQ indices,"
                                     " least-squares centroids and bias"})
    else:
        done = _kmeans(layers, per_layer, jobs, progress)
    weights = WeightsFile("vgg19", PREPROCESSING[preprocessing], {n: done[n][0] for n in per_layer},
                          {"name": Path(source).name, "sha256": sha}, metadata)
    try:
        save_file(weights, output)
    except OSError as e:  # the disk filled, the folder went away since the check
        raise PasticheError(f"cannot write weights file '{output}': {e.strerror or e}; choose another"
                            " output path") from None
    return [done[n][1] for n in per_layer]


def _bits_per_layer(bits: Union[int, Mapping[str, int]], up_to: Optional[str]) -> Dict[str, int]:
    """Each kept convolution's width, in network order: those ``up_to`` needs (default all)."""
    last = LAYER_INDEX[check_layers([up_to], option="--up-to")[0]] if up_to else len(LAYER_INDEX) - 1
    kept = [n for n in CONV_NAMES if LAYER_INDEX[n] <= last]
    per_layer = {name: bits if isinstance(bits, int) else bits.get(name, bits.get("*", 8)) for name in kept}
    for name, b in per_layer.items():
        if not (isinstance(b, int) and 1 <= b <= 8):
            raise PasticheError(f"--bits for {name} is {b}; choose an integer from 1 to 8")
    if not isinstance(bits, int):
        unknown = sorted(set(bits) - set(CONV_NAMES) - {"*"})
        if unknown:
            raise PasticheError(f"--bits names unknown layer '{unknown[0]}'; the convolutions are"
                                f" {CONV_NAMES[0]} ... {CONV_NAMES[-1]}")
        dropped = [n for n in bits if n not in kept and n != "*"]
        if dropped:
            raise PasticheError(f"--bits names {dropped[0]}, which --up-to {up_to} leaves out")
    return per_layer


def _check_calibration(positions: int, refit: int, damp: float, sizes: Sequence[int]) -> None:
    """Refuse calibration settings that cannot work (checked with or without images, as given)."""
    for value, option in ((positions, "--positions"), (refit + 1, "--refit")):
        if not (isinstance(value, int) and value >= 1):
            raise PasticheError(f"{option} must be a whole number ≥ {1 if option == '--positions' else 0}")
    if not (isinstance(damp, (int, float)) and 0 < damp < math.inf):  # inf: a Cholesky of infinities
        raise PasticheError(f"--damp must be a positive number, got {damp}")
    if any(not (isinstance(s, int) and s >= 16) for s in sizes) or not sizes:
        raise PasticheError(f"--calibration-sizes {list(sizes)}: give long edges ≥ 16 px")


def _kmeans(layers: Layers, per_layer: Dict[str, int], jobs: Optional[int],
            progress: bool) -> Dict[str, Tuple[QuantizedLayer, LayerReport]]:
    """Each layer by optimal 1-D k-means, in ``jobs`` processes (default: one per core)."""
    from tqdm.auto import tqdm

    done = {}
    order = sorted(per_layer, key=lambda n: -layers[n][0].size)  # biggest first: the processes finish together
    # Leaving the block, normally or by Ctrl-C or an error, terminates the workers at once.
    with multiprocessing.Pool(jobs, initializer=_ignore_ctrl_c) as pool, \
            tqdm(total=len(order), desc="compressing", unit="layer", disable=not progress) as bar:
        for name, layer, report in pool.imap_unordered(_quantize_job, [(n, *layers[n], per_layer[n]) for n in order]):
            done[name] = (layer, report)
            bar.update()
    return done


def _calibrated(layers: Layers, per_layer: Dict[str, int], images: list, jobs: Optional[int],
                **options) -> Dict[str, Tuple[QuantizedLayer, LayerReport]]:
    """:func:`calibrated_quantize` on ``jobs`` torch threads (the caller's number restored)."""
    import torch

    threads = torch.get_num_threads()
    if jobs:
        torch.set_num_threads(jobs)
    try:
        return calibrated_quantize(layers, per_layer, images, **options)
    finally:
        torch.set_num_threads(threads)


def format_report(reports: Sequence[LayerReport]) -> str:
    calibrated = any(r.output_error is not None for r in reports)
    out = lambda r: (f" {r.output_error:>9.2%}" if r.output_error is not None else f" {'-':>9}") \
        if calibrated else ""  # noqa: E731
    rows = [f"{'layer':<13} {'distinct':>8} {'bits':>4} {'method':>8} {'max abs err':>11}"
            f" {'mean abs err':>12} {'bytes':>10} {'s':>6}" + (f" {'out err':>9}" if calibrated else "")]
    for r in reports:
        rows.append(f"{r.name:<13} {r.distinct:>8} {r.bits:>4} {r.method:>8} {r.max_error:>11.3g}"
                    f" {r.mean_error:>12.3g} {r.nbytes:>10,} {r.seconds:>6.2f}" + out(r))
    rows.append(f"{'total':<13} {'':>8} {'':>4} {'':>8} {max(r.max_error for r in reports):>11.3g}"
                f" {'':>12} {sum(r.nbytes for r in reports):>10,}")
    return "\n".join(rows)


def parse_bits(text: str) -> Union[int, Dict[str, int]]:
    """``8``, ``block1_conv1=8,block5_conv4=4,...`` (unnamed layers: 8) or ``4,block1_conv1=8``
    (a bare number sets the unnamed layers: key ``"*"``) → bits."""
    try:
        if "=" not in text:
            return int(text)
        items = [item.strip() for item in text.split(",") if item.strip()]
        pairs = [(k.strip(), int(v)) for k, v in (item.split("=") for item in items if "=" in item)]
        bare = [int(item) for item in items if "=" not in item]
    except ValueError:
        raise PasticheError(f"--bits '{text}' is not N or LAYER=N,...; e.g. --bits 4") from None
    named = dict(pairs)
    if len(bare) + ("*" in named) > 1:  # "*=N" is the bare N spelt out
        raise PasticheError(f"--bits '{text}' gives more than one default width")
    if len(named) < len(pairs):
        twice = next(k for i, (k, _) in enumerate(pairs) if k in dict(pairs[:i]))
        raise PasticheError(f"--bits '{text}' gives {twice} twice; give each layer once")
    return {"*": bare[0], **named} if bare else named


def _sizes(text: str) -> List[int]:
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of long edges") from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = OneLineParser(
        prog="pastiche-compress", description="Compress VGG19 weights into a pastiche weights file.")
    parser.add_argument("source", help="torchvision-layout .pth state dict, or Keras .h5")
    parser.add_argument("output", help="weights file to write, e.g. weights/vgg19-8bit.pqw")
    parser.add_argument("--bits", default="8",
                        help="bits per weight, 1-8; or LAYER=N,... (others 8); or N,LAYER=N,... (default 8)")
    parser.add_argument("--preprocessing", choices=sorted(PREPROCESSING), default="caffe",
                        help="input convention of the source weights (default caffe)")
    parser.add_argument("--up-to", metavar="LAYER",
                        help="keep only the convolutions LAYER needs, e.g. block5_relu1 (the deepest"
                             " layer the default losses read); the file serves no deeper layers")
    parser.add_argument("--jobs", type=int, default=None,
                        help="processes (default: all cores); with --calibrate, torch threads")
    group = parser.add_argument_group(
        "data-aware quantization",
        "with --calibrate, layers are quantized in order so that their outputs on the calibration"
        " images match the float network's: activation-weighted k-means codebooks, GPTQ indices,"
        " least-squares centroids and biases (same file format)")
    group.add_argument("--calibrate", nargs="+", metavar="IMAGE", default=[],
                       help="calibration images (keep them apart from images you evaluate on)")
    # Defaults None, filled in below: given without --calibrate, they would do nothing
    tuning = {"calibration_sizes": list(CALIBRATION_SIZES), "positions": 16384, "damp": 0.1, "refit": 1, "seed": 0}
    group.add_argument("--calibration-sizes", type=_sizes, metavar="N,N,...", help="long edges each"
                       f" calibration image is used at (default {','.join(map(str, CALIBRATION_SIZES))})")
    group.add_argument("--positions", type=int, help="sampled pixels per layer (default 16384)")
    group.add_argument("--damp", type=float, help="ridge toward the source weights, relative to the mean"
                       " activation energy (default 0.1)")
    group.add_argument("--refit", type=int, help="rounds of centroid refitting and re-rounding (default 1)")
    group.add_argument("--seed", type=int, help="seed for pixel sampling (default 0)")
    args = parser.parse_args(argv)
    given = [name for name in tuning if getattr(args, name) is not None]
    for name, default in tuning.items():
        setattr(args, name, default if getattr(args, name) is None else getattr(args, name))
    try:
        if given and not args.calibrate:  # they tune the data-aware method only: k-means would ignore them
            raise PasticheError(f"--{given[0].replace('_', '-')} tunes --calibrate's quantization; give"
                                " --calibrate IMAGE... too, or leave it out")
        start = time.perf_counter()
        with termination_as_interrupt():
            reports = compress(args.source, args.output, bits=parse_bits(args.bits),
                               preprocessing=args.preprocessing, jobs=args.jobs,
                               calibrate=args.calibrate, calibration_sizes=args.calibration_sizes,
                               positions=args.positions, damp=args.damp, refit=args.refit, seed=args.seed,
                               up_to=args.up_to)
    except PasticheError as e:
        print(f"pastiche-compress: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the output is written atomically: nothing of it exists yet
        print("pastiche-compress: interrupted; nothing written", file=sys.stderr)
        return 130
    print(format_report(reports))
    print(f"wrote {args.output} ({Path(args.output).stat().st_size:,} bytes) in"
          f" {time.perf_counter() - start:.1f} s")
    return 0
