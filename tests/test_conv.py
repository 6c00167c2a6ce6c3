"""pastiche.conv: each algorithm for VGG's frozen 3x3 convolutions against torch's own."""

import pytest
import torch
from torch.nn import functional as F

import pastiche.conv as conv_module
from pastiche.conv import Conv3x3, winograd_conv, winograd_kernel


def _random(out_channels, in_channels, height, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(out_channels, in_channels, 3, 3, generator=g), torch.randn(out_channels, generator=g),
            torch.randn(1, in_channels, height, width, generator=g))


def _close(got, expected):  # Winograd's rounding: ~1e-6 of the values' scale in float32
    return (got - expected).abs().max() <= 1e-5 * expected.abs().max()


@pytest.mark.parametrize("channels", [(1, 1), (3, 8), (16, 5)])
@pytest.mark.parametrize("size", [(1, 1), (2, 2), (7, 5), (6, 9)])  # odd sides: a part-filled last tile
def test_winograd_conv_matches_conv2d(channels, size):
    weight, bias, x = _random(*channels, *size)
    u = winograd_kernel(weight)
    assert u.shape == (16, *channels)
    assert _close(winograd_conv(x, u, bias), F.conv2d(x, weight, bias, padding=1))
    assert _close(winograd_conv(x, u), F.conv2d(x, weight, padding=1))


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (7, 5), (8, 8)])
def test_transposed_winograd_conv_is_the_input_gradient(size):
    """transposed=True reuses the forward's U for the kernel transposed and flipped."""
    weight, _, x = _random(6, 4, *size)
    grad = torch.randn(1, 6, *size, generator=torch.Generator().manual_seed(1))
    expected = torch.nn.grad.conv2d_input(x.shape, weight, grad, padding=1)
    assert _close(winograd_conv(grad, winograd_kernel(weight), transposed=True), expected)


def test_conv3x3_picks_the_algorithm_by_map_size(monkeypatch):
    weight, bias, _ = _random(8, 4, 1, 1)
    conv = Conv3x3(weight, bias)
    pick = lambda h, w: conv._algorithm(torch.zeros(1, 4, h, w))  # noqa: E731
    assert pick(8, 8) == "torch"  # under WINOGRAD_MIN_PIXELS and _NNPACK_MIN_PIXELS
    assert pick(12, 16) == "winograd"  # block5 of a 256x192 image: under NNPACK's minimum, not Winograd's
    assert pick(24, 32) == "winograd"  # block4 of a 256x192 image
    assert pick(48, 64) == ("nnpack" if conv_module._NNPACK else "torch")
    assert conv._algorithm(torch.zeros(1, 4, 24, 32, dtype=torch.float64)) == "torch"
    assert conv._algorithm(torch.zeros(2, 4, 24, 32)) == "torch"  # a batch: torch's own
    # channels-last float32: the gradient a bfloat16 layer hands back to the first convolution
    assert conv._algorithm(torch.zeros(1, 4, 24, 32).contiguous(memory_format=torch.channels_last)) == "onednn"
    assert conv._algorithm(torch.zeros(1, 4, 24, 32, dtype=torch.bfloat16)) == "onednn"
    compact = Conv3x3(torch.zeros(8, 4, 3, 3, dtype=torch.uint8), bias, centroids=torch.zeros(256))
    assert compact._algorithm(torch.zeros(1, 4, 24, 32)) != "winograd"  # no transform kept


def test_winograd_kernel_is_kept_until_cleared():
    weight, bias, _ = _random(8, 4, 1, 1)
    conv = Conv3x3(weight, bias)
    x = torch.randn(1, 4, 20, 20, requires_grad=True)
    conv(x).sum().backward()  # forward and input gradient share one transform
    assert conv._winograd.shape == (16, 8, 4)
    conv.clear_cache()
    assert conv._winograd is None


