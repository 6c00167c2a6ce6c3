"""Tests for pastiche.vgg: names, shapes, laziness, preprocessing and bad weights files."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import pastiche.conv as conv_module
import pastiche.vgg as vgg_module
from pastiche.errors import PasticheError
from pastiche.quantized import WeightsFile, load_file, save_file
from pastiche.vgg import CONV_NAMES, LAYER_NAMES, VGG19, vgg19, weights_path

REPO = Path(__file__).resolve().parents[1]
BUNDLED_FILE = REPO / "weights" / "vgg19-8bit.pqw"
TORCHVISION = {"channel_order": "RGB", "scale": 1.0,
               "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}

EXPECTED_NAMES = (
    "block1_conv1", "block1_relu1", "block1_conv2", "block1_relu2", "block1_pool",
    "block2_conv1", "block2_relu1", "block2_conv2", "block2_relu2", "block2_pool",
    "block3_conv1", "block3_relu1", "block3_conv2", "block3_relu2", "block3_conv3",
    "block3_relu3", "block3_conv4", "block3_relu4", "block3_pool",
    "block4_conv1", "block4_relu1", "block4_conv2", "block4_relu2", "block4_conv3",
    "block4_relu3", "block4_conv4", "block4_relu4", "block4_pool",
    "block5_conv1", "block5_relu1", "block5_conv2", "block5_relu2", "block5_conv3",
    "block5_relu3", "block5_conv4", "block5_relu4", "block5_pool",
)

# pastiche.weights is weights/ mapped by setup.cfg's package_dir: it resolves only once installed.


@pytest.fixture(scope="module")
def model():
    return vgg19(weights=BUNDLED_FILE)


@pytest.fixture(scope="module")
def image():
    return torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory):
    """The bundled weights re-declared as expecting torchvision preprocessing."""
    wf = load_file(BUNDLED_FILE)
    wf.preprocessing = dict(TORCHVISION)
    path = tmp_path_factory.mktemp("tv") / "tv.pqw"
    save_file(wf, path)
    return path


def test_layer_names():
    assert LAYER_NAMES == EXPECTED_NAMES
    assert len(LAYER_NAMES) == 37
    assert CONV_NAMES == tuple(n for n in EXPECTED_NAMES if "_conv" in n) and len(CONV_NAMES) == 16


def test_bundled_name_resolves_to_the_committed_file():
    assert weights_path().read_bytes() == BUNDLED_FILE.read_bytes()
    assert isinstance(vgg19(), VGG19)


@pytest.mark.skipif(Path(vgg_module.__file__).resolve().parents[1] != REPO,
                    reason="tests an imported checkout, not an installed pastiche")
def test_a_checkout_imported_ahead_of_the_installed_package_finds_its_own_weights(monkeypatch):
    def not_installed(package):  # `python -m pastiche` from the root of a checkout: no pastiche.weights
        raise ModuleNotFoundError(f"No module named '{package}'")
    monkeypatch.setattr(vgg_module.resources, "files", not_installed)
    assert weights_path("vgg19-4bit") == REPO / "weights" / "vgg19-4bit.pqw"


@pytest.mark.parametrize("weights", ["", " "])  # (Path("") is ".", a directory, and says so)
def test_empty_weights_are_named_as_such(weights):
    with pytest.raises(PasticheError, match="^weights is empty; give one of vgg19-8bit, vgg19-4bit or a .pqw"):
        weights_path(weights)


def test_a_weights_path_that_cannot_be_read_says_why(tmp_path):
    """Before, a loop of links or a pipe was 'neither a bundled name nor a file'."""
    (tmp_path / "a.pqw").symlink_to(tmp_path / "b.pqw")
    (tmp_path / "b.pqw").symlink_to(tmp_path / "a.pqw")
    with pytest.raises(PasticheError, match="^cannot read weights '.*a.pqw': its symbolic links form a loop"):
        weights_path(tmp_path / "a.pqw")
    with pytest.raises(PasticheError, match="^weights '.*nope.pqw' is neither a bundled name nor a file; give"):
        weights_path(tmp_path / "nope.pqw")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.pqw")
        with pytest.raises(PasticheError, match="it is a pipe or a socket, not a file; pass one of vgg19-8bit"):
            weights_path(tmp_path / "pipe.pqw")


def _bundled_copy(monkeypatch, tmp_path, data: bytes) -> Path:
    """The bundled 8-bit weights' place, holding ``data``."""
    (tmp_path / "vgg19-8bit.pqw").write_bytes(data)
    monkeypatch.setattr(vgg_module, "_bundled_folder", lambda: tmp_path)
    return tmp_path / "vgg19-8bit.pqw"


