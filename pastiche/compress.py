"""The compressor: VGG19 float32 weights → a quantized weights file (``pastiche-compress``).

Each convolution's weights are clustered with optimal 1-D k-means into 2**bits centroids. A layer
with at most 2**bits distinct values is stored exactly; one with few distinct values (≤ 2048) is
clustered by an exact weighted dynamic programme over its distinct values, which reaches the same
optimum as ``kmeans1d`` on the expanded data in a fraction of the time; anything else goes to
``kmeans1d``. Layers are compressed in parallel processes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import __version__
from .errors import PasticheError
from .quantized import QuantizedLayer, WeightsFile, save_file
from .vgg import CAFFE_PREPROCESSING, CONV_NAMES

TORCHVISION_PREPROCESSING = {"channel_order": "RGB", "scale": 1.0,
                             "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
PREPROCESSING = {"caffe": CAFFE_PREPROCESSING, "torchvision": TORCHVISION_PREPROCESSING}
ATTRIBUTION = ("VGG19 by Karen Simonyan and Andrew Zisserman, 'Very Deep Convolutional Networks"
               " for Large-Scale Image Recognition' (2014); weights licensed CC BY 4.0")
DP_MAX_DISTINCT = 2048  # the dynamic programme is O(k n^2) in memory-light numpy rows

Layers = Dict[str, Tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class LayerReport:
    name: str
    distinct: int  # distinct values in the source weights
    bits: int
    method: str  # "exact", "dp" or "kmeans1d"
    max_error: float
    mean_error: float
    nbytes: int
    seconds: float


# ---------------------------------------------------------------------------- k-means

def weighted_kmeans(values: np.ndarray, counts: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Optimal 1-D k-means of sorted distinct ``values`` with multiplicities ``counts``.

    Returns (centroids (k',) float64, label of each value (n,)), k' = min(k, n). Exact: the
    classic O(k n^2) dynamic programme over contiguous segments of the sorted values.
    """
    n = values.size
    if n <= k:
        return values.astype(np.float64), np.arange(n)
    x = values.astype(np.float64) - np.average(values, weights=counts)  # centred: less cancellation
    w = counts.astype(np.float64)
    p0, p1, p2 = (np.concatenate([[0.0], np.cumsum(a)]) for a in (w, w * x, w * x * x))
    i, j = np.triu_indices(n + 1, 1)
    cost = np.full((n + 1, n + 1), np.inf)  # cost[i, j]: squared error of segment [i, j)
    cost[i, j] = (p2[j] - p2[i]) - (p1[j] - p1[i]) ** 2 / (p0[j] - p0[i])
    best = cost[0].copy()  # best[j]: error of the first j values in c+1 clusters
    back = np.zeros((k, n + 1), dtype=np.int64)
    for c in range(1, k):
        total = best[:, None] + cost
        back[c] = total.argmin(axis=0)
        best = total[back[c], np.arange(n + 1)]
    bounds, j = [n], n
    for c in range(k - 1, 0, -1):
        j = back[c, j]
        bounds.append(j)
    bounds = bounds[::-1]
    starts = np.array([0] + bounds[:-1])
    labels = np.repeat(np.arange(k), np.diff([0] + bounds))
    centroids = (p1[bounds] - p1[starts]) / (p0[bounds] - p0[starts])
    return centroids + np.average(values, weights=counts), labels


def quantize(weight: np.ndarray, bias: np.ndarray, bits: int) -> Tuple[QuantizedLayer, str]:
    """Cluster one layer's weights into 2**bits centroids; return the layer and the method used."""
    flat = weight.astype(np.float32).ravel()
    k = 1 << bits
    distinct, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    if distinct.size <= k:
        method, centroids, labels = "exact", distinct, np.arange(distinct.size)
    elif distinct.size <= DP_MAX_DISTINCT:
        method, (centroids, labels) = "dp", weighted_kmeans(distinct, counts, k)
    else:
        import kmeans1d

        method = "kmeans1d"
        clusters, centroids = kmeans1d.cluster(flat.astype(np.float64), k)
        return QuantizedLayer.from_indices(np.asarray(clusters).reshape(weight.shape),
                                           centroids, bias, bits=bits), method
    indices = labels[inverse].reshape(weight.shape)
    return QuantizedLayer.from_indices(indices, centroids, bias, bits=bits), method


def _quantize_job(name: str, weight: np.ndarray, bias: np.ndarray, bits: int) -> Tuple[str, QuantizedLayer, LayerReport]:
    start = time.perf_counter()
    layer, method = quantize(weight, bias, bits)
    error = np.abs(layer.dequantize() - weight)
    nbytes = layer.packed.nbytes + layer.centroids.nbytes + layer.bias.nbytes
    report = LayerReport(name, int(np.unique(weight).size), bits, method, float(error.max()),
                         float(error.mean()), nbytes, time.perf_counter() - start)
    return name, layer, report


# ---------------------------------------------------------------------------- sources

