"""Tests for pastiche.compress: optimal k-means, exact quantization, the CLI, exact reproduction."""

import hashlib
from pathlib import Path

import kmeans1d
import numpy as np
import pytest
import torch

from pastiche.compress import (
    LayerReport,
    compress,
    main,
    parse_bits,
    quantize,
    read_source,
    weighted_kmeans,
)
from pastiche.errors import PasticheError
from pastiche.quantized import load_dequantized, read_header
from pastiche.vgg import CONV_NAMES, vgg19

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SOURCE = SHARED / "data" / "vgg19" / "vgg19-caffe-imagenet-features.pth"
BUNDLED_FILE = REPO / "weights" / "vgg19-8bit.pqw"
SOURCE_SHA256 = "b9569eadc46b9edf9c87dd7a1c93280fb6224de1fa021374faeadbcea78ee198"
# torchvision's features.N indices of VGG19's 16 convolutions
FEATURE_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
VGG_SHAPES = ((64, 3), (64, 64), (128, 64), (128, 128), (256, 128), (256, 256), (256, 256),
              (256, 256), (512, 256), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512),
              (512, 512), (512, 512))

needs_shared = pytest.mark.skipif(not SOURCE.is_file(), reason=f"{SOURCE} not available")


def _state(shapes, indices=FEATURE_INDICES, seed=0):
    g = torch.Generator().manual_seed(seed)
    state = {}
    for i, (out, inp) in zip(indices, shapes):
        state[f"features.{i}.weight"] = torch.randint(0, 5, (out, inp, 3, 3), generator=g).float() / 10
        state[f"features.{i}.bias"] = torch.randn(out, generator=g)
    return state


def _sse(values, counts, centroids, labels):
    return float(np.sum(counts * (values - centroids[labels]) ** 2))


# ---------------------------------------------------------------------------- k-means

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


# ---------------------------------------------------------------------------- quantize

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


def test_parse_bits():
    assert parse_bits("3") == 3
    assert parse_bits("block1_conv1=8, block5_conv4=2") == {"block1_conv1": 8, "block5_conv4": 2}
    with pytest.raises(PasticheError, match="--bits"):
        parse_bits("lots")


# ---------------------------------------------------------------------------- sources and CLI

@pytest.fixture(scope="module")
def synthetic_source(tmp_path_factory):
    """A torchvision-layout VGG19 state dict, full shapes, 5 distinct weight values per layer."""
    path = tmp_path_factory.mktemp("src") / "synthetic.pth"
    state = _state(VGG_SHAPES)
    torch.save(state, path)
    return path, state