@pytest.mark.parametrize("change", ["mean", "channel order", "4-bit file"])
def test_a_changed_or_swapped_bundled_file_is_refused(monkeypatch, tmp_path, change):
    """Its layers' crc32s hold, so only the header's pinned hash can tell."""
    data = BUNDLED_FILE.read_bytes()
    data = {"mean": data.replace(b"103.939", b"193.939"), "channel order": data.replace(b'"BGR"', b'"RGB"'),
            "4-bit file": (REPO / "weights" / "vgg19-4bit.pqw").read_bytes()}[change]
    path = _bundled_copy(monkeypatch, tmp_path, data)
    with pytest.raises(PasticheError) as info:
        vgg19(up_to="block1_relu1")
    assert str(info.value) == (f"bundled weights file '{path}' has been changed or replaced (its header's"
                               " sha256 is not the one this pastiche shipped); reinstall pastiche")
    assert vgg19(weights=path, up_to="block1_relu1")  # as a file of the user's own, it is theirs to trust


def test_a_missing_bundled_file_says_to_reinstall(monkeypatch, tmp_path):
    monkeypatch.setattr(vgg_module, "_bundled_folder", lambda: tmp_path)
    with pytest.raises(PasticheError, match=r"^the bundled weights 'vgg19-8bit' are missing \(.*\); reinstall pastiche$"):
        vgg19()


def test_module_is_frozen_float32_eval(model):
    assert isinstance(model, VGG19)
    assert not model.training and not any(m.training for m in model.modules())
    params = list(model.parameters())
    assert len(params) == 32
    assert not any(p.requires_grad for p in params)
    assert all(p.dtype == torch.float32 for p in params)
    assert all(b.dtype == torch.float32 for b in model.buffers() if b.is_floating_point())
    assert list(model.layers) == list(LAYER_NAMES)


def test_weights_match_the_file(model):
    wf = load_file(BUNDLED_FILE)
    for name in CONV_NAMES:
        layer = model.layers[name]
        assert torch.equal(layer.weight, torch.from_numpy(wf.layers[name].dequantize()))
        assert torch.equal(layer.bias, torch.from_numpy(np.array(wf.layers[name].bias)))


@pytest.mark.parametrize("name, shape", [
    ("block1_conv1", (1, 64, 32, 48)),
    ("block1_relu1", (1, 64, 32, 48)),
    ("block1_pool", (1, 64, 16, 24)),
    ("block2_relu2", (1, 128, 16, 24)),
    ("block3_pool", (1, 256, 4, 6)),
    ("block4_relu2", (1, 512, 4, 6)),
    ("block4_pool", (1, 512, 2, 3)),
    ("block5_relu4", (1, 512, 2, 3)),
    ("block5_pool", (1, 512, 1, 1)),
])
def test_activation_shapes(model, image, name, shape):
    out = model(image, [name])
    assert tuple(out[name].shape) == shape and out[name].dtype == torch.float32


def test_forward_returns_exactly_the_requested_keys(model, image):
    wanted = ["block4_relu2", "block1_relu1", "block3_conv1", "block1_relu1"]
    out = model(image, wanted)
    assert set(out) == set(wanted)
    assert model(image, ("block2_pool",)).keys() == {"block2_pool"}