@pytest.mark.parametrize("winograd_max_pixels", [0, 1 << 20])  # NNPACK (if present) / cached Winograd
@pytest.mark.parametrize("in_channels", [3, 20])  # input gradient by oneDNN (few channels) / NNPACK
@pytest.mark.parametrize("strip_values", [1 << 30, 20 * 7 * 5, 20 * 7])  # whole, 5-row and 1-row strips
def test_conv3x3_and_its_gradient_match_conv2d(monkeypatch, strip_values, in_channels, winograd_max_pixels):
    monkeypatch.setattr(conv_module, "_NNPACK_STRIP_VALUES", strip_values)
    monkeypatch.setattr(conv_module, "_NNPACK_MIN_PIXELS", 1)
    monkeypatch.setattr(conv_module, "WINOGRAD_MIN_PIXELS", 1)
    monkeypatch.setattr(conv_module, "WINOGRAD_MAX_PIXELS", winograd_max_pixels)
    weight, bias, x = _random(8, in_channels, 23, 7)  # odd rows, a last short strip
    conv = Conv3x3(weight, bias)
    x.requires_grad_()
    y = conv(x)
    (grad,) = torch.autograd.grad((y * y.detach().sin()).sum(), x)
    x_ref = x.detach().requires_grad_()
    y_ref = F.conv2d(x_ref, weight, bias, padding=1)
    (grad_ref,) = torch.autograd.grad((y_ref * y_ref.detach().sin()).sum(), x_ref)
    # Winograd's rounding differs from direct convolution's by ~1e-5 of the values' scale
    assert torch.allclose(y, y_ref, atol=1e-3, rtol=1e-4)
    assert torch.allclose(grad, grad_ref, atol=1e-3, rtol=1e-4)


