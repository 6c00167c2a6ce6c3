"""Tests for pastiche.engine: the optimisation works, stays in range, reads every input type,
keeps the last good image on a NaN, and refuses bad options with helpful messages.

Images are tiny (conftest.py) and most tests use two shallow style layers so they run in
fractions of a second; the default (deep) layers are used where they matter.
"""

import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

import pastiche
from pastiche import color
from pastiche import conv as conv_module
from pastiche import engine as engine_module
from pastiche import vgg as vgg_module
from pastiche.engine import DEFAULT_STYLE_LAYERS, StyleTransfer
from pastiche.errors import PasticheError, PasticheWarning
from pastiche.imageio import load_image
from pastiche.losses import gram
from pastiche.schedule import plan, run, transfer

SHALLOW = dict(content_layers=["block2_relu1"], style_layers=["block1_relu1", "block2_relu1"])
TINY = dict(SHALLOW, size=48, device="cpu")


def _job(content, style, **options):
    """A ready job: targets and the starting image are made lazily (coarse-to-fine makes them at
    the first level), so evaluate() once to have ``pixels``, ``content`` and ``targets``."""
    job = StyleTransfer(content, style, **{**TINY, **options})
    job.evaluate()
    return job


def _gram_distance(job, image01, style01, layers=("block1_relu1", "block2_relu1")):
    """Sum over ``layers`` of the MSE between Gram matrices of ``image01`` and ``style01``."""
    with torch.no_grad():
        a, b = job.vgg(image01, layers), job.vgg(style01, layers)
        return sum(F.mse_loss(gram(a[k]), gram(b[k])).item() for k in layers)


# ---------------------------------------------------------------------------- it optimises