def test_forward_matches_a_reference_computation(model, image):
    x = model.normalize(image)
    for name in ("block1_conv1", "block1_conv2"):
        x = F.relu(F.conv2d(x, model.layers[name].weight, model.layers[name].bias, padding=1))
    x = F.max_pool2d(x, 2)
    x = F.conv2d(x, model.layers["block2_conv1"].weight, model.layers["block2_conv1"].bias, padding=1)
    out = model(image, ["block2_conv1"])["block2_conv1"]
    # Relative: activations are in Caffe's 0-255 scale and the CPU path uses Winograd convolutions.
    assert out.shape == x.shape and (out - x).abs().max().item() < 1e-5 * x.abs().max().item()


def test_up_to_builds_only_the_needed_layers(monkeypatch, image):
    asked = []
    real = vgg_module.load_dequantized

    def spy(path, *, names=None, **options):
        asked.append(list(names))
        return real(path, names=names, **options)

    monkeypatch.setattr(vgg_module, "load_dequantized", spy)
    small = vgg19(weights=BUNDLED_FILE, up_to="block2_relu1")
    assert list(small.layers) == list(EXPECTED_NAMES[:7])
    assert asked == [["block1_conv1", "block1_conv2", "block2_conv1"]]
    out = small(image, ["block2_relu1", "block1_pool"])
    assert tuple(out["block2_relu1"].shape) == (1, 128, 16, 24)


def test_up_to_rejects_deeper_layers(image):
    small = vgg19(weights=BUNDLED_FILE, up_to="block2_relu1")
    with pytest.raises(PasticheError, match="block3_conv1 was not built"):
        small(image, ["block3_conv1"])
    with pytest.raises(PasticheError, match="no layers requested"):
        small(image, [])


def test_unknown_layer_names(model, image):
    with pytest.raises(PasticheError, match="--list-layers") as info:
        model(image, ["block6_conv1"])
    assert "block6_conv1" in str(info.value)
    with pytest.raises(PasticheError, match="--list-layers"):
        model(image, ["block1_relu1", "conv1_1"])
    with pytest.raises(PasticheError, match="--list-layers"):
        vgg19(weights=BUNDLED_FILE, up_to="block9_pool")


def test_avg_pooling(image):
    mx = vgg19(weights=BUNDLED_FILE, up_to="block2_conv1")
    av = vgg19(weights=BUNDLED_FILE, pooling="avg", up_to="block2_conv1")
    assert isinstance(av.layers["block1_pool"], torch.nn.AvgPool2d)
    assert isinstance(mx.layers["block1_pool"], torch.nn.MaxPool2d)
    a, m = av(image, ["block1_relu2", "block2_conv1"]), mx(image, ["block1_relu2", "block2_conv1"])
    assert torch.equal(a["block1_relu2"], m["block1_relu2"])
    assert not torch.allclose(a["block2_conv1"], m["block2_conv1"])


def test_bad_pooling():
    with pytest.raises(PasticheError, match="pooling 'mean'"):
        vgg19(weights=BUNDLED_FILE, pooling="mean")


def test_forward_stops_at_the_deepest_requested_layer(model, image, monkeypatch):
    def boom(x):
        raise AssertionError("block5_conv1 ran")

    monkeypatch.setattr(model.layers["block5_conv1"], "forward", boom)
    small = image[:, :, :16, :16]
    out = model(small, ["block4_pool", "block1_relu1"])
    assert set(out) == {"block4_pool", "block1_relu1"}
    with pytest.raises(AssertionError, match="block5_conv1 ran"):
        model(small, ["block5_conv1"])


@pytest.mark.parametrize("conv, relu", [("block1_conv1", "block1_relu1"),
                                        ("block3_conv2", "block3_relu2"),
                                        ("block5_conv4", "block5_relu4")])
def test_conv_output_survives_its_relu(model, image, conv, relu):
    out = model(image, [conv, relu])
    assert (out[conv] < 0).any()
    assert torch.equal(out[relu], out[conv].clamp(min=0))
    alone = model(image, [conv])[conv]
    assert torch.equal(out[conv], alone)


def test_relu_alone_matches(model, image):
    both = model(image, ["block2_conv1", "block2_relu1"])
    relu = model(image, ["block2_relu1"])["block2_relu1"]
    assert torch.equal(relu, both["block2_relu1"])
    assert relu.min() >= 0


