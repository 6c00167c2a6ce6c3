"""Data-aware quantization (``pastiche-compress --calibrate``).

With calibration images, layers are quantized in network order, each one so that its outputs on
the calibration images match the float network's (layer-wise distillation, GPTQ-style):

1. run the images through the float network and through the network quantized so far; at the
   layer's input take patches X (quantized path, plus a constant 1 for the bias) at up to
   ``positions`` sampled pixels, and the float network's pre-ReLU output Y there;
2. H = X^T X + λI (λ = ``damp`` × mean diagonal), the best float weights for the quantized
   inputs W* = argmin ‖XWᵀ - Y‖² + λ‖W - W_source‖² (this also undoes error that earlier layers
   let through);
3. the codebook: k-means of the source weights, each weighted by the mean squared input
   activation it multiplies (diag H), by the exact dynamic programme over distinct values;
4. indices by GPTQ (Frantar et al., 2022) with that codebook: columns are rounded to the nearest
   centroid one at a time, most active input first, and each rounding error is pushed onto the
   columns not yet rounded through H⁻¹; the float32 bias is the last column, never rounded, so it
   absorbs what is left (bias correction);
5. optionally ``refit`` rounds of least-squares centroids for the fixed indices (a K×K system).

The result is the same file format: indices, 2**bits centroids and a bias per layer.
"""

from __future__ import annotations

import os
import time
from typing import Dict, Mapping, Sequence, Tuple, Union

import numpy as np

from .errors import PasticheError
from .kmeans import DP_MAX_DISTINCT, LayerReport, layer_report, quantize, weighted_kmeans
from .quantized import QuantizedLayer
from .vgg import CONV_NAMES, PREPROCESSING, normalize, preprocessing_affine

CALIBRATION_SIZES = (256, 384, 512, 768, 1024)


def calibration_images(paths: Sequence[Union[str, os.PathLike]],
                       sizes: Sequence[int] = CALIBRATION_SIZES) -> list:
    """Each image at each long edge in ``sizes``: (1, 3, H, W) float32 RGB tensors in [0, 1]."""
    from .files import check_readable
    from .imageio import load_image

    images = []
    for path in paths:
        check_readable(path, f"calibration image '{path}'")
        images += [load_image(path, size=size, name="calibration image", min_side=16,
                              size_option="larger --calibration-sizes") for size in sizes]
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
    hessian, cross, yy, ysum, count = _statistics(inputs, targets, positions, generator)
    spread = yy - float((ysum ** 2).sum()) / count  # ‖Y - per-channel mean‖²
    if not spread > 0:  # nothing to match, and no error to report relative to it
        raise PasticheError("the calibration pixels' outputs do not vary (flat images, or too few"
                            " --positions); calibrate on varied images with more --positions")
    lam = damp * float(hessian.diagonal()[:d].mean())
    source = torch.cat([torch.from_numpy(weight).reshape(m, d), torch.from_numpy(bias)[:, None]], 1).double()
    damped = hessian + lam * torch.eye(d + 1, dtype=torch.float64)
    rhs = cross + lam * source
    activity = hessian.diagonal()[:d]  # (d,) the mean squared input each weight multiplies
    codebook = _weighted_codebook(weight.reshape(m, d), activity.numpy(), 1 << bits)
    centroids, index, new_bias = _round(damped, rhs, activity, codebook, refit, generator)
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


def _statistics(inputs, targets, positions: int, generator):
    """Step 1's sums over up to ``positions`` sampled pixels: H = XᵀX (d+1, d+1), X's last column
    the bias's constant 1; XᵀY as (m, d+1); ‖Y‖²; Y's per-channel sum (m,); the pixel count."""
    import torch

    d, m = inputs[0].shape[1] * 9, targets[0].shape[1]
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
    return hessian, cross, yy, ysum, count


def _weighted_codebook(weight: np.ndarray, activity: np.ndarray, k: int):
    """Step 3: ``k`` centroids (float64 tensor) by k-means of ``weight`` (m, d), each value
    weighted by the ``activity`` (d,) of the input it multiplies."""
    import torch

    m, d = weight.shape
    distinct, inverse = np.unique(weight, return_inverse=True)
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
    return torch.from_numpy(weighted_kmeans(distinct.astype(np.float64), importance, k)[0])


def _round(damped, rhs, activity, codebook, refit: int, generator):
    """Steps 2, 4 and 5: the weights minimising ‖X wᵀ - Y‖² + λ‖w - W_source‖² (``damped`` =
    H + λI, ``rhs`` = XᵀY + λ W_source, both with the bias as column d) rounded to ``codebook``
    by GPTQ, then ``refit`` rounds of least-squares centroids and rounding again. Returns the
    best (centroids (k,), index (m, d), bias (m,)) seen by that objective."""
    import torch

    m, d, k = rhs.shape[0], rhs.shape[1] - 1, codebook.numel()
    target = torch.cholesky_solve(rhs.T.contiguous(), torch.linalg.cholesky(damped)).T  # W* (m, d+1)

    def loss(w: torch.Tensor) -> float:  # ‖X wᵀ - Y‖² + λ‖w - W_source‖², up to a constant
        return float(((w @ damped) * w).sum() - 2 * (w * rhs).sum())

    def best_bias(w: torch.Tensor) -> torch.Tensor:
        return (rhs[:, d] - w @ damped[:d, d]) / damped[d, d]

    order = torch.cat([torch.argsort(activity, descending=True), torch.tensor([d])])  # most active first
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
    return best[1:]


def calibrated_quantize(layers: Mapping[str, Tuple[np.ndarray, np.ndarray]], bits: Mapping[str, int], images: Sequence, *,
                        preprocessing: str = "caffe", positions: int = 16384, damp: float = 0.1,
                        refit: int = 1, seed: int = 0, progress: bool = True) -> Dict[str, Tuple[QuantizedLayer, LayerReport]]:
    """Quantize VGG19's convolutions named in ``bits`` (the first ones, in order) layer by layer
    against ``images`` (see the module's docstring)."""
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
        affine = preprocessing_affine(pre)
        floats = [normalize(image, affine) for image in images]
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
                try:
                    layer, rel = _calibrated_layer(weight, bias, bits[name], quants, outs_f,
                                                   positions=positions, damp=damp, refit=refit,
                                                   generator=generator)
                except PasticheError as e:
                    raise PasticheError(f"cannot calibrate {name}: {e}") from None
                except torch.linalg.LinAlgError as e:  # a --damp too small for these statistics
                    raise PasticheError(f"cannot calibrate {name}: its statistics are singular"
                                        f" ({str(e).splitlines()[0]}); give a larger --damp or more"
                                        " --positions") from None
                method = "gptq"
                wq, bq = torch.from_numpy(layer.dequantize()), torch.from_numpy(layer.bias)
                outs_q = [F.conv2d(x, wq, bq, padding=1) for x in quants]
            same = outs_q is outs_f
            floats = [F.relu_(y) for y in outs_f]
            quants = floats if same else [F.relu_(y) for y in outs_q]
            done[name] = (layer, layer_report(name, weight, layer, method, start, rel))
            bar.update()
    return done
