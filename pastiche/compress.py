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
import json
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
from .vgg import CAFFE_PREPROCESSING, CONV_NAMES, LAYER_INDEX, check_layers, preprocessing_affine

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
    output_error: Optional[float] = None  # calibrated layers: relative error of their outputs


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


def _report(name: str, weight: np.ndarray, layer: QuantizedLayer, method: str, start: float,
            output_error: Optional[float] = None) -> LayerReport:
    """What quantizing ``weight`` into ``layer`` did, for the per-layer table."""
    error = np.abs(layer.dequantize() - weight)
    nbytes = layer.packed.nbytes + layer.centroids.nbytes + layer.bias.nbytes
    return LayerReport(name, int(np.unique(weight).size), layer.bits, method, float(error.max()),
                       float(error.mean()), nbytes, time.perf_counter() - start, output_error)


def _quantize_job(name: str, weight: np.ndarray, bias: np.ndarray, bits: int) -> Tuple[str, QuantizedLayer, LayerReport]:
    start = time.perf_counter()
    layer, method = quantize(weight, bias, bits)
    return name, layer, _report(name, weight, layer, method, start)


# ---------------------------------------------------------------------------- data-aware quantization
#
# With calibration images, layers are quantized in network order, each one so that its outputs on
# the calibration images match the float network's (layer-wise distillation, GPTQ-style):
#
# 1. run the images through the float network and through the network quantized so far; at the
#    layer's input take patches X (quantized path, plus a constant 1 for the bias) at up to
#    ``positions`` sampled pixels, and the float network's pre-ReLU output Y there;
# 2. H = X^T X + λI (λ = ``damp`` × mean diagonal), the best float weights for the quantized
#    inputs W* = argmin ‖XWᵀ - Y‖² + λ‖W - W_source‖² (this also undoes error that earlier layers
#    let through);
# 3. the codebook: k-means of the source weights, each weighted by the mean squared input
#    activation it multiplies (diag H), by the exact dynamic programme over distinct values;
# 4. indices by GPTQ (Frantar et al., 2022) with that codebook: columns are rounded to the nearest
#    centroid one at a time, most active input first, and each rounding error is pushed onto the
#    columns not yet rounded through H⁻¹; the float32 bias is the last column, never rounded, so it
#    absorbs what is left (bias correction);
# 5. optionally ``refit`` rounds of least-squares centroids for the fixed indices (a K×K system).
#
# The result is the same file format: indices, 2**bits centroids and a bias per layer.

CALIBRATION_SIZES = (256, 384, 512, 768, 1024)


def calibration_images(paths: Sequence[Union[str, os.PathLike]],
                       sizes: Sequence[int] = CALIBRATION_SIZES) -> list:
    """Each image at each long edge in ``sizes``: (1, 3, H, W) float32 RGB tensors in [0, 1]."""
    from .imageio import load_image

    images = []
    for path in paths:
        if not Path(path).is_file():
            raise PasticheError(f"cannot read calibration image '{path}': no such file")
        images += [load_image(path, size=size, name="calibration image", min_side=16) for size in sizes]
    return images