def _save_variant(path, drop=(), shape_of=None, arch="vgg19"):
    wf = load_file(BUNDLED_FILE)
    layers = {n: l for n, l in wf.layers.items() if n not in drop}
    if shape_of:
        from pastiche.quantized import QuantizedLayer

        rng = np.random.default_rng(0)
        for name, shape in shape_of.items():
            layers[name] = QuantizedLayer.from_indices(
                rng.integers(0, 256, size=shape).astype(np.uint8), np.linspace(-1, 1, 256),
                np.zeros(shape[0]), bits=8)
    save_file(WeightsFile(arch, wf.preprocessing, layers), path)
    return path


def test_file_holding_the_first_convolutions(tmp_path, image):
    """A file may hold a prefix of the convolutions (pastiche-compress --up-to): it builds up to
    the layer before the first missing one, and a deeper layer is refused by name."""
    path = _save_variant(tmp_path / "13.pqw", drop=("block5_conv2", "block5_conv3", "block5_conv4"))
    model = vgg19(weights=path)
    assert list(model.layers) == list(EXPECTED_NAMES[: EXPECTED_NAMES.index("block5_relu1") + 1])
    full = vgg19(weights=BUNDLED_FILE, up_to="block5_relu1")
    assert torch.equal(model(image, ["block5_relu1"])["block5_relu1"], full(image, ["block5_relu1"])["block5_relu1"])
    with pytest.raises(PasticheError) as info:
        vgg19(weights=path, up_to="block5_conv2")
    assert str(info.value) == (f"weights '{path}' hold VGG19 only up to block5_relu1, so block5_conv2"
                               " cannot be computed; choose shallower layers or complete weights such as"
                               " 'vgg19-8bit'")
    # pooling needs no weights: a file ending at block4_conv4 serves block4_pool
    path = _save_variant(tmp_path / "12.pqw", drop=CONV_NAMES[12:])
    assert list(vgg19(weights=path).layers)[-1] == "block4_pool"


def test_file_with_a_gap(tmp_path):
    path = _save_variant(tmp_path / "15.pqw", drop=("block3_conv2",))
    assert len(load_file(path).layers) == 15
    with pytest.raises(PasticheError, match="convolutions in order") as info:
        vgg19(weights=path)
    assert str(path) in str(info.value)


def test_file_with_wrong_shapes(tmp_path):
    path = _save_variant(tmp_path / "shape.pqw", shape_of={"block2_conv1": (128, 32, 3, 3)})
    with pytest.raises(PasticheError, match="convolutions in order"):
        vgg19(weights=path)
    path = _save_variant(tmp_path / "arch.pqw", arch="vgg16")
    with pytest.raises(PasticheError, match="convolutions in order"):
        vgg19(weights=path)


def test_missing_weights_file(tmp_path):
    with pytest.raises(PasticheError, match="nope.pqw"):
        vgg19(weights=tmp_path / "nope.pqw")


def test_bad_preprocessing_in_file(tmp_path):
    wf = load_file(BUNDLED_FILE)
    wf.preprocessing = {"channel_order": "GBR", "scale": 1.0, "mean": [0, 0, 0], "std": [1, 1, 1]}
    save_file(wf, tmp_path / "pre.pqw")
    with pytest.raises(PasticheError, match="preprocessing"):
        vgg19(weights=tmp_path / "pre.pqw", up_to="block1_conv1")


def test_caffe_normalize(model):
    assert model.preprocessing["channel_order"] == "BGR"
    pixel = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    got = model.normalize(pixel).flatten().double()
    expected = torch.tensor([0 - 103.939, 0 - 116.779, 255 - 123.68], dtype=torch.float64)
    assert (got - expected).abs().max().item() < 1e-4, got


def test_torchvision_normalize(torchvision_file, model):
    tv = vgg19(weights=torchvision_file, up_to="block1_conv1")
    assert tv.preprocessing == TORCHVISION
    pixel = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    got = tv.normalize(pixel).flatten().double()
    expected = torch.tensor([(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0 - 0.406) / 0.225],
                            dtype=torch.float64)
    assert (got - expected).abs().max().item() < 1e-5, got
    assert not torch.allclose(got.float(), model.normalize(pixel).flatten())
    # Same weights, different input convention: different activations.
    img = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(tv(img, ["block1_conv1"])["block1_conv1"],
                              model(img, ["block1_conv1"])["block1_conv1"])