def read_source(path: Union[str, os.PathLike]) -> Layers:
    """Read VGG19 convolutions from a torchvision-layout ``.pth`` or a Keras ``.h5`` file.

    Returns {block1_conv1: (weight (out, in, 3, 3), bias (out,)), ...} as float32 numpy arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise PasticheError(f"cannot read source weights '{path}': no such file")
    if path.suffix.lower() in (".h5", ".hdf5"):
        return _read_keras(path)
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file; all mean the same to a user
        raise PasticheError(f"cannot read source weights '{path}': {type(e).__name__}: "
                            f"{str(e).splitlines()[0][:200]}; expected a state dict saved with torch.save") from None
    if not isinstance(state, Mapping):
        raise PasticheError(f"source weights '{path}' is not a state dict")
    state = {k.removeprefix("features."): v for k, v in state.items()}
    convs = sorted({int(k.split(".")[0]) for k in state if k.split(".")[0].isdigit() and k.endswith(".weight")})
    if len(convs) != len(CONV_NAMES):
        raise PasticheError(f"source weights '{path}' has {len(convs)} convolutions, VGG19 has"
                            f" {len(CONV_NAMES)}; expected torchvision's features.N.weight layout")
    return {name: (state[f"{i}.weight"].float().numpy(), state[f"{i}.bias"].float().numpy())
            for name, i in zip(CONV_NAMES, convs)}


def _read_keras(path: Path) -> Layers:
    try:
        import h5py
    except ImportError:
        raise PasticheError(f"reading '{path}' needs h5py: pip install 'pastiche[keras]'") from None
    layers = {}
    with h5py.File(path, "r") as f:
        for name in CONV_NAMES:
            group = f[name] if name in f else f["layers"][name]
            arrays = {}
            group.visititems(lambda key, item: arrays.setdefault(key, item) if hasattr(item, "shape") else None)
            kernel = next(a for k, a in arrays.items() if len(a.shape) == 4)[()]
            bias = next(a for k, a in arrays.items() if len(a.shape) == 1)[()]
            # Keras kernels are (3, 3, in, out); torch wants (out, in, 3, 3).
            layers[name] = (np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), np.float32),
                            np.asarray(bias, np.float32))
    return layers


# ---------------------------------------------------------------------------- whole network

def compress(source: Union[str, os.PathLike], output: Union[str, os.PathLike], *,
             bits: Union[int, Mapping[str, int]] = 8, preprocessing: str = "caffe",
             jobs: Optional[int] = None, progress: bool = True) -> List[LayerReport]:
    """Compress ``source`` into the weights file ``output``; ``bits`` is one width or per layer."""
    per_layer = {name: bits if isinstance(bits, int) else bits.get(name, 8) for name in CONV_NAMES}
    for name, b in per_layer.items():
        if not (isinstance(b, int) and 1 <= b <= 8):
            raise PasticheError(f"--bits for {name} is {b}; choose an integer from 1 to 8")
    layers = read_source(source)
    sha = hashlib.sha256(Path(source).read_bytes()).hexdigest()
    from tqdm.auto import tqdm

    done: Dict[str, Tuple[QuantizedLayer, LayerReport]] = {}
    # Biggest layers first so the pool's processes finish together.
    order = sorted(CONV_NAMES, key=lambda n: -layers[n][0].size)
    with ProcessPoolExecutor(jobs or os.cpu_count() or 1) as pool, \
            tqdm(total=len(order), desc="compressing", unit="layer", disable=not progress) as bar:
        futures = [pool.submit(_quantize_job, n, *layers[n], per_layer[n]) for n in order]
        for future in as_completed(futures):
            name, layer, report = future.result()
            done[name] = (layer, report)
            bar.update()
    weights = WeightsFile("vgg19", PREPROCESSING[preprocessing], {n: done[n][0] for n in CONV_NAMES},
                          {"name": Path(source).name, "sha256": sha},
                          {"attribution": ATTRIBUTION, "created_by": f"pastiche-compress {__version__}"})
    save_file(weights, output)
    return [done[n][1] for n in CONV_NAMES]


def format_report(reports: Sequence[LayerReport]) -> str:
    rows = [f"{'layer':<13} {'distinct':>8} {'bits':>4} {'method':>8} {'max abs err':>11}"
            f" {'mean abs err':>12} {'bytes':>10} {'s':>6}"]
    for r in reports:
        rows.append(f"{r.name:<13} {r.distinct:>8} {r.bits:>4} {r.method:>8} {r.max_error:>11.3g}"
                    f" {r.mean_error:>12.3g} {r.nbytes:>10,} {r.seconds:>6.2f}")
    rows.append(f"{'total':<13} {'':>8} {'':>4} {'':>8} {max(r.max_error for r in reports):>11.3g}"
                f" {'':>12} {sum(r.nbytes for r in reports):>10,}")
    return "\n".join(rows)


def parse_bits(text: str) -> Union[int, Dict[str, int]]:
    """``8`` or ``block1_conv1=8,block5_conv4=4,...`` (unnamed layers: 8) → bits."""
    try:
        if "=" not in text:
            return int(text)
        return {k.strip(): int(v) for k, v in (item.split("=") for item in text.split(","))}
    except ValueError:
        raise PasticheError(f"--bits '{text}' is not N or LAYER=N,...; e.g. --bits 4") from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pastiche-compress", description="Compress VGG19 weights into a pastiche weights file.")
    parser.add_argument("source", help="torchvision-layout .pth state dict, or Keras .h5")
    parser.add_argument("output", help="weights file to write, e.g. weights/vgg19-8bit.pqw")
    parser.add_argument("--bits", default="8", help="bits per weight, 1-8, or LAYER=N,... (default 8)")
    parser.add_argument("--preprocessing", choices=sorted(PREPROCESSING), default="caffe",
                        help="input convention of the source weights (default caffe)")
    parser.add_argument("--jobs", type=int, default=None, help="processes (default: all cores)")
    args = parser.parse_args(argv)
    try:
        start = time.perf_counter()
        reports = compress(args.source, args.output, bits=parse_bits(args.bits),
                           preprocessing=args.preprocessing, jobs=args.jobs)
    except PasticheError as e:
        print(f"pastiche-compress: error: {e}", file=sys.stderr)
        return 2
    print(format_report(reports))
    print(f"wrote {args.output} ({Path(args.output).stat().st_size:,} bytes) in"
          f" {time.perf_counter() - start:.1f} s")
    return 0