def _sample_positions(shapes, limit: int, generator):
    """Pick up to ``limit`` pixels spread over feature maps of ``shapes`` [(H, W)]: per map (ys, xs)."""
    import torch

    sizes = [h * w for h, w in shapes]
    total = sum(sizes)
    if total <= limit:
        picks = [torch.arange(n) for n in sizes]
    else:
        chosen = torch.randperm(total, generator=generator)[:limit].sort().values
        starts = np.cumsum([0] + sizes)
        picks = [chosen[(chosen >= a) & (chosen < b)] - a for a, b in zip(starts[:-1], starts[1:])]
    return [(p // w, p % w) for p, (h, w) in zip(picks, shapes)]


def _patches(x, ys, xs):
    """3x3 patches of (1, C, H, W) ``x`` (zero padded) centred at (ys, xs): (N, C*9), in the
    order of weight.reshape(out, C*9)."""
    import torch
    import torch.nn.functional as F

    padded = F.pad(x[0], (1, 1, 1, 1))
    offsets = torch.arange(3)
    rows = ys[:, None] + offsets[None, :]
    cols = xs[:, None] + offsets[None, :]
    patches = padded[:, rows[:, :, None], cols[:, None, :]]  # (C, N, 3, 3)
    return patches.permute(1, 0, 2, 3).reshape(len(ys), -1)


def _gptq(target, hinv, codebook, free, block: int = 128):
    """GPTQ with a codebook. ``target`` (n, m): one row per input column of the weights, already
    in rounding order; ``hinv`` (n, n): upper Cholesky factor of H⁻¹ in that order (row i says how
    column i's rounding error spreads over the later ones); ``free`` (n,) bool: columns not
    rounded (the bias). Returns the codebook index of each entry (n, m) (0 where free)."""
    import torch

    n = target.shape[0]
    w = target.clone()
    index = torch.zeros(w.shape, dtype=torch.long)
    mids = ((codebook[1:] + codebook[:-1]) / 2).contiguous()
    for a in range(0, n, block):
        b = min(a + block, n)
        chunk, errors, hh = w[a:b].clone(), torch.empty(b - a, w.shape[1], dtype=w.dtype), hinv[a:b, a:b]
        for j in range(b - a):
            row = chunk[j]
            if free[a + j]:
                errors[j] = 0  # nothing rounded: the error is zero and nothing moves
                continue
            k = torch.bucketize(row, mids)
            index[a + j] = k
            err = (row - codebook[k]) / hh[j, j]
            chunk[j:] -= hh[j, j:, None] * err[None, :]
            errors[j] = err
        w[b:] -= hinv[a:b, b:].T @ errors
    return index


def _refit(index, target, hessian, k: int, rows: int, generator):
    """Least-squares centroids for fixed ``index`` (m, d): minimise Σ_o (c[index_o] - w*_o)ᵀ Hc
    (c[index_o] - w*_o) with Hc the Schur complement of the bias in ``hessian`` (the bias is
    re-fitted afterwards, so it is eliminated), estimated on ``rows`` sampled output channels."""
    import torch

    m, d = index.shape
    h = hessian[:d, :d] - torch.outer(hessian[:d, d], hessian[:d, d]) / hessian[d, d]
    pick = torch.randperm(m, generator=generator)[:rows] if rows < m else torch.arange(m)
    gram = torch.zeros(k, k, dtype=torch.float64)
    rhs = torch.zeros(k, dtype=torch.float64)
    for batch in pick.split(32):
        onehot = torch.zeros(d, len(batch), k, dtype=h.dtype)
        onehot[torch.arange(d)[:, None], torch.arange(len(batch))[None, :], index[batch].T] = 1
        he = (h @ onehot.reshape(d, -1)).reshape(d, len(batch), k)
        gram += torch.einsum("dbk,dbl->kl", onehot, he).double()
        rhs += torch.einsum("dbk,bd->k", he, target[batch, :d]).double()
    used = gram.diagonal() > 0
    centroids = torch.zeros(k, dtype=torch.float64)
    g = gram[used][:, used]
    centroids[used] = torch.linalg.solve(g + 1e-9 * g.diagonal().mean() * torch.eye(len(g), dtype=g.dtype),
                                         rhs[used])
    return centroids, used


def _calibrated_layer(weight: np.ndarray, bias: np.ndarray, bits: int, inputs, targets, *,
                      positions: int, damp: float, refit: int, generator) -> Tuple[QuantizedLayer, float]:
    """Quantize one convolution against calibration data (steps 1-5 above).

    ``inputs``: the layer's inputs on the quantized path, [(1, C, H, W)]; ``targets``: the float
    network's pre-ReLU outputs there, [(1, out, H, W)]. Returns the layer and its relative output
    error on the sampled calibration pixels, sqrt(‖X Wqᵀ - Y‖² / ‖Y - mean‖²).
    """
    import torch

    m, d = weight.shape[0], weight[0].size
    k = 1 << bits
    hessian = torch.zeros(d + 1, d + 1, dtype=torch.float64)
    cross = torch.zeros(m, d + 1, dtype=torch.float64)
    yy, ysum, count = 0.0, torch.zeros(m, dtype=torch.float64), 0
    picks = _sample_positions([x.shape[2:] for x in inputs], positions, generator)
    for x, y, (py, px) in zip(inputs, targets, picks):
        if len(py) == 0:
            continue
        patches = torch.cat([_patches(x, py, px), torch.ones(len(py), 1)], 1)
        out = y[0][:, py, px].T  # (n, m)
        hessian += (patches.T @ patches).double()
        cross += (out.T @ patches).double()
        yy += float((out.double() ** 2).sum())
        ysum += out.double().sum(0)
        count += len(py)
    spread = yy - float((ysum ** 2).sum()) / count  # ‖Y - per-channel mean‖²
    lam = damp * float(hessian.diagonal()[:d].mean())
    source = torch.cat([torch.from_numpy(weight).reshape(m, d), torch.from_numpy(bias)[:, None]], 1).double()
    damped = hessian + lam * torch.eye(d + 1, dtype=torch.float64)
    rhs = cross + lam * source
    target = torch.cholesky_solve(rhs.T.contiguous(), torch.linalg.cholesky(damped)).T  # W*

    def loss(w: torch.Tensor) -> float:  # ‖X wᵀ - Y‖² + λ‖w - W_source‖², up to a constant
        return float(((w @ damped) * w).sum() - 2 * (w * rhs).sum())

    def best_bias(w: torch.Tensor) -> torch.Tensor:
        return (rhs[:, d] - w @ damped[:d, d]) / damped[d, d]

    # The codebook: k-means of the source weights weighted by the activation they multiply.
    activity = hessian.diagonal()[:d].numpy()
    distinct, inverse = np.unique(weight.reshape(m, d), return_inverse=True)
    inverse = inverse.ravel()
    if distinct.size > DP_MAX_DISTINCT:  # a float source: pool sorted values into equal-count bins
        counts = np.bincount(inverse, minlength=distinct.size)
        bins = (np.cumsum(counts) - counts) * DP_MAX_DISTINCT // counts.sum()
        bins = np.unique(bins, return_inverse=True)[1].ravel()  # no empty bins
        distinct = np.bincount(bins, weights=distinct * counts) / np.bincount(bins, weights=counts)
        inverse = bins[inverse]
    importance = np.bincount(inverse, weights=np.broadcast_to(activity, (m, d)).ravel(),
                             minlength=distinct.size)
    importance += 1e-12 * importance.sum() + 1e-30  # no zero-weight values: dead inputs
    codebook = torch.from_numpy(weighted_kmeans(distinct.astype(np.float64), importance, k)[0])
    order = torch.cat([torch.argsort(torch.from_numpy(activity), descending=True), torch.tensor([d])])
    permuted = damped[order][:, order]
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(permuted)), upper=True)
    free = order == d
    target_t = target[:, order].T.contiguous()
    best = None
    for _ in range(refit + 1):
        codebook = torch.sort(codebook).values
        index = torch.empty(m, d, dtype=torch.long)
        index[:, order[:d]] = _gptq(target_t, hinv, codebook, free)[:d].T
        candidates = [codebook]
        fitted, used = _refit(index, target, damped, k, max(8, 2048 // k), generator)
        if used.any():
            fitted[~used] = codebook[~used]
            candidates.append(fitted)
        for centroids in candidates:
            w = centroids[index]
            full = torch.cat([w, best_bias(w)[:, None]], 1)
            value = loss(full)
            if best is None or value < best[0]:
                best = (value, centroids, index, full[:, d])
        codebook = candidates[-1]
    value, centroids, index, new_bias = best
    w = torch.cat([centroids[index], new_bias[:, None]], 1)
    residual = float(((w @ hessian) * w).sum() - 2 * (w * cross).sum()) + yy  # ‖X wᵀ - Y‖²
    rel = max(residual, 0.0) / spread
    # Unused centroids are harmless; sort for a tidy file (indices follow).
    sort = torch.argsort(centroids)
    remap = torch.empty_like(sort)
    remap[sort] = torch.arange(sort.numel())
    layer = QuantizedLayer.from_indices(remap[index].reshape(weight.shape).numpy(),
                                        centroids[sort].numpy(), new_bias.numpy(), bits=bits)
    return layer, rel ** 0.5


def calibrated_quantize(layers: Layers, bits: Mapping[str, int], images: Sequence, *,
                        preprocessing: str = "caffe", positions: int = 16384, damp: float = 0.1,
                        refit: int = 1, seed: int = 0, progress: bool = True) -> Dict[str, Tuple[QuantizedLayer, LayerReport]]:
    """Quantize VGG19's convolutions named in ``bits`` (the first ones, in order) layer by layer
    against ``images`` (see the section comment)."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from .vgg import CFG_E

    generator = torch.Generator().manual_seed(seed)
    pre = PREPROCESSING[preprocessing]
    done: Dict[str, Tuple[QuantizedLayer, LayerReport]] = {}
    names = iter(CONV_NAMES)
    with torch.no_grad(), tqdm(total=len(bits), desc="calibrating", unit="layer",
                               disable=not progress) as bar:
        order, gain, offset = preprocessing_affine(pre)
        floats = [image[:, order] * gain + offset for image in images]
        quants = floats  # the same list while every layer so far is exact
        for item in CFG_E:
            if item == "M":
                same = quants is floats
                floats = [F.max_pool2d(x, 2) for x in floats]
                quants = floats if same else [F.max_pool2d(x, 2) for x in quants]
                continue
            name = next(names)
            if name not in bits:
                break
            start = time.perf_counter()
            weight, bias = layers[name]
            wf, bf = torch.from_numpy(weight), torch.from_numpy(bias)
            outs_f = [F.conv2d(x, wf, bf, padding=1) for x in floats]
            if np.unique(weight).size <= 1 << bits[name]:
                layer, method = quantize(weight, bias, bits[name])
                rel = None
                outs_q = outs_f if quants is floats else [F.conv2d(x, wf, bf, padding=1) for x in quants]
            else:
                layer, rel = _calibrated_layer(weight, bias, bits[name], quants, outs_f,
                                               positions=positions, damp=damp, refit=refit,
                                               generator=generator)
                method = "gptq"
                wq, bq = torch.from_numpy(layer.dequantize()), torch.from_numpy(layer.bias)
                outs_q = [F.conv2d(x, wq, bq, padding=1) for x in quants]
            same = outs_q is outs_f
            floats = [F.relu_(y) for y in outs_f]
            quants = floats if same else [F.relu_(y) for y in outs_q]
            done[name] = (layer, _report(name, weight, layer, method, start, rel))
            bar.update()
    return done


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
    for value, option in ((positions, "--positions"), (refit + 1, "--refit")):
        if not (isinstance(value, int) and value >= 1):
            raise PasticheError(f"{option} must be a whole number ≥ {1 if option == '--positions' else 0}")
    if not damp > 0:
        raise PasticheError(f"--damp must be positive, got {damp}")
    if any(not (isinstance(s, int) and s >= 16) for s in calibration_sizes) or not calibration_sizes:
        raise PasticheError(f"--calibration-sizes {list(calibration_sizes)}: give long edges ≥ 16 px")
    layers = read_source(source)
    sha = hashlib.sha256(Path(source).read_bytes()).hexdigest()
    metadata = {"attribution": ATTRIBUTION, "created_by": f"pastiche-compress {__version__}"}
    if calibrate:
        images = calibration_images(calibrate, calibration_sizes)
        import torch

        threads = torch.get_num_threads()
        if jobs:
            torch.set_num_threads(jobs)
        try:
            done = calibrated_quantize(layers, per_layer, images, preprocessing=preprocessing,
                                       positions=positions, damp=damp, refit=refit, seed=seed,
                                       progress=progress)
        finally:
            torch.set_num_threads(threads)
        metadata["calibration"] = json.dumps(
            {"images": [{"name": Path(p).name, "sha256": hashlib.sha256(Path(p).read_bytes()).hexdigest()}
                        for p in calibrate],
             "sizes": list(calibration_sizes), "positions": positions, "damp": damp, "refit": refit,
             "seed": seed, "method": "activation-weighted k-means codebook, GPTQ indices,"
                                     " least-squares centroids and bias"})
    else:
        done = {}
        from tqdm.auto import tqdm

        # Biggest layers first so the pool's processes finish together.
        order = sorted(kept, key=lambda n: -layers[n][0].size)
        with ProcessPoolExecutor(jobs or os.cpu_count() or 1) as pool, \
                tqdm(total=len(order), desc="compressing", unit="layer", disable=not progress) as bar:
            futures = [pool.submit(_quantize_job, n, *layers[n], per_layer[n]) for n in order]
            for future in as_completed(futures):
                name, layer, report = future.result()
                done[name] = (layer, report)
                bar.update()
    weights = WeightsFile("vgg19", PREPROCESSING[preprocessing], {n: done[n][0] for n in kept},
                          {"name": Path(source).name, "sha256": sha}, metadata)
    save_file(weights, output)
    return [done[n][1] for n in kept]


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
        named = {k.strip(): int(v) for k, v in (item.split("=") for item in items if "=" in item)}
        bare = [int(item) for item in items if "=" not in item]
    except ValueError:
        raise PasticheError(f"--bits '{text}' is not N or LAYER=N,...; e.g. --bits 4") from None
    if len(bare) > 1:
        raise PasticheError(f"--bits '{text}' gives more than one default width")
    return {"*": bare[0], **named} if bare else named


def _sizes(text: str) -> List[int]:
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of long edges") from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
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
    group.add_argument("--calibration-sizes", type=_sizes, default=list(CALIBRATION_SIZES),
                       metavar="N,N,...", help="long edges each calibration image is used at"
                       f" (default {','.join(map(str, CALIBRATION_SIZES))})")
    group.add_argument("--positions", type=int, default=16384,
                       help="sampled pixels per layer (default 16384)")
    group.add_argument("--damp", type=float, default=0.1,
                       help="ridge toward the source weights, relative to the mean activation"
                            " energy (default 0.1)")
    group.add_argument("--refit", type=int, default=1,
                       help="rounds of centroid refitting and re-rounding (default 1)")
    group.add_argument("--seed", type=int, default=0, help="seed for pixel sampling (default 0)")
    args = parser.parse_args(argv)
    try:
        start = time.perf_counter()
        reports = compress(args.source, args.output, bits=parse_bits(args.bits),
                           preprocessing=args.preprocessing, jobs=args.jobs,
                           calibrate=args.calibrate, calibration_sizes=args.calibration_sizes,
                           positions=args.positions, damp=args.damp, refit=args.refit, seed=args.seed,
                           up_to=args.up_to)
    except PasticheError as e:
        print(f"pastiche-compress: error: {e}", file=sys.stderr)
        return 2
    print(format_report(reports))
    print(f"wrote {args.output} ({Path(args.output).stat().st_size:,} bytes) in"
          f" {time.perf_counter() - start:.1f} s")
    return 0