@pytest.mark.parametrize("precision", ["float32", pytest.param("bfloat16", marks=pytest.mark.bfloat16)])
def test_loss_falls_over_ten_lbfgs_steps(content_path, style_path, precision):
    job = _job(content_path, style_path, precision=precision)
    assert job.dtype == job.vgg.dtype == getattr(torch, precision)
    losses = [job.step() for _ in range(10)]
    # L-BFGS keeps its pairs as rounded as the network computes, the image in float32
    assert job.optimizer.ring.dtype == job.dtype and job.optimizer.vectors.dtype == torch.float32
    assert job.step_count == 10 and job.loss == losses[-1]
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.5 * losses[0]
    assert job.evaluate() < 0.5 * losses[0]  # the image after the 10th step is good too


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_a_step_reads_from_the_device_once(content_path, style_path, optimizer, monkeypatch):
    """The loss math stays on the compute device: a step reads the device once — the loss (for
    NaN checks and the progress display), with L-BFGS in one stack with the numbers for its
    decisions. Each read is a round-trip that stalls a GPU; torch's own LBFGS makes two more per
    kept pair."""
    job = _job(content_path, style_path, style_layers=DEFAULT_STYLE_LAYERS, optimizer=optimizer)
    for _ in range(4):
        job.step()  # L-BFGS now has pairs in its history
    reads = []
    for name in ("__float__", "__int__", "__bool__", "__index__", "item", "tolist", "numpy", "cpu"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _real=real, _name=name, **k:
                            reads.append(_name) or _real(self, *a, **k))
    job.step()
    monkeypatch.undo()
    assert optimizer == "adam" or job.optimizer.order  # the recursion had pairs to go over
    assert reads == (["tolist"] if optimizer == "lbfgs" else ["__float__"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_steps_match_eager_steps_and_follow_a_resize(content_path, style_path):
    """On a GPU a step replays a CUDA graph captured at the level's first step: the same steps
    run eagerly give the same losses (in float32, TF32 off: and the CPU's too), and a new size
    (coarse-to-fine) captures a new graph. At the second level compared only before its second
    move, L-BFGS's first curvature step after a steepest-descent one: it can multiply the loss
    ~10x, amplifying rounding differences (cuDNN picks its algorithms anew for a capture)."""
    curves, graphs_seen = {}, []
    for device, graphs in (("cuda", True), ("cuda", False), ("cpu", False)):
        torch.manual_seed(0)
        job = StyleTransfer(content_path, style_path, size=96, device=device)
        job.use_cuda_graphs = graphs
        curve = curves[device, graphs] = []

        def record(j):
            curve.append(j.loss)
            graphs_seen.append(j._graph)

        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            run(job, plan(job.full_size, 4, (4,)), callback=record)
        assert len(curve) == 8
    first_level, second_level = set(map(id, graphs_seen[:4])), set(map(id, graphs_seen[4:8]))
    assert len(first_level) == len(second_level) == 1 and first_level != second_level
    for reference, rel in ((curves["cuda", False], 1e-3), (curves["cpu", False], 1e-2)):
        assert curves["cuda", True][:6] == pytest.approx(reference[:6], rel=rel)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_graph_is_captured_again_when_block5_returns(content_path, style_path, monkeypatch):
    """The style layers are in the graph's kernels: the steps after BLOCK5_DELAY take block 5
    again by a new capture, and report the loss with it, as an eager step would."""
    monkeypatch.setattr(pastiche.engine, "BLOCK5_DELAY", 2)
    job = StyleTransfer(content_path, style_path, size=96, device="cuda")
    job.resize(48, 40)
    job.step()
    job.resize(*job.full_size)  # upsampled: block 5 is left out of two steps
    graphs, reported, whole = [], [], []
    for _ in range(4):
        job.step()
        graphs.append(job._graph)  # kept alive, so that ids are not reused
        reported.append(job.loss)
        with torch.no_grad():
            whole.append(job.objective(job._good).item())  # every layer, at the step's start
    assert graphs[0] is graphs[1] and graphs[2] is graphs[3] and graphs[1] is not graphs[2]
    assert reported[0] < whole[0] and reported[1] < whole[1]  # block 5's term left out
    assert reported[2:] == pytest.approx(whole[2:], rel=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_graph_follows_loss_weights_changed_between_steps(content_path, style_path):
    """The weights are numbers in the captured kernels: a change must capture again, or the
    GPU would go on optimising the old loss where the CPU takes the new one."""
    job = StyleTransfer(content_path, style_path, size=64, device="cuda")
    job.step()
    job.style_weights = [w * 1000 for w in job.style_weights]
    loss = job.step()  # by the graph: the loss of the image before this step, kept in job._good
    with torch.no_grad():
        assert loss == pytest.approx(job.objective(job._good).item(), rel=1e-4)


def test_a_new_level_starts_lbfgs_with_the_last_levels_scale(content_path, style_path):
    """Coarse-to-fine restarts L-BFGS at each size with the curvature scale it learnt, times the
    growth in pixels (the loss is a mean over pixels): its first step moves the image, where a
    fresh L-BFGS's first step moves it by at most a unit L1 length in all."""
    job = StyleTransfer(content_path, style_path, **TINY)
    width, height = job.full_size
    job.resize(width // 2, height // 2)
    for _ in range(4):
        job.step()
    scale, pixels = job.optimizer.scale, (width // 2) * (height // 2)
    job.resize(width, height)
    assert job.optimizer.known_scale
    assert job.optimizer.scale == pytest.approx(scale * width * height / pixels)
    before = job.pixels.detach().clone()
    job.step()
    assert (job.pixels.detach() - before).abs().sum() > 10


def _watch_style_layers(job, monkeypatch):
    """A list that gets, at each step's pass of the job's VGG19, the style layers it was asked for."""
    features, seen = job.vgg.features, []

    def watched(image, layers):
        if image.requires_grad:  # a step's, not the targets'
            seen.append(list(layers)[len(job.content_layers):])  # the objective asks for content + style
        return features(image, layers)

    monkeypatch.setattr(job.vgg, "features", watched)
    return seen


def test_a_level_upsampled_from_a_coarser_one_leaves_block5_out_of_its_first_steps(content_path, style_path,
                                                                                   monkeypatch):
    """Coarse-to-fine: the first BLOCK5_DELAY steps of a level that starts from a coarser level's
    result take the loss without block5_relu1, and stop the network before it; then the whole
    loss again. The loss those steps report is the loss they optimised."""
    monkeypatch.setattr(engine_module, "BLOCK5_DELAY", 2)
    job = StyleTransfer(content_path, style_path, size=64, device="cpu")
    assert "block5_relu1" in job.style_layers
    early = [layer for layer in job.style_layers if layer != "block5_relu1"]
    seen = _watch_style_layers(job, monkeypatch)
    width, height = job.full_size
    job.resize(width // 2, height // 2)
    job.step()
    job.step()
    job.step()  # the first level: no coarser one before it
    job.resize(width, height)
    losses = []
    for _ in range(3):
        before = job.pixels.detach().clone()
        losses.append((job.step(), before))
    assert seen == [job.style_layers] * 3 + [early] * 2 + [job.style_layers]
    with torch.no_grad():
        for (loss, before), layers in zip(losses, (early, early, None)):
            assert loss == pytest.approx(job.objective(before, style_layers=layers).item(), rel=1e-4)
        assert losses[0][0] < job.objective(losses[0][1]).item()  # block 5's term was left out


@pytest.mark.parametrize("change", ["same size", "smaller", "set_content"])
def test_block5_stays_in_without_an_upsampling(content_path, style_path, content_array, monkeypatch, change):
    job = StyleTransfer(content_path, style_path, size=64, device="cpu")
    job.step()
    seen = _watch_style_layers(job, monkeypatch)
    if change == "set_content":
        job.set_content(content_array)
    else:
        job.resize(*(job.size if change == "same size" else (job.size[0] // 2, job.size[1] // 2)))
    job.step()
    assert seen == [job.style_layers]


@pytest.mark.parametrize("layers", [
    dict(content_layers=["block5_relu2"]),  # block 5 runs for the content anyway: nothing saved
    dict(style_layers=["block5_relu1"]),  # nothing left of the style
    dict(style_layers=["block1_relu1", "block5_relu1"], content_layers=["block5_relu1"]),
])
def test_block5_stays_in_where_leaving_it_out_saves_nothing_or_leaves_no_style(content_path, style_path,
                                                                              monkeypatch, layers):
    job = StyleTransfer(content_path, style_path, size=64, device="cpu", **layers)
    job.resize(job.full_size[0] // 2, job.full_size[1] // 2)
    job.step()
    seen = _watch_style_layers(job, monkeypatch)
    job.resize(*job.full_size)
    job.step()
    assert seen == [job.style_layers]


@pytest.mark.parametrize("precision", ["float32", pytest.param("bfloat16", marks=pytest.mark.bfloat16)])
def test_low_memory_takes_the_same_steps_with_a_shorter_history(content_path, style_path, monkeypatch, precision):
    """low_memory keeps the kernels as uint8 indices (same kernels, so by the same algorithms the
    same losses while L-BFGS's history is not yet full) and 10 history pairs instead of 20.
    (Compact kernels never take the cached-kernel Winograd: it is off here; on oneDNN, bfloat16
    or float32 on AVX-512, they are not prepacked, and a CPU's oneDNN may take another
    implementation for each, which rounds differently.)"""
    monkeypatch.setattr(conv_module, "WINOGRAD_MAX_PIXELS", 0)
    full = _job(content_path, style_path, precision=precision)
    low = _job(content_path, style_path, low_memory=True, precision=precision)
    assert (full.lbfgs_history, low.lbfgs_history) == (20, 10)
    assert low.vgg.layers["block1_conv1"].weight is None
    losses, low_losses = [full.step() for _ in range(8)], [low.step() for _ in range(8)]
    if precision == "float32" and not vgg_module.onednn_float32():
        assert losses == low_losses and torch.equal(full.pixels, low.pixels)
    else:
        assert low_losses == pytest.approx(losses, rel=1e-2 if precision == "bfloat16" else 1e-4)
    assert _job(content_path, style_path, low_memory=True, lbfgs_history=3).lbfgs_history == 3


def test_output_moves_towards_the_style(content_path, style_path):
    job = _job(content_path, style_path)
    run(job, 10)
    style = load_image(style_path)  # 48x48: the size the engine used (content's pixel count ~)
    content = load_image(content_path)
    before = _gram_distance(job, content, style)
    after = _gram_distance(job, job.image_tensor(), style)
    assert after < 0.5 * before


def test_default_layers_lower_the_loss(content_path, style_path):
    job = StyleTransfer(content_path, style_path, size=32, device="cpu")
    losses = [job.step() for _ in range(10)]  # L-BFGS without line search: not monotonic
    assert losses[-1] < 0.5 * losses[0]


def test_each_style_loss_backward_runs_when_the_backward_reaches_its_layer(content_path, style_path):
    """The losses are taken as each activation comes, so autograd (latest-made first) runs a
    style loss's backward at its layer: block1's after the convolutions of block2 and deeper, not
    with the others at the start of backward, where its map-sized gradient would wait (memory)."""
    job = _job(content_path, style_path, size=32, style_layers=list(DEFAULT_STYLE_LAYERS))
    loss = job.objective(job.pixels)
    order, seen, stack = [], set(), [loss.grad_fn]
    while stack:  # every node of the graph
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        # a convolution is ours, or torch's own on maps too small for NNPACK (float32 hosts)
        if node.name() in ("_StyleMSEBackward", "_FrozenConv3x3Backward", "ConvolutionBackward0"):
            # a style loss by its layer's pixel count (saved (N, C, H*W) features), a convolution as 0
            pixels = node.saved_tensors[0].shape[2] if node.name() == "_StyleMSEBackward" else 0
            node.register_prehook(lambda grad, p=pixels: order.append(p))
        stack.extend(next_node for next_node, _ in node.next_functions)
    loss.backward()
    styles = [i for i, pixels in enumerate(order) if pixels]
    assert len(styles) == 5 and len(order) == 5 + 13  # block1_conv1 to block5_conv1
    assert [order[i] for i in styles] == sorted(order[i] for i in styles)  # block5's first
    # between two style losses' backward, the convolutions between their layers
    assert all(0 in order[a:b] for a, b in zip(styles, styles[1:]))


@pytest.mark.parametrize("optimizer, learning_rate", [("lbfgs", 1.0), ("adam", 60.0)])
def test_pixels_stay_in_range_after_every_step(content_path, style_path, optimizer, learning_rate):
    job = _job(content_path, style_path, optimizer=optimizer, learning_rate=learning_rate,
               init="random", style_weights=[1e3])
    assert job.pixels.shape == (1, 3, 40, 48)
    moved = False
    for _ in range(8):
        previous = job.pixels.detach().clone()
        job.step()
        pixels = job.pixels.detach()
        assert torch.isfinite(pixels).all()
        assert pixels.min().item() >= 0 and pixels.max().item() <= 255
        moved |= not torch.equal(previous, pixels)
    assert moved
    image = job.image_tensor()
    assert image.shape == (1, 3, 40, 48) and image.min() >= 0 and image.max() <= 1


@pytest.mark.parametrize("options", [{}, {"luminance_only": True}, {"optimizer": "adam", "luminance_only": True}])
def test_saved_png_has_the_objective_of_the_optimised_image(content_path, style_path, tmp_path, options):
    """Luminance-only: the steps moved the grey start's channels apart (4 grey levels on average
    after 100 steps), and the saved image took its luminance from the first: 2.2-2.6x the loss."""
    job = StyleTransfer(content_path, style_path, size=40, device="cpu", **options)  # default layers
    for _ in range(8):
        job.step()
    path = tmp_path / "out.png"
    job.image().save(path)
    reloaded = load_image(path)
    assert reloaded.shape == job.pixels.shape
    if job.luminance_only:
        assert torch.equal(job.pixels[:, :1].expand_as(job.pixels), job.pixels)  # grey, as it started
        reloaded = color.luminance(reloaded)
    with torch.no_grad():
        in_memory = job.objective(job.pixels).item()
        saved = job.objective(reloaded * 255).item()
    assert saved == pytest.approx(in_memory, rel=0.03)


# ---------------------------------------------------------------------------- inputs


def _as(kind, path, array):
    if kind == "str":
        return str(path)
    if kind == "path":
        return path
    if kind == "pil":
        return Image.open(path)
    if kind == "numpy":
        return array
    if kind == "tensor":
        return torch.from_numpy(array).permute(2, 0, 1).float() / 255  # (3, H, W) in [0, 1]
    raise AssertionError(kind)


@pytest.fixture
def reference(content_path, style_path):
    return _job(content_path, style_path)


@pytest.mark.parametrize("kind", ["str", "path", "pil", "numpy", "tensor"])
def test_every_input_type_for_content(kind, content_path, content_array, style_path, reference):
    job = _job(_as(kind, content_path, content_array), style_path)
    assert job.size == (48, 40)
    assert torch.equal(job.content, reference.content)
    assert torch.equal(job.pixels.detach(), reference.pixels.detach())
    for layer, target in reference.targets.content.items():
        torch.testing.assert_close(job.targets.content[layer], target)
    assert math.isfinite(job.step())


@pytest.mark.parametrize("kind", ["str", "path", "pil", "numpy", "tensor"])
def test_every_input_type_for_style(kind, content_path, style_path, style_array, reference):
    job = _job(content_path, _as(kind, style_path, style_array))
    assert job.targets.style_sizes == reference.targets.style_sizes
    for layer, target in reference.targets.styles[0].items():
        torch.testing.assert_close(job.targets.styles[0][layer], target)
    assert math.isfinite(job.step())


# ---------------------------------------------------------------------------- styles and init


def test_multiple_styles_are_weighted(content_path, style_path, tmp_path):
    other = tmp_path / "other.png"
    Image.fromarray(np.full((30, 60, 3), (200, 120, 40), np.uint8)).save(other)
    both = _job(content_path, [style_path, other], style_weights=[0.7, 0.3])
    assert len(both.targets.styles) == 2 and both.style_weights == [0.7, 0.3]
    assert both.targets.style_sizes[1][0] > both.targets.style_sizes[1][1]  # aspect kept
    first_only = _job(content_path, [style_path, other], style_weights=[1, 0])
    single = _job(content_path, style_path, style_weights=[1])
    mixed = _job(content_path, [style_path, other])  # default 1/N each
    assert mixed.style_weights == [0.5, 0.5]
    with torch.no_grad():
        pixels = single.pixels.detach()
        # Weight 0 on the second style leaves exactly the first style's objective...
        assert first_only.objective(pixels).item() == pytest.approx(single.objective(pixels).item(), rel=1e-5)
        # ...and the objective is linear in the style weights.
        w = [0.7, 0.3]
        a = _job(content_path, [style_path, other], style_weights=[1, 0]).objective(pixels).item()
        b = _job(content_path, [style_path, other], style_weights=[0, 1]).objective(pixels).item()
        c = _job(content_path, [style_path, other], style_weights=[0, 0]).objective(pixels).item()
        expected = c + w[0] * (a - c) + w[1] * (b - c)
        assert both.objective(pixels).item() == pytest.approx(expected, rel=1e-4)
    losses = [both.step() for _ in range(5)]
    assert losses[-1] < losses[0]


def test_init_content_is_the_content(content_path, style_path):
    job = _job(content_path, style_path, init="content")
    torch.testing.assert_close(job.pixels.detach(), load_image(content_path) * 255)


def test_init_random_is_noise_in_range(content_path, style_path):
    torch.manual_seed(0)
    job = _job(content_path, style_path, init="random")
    pixels = job.pixels.detach()
    assert pixels.shape == (1, 3, 40, 48)
    assert pixels.min() >= 0 and pixels.max() <= 255 and pixels.std() > 50
    assert not torch.allclose(pixels, load_image(content_path) * 255, atol=10)
    assert math.isfinite(job.step())


def test_init_from_file_is_resized_to_the_content(content_path, style_path, tmp_path):
    init = tmp_path / "init.png"
    Image.fromarray(np.full((20, 24, 3), (10, 200, 90), np.uint8)).save(init)
    job = _job(content_path, style_path, init=init)
    assert job.pixels.shape == (1, 3, 40, 48)
    expected = torch.tensor([10.0, 200.0, 90.0]).view(1, 3, 1, 1).expand(1, 3, 40, 48)
    torch.testing.assert_close(job.pixels.detach(), expected)
    assert math.isfinite(job.step())


def test_seed_and_deterministic_give_identical_results(content_path, style_path):
    def once():
        return np.asarray(transfer(content_path, style_path, num_steps=4, seed=1234, deterministic=True,
                                   init="random", **TINY))
    first, second = once(), once()
    assert np.array_equal(first, second)
    other = np.asarray(transfer(content_path, style_path, num_steps=4, seed=99, init="random", **TINY))
    assert not np.array_equal(first, other)


# ---------------------------------------------------------------------------- colour


def test_preserve_color_runs_and_keeps_the_content_palette(content_path, style_path):
    content = load_image(content_path)
    torch.manual_seed(0)  # the same starting noise for both: 10 steps from noise are erratic
    job = _job(content_path, style_path, preserve_color=True, init="random", style_weights=[1e2])
    torch.manual_seed(0)
    plain = _job(content_path, style_path, init="random", style_weights=[1e2])
    # The style's targets are computed from a recoloured style, so they differ.
    layer = "block1_relu1"
    assert not torch.allclose(job.targets.styles[0][layer], plain.targets.styles[0][layer], rtol=0.05)
    run(job, 10)
    run(plain, 10)
    image = job.image()
    assert image.size == (48, 40) and image.mode == "RGB"
    mean = lambda t: t.reshape(3, -1).mean(1)  # noqa: E731
    # Colours follow the content, not the style's palette.
    assert (mean(job.image_tensor()) - mean(content)).abs().max() < \
        (mean(plain.image_tensor()) - mean(content)).abs().max()


def test_luminance_only_keeps_the_content_chroma(content_path, style_path):
    job = _job(content_path, style_path, luminance_only=True)
    grey = job.pixels.detach()
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    run(job, 6)
    image = job.image()
    assert image.size == (48, 40) and image.mode == "RGB"
    out = color.rgb_to_yiq(job.image_tensor())
    content = color.rgb_to_yiq(load_image(content_path))
    # The luminance is the optimised one, and the style changed it
    y = job.pixels.detach()[:, :1].cpu() / 255
    assert (out[:, :1] - y).abs().max().item() < 1e-5 and (y - content[:, :1]).abs().mean().item() > 0.01
    # I and Q (the colour) are the content's where the two fit in the RGB cube; elsewhere the
    # colour is the content's hue, desaturated (this style's black stripes and yellow squares put
    # most of this small gradient's colours out of the cube)
    inside = ((color.yiq_to_rgb(torch.cat([y, content[:, 1:]], 1)) - 0.5).abs() <= 0.5).all(1)
    assert inside.float().mean().item() > 0.05
    assert (out[:, 1:] - content[:, 1:]).abs().amax(1)[inside].max().item() < 1e-5
    (i, q), (ci, cq) = out[0, 1:], content[0, 1:]
    assert (i * cq - q * ci).abs().max().item() < 1e-5 and (i * ci + q * cq).min().item() >= 0
    assert (i.square() + q.square() <= ci.square() + cq.square() + 1e-6).all()


# ---------------------------------------------------------------------------- resize, set_content


def test_resize_changes_the_working_size(content_path, style_path):
    job = _job(content_path, style_path)
    run(job, 3)
    mean_before = job.pixels.detach().mean().item()
    job.resize(24, 20)
    assert job.size == (24, 20)
    assert job.pixels.shape == (1, 3, 20, 24) and job.content.shape == (1, 3, 20, 24)
    assert job.targets.content["block2_relu1"].shape[2:] == (10, 12)
    assert job.pixels.detach().mean().item() == pytest.approx(mean_before, rel=0.05)
    assert math.isfinite(job.step()) and math.isfinite(job.step())
    assert job.image().size == (24, 20)
    job.resize(48, 40)
    assert job.image().size == (48, 40) and math.isfinite(job.step())


def test_set_content_switches_the_content_and_keeps_the_image(content_path, style_path, content_array):
    job = _job(content_path, style_path)
    run(job, 3)
    current = job.pixels.detach().clone()
    flipped = np.ascontiguousarray(content_array[:, ::-1])
    job.set_content(flipped)
    assert job.size == (48, 40)
    torch.testing.assert_close(job.content, load_image(flipped))
    torch.testing.assert_close(job.pixels.detach(), current)
    assert math.isfinite(job.step())
    init = np.full((40, 48, 3), 128, np.uint8)
    job.set_content(content_array, init=init)
    torch.testing.assert_close(job.content, load_image(content_array))
    torch.testing.assert_close(job.pixels.detach(), torch.full((1, 3, 40, 48), 128.0))
    assert math.isfinite(job.step())


# ---------------------------------------------------------------------------- NaN


def test_nan_loss_raises_and_keeps_the_last_good_image(content_path, style_path, monkeypatch):
    job = _job(content_path, style_path)
    objective, calls = job.objective, []

    def poisoned(pixels, **kw):
        calls.append(1)
        loss = objective(pixels, **kw)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(job, "objective", poisoned)
    job.step()
    after_first = job.pixels.detach().clone()
    job.step()
    with pytest.raises(PasticheError, match=r"step 3") as info:
        job.step()
    assert "nan" in str(info.value).lower()
    assert len(str(info.value).splitlines()) == 1
    kept = job.pixels.detach()
    assert torch.isfinite(kept).all()
    # The last image whose loss was seen finite (the loss at step 2 was that of this image).
    assert torch.equal(kept, after_first)
    assert job.step_count == 2
    assert np.array_equal(np.asarray(job.image()),
                          np.asarray(pastiche.imageio.to_pil(after_first / 255)))


# ---------------------------------------------------------------------------- out of memory


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory"),
    RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB"),
    MemoryError(),
])
def test_out_of_memory_in_a_step_is_an_error_that_keeps_the_image(content_path, style_path, monkeypatch, error):
    job = _job(content_path, style_path)
    job.step()
    kept = job.pixels.detach().clone()

    def allocate(pixels, **kw):
        raise error

    monkeypatch.setattr(job, "objective", allocate)
    with pytest.raises(PasticheError) as info:
        job.step()
    assert str(info.value) == ("out of memory at 48x40 px on cpu; choose a smaller size or"
                               " size_pixels, or low_memory=True")
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert torch.equal(job.pixels.detach(), kept) and job.step_count == 1


def test_sizes_that_cannot_fit_are_refused_before_any_resizing(content_path, style_path, monkeypatch):
    monkeypatch.setattr(pastiche.engine, "device_memory", lambda device: 2 ** 30)  # a 1 GB machine
    resized = []
    monkeypatch.setattr(Image.Image, "resize", lambda *a, **k: resized.append(1))
    with pytest.raises(PasticheError) as info:
        StyleTransfer(content_path, style_path, size=1200, device="cpu")  # 1.2 M px each: ≥ 1.2 GB
    assert str(info.value) == ("the output image would be 1200x1000 px, which needs at least 1.2 GB of"
                               " memory and this machine has 1.0 GB; choose a smaller size or size_pixels")
    with pytest.raises(PasticheError, match="the style image would be 4000x4000 px.*style_size or"):
        StyleTransfer(content_path, style_path, size=64, style_size=4000, device="cpu")
    assert not resized
    StyleTransfer(content_path, style_path, size=900, device="cpu")  # 0.68 M px fits


def test_a_resize_past_the_output_size_counts_the_styles_grown_with_it(content_path, style_path, monkeypatch):
    """Styles scale with the level: at 1.5 times the output size, 1.5 times style_size."""
    monkeypatch.setattr(pastiche.engine, "device_memory", lambda device: 2 ** 30)  # a 1 GB machine
    job = StyleTransfer(content_path, style_path, size=600, style_size=1000, device="cpu")  # 0.63 GB
    with pytest.raises(PasticheError, match=r"^the style image would be 1500x1500 px, which needs at least 1\.3 GB"):
        job.resize(900, 750)  # 0.38 GB for the image, 0.94 GB for the style at 1500 px
    assert job.size is None


def test_out_of_memory_while_resizing_is_an_error(content_path, style_path, monkeypatch):
    job = StyleTransfer(content_path, style_path, **TINY)

    def targets(content, styles):
        raise RuntimeError("MPS backend out of memory (MPS allocated: 1.00 GB)")

    monkeypatch.setattr(job, "_targets", targets)
    with pytest.raises(PasticheError, match=r"^out of memory at 24x20 px on cpu; .* low_memory=True$"):
        job.resize(24, 20)


def test_other_runtime_errors_are_not_taken_for_out_of_memory(content_path, style_path, monkeypatch):
    job = _job(content_path, style_path)

    def broken(pixels, **kw):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(job, "objective", broken)
    with pytest.raises(RuntimeError, match="shapes"):
        job.step()


# ---------------------------------------------------------------------------- bad options


@pytest.mark.parametrize("options, needles", [
    (dict(style_layers=["block1_relu1", "block9_relu1"]), ["block9_relu1", "--list-layers"]),
    (dict(content_layers=["conv4_2"]), ["conv4_2", "--list-layers"]),
    (dict(content_layer_weights=[1, 2]), ["content_layer_weights", "2"]),
    (dict(style_layer_weights=[1, 2, 3]), ["style_layer_weights", "3"]),
    (dict(style_weights=[0.5, 0.5]), ["style_weights", "2"]),
    (dict(size=0), ["size"]),
    (dict(size=-5), ["size", "-5"]),
    (dict(size=None, size_pixels=0), ["size_pixels"]),
    (dict(style_size=-1), ["style_size"]),
    (dict(optimizer="sgd"), ["sgd", "lbfgs", "adam"]),
    (dict(device="cuda:99"), ["cuda:99"]),
    (dict(preserve_color=True, luminance_only=True), ["preserve_color", "luminance_only"]),
    (dict(pooling="median"), ["median"]),
    (dict(tv_weight=-1), ["tv_weight", "-1.0"]),
    (dict(content_weight=float("nan")), ["content_weight", "nan"]),
    (dict(style_weights=[float("inf")]), ["style_weights", "inf"]),
    (dict(style_layer_weights=[1, -2]), ["style_layer_weights", "-2.0"]),
    (dict(learning_rate=float("inf")), ["learning_rate", "inf"]),
    (dict(learning_rate=1e39), ["learning_rate", "too large for float32"]),  # not an overflow at step 1
    (dict(supplemental_devices=[("cpu", 99)]), ["supplemental_devices", "99", "1 to 36"]),
    (dict(supplemental_devices=[("cpu", 7)]),  # TINY's layers stop at block2_relu1, layer 6
     ["supplemental_devices layer index 7 is past block2_relu1 (6)", "an index from 1 to 6"]),
    (dict(content_weight=0, style_layer_weights=[0, 0]), ["every loss term is weighted 0"]),
    (dict(content_layer_weights=[0], style_weights=[0]), ["every loss term is weighted 0"]),
])
def test_bad_options_raise_helpful_errors(content_path, style_path, options, needles):
    with pytest.raises(PasticheError) as info:
        _job(content_path, style_path, **options)
    message = str(info.value)
    assert len(message.splitlines()) == 1
    for needle in needles:
        assert needle in message


def test_image_too_small_for_the_layers(content_path, style_path):
    # The default layers reach block5_relu1, behind four poolings: 16 px per side at least.
    with pytest.raises(PasticheError, match="too small") as info:
        StyleTransfer(content_path, style_path, size=12, device="cpu").evaluate()
    assert "16" in str(info.value)
    job = StyleTransfer(content_path, style_path, size=12, device="cpu", **SHALLOW)  # 2 px suffice
    assert math.isfinite(job.step()) and job.size == (12, 10)


@pytest.mark.parametrize("option", ["style_layers", "content_layers"])
def test_a_pooling_as_the_deepest_layer_counts_its_own_halving(content_path, style_path, option):
    """block4_pool halves the image a fourth time: 16 px, not 8, where torch failed (a zero-size
    map) or a loss divided by zero."""
    with pytest.raises(PasticheError, match="too small: 12x10 px .* at least 16 px"):
        StyleTransfer(content_path, style_path, size=12, device="cpu", **{option: ["block4_pool"]}).evaluate()
    job = StyleTransfer(content_path, style_path, size=20, device="cpu", **{option: ["block4_pool"]})  # 20x17
    assert math.isfinite(job.step())


def test_no_style_and_bad_num_steps(content_path, style_path):
    with pytest.raises(PasticheError, match="style"):
        _job(content_path, [])
    with pytest.raises(PasticheError, match="num_steps"):
        run(_job(content_path, style_path), 0)


@pytest.mark.parametrize("options, needle", [
    (dict(lbfgs_history=0), "lbfgs_history"), (dict(lbfgs_history=2.5), "lbfgs_history"),
    (dict(tv_weight=None), "tv_weight"), (dict(content_weight="a"), "content_weight"),
    (dict(size="64"), "size"), (dict(learning_rate="1"), "learning_rate"),
    (dict(content_layers="block9_relu1"), "block9_relu1"), (dict(content_layers=None), "content layers"),
    (dict(supplemental_devices=[("cpu", "x")]), "supplemental_devices layer index 'x'"),
    (dict(supplemental_devices=[("cpu", True)]), "supplemental_devices"),
    (dict(supplemental_devices=["cpu"]), "supplemental_devices needs \\(device, layer index\\) pairs, got 'cpu'"),
    (dict(supplemental_devices="cpu 5"), "supplemental_devices must be a list"),
    (dict(supplemental_devices=[("cpu", 5), ("cpu", 5)]), "layer index 5 is given twice"),
    (dict(supplemental_devices=[("gpu", 5)]), "device 'gpu' is not available here.*with supplemental_devices\\)$"),
    (dict(learning_rate=None), "learning_rate must be a positive number, got None"),
    (dict(preserve_color="no"), "^preserve_color must be True or False, got 'no'$"),
    (dict(low_memory=2), "^low_memory must be True or False"), (dict(luminance_only=None), "^luminance_only"),
    (dict(device=99), "^device 'cuda:99' is not available here"), (dict(device=1.5), "^device '1.5'"),
    (dict(weights=1), "^weights must be one of vgg19-8bit, vgg19-4bit or a file path, got 1$"),
    (dict(style_layer_weights="x"), "^style_layer_weights must be a list of numbers"),
    (dict(style_weights={1: 2}), "^style_weights must be a list of numbers, one per style image"),
    (dict(size=48.5), "^size must be a whole number of pixels"), (dict(style_size=48.5), "^style_size must be"),
    (dict(init="noise"), "^init 'noise' is not 'content', 'random' or an image file that exists"),
    (dict(init=np.zeros((2, 2, 5), np.uint8)), "^cannot use init image"),
    # Python ints past float's range: before, OverflowError from float() or from a division
    (dict(content_weight=10 ** 400), "^content_weight must be a finite number, got one too large for a float$"),
    (dict(style_weights=[10 ** 400]), "^style_weights must be a finite number"),
    (dict(size=10 ** 400), "^size must be a whole number of pixels, from 1 to 2147483647, got 1000"),
    (dict(style_size_pixels=2 ** 31), "^style_size_pixels must be a whole number of pixels, from 1 to 2147483647"),
    (dict(style_layer_weights=(w for w in [1.0])), "^style_layer_weights must be a list of numbers"),  # TypeError
    (dict(lbfgs_history=10 ** 9), "^lbfgs_history 1000000000 pairs at 48x40 px need at least .* keep fewer"),
    (dict(lbfgs_history=10 ** 200), "^lbfgs_history must be a whole number of pairs, from 1 to 2147483647"),
])
def test_arguments_of_the_wrong_kind_are_pastiche_errors(content_path, style_path, options, needle):
    """Not a ZeroDivisionError at step 2, a TypeError from float(), or a layer name read letter
    by letter: one PasticheError naming the argument, at construction."""
    with pytest.raises(PasticheError, match=needle):
        StyleTransfer(content_path, style_path, **{**TINY, **options})


def test_one_layer_or_weight_may_be_given_bare_and_weights_as_arrays(content_path, style_path):
    job = StyleTransfer(content_path, style_path, **{**TINY, "content_layers": "block2_relu1",
                        "style_weights": 0.5, "style_layer_weights": np.array([1.0, 2.0])})
    assert job.content_layers == ["block2_relu1"] and job.style_weights == [0.5]
    assert job.style_layer_weights == [1.0, 2.0]


def test_image_size_must_be_width_and_height_in_whole_pixels(content_path, style_path):
    job = StyleTransfer(content_path, style_path, **TINY)
    for size in (128, (0, 0), (32.5, 24)):
        with pytest.raises(PasticheError, match=r"\(width, height\)"):
            job.image(size=size)
    assert job.step_count == 0
    assert job.image(size=(24, 20)).size == (24, 20)


def test_set_content_needs_the_same_shape_and_takes_any_init(content_path, style_path, tmp_path):
    job = _job(content_path, style_path)
    wide = tmp_path / "wide.png"
    Image.new("RGB", (90, 30), "gray").save(wide)
    before = job.pixels.detach().clone()
    with pytest.raises(PasticheError, match=r"wide.png' would be 48x16 px, not this job's"):
        job.set_content(wide)
    assert torch.equal(job.pixels.detach(), before)  # unchanged
    job.set_content(content_path, init="random")
    assert not torch.equal(job.pixels.detach(), before) and math.isfinite(job.step())


def test_missing_file_names_it(tmp_path, style_path):
    with pytest.raises(PasticheError, match="nope.png"):
        _job(tmp_path / "nope.png", style_path)


def test_weight_lists_of_the_wrong_length_say_how_many(content_path, style_path):
    with pytest.raises(PasticheError) as info:
        StyleTransfer(content_path, [style_path, style_path], style_weights=[1.0], **TINY)
    assert str(info.value) == ("style_weights has 1 value for 2 style images; give one per style"
                               " image or none for the defaults")
    with pytest.raises(PasticheError) as info:
        StyleTransfer(content_path, style_path, content_layer_weights=[1.0, 2.0], **TINY)
    assert str(info.value) == ("content_layer_weights has 2 values for 1 content layer; give one"
                               " per content layer or none for the defaults")




def test_one_loss_term_or_tv_alone_is_enough(content_path, style_path):
    for options in (dict(content_weight=0), dict(style_weights=[0]), dict(content_weight=0, style_weights=[0],
                                                                          tv_weight=1)):
        assert math.isfinite(_job(content_path, style_path, **options).step())


def test_a_step_past_float32s_range_keeps_the_last_good_image(content_path, style_path):
    """A learning rate of 1e30 saturates the image at the first step, and L-BFGS's inner products
    of the second overflow: before, numpy warned, the direction became NaN and every later step
    stood still, the saturated image kept as the result."""
    job = _job(content_path, style_path, learning_rate=1e30)
    job.step()
    good = job.pixels.detach().clone()  # the image whose loss step 2 evaluates: saturated, but finite
    assert set(torch.unique(good).tolist()) <= {0.0, 255.0}
    with pytest.raises(PasticheError, match="the loss or its step became inf at step 2; kept the last good image"):
        job.step()
    assert job.step_count == 1 and not torch.equal(job.pixels, good)  # back to the image before step 1


def test_an_adam_step_size_past_float32s_range_keeps_the_image(content_path, style_path):
    """Adam's first step is 10 times the learning rate (its bias correction): 1e38 passes the
    option's check and had ended in torch's RuntimeError ('value cannot be converted')."""
    job = _job(content_path, style_path, optimizer="adam", learning_rate=1e38)
    good = job.pixels.detach().clone()
    with pytest.raises(PasticheError, match=r"^the loss or its step became inf at step 1 \(the first; the image is"
                                            r" the starting one\) — try smaller weights or learning_rate$"):
        job.step()
    assert job.step_count == 0 and torch.equal(job.pixels, good)


def test_resize_takes_whole_pixels_and_checks_memory_beyond_the_full_size(content_path, style_path):
    job = StyleTransfer(content_path, style_path, **TINY)
    for bad in ((40.5, 30), ("40", 30), (True, 30), (0, 30)):
        with pytest.raises(PasticheError, match="resize needs whole numbers of pixels"):
            job.resize(*bad)
    with pytest.raises(PasticheError, match="the output image would be 1000000x1000000 px"):
        job.resize(1_000_000, 1_000_000)
    assert job.size is None


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_stepping_on_after_a_non_finite_loss_works(content_path, style_path, monkeypatch, optimizer):
    """An API caller may catch the error and step on: the optimiser starts afresh, where its
    history (L-BFGS's last gradient, Adam's moments) held the NaN gradient and failed every
    later step."""
    job = _job(content_path, style_path, optimizer=optimizer, learning_rate=1.0 if optimizer == "lbfgs" else 5.0)
    job.step()
    job.step()
    objective = StyleTransfer.objective
    monkeypatch.setattr(StyleTransfer, "objective", lambda self, p, **kw: objective(self, p, **kw) * float("nan"))
    with pytest.raises(PasticheError, match="nan at step 3"):
        job.step()
    monkeypatch.setattr(StyleTransfer, "objective", objective)
    losses = [job.step() for _ in range(4)]
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0]


# ---------------------------------------------------------------------------- all or nothing


def _state(job):
    return (job.size, job._content_label, job.content.shape, [tuple(t.shape) for t in job.targets.content.values()],
            job.pixels.data_ptr(), job.optimizer)


@pytest.mark.parametrize("interrupt", [PasticheError("too small"), KeyboardInterrupt()])
@pytest.mark.parametrize("where", ["_targets", "_new_optimizer"])  # the first and last thing made
def test_a_failed_resize_or_set_content_leaves_the_job_as_it_was(content_path, style_path, content_array,
                                                                 interrupt, where, monkeypatch):
    job = _job(content_path, style_path, luminance_only=True)
    job.step()
    before, image = _state(job), job.image()

    def fail(*args, **kwargs):
        raise interrupt
    monkeypatch.setattr(job, where, fail)
    with pytest.raises(type(interrupt)):
        job.resize(24, 20)
    with pytest.raises(type(interrupt)):
        job.set_content(np.ascontiguousarray(content_array[::-1]))
    assert _state(job) == before and np.array_equal(job.image(), image)
    monkeypatch.undo()
    assert math.isfinite(job.step()) and job.step_count == 2


def test_an_elongated_style_too_small_for_a_level_leaves_the_job_usable(content_path, style_array):
    job = _job(content_path, np.ascontiguousarray(np.tile(style_array, (1, 8, 1))), size=48,
               style_size=48, luminance_only=True)
    with pytest.raises(PasticheError, match="style image.*too small"):
        job.resize(8, 7)
    assert job.size == (48, 40) and job.content.shape[2:] == (40, 48) and job.image().size == (48, 40)


def test_vgg_refuses_images_too_small_for_the_layer_asked(content_path):
    model = pastiche.vgg19(up_to="block5_relu1")
    with pytest.raises(PasticheError, match=r"^VGG19 takes \(N, 3, H, W\) images of at least 16 px a side"):
        model(torch.zeros(1, 3, 15, 64), ["block5_relu1"])
    with pytest.raises(PasticheError, match=r"got \(3, 16, 16\)$"):
        model(torch.zeros(3, 16, 16), ["block5_relu1"])
    assert model(torch.zeros(1, 3, 16, 16), ["block5_relu1"])["block5_relu1"].shape == (1, 512, 1, 1)
    with pytest.raises(PasticheError, match="at least 16 px a side for block4_pool"):
        model(torch.zeros(1, 3, 8, 8), ["block4_pool"])
    with pytest.raises(PasticheError, match="^device 'cuda:99' is not available here"):
        pastiche.vgg19(device="cuda:99")


def test_an_image_too_large_to_resample_is_an_error_that_says_so(content_path, style_path):
    job = _job(content_path, style_path)
    with pytest.raises(PasticheError, match=r"^the image at 1000000x1000000 px would need more memory than this"
                                            " machine has; ask for a smaller size$"):
        job.image(size=(10 ** 6, 10 ** 6))  # 24 TB: refused before any allocation, whatever the overcommit


@pytest.mark.bfloat16
def test_bfloat16_kernels_are_kept_packed_on_small_images_only(content_path, style_path, monkeypatch):
    """A level above PACK_MAX_PIXELS frees the packed copies of the one before (coarse-to-fine)."""
    if not conv_module._ONEDNN_PACKED:
        pytest.skip("this torch has no oneDNN packed convolution")
    monkeypatch.setattr(vgg_module, "PACK_MAX_PIXELS", 24 * 20)
    job = StyleTransfer(content_path, style_path, **TINY, precision="bfloat16")
    convs = [m for m in job.vgg.modules() if isinstance(m, conv_module.Conv3x3) and m.weight.dtype == torch.bfloat16]
    packed = []
    for size in [(24, 20), (48, 40), (24, 20)]:
        job.resize(*size)
        job.step()
        packed.append(sum(c._packed is not None for c in convs))
    assert packed == [len(convs), 0, len(convs)]


def test_a_job_that_has_stepped_can_be_copied_and_pickled(content_path, style_path):
    """oneDNN's packed kernels, kept by the convolutions, cannot be copied: copies leave them out."""
    import copy
    import pickle

    job = _job(content_path, style_path)
    job.step()
    twins = [copy.deepcopy(job), pickle.loads(pickle.dumps(job))]
    losses = [j.step() for j in [job, *twins]]
    assert losses[0] == losses[1] == losses[2] and math.isfinite(losses[0])


def test_set_content_checks_the_new_content_before_building_the_job(content_path, style_path, style_array):
    job = StyleTransfer(content_path, style_path, **TINY)
    with pytest.raises(PasticheError, match="not this job's 48x40"):
        job.set_content(np.ascontiguousarray(style_array[:, :10]))
    assert job.size is None  # nothing was built for a refused call


def test_devices_and_weights_as_torch_and_numpy_spell_them(content_path, style_path):
    for device in ("cpu:0", torch.device("cpu", 0)):
        assert StyleTransfer(content_path, style_path, **{**TINY, "device": device}).device == torch.device("cpu")
    with pytest.raises(PasticheError, match="^device 'cuda:99' is not available"):
        StyleTransfer(content_path, style_path, **{**TINY, "device": np.int64(99)})
    assert StyleTransfer(content_path, style_path, **{**TINY, "style_weights": np.array(0.5)}).style_weights == [0.5]
    job = _job(content_path, style_path)
    assert job.image(size=np.array([24, 20])).size == (24, 20)


def test_loss_weights_set_on_a_job_are_checked_as_the_constructor_checks_them(content_path, style_path):
    """A callback may tune the weights between steps; a bad one was met inside the next step (a
    TypeError), or a negative one was taken and the loss fell without bound."""
    job = _job(content_path, style_path)
    for attribute, value, message in [
            ("content_weight", "2", "^content_weight must be a number, got '2'$"),
            ("tv_weight", -1, "^tv_weight must be zero or positive, got -1.0$"),
            ("style_weights", 0.5, None), ("style_weights", [-100], "^style_weights must be zero or positive"),
            ("style_weights", [1, 2], "^style_weights has 2 values for 1 style image"),
            ("content_layer_weights", [1, 2], "^content_layer_weights has 2 values for 1 content layer"),
            ("style_layer_weights", "ab", "^style_layer_weights must be a list of numbers")]:
        if message is None:  # a number counts as a list of one
            setattr(job, attribute, value)
            assert getattr(job, attribute) == [value]
            continue
        before = getattr(job, attribute)
        with pytest.raises(PasticheError, match=message):
            setattr(job, attribute, value)
        assert getattr(job, attribute) == before  # unchanged
    start = job.evaluate()
    job.style_weights = None  # the default again: 1/N
    job.style_layer_weights = [2.0, 2.0]
    assert job.style_weights == [1.0] and job.evaluate() != start


def test_an_init_image_of_another_shape_is_stretched_with_a_note_at_the_callers_line():
    content = np.zeros((40, 60, 3), np.uint8)
    with pytest.warns(PasticheWarning) as notes:
        StyleTransfer(content, content, init=np.zeros((30, 40, 3), np.uint8), device="cpu")
    assert [str(n.message) for n in notes] == [
        "init image (numpy array) is 40x30 px and the content 60x40 px: it is stretched to the content's shape;"
        " crop it to that shape to start undistorted"]
    assert notes[0].filename == __file__  # not pastiche's line, nor torch's decorator around __init__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        StyleTransfer(content, content, init=np.zeros((20, 30, 3), np.uint8), device="cpu")  # scaled: no note