@pytest.mark.bfloat16
@pytest.mark.parametrize("compact", [False, True])  # packed kernels / codebook indices
@pytest.mark.parametrize("batch", [1, 2])
def test_bfloat16_conv3x3_and_its_gradient_match_float32(batch, compact):
    """bfloat16 maps go to oneDNN both ways; the input gradient is the transposed convolution
    (by the packed transposed and flipped kernel, or, for a compact one, conv_transpose2d)."""
    weight, bias, _ = _random(8, 20, 1, 1)
    x = torch.randn(batch, 20, 23, 7, generator=torch.Generator().manual_seed(2))
    if compact:  # a 256-entry codebook; weight becomes what the indices decode to
        centroids = torch.linspace(-1, 1, 256).bfloat16()
        indices = torch.randint(0, 256, weight.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
        weight = centroids[indices.long()].float()
        conv = Conv3x3(indices, bias.bfloat16(), centroids=centroids)
    else:
        conv = Conv3x3(weight.bfloat16(), bias.bfloat16())
    xb = x.bfloat16().requires_grad_()
    assert conv._algorithm(xb) == "onednn"
    y = conv(xb)
    assert y.dtype == torch.bfloat16
    (grad,) = torch.autograd.grad((y.float() * y.detach().float().sin()).sum(), xb)
    # the same rounded values in float32: what remains is bfloat16's rounding of the results
    x_ref = x.bfloat16().float().requires_grad_()
    y_ref = F.conv2d(x_ref, weight.bfloat16().float(), bias.bfloat16().float(), padding=1)
    (grad_ref,) = torch.autograd.grad((y_ref * y.detach().float().sin()).sum(), x_ref)
    assert (y.float() - y_ref).abs().max() <= 2 ** -7 * y_ref.abs().max()
    assert (grad.float() - grad_ref).abs().max() <= 2 ** -6 * grad_ref.abs().max()


def test_float32_packed_kernels_are_made_once_and_outlive_clear_cache():
    """Float32 channels-last maps go to oneDNN (an Intel CPU with AVX-512), whose layout does not
    depend on the map's size: a new size keeps the packed kernels."""
    if not conv_module._ONEDNN_PACKED:
        pytest.skip("this torch has no oneDNN packed convolution")
    weight, bias, _ = _random(8, 4, 1, 1)
    conv = Conv3x3(weight, bias)
    x = torch.randn(1, 4, 9, 7).contiguous(memory_format=torch.channels_last).requires_grad_()
    y = conv(x)
    (grad,) = torch.autograd.grad((y * y.detach().sin()).sum(), x)
    x_ref = x.detach().contiguous().requires_grad_()
    y_ref = F.conv2d(x_ref, weight, bias, padding=1)
    (grad_ref,) = torch.autograd.grad((y_ref * y.detach().sin()).sum(), x_ref)
    assert torch.allclose(y, y_ref, atol=1e-5) and torch.allclose(grad, grad_ref, atol=1e-5)
    packed = conv._packed
    assert packed is not None
    conv.clear_cache()
    conv(torch.randn(1, 4, 5, 6).contiguous(memory_format=torch.channels_last))
    assert conv._packed is packed


@pytest.mark.bfloat16
def test_bfloat16_packed_kernels_go_with_pack_bfloat16_false():
    """Kept for small images; on big ones (pack_bfloat16=False) dropped and not made again, and
    the convolution reorders the kernel it is given: the same results."""
    if not conv_module._ONEDNN_PACKED:
        pytest.skip("this torch has no oneDNN packed convolution")
    weight, bias, _ = _random(8, 4, 1, 1)
    conv = Conv3x3(weight.bfloat16(), bias.bfloat16())
    x = torch.randn(1, 4, 9, 7).bfloat16().requires_grad_()

    def run():
        y = conv(x)
        return y, torch.autograd.grad((y.float() * y.detach().float().sin()).sum(), x)[0]

    packed_results = run()
    assert conv._packed is not None
    conv.clear_cache(pack_bfloat16=False)
    assert conv._packed is None
    results = run()
    assert conv._packed is None
    for a, b in zip(results, packed_results):
        assert torch.allclose(a.float(), b.float(), atol=1e-2, rtol=1e-2)
    conv.clear_cache(pack_bfloat16=True)
    run()
    assert conv._packed is not None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("count", [1, 2, 15, 16])
@pytest.mark.parametrize("offset", [0, 1])
def test_decode_gives_each_index_its_centroid(dtype, count, offset, monkeypatch):
    """Two at a time through the pair table (bfloat16, float32), one at a time where that cannot
    be read (float64, an odd count's last index, indices at an odd address): centroids[indices]
    to the bit, with a codebook smaller than 256 (a 4-bit file's 16) and every index value."""
    g = torch.Generator().manual_seed(count)
    for k in (16, 256):
        centroids = torch.randn(k, generator=g).to(dtype)
        store = torch.randint(0, k, (offset + count,), dtype=torch.uint8, generator=g)
        indices = store[offset:]
        with monkeypatch.context() as patch:
            patch.setattr(conv_module, "_INDEX_CHUNK", 3)
            out = conv_module.decode(indices, centroids, torch.full((count,), float("nan"), dtype=dtype))
        assert torch.equal(out, centroids[indices.long()])
    every = torch.arange(256, dtype=torch.uint8).repeat_interleave(256)  # (lo, hi) pairs: all of them
    every = torch.stack([every, every.view(256, 256).t().flatten()], 1).flatten()
    centroids = torch.randn(256, generator=g).to(dtype)
    assert torch.equal(conv_module.decode(every, centroids, torch.empty(len(every), dtype=dtype)),
                       centroids[every.long()])


def test_compact_kernel_decodes_in_chunks_to_the_codebook_values(monkeypatch):
    """Indices widened a few at a time into a kept buffer (a last chunk part-filled) decode to
    centroids[indices], in a new thread too (each thread has its own buffers); with ``reuse``
    into a kept buffer, otherwise into a new tensor (autograd may keep it)."""
    import threading

    monkeypatch.setattr(conv_module, "_INDEX_CHUNK", 7)
    centroids = torch.randn(256)
    indices = torch.randint(0, 256, (5, 4, 3, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    conv = Conv3x3(indices, torch.zeros(5), centroids=centroids)
    got = []
    thread = threading.Thread(target=lambda: got.extend([conv.kernel(), conv.kernel(reuse=True)]))
    thread.start()
    thread.join()
    for kernel in [*got, conv.kernel(), conv.kernel(reuse=True)]:
        assert torch.equal(kernel, centroids[indices.long()])
    assert conv.kernel().data_ptr() != conv.kernel().data_ptr()
    assert conv.kernel(reuse=True).data_ptr() == conv.kernel(reuse=True).data_ptr() != got[1].data_ptr()