def test_cli_compresses_a_synthetic_source(synthetic_source, tmp_path, capsys):
    src, state = synthetic_source
    out = tmp_path / "out.pqw"
    assert main([str(src), str(out), "--bits", "3", "--jobs", "2"]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert lines[0].split()[0] == "layer"
    assert [line.split()[0] for line in lines[1:17]] == list(CONV_NAMES)
    for line in lines[1:17]:
        name, distinct, bits, method = line.split()[:4]
        assert (distinct, bits, method) == ("5", "3", "exact")
    assert lines[17].startswith("total") and f"wrote {out}" in lines[18]

    header, tensors = load_dequantized(out)
    assert header["arch"] == "vgg19" and [e["bits"] for e in header["layers"]] == [3] * 16
    assert header["source"] == {"name": "synthetic.pth",
                                "sha256": hashlib.sha256(src.read_bytes()).hexdigest()}
    for name, i in zip(CONV_NAMES, FEATURE_INDICES):
        weight, bias = tensors[name]
        assert torch.equal(torch.from_numpy(weight), state[f"features.{i}.weight"])
        assert torch.equal(torch.from_numpy(bias), state[f"features.{i}.bias"])
    model = vgg19(weights=out, up_to="block1_conv2")
    assert torch.equal(model.layers["block1_conv2"].weight, state["features.2.weight"])


def test_read_source_names_layers(tmp_path):
    shapes = [(2, 3)] + [(2, 2)] * 15
    torch.save({k.removeprefix("features."): v for k, v in _state(shapes).items()}, tmp_path / "s.pth")
    layers = read_source(tmp_path / "s.pth")  # keys without the features. prefix work too
    assert list(layers) == list(CONV_NAMES)
    assert layers["block1_conv1"][0].shape == (2, 3, 3, 3) and layers["block1_conv1"][0].dtype == np.float32


def test_wrong_number_of_convolutions(tmp_path, capsys):
    src = tmp_path / "fifteen.pth"
    torch.save(_state([(2, 3)] + [(2, 2)] * 14, FEATURE_INDICES[:15]), src)
    with pytest.raises(PasticheError, match="15 convolutions"):
        read_source(src)
    assert main([str(src), str(tmp_path / "o.pqw")]) == 2
    err = capsys.readouterr().err
    assert "15 convolutions" in err and str(src) in err and "Traceback" not in err
    assert not (tmp_path / "o.pqw").exists()


def test_bad_sources(tmp_path):
    with pytest.raises(PasticheError, match="no such file"):
        read_source(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(PasticheError, match="junk.pth"):
        read_source(tmp_path / "junk.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(PasticheError, match="not a state dict"):
        read_source(tmp_path / "list.pth")


@pytest.mark.parametrize("bits", ["9", "0", "block1_conv1=12"])
def test_bits_out_of_range(tmp_path, capsys, bits):
    src = tmp_path / "s.pth"
    torch.save(_state([(2, 3)] + [(2, 2)] * 15), src)
    assert main([str(src), str(tmp_path / "o.pqw"), "--bits", bits]) == 2
    captured = capsys.readouterr()
    assert "pastiche-compress: error:" in captured.err and "1 to 8" in captured.err
    assert captured.out == ""
    assert not (tmp_path / "o.pqw").exists()


def test_compress_per_layer_bits_and_report(tmp_path):
    src = tmp_path / "s.pth"
    state = _state([(4, 3)] + [(4, 4)] * 15)
    torch.save(state, src)
    reports = compress(src, tmp_path / "o.pqw", bits={"block1_conv1": 1, "block5_conv4": 2},
                       preprocessing="torchvision", jobs=1, progress=False)
    assert [r.name for r in reports] == list(CONV_NAMES)
    assert all(isinstance(r, LayerReport) for r in reports)
    by_name = {r.name: r for r in reports}
    assert by_name["block1_conv1"].bits == 1 and by_name["block1_conv1"].method == "dp"
    assert by_name["block5_conv4"].bits == 2 and by_name["block5_conv4"].max_error > 0
    assert by_name["block3_conv1"].bits == 8 and by_name["block3_conv1"].max_error == 0
    header, _ = read_header(tmp_path / "o.pqw")
    assert header["preprocessing"]["channel_order"] == "RGB"
    assert {e["name"]: e["bits"] for e in header["layers"]}["block1_conv1"] == 1


# ---------------------------------------------------------------------------- exact reproduction

@pytest.fixture(scope="module")
def source_state():
    if not SOURCE.is_file():
        pytest.skip(f"{SOURCE} not available")
    return torch.load(SOURCE, map_location="cpu", weights_only=True)


def _assert_equals_source(path, state):
    _, tensors = load_dequantized(path)
    assert list(tensors) == list(CONV_NAMES)
    for name, i in zip(CONV_NAMES, FEATURE_INDICES):
        weight, bias = tensors[name]
        assert torch.equal(torch.from_numpy(weight), state[f"features.{i}.weight"]), name
        assert torch.equal(torch.from_numpy(bias), state[f"features.{i}.bias"]), name


@needs_shared
def test_8_bit_compression_reproduces_the_source_exactly(source_state, tmp_path):
    out = tmp_path / "vgg19-8bit.pqw"
    reports = compress(SOURCE, out, bits=8, progress=False)
    assert all(r.max_error == 0 and r.distinct <= 256 and r.method == "exact" for r in reports)
    _assert_equals_source(out, source_state)
    header, _ = read_header(out)
    assert header["source"]["sha256"] == SOURCE_SHA256


@needs_shared
def test_committed_file_is_the_source_exactly(source_state):
    assert hashlib.sha256(SOURCE.read_bytes()).hexdigest() == SOURCE_SHA256
    _assert_equals_source(BUNDLED_FILE, source_state)
    header, _ = read_header(BUNDLED_FILE)
    assert header["source"] == {"name": SOURCE.name, "sha256": SOURCE_SHA256}
    assert header["preprocessing"]["channel_order"] == "BGR"
