"""Tests for pastiche.kmeans: the weighted dynamic programme against kmeans1d and brute force,
and each of quantize's three paths."""

import kmeans1d
import numpy as np
import pytest

from pastiche.kmeans import quantize, weighted_kmeans


def _sse(values, counts, centroids, labels):
    return float(np.sum(counts * (values - centroids[labels]) ** 2))


@pytest.mark.parametrize("seed, n_distinct, size, k", [
    (0, 12, 200, 4), (1, 40, 500, 8), (2, 100, 3000, 16), (3, 9, 60, 8), (4, 30, 300, 2), (5, 5, 50, 1),
])
def test_weighted_kmeans_matches_kmeans1d(seed, n_distinct, size, k):
    rng = np.random.default_rng(seed)
    pool = rng.standard_normal(n_distinct) * rng.uniform(0.01, 10)
    data = rng.choice(pool, size=size, p=rng.dirichlet(np.ones(n_distinct)))
    data[:n_distinct] = pool  # every value occurs, some many times
    values, inverse, counts = np.unique(data, return_inverse=True, return_counts=True)
    assert values.size > k
    centroids, labels = weighted_kmeans(values, counts, k)
    assert centroids.shape == (k,) and labels.shape == values.shape
    assert np.all(np.diff(labels) >= 0) and np.all(np.diff(centroids) > 0)

    clusters, ref_centroids = kmeans1d.cluster(data, k)
    ref_centroids, clusters = np.asarray(ref_centroids), np.asarray(clusters)
    ours = _sse(values, counts, centroids, labels)
    ref = float(np.sum((data - ref_centroids[clusters]) ** 2))
    assert ours == pytest.approx(ref, rel=1e-9, abs=1e-12)
    np.testing.assert_allclose(centroids, ref_centroids, rtol=1e-9, atol=1e-12)
    # the expanded labelling agrees too
    assert np.array_equal(labels[inverse], clusters)


def test_weighted_kmeans_with_no_more_values_than_clusters():
    values, counts = np.array([-1.0, 0.5, 2.0]), np.array([3, 1, 7])
    centroids, labels = weighted_kmeans(values, counts, 3)
    assert centroids.tolist() == values.tolist() and labels.tolist() == [0, 1, 2]
    centroids, labels = weighted_kmeans(values, counts, 8)
    assert centroids.tolist() == values.tolist()


@pytest.mark.parametrize("bits", range(1, 9))
def test_quantize_is_exact_when_values_fit(bits):
    rng = np.random.default_rng(bits)
    for n_distinct in {1, max(1, (1 << bits) - 1), 1 << bits}:
        pool = rng.standard_normal(n_distinct).astype(np.float32)
        weight = rng.choice(pool, size=(6, 5, 3, 3)).astype(np.float32)
        weight.flat[:n_distinct] = pool  # every value occurs
        bias = rng.standard_normal(6).astype(np.float32)
        layer, method = quantize(weight, bias, bits)
        assert method == "exact" and layer.bits == bits
        assert np.array_equal(layer.dequantize(), weight)
        assert np.array_equal(layer.bias, bias)


def test_quantize_dp_and_kmeans1d_paths_are_optimal():
    rng = np.random.default_rng(3)
    pool = rng.standard_normal(300).astype(np.float32)
    weight = rng.choice(pool, size=(8, 16, 3, 3)).astype(np.float32)  # ≤ 300 distinct: dp
    layer, method = quantize(weight, np.zeros(8, np.float32), 3)
    assert method == "dp"
    flat = weight.ravel().astype(np.float64)
    clusters, centroids = kmeans1d.cluster(flat, 8)
    ref_sse = float(np.sum((np.asarray(centroids)[np.asarray(clusters)] - flat) ** 2))
    sse = float(np.sum((layer.dequantize().ravel().astype(np.float64) - flat) ** 2))
    assert sse == pytest.approx(ref_sse, rel=1e-5)  # centroids are stored as float32

    weight = rng.standard_normal((64, 8, 3, 3)).astype(np.float32)  # 4608 distinct: kmeans1d
    layer, method = quantize(weight, np.zeros(64, np.float32), 2)
    assert method == "kmeans1d"
    clusters, centroids = kmeans1d.cluster(weight.ravel().astype(np.float64), 4)
    assert np.array_equal(layer.indices().ravel(), np.asarray(clusters))
    assert np.array_equal(layer.centroids, np.asarray(centroids, np.float32))


def _brute_force_kmeans(values, weights, k):
    """Best weighted SSE over all splits of sorted values into k contiguous groups."""
    from itertools import combinations

    best = np.inf
    for cuts in combinations(range(1, values.size), k - 1):
        bounds = [0, *cuts, values.size]
        sse = 0.0
        for a, b in zip(bounds[:-1], bounds[1:]):
            v, w = values[a:b], weights[a:b]
            sse += float(np.sum(w * (v - np.average(v, weights=w)) ** 2))
        best = min(best, sse)
    return best


@pytest.mark.parametrize("seed, n, k", [(0, 9, 3), (1, 10, 4), (2, 8, 2), (3, 11, 5)])
def test_weighted_kmeans_with_real_weights_is_optimal(seed, n, k):
    rng = np.random.default_rng(seed)
    values = np.sort(rng.standard_normal(n))
    weights = rng.exponential(size=n) * 1e-3  # importances, not counts
    centroids, labels = weighted_kmeans(values, weights, k)
    assert _sse(values, weights, centroids, labels) == pytest.approx(
        _brute_force_kmeans(values, weights, k), rel=1e-9)
    # each centroid is the weighted mean of its values
    for c in range(k):
        assert centroids[c] == pytest.approx(np.average(values[labels == c], weights=weights[labels == c]))