@pytest.mark.skipif(not conv_module._NNPACK, reason="this torch has no NNPACK")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])  # bfloat16: compared as int16 bits
@pytest.mark.parametrize("shape", [(1, 3, 8, 10), (2, 4, 7, 9)])
def test_compact_max_pool_matches_autograd(shape, dtype):
    """Same output and input gradient as F.max_pool2d after F.relu (the pooling carries the
    ReLU's gradient: none to a window of zeros), odd sizes and ties included, and no warning
    under torch's deterministic mode (its backward uses no scatter)."""
    import warnings

    g = torch.Generator().manual_seed(0)
    x = (torch.randint(0, 3, shape, generator=g) * torch.rand(shape, generator=g).round()).to(dtype)  # many ties
    x[0, 0, :2, :2] = -0.0  # a window of negative zeros: a bfloat16 ReLU can output them
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ref = F.max_pool2d(F.relu(a), 2, 2)
    grad = torch.randn(y_ref.shape, generator=g).to(dtype)
    y_ref.backward(grad)
    torch.use_deterministic_algorithms(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            y = vgg_module._MaxPool2x2.apply(b)
            y.backward(grad)
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.equal(y, y_ref) and torch.equal(b.grad, a.grad)


@pytest.mark.parametrize("keep", ["mask", "output"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("inplace", [True, False])
def test_relu_matches_autograd(inplace, dtype, keep):
    """Output and input gradient as F.relu's, zeros and negative zeros included, in place or not
    (after a convolution whose output was handed out), keeping a mask or the output."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(1, 4, 6, 6, generator=g), torch.zeros(1, 1, 6, 6), -torch.zeros(1, 1, 6, 6)], 1).to(dtype)
    grad = torch.randn(x.shape, generator=g).to(dtype)
    a = x.clone().requires_grad_()
    F.relu(a).backward(grad)
    b = x.clone().requires_grad_()
    y = vgg_module._ReLU.apply(b * 1 if inplace else b, inplace, keep)  # in place needs a non-leaf
    y.backward(grad)
    assert torch.equal(y, F.relu(x)) and torch.equal(b.grad, a.grad)


@pytest.mark.parametrize("layers", [["block2_relu1"], ["block1_relu2", "block2_relu1"]])
def test_relus_keep_a_mask_their_output_if_watched_and_nothing_before_pooling(model, layers):
    """What autograd keeps: a uint8 mask for an unwatched ReLU (block1_relu1), nothing for one
    before a pooling (block1_relu2), a watched one's output itself (no copy: the loss on it keeps
    it anyway), and the pooling's positions."""
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        out = model(torch.rand(1, 3, 32, 32, requires_grad=True), layers)
    uint8 = [tuple(t.shape) for t in kept if t.dtype == torch.uint8]
    assert sorted(uint8) == sorted([(1, 64, 32, 32), (1, 64, 16, 16)])
    maps = [t for t in kept if t.dtype != torch.uint8 and t.dim() == 4 and t.shape[1] > 3]
    assert sorted(t.data_ptr() for t in maps) == sorted(out[name].data_ptr() for name in layers)


def test_features_come_in_network_order_each_before_the_layers_after_it(model, image):
    """features() yields what forward() returns, layer by layer: a caller gets block1_relu1
    before block2's convolutions have run (the engine takes its losses there)."""
    ran = []
    hook = model.layers["block2_conv1"].register_forward_hook(lambda *_: ran.append(True))
    try:
        layers = ["block2_relu1", "block1_relu1"]
        stream = model.features(image, layers)
        name, first = next(stream)
        assert name == "block1_relu1" and not ran
        rest = dict(stream)
        assert list(rest) == ["block2_relu1"] and ran
    finally:
        hook.remove()
    expected = model(image, layers)
    assert torch.equal(first, expected["block1_relu1"]) and torch.equal(rest["block2_relu1"], expected["block2_relu1"])


def _reference_features(model, image, last):
    """Plain torch ops (autograd's own ReLU, pooling and convolution) up to layer ``last``."""
    x = model.normalize(image)
    for name, layer in model.layers.items():
        if "_conv" in name:
            x = F.conv2d(x, layer.weight, layer.bias, padding=1)
        elif "_relu" in name:
            x = F.relu(x)
        else:
            x = F.max_pool2d(x, 2)
        if name == last:
            return x


@pytest.mark.parametrize("winograd_max_pixels", [0, 1 << 20])  # NNPACK / cached Winograd on every layer
@pytest.mark.parametrize("layers", [("block3_relu1",), ("block1_relu1", "block2_conv2", "block3_relu2"),
                                    ("block1_relu2", "block2_relu1")])  # a watched ReLU before pooling
def test_image_gradient_matches_autograd(model, layers, winograd_max_pixels, monkeypatch):
    """The memory-saving ReLU and pooling (masks, int32 indices) and the convolutions' own input
    gradients give autograd's gradient, on a map with odd sides (pooling drops a row and a column)."""
    monkeypatch.setattr(conv_module, "_NNPACK_MIN_PIXELS", 1)
    monkeypatch.setattr(conv_module, "WINOGRAD_MIN_PIXELS", 1)
    monkeypatch.setattr(conv_module, "WINOGRAD_MAX_PIXELS", winograd_max_pixels)
    model.clear_cache(pixels=37 * 23)
    image = torch.rand(1, 3, 37, 23, generator=torch.Generator().manual_seed(1))

    def loss(features):  # fixed random weights: the gradient does not hinge on rounding
        return sum((f * torch.randn(f.shape, generator=torch.Generator().manual_seed(2))).sum()
                   for f in features)

    x = image.clone().requires_grad_()
    out = model(x, layers)
    (ours,) = torch.autograd.grad(loss(out[name] for name in layers), x)
    y = image.clone().requires_grad_()
    (ref,) = torch.autograd.grad(loss(_reference_features(model, y, name) for name in layers), y)
    assert ref.abs().max() > 0
    assert (ours - ref).abs().max() <= 1e-4 * ref.abs().max()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("supplemental", [(), (("cpu", 10),)])
def test_gpu_features_and_gradient_match_the_cpu(model, supplemental):
    """On a GPU the maps are channels-last (cuDNN's layout; on the CPU too where oneDNN takes
    float32) and ReLU and pooling are torch's own: same features and image gradient as on the CPU
    (in float32: TF32 off, which the Grams follow), also when layers from block3 on run on the
    CPU (--supplemental-device)."""
    import copy

    from pastiche.losses import gram

    layers = ("block1_relu1", "block2_relu1", "block3_relu1", "block4_relu2")
    gpu = copy.deepcopy(model).place("cuda", supplemental)
    image = torch.rand(1, 3, 64, 80, generator=torch.Generator().manual_seed(3))
    results = []
    for net, device in ((model, "cpu"), (gpu, "cuda")):
        x = image.to(device).requires_grad_()
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            out = net(x, layers)
            channels_last = device == "cuda" or vgg_module.onednn_float32()
            assert out["block1_relu1"].is_contiguous(memory_format=torch.channels_last) == channels_last
            loss = sum(gram(f).sum() + f.sum() for f in out.values())
            (grad,) = torch.autograd.grad(loss, x)
        results.append(([out[n].cpu() for n in layers], grad.cpu()))
    (cpu_maps, cpu_grad), (gpu_maps, gpu_grad) = results
    for ours, ref in zip(gpu_maps, cpu_maps):
        assert (ours - ref).abs().max() <= 1e-4 * ref.abs().max()
    assert (gpu_grad - cpu_grad).abs().max() <= 1e-3 * cpu_grad.abs().max()  # the CPU's Winograd rounds more


@pytest.mark.parametrize("onednn", [False, True])
def test_compact_model_gives_the_same_features_and_gradient(image, monkeypatch, onednn):
    """compact=True keeps uint8 codebook indices (a quarter of the bytes) and rebuilds the same
    float32 kernels: bit-identical activations and image gradients by NNPACK and torch's
    convolution (a compact convolution never takes the cached-kernel Winograd, so that is off
    here), and the same to rounding by oneDNN, where the plain model's kernels are packed."""
    monkeypatch.setattr(conv_module, "WINOGRAD_MAX_PIXELS", 0)
    monkeypatch.setattr(vgg_module, "onednn_float32", lambda: onednn)
    model = vgg19(weights=BUNDLED_FILE, up_to="block3_relu1")
    compact = vgg19(weights=BUNDLED_FILE, up_to="block3_relu1", compact=True)
    conv = compact.layers["block3_conv1"]
    assert conv.weight is None and conv.indices.dtype == torch.uint8
    assert torch.equal(conv.kernel(), model.layers["block3_conv1"].weight)
    held = sum(b.numel() * b.element_size() for b in compact.buffers(recurse=True) if b is not None)
    floats = sum(model.layers[n].weight.numel() * 4 for n in compact.layers if "_conv" in n)
    assert held < 0.3 * floats
    layers = ["block1_relu1", "block2_relu1", "block3_relu1"]
    a, b = image.clone().requires_grad_(), image.clone().requires_grad_()
    out_a, out_b = model(a, layers), compact(b, layers)
    sum(v.square().sum() for v in out_a.values()).backward()
    sum(v.square().sum() for v in out_b.values()).backward()
    same = torch.equal if not onednn else lambda x, y: (x - y).abs().max() <= 1e-5 * y.abs().max()
    assert all(same(out_a[n], out_b[n]) for n in layers)
    assert same(a.grad, b.grad) and a.grad.abs().max() > 0


@pytest.mark.bfloat16
def test_compact_bfloat16_kernels_come_in_the_maps_layout(image):
    """A compact bfloat16 model keeps its indices channels-last, as its maps are, so its kernels
    decode channels-last (the plain model's values) and no convolution copies a kernel into that
    layout: a copy per call was ~50 MB of new memory per step at 256 px with --low-memory."""
    plain = vgg19(weights=BUNDLED_FILE, up_to="block3_relu1", dtype=torch.bfloat16)
    compact = vgg19(weights=BUNDLED_FILE, up_to="block3_relu1", compact=True, dtype=torch.bfloat16)
    convs = {n: c for n, c in compact.layers.items() if isinstance(c, conv_module.Conv3x3)}
    for name, conv in convs.items():
        for kernel in (conv.kernel(), conv.kernel(reuse=True)):
            assert kernel.is_contiguous(memory_format=torch.channels_last)
            assert torch.equal(kernel, plain.layers[name].weight)
    x = image.clone().requires_grad_()
    with torch.profiler.profile(record_shapes=True) as prof:
        compact(x, ["block3_relu1"])["block3_relu1"].float().square().sum().backward()
    shapes = [list(c.indices.shape) for c in convs.values()]
    copies = [e.input_shapes[0] for e in prof.events() if e.name in ("aten::copy_", "aten::clone")]
    assert copies and not [s for s in copies if s in shapes]


def test_clear_cache_forgets_every_transformed_kernel(image, monkeypatch):
    monkeypatch.setattr(vgg_module, "onednn_float32", lambda: False)  # NCHW maps: the Winograd takes some
    model = vgg19(weights=BUNDLED_FILE, up_to="block2_relu1")
    x = image.clone().requires_grad_()
    model(x, ["block2_relu1"])["block2_relu1"].sum().backward()
    convs = [layer for layer in model.layers.values() if isinstance(layer, conv_module.Conv3x3)]
    assert any(conv._winograd is not None for conv in convs)
    model.clear_cache(pixels=x[0, 0].numel())
    assert all(conv._winograd is None for conv in convs)


@pytest.mark.parametrize("compact", [False, True])
def test_float32_maps_go_to_onednn_channels_last_where_it_takes_float32(image, monkeypatch, compact):
    """Where oneDNN takes float32 convolutions (devices.onednn_float32: AVX-512) the maps are
    channels-last and no convolution is NNPACK's or the Winograd's; elsewhere they are NCHW.
    Both give the same features and image gradient, to float32 rounding."""
    layers = ["block1_relu1", "block2_relu1", "block3_relu1"]
    results = {}
    for onednn in (False, True):
        monkeypatch.setattr(vgg_module, "onednn_float32", lambda onednn=onednn: onednn)
        model = vgg19(weights=BUNDLED_FILE, up_to="block3_relu1", compact=compact)
        x = image.clone().requires_grad_()
        with torch.profiler.profile() as prof:
            out = model(x, layers)
            sum(v.square().sum() for v in out.values()).backward()
        names = {e.name for e in prof.events()}
        assert out["block2_relu1"].is_contiguous(memory_format=torch.channels_last) == onednn
        assert not onednn or not names & {"aten::_nnpack_spatial_convolution", "aten::bmm"}, names
        results[onednn] = [out[n].detach() for n in layers], x.grad
    (maps, grad), (onednn_maps, onednn_grad) = results[False], results[True]
    for ours, ref in zip(onednn_maps, maps):
        assert (ours - ref).abs().max() <= 1e-5 * ref.abs().max()
    assert (onednn_grad - grad).abs().max() <= 1e-4 * grad.abs().max()  # the Winograd rounds more


@pytest.mark.bfloat16
@pytest.mark.parametrize("compact", [False, True])
def test_bfloat16_model_gives_float32_features_and_gradient_close_to_float32(model, image, compact):
    """dtype=bfloat16: the first convolution stays float32 (the image's small changes must
    reach the loss), the rest compute in bfloat16, and so are the activations handed out."""
    half = vgg19(weights=BUNDLED_FILE, up_to="block3_relu1", compact=compact, dtype=torch.bfloat16)
    kinds = {n: (c.kernel().dtype) for n, c in half.layers.items() if "_conv" in n}
    assert kinds == {"block1_conv1": torch.float32, "block1_conv2": torch.bfloat16,
                     "block2_conv1": torch.bfloat16, "block2_conv2": torch.bfloat16, "block3_conv1": torch.bfloat16}
    layers = ["block1_relu1", "block2_relu1", "block3_relu1"]
    a, b = image.clone().requires_grad_(), image.clone().requires_grad_()
    out_a, out_b = model(a, layers), half(b, layers)
    sum(v.square().sum() for v in out_a.values()).backward()
    sum(v.square().sum() for v in out_b.values()).backward()
    for n in layers:
        assert out_b[n].dtype == torch.bfloat16
        assert (out_b[n].float() - out_a[n]).abs().max() <= 0.03 * out_a[n].abs().max()
    assert b.grad.dtype == torch.float32
    assert F.cosine_similarity(a.grad.flatten(), b.grad.flatten(), dim=0) > 0.999


def test_unsupported_dtype():
    with pytest.raises(PasticheError) as info:
        vgg19(weights=BUNDLED_FILE, dtype=torch.float16)
    assert str(info.value) == "unsupported dtype torch.float16 for VGG19; use torch.float32 or torch.bfloat16"


@pytest.mark.bfloat16
@pytest.mark.skipif(not conv_module._NNPACK, reason="this torch has no NNPACK")
@pytest.mark.parametrize("compact", [False, True])
def test_bfloat16_models_first_convolution_is_not_nnpacks(image, compact, monkeypatch):
    """A bfloat16 model hands its float32 image to the first convolution channels-last, so that
    oneDNN computes it (5x faster with the cast) and not NNPACK, whose workspace torch keeps for
    the life of the process (15.6 MB at 256x192 px)."""
    monkeypatch.setattr(conv_module, "WINOGRAD_MAX_PIXELS", 0)  # what a float32 NCHW image takes at 256 px

    def refuse(*args):
        raise AssertionError("NNPACK was called")

    monkeypatch.setattr(conv_module, "_nnpack_conv", refuse)
    half = vgg19(weights=BUNDLED_FILE, up_to="block1_relu2", compact=compact, dtype=torch.bfloat16)
    x = image.clone().requires_grad_()
    half(x, ["block1_relu2"])["block1_relu2"].float().square().sum().backward()
    assert x.grad.abs().sum() > 0
