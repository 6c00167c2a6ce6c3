"""Optimal 1-D k-means quantization of one layer's weights into 2**bits centroids.

A layer with at most 2**bits distinct values is stored exactly; one with few distinct values
(≤ DP_MAX_DISTINCT) is clustered by an exact weighted dynamic programme over its distinct values,
which reaches the same optimum as ``kmeans1d`` on the expanded data in a fraction of the time;
anything else goes to ``kmeans1d``. :mod:`pastiche.calibrate` reuses the dynamic programme with
activation weights instead of counts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from .errors import PasticheError
from .quantized import QuantizedLayer

DP_MAX_DISTINCT = 2048  # the dynamic programme is O(k n^2) in memory-light numpy rows


@dataclass(frozen=True)
class LayerReport:
    """One row of pastiche-compress's per-layer table."""

    name: str
    distinct: int  # distinct values in the source weights
    bits: int
    method: str  # "exact", "dp", "kmeans1d" or (calibrate.py) "gptq"
    max_error: float
    mean_error: float
    nbytes: int
    seconds: float
    output_error: Optional[float] = None  # calibrated layers: relative error of their outputs


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
        try:
            import kmeans1d
        except ImportError:
            raise PasticheError(f"a layer of {distinct.size:,} distinct weights needs kmeans1d: pip install"
                                " 'pastiche[compress]' (or pip install kmeans1d)") from None
        method = "kmeans1d"
        clusters, centroids = kmeans1d.cluster(flat.astype(np.float64), k)
        return QuantizedLayer.from_indices(np.asarray(clusters).reshape(weight.shape),
                                           centroids, bias, bits=bits), method
    indices = labels[inverse].reshape(weight.shape)
    return QuantizedLayer.from_indices(indices, centroids, bias, bits=bits), method


def layer_report(name: str, weight: np.ndarray, layer: QuantizedLayer, method: str, start: float,
                 output_error: Optional[float] = None) -> LayerReport:
    """What quantizing ``weight`` into ``layer`` did, for the per-layer table."""
    error = np.abs(layer.dequantize() - weight)
    nbytes = layer.packed.nbytes + layer.centroids.nbytes + layer.bias.nbytes
    return LayerReport(name, int(np.unique(weight).size), layer.bits, method, float(error.max()),
                       float(error.mean()), nbytes, time.perf_counter() - start, output_error)
