"""Tests for pastiche.losses: Gram matrices, content/style MSE and total variation, by hand."""

import pytest
import torch
from torch.nn import functional as F

from pastiche.losses import content_loss, gram, style_loss, tv_loss


def test_gram_of_known_tensor_matches_hand_computation():
    # One image, two channels of 2x2: flattened c0 = [1, 2, 3, 4], c1 = [0, 1, -1, 2].
    features = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]],
                              [[0.0, 1.0], [-1.0, 2.0]]]])
    # c0.c0 = 30, c0.c1 = 0 + 2 - 3 + 8 = 7, c1.c1 = 6; divided by H*W = 4.
    expected = torch.tensor([[[30.0, 7.0], [7.0, 6.0]]]) / 4
    result = gram(features)
    assert result.shape == (1, 2, 2)
    torch.testing.assert_close(result, expected)


def test_gram_is_per_image_and_divides_by_h_times_w():
    torch.manual_seed(0)
    features = torch.randn(2, 3, 4, 5)
    result = gram(features)
    assert result.shape == (2, 3, 3)
    for n in range(2):
        flat = features[n].reshape(3, 20)
        torch.testing.assert_close(result[n], flat @ flat.T / 20)
    torch.testing.assert_close(result, result.transpose(1, 2))  # symmetric


def test_content_loss_zero_for_identical_and_mse_otherwise():
    torch.manual_seed(1)
    a = torch.randn(1, 4, 3, 3)
    assert content_loss(a, a.clone()).item() == 0.0
    b = a + 0.5
    assert content_loss(a, b).item() == pytest.approx(0.25)
    assert content_loss(a, torch.randn(1, 4, 3, 3)).item() > 0


def test_style_loss_zero_for_own_gram_and_positive_otherwise():
    torch.manual_seed(2)
    a = torch.randn(1, 4, 5, 5)
    assert style_loss(a, gram(a)).item() == pytest.approx(0.0, abs=1e-12)
    other = torch.randn(1, 4, 5, 5) * 3
    loss = style_loss(a, gram(other))
    assert loss.item() > 0
    assert loss.item() == pytest.approx(((gram(a) - gram(other)) ** 2).mean().item(), rel=1e-6)


def test_style_loss_ignores_where_the_texture_is():
    # A Gram matrix does not see positions: a spatially shuffled copy has the same style.
    torch.manual_seed(3)
    a = torch.randn(1, 3, 4, 4)
    shuffled = a.reshape(1, 3, 16)[..., torch.randperm(16)].reshape(1, 3, 4, 4)
    assert style_loss(shuffled, gram(a)).item() == pytest.approx(0.0, abs=1e-10)


def test_tv_loss_zero_for_flat_image_and_positive_otherwise():
    assert tv_loss(torch.full((1, 3, 6, 5), 0.7)).item() == 0.0
    torch.manual_seed(4)
    assert tv_loss(torch.rand(1, 3, 6, 5)).item() > 0


def test_tv_loss_of_known_2x2_image():
    image = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]])
    # horizontal |1-0|, |4-2| → mean 1.5; vertical |2-0|, |4-1| → mean 2.5.
    assert tv_loss(image).item() == pytest.approx(4.0)
    assert tv_loss(-image).item() == pytest.approx(4.0)  # absolute differences


def _reference_style_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """style_loss as plain autograd ops: bmm, division, F.mse_loss."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return F.mse_loss(torch.bmm(flat, flat.transpose(1, 2)) / (h * w), target)


def test_style_loss_gradient_matches_autograd_through_bmm():
    """style_loss has its own backward (the product made once, one product back): the same
    gradient as autograd's through bmm and F.mse_loss."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 5, 4, 3, dtype=torch.float64, generator=g, requires_grad=True)
    target = gram(torch.randn(2, 5, 3, 3, dtype=torch.float64, generator=g))  # a Gram: symmetric
    assert torch.autograd.gradcheck(style_loss, (x, target))
    (ours,) = torch.autograd.grad(3.5 * style_loss(x, target), x)
    (ref,) = torch.autograd.grad(3.5 * _reference_style_loss(x, target), x)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(style_loss(x, target), _reference_style_loss(x, target))


def test_style_loss_of_channels_last_features_is_the_same_and_keeps_the_layout():
    """On a GPU, and for bfloat16 on a CPU, the features are channels-last (pastiche.vgg): the
    loss reads them without a copy and hands back their gradient in that layout, same values."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(1, 6, 5, 7, dtype=torch.float64, generator=g)
    target = gram(torch.randn(1, 6, 4, 4, dtype=torch.float64, generator=g))
    results = []
    for layout in (torch.contiguous_format, torch.channels_last):
        features = x.contiguous(memory_format=layout).requires_grad_()
        loss = style_loss(features, target)
        (grad,) = torch.autograd.grad(loss, features)
        assert grad.is_contiguous(memory_format=layout)
        results.append((loss, grad))
    torch.testing.assert_close(results[0], results[1])
    assert torch.autograd.gradcheck(style_loss, (x.contiguous(memory_format=torch.channels_last).requires_grad_(),
                                                 target))


def test_style_loss_keeps_the_features_and_one_c_by_c_difference():
    """Backward keeps the features as they are (no float32 copy of bfloat16 ones) and one
    (N, C, C) float32 matrix, not the Gram, its quotient and the target besides."""
    features = torch.randn(1, 8, 5, 7).bfloat16().requires_grad_()
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        style_loss(features, gram(torch.randn(1, 8, 3, 3)))
    assert [(t.dtype, tuple(t.shape)) for t in kept] == [(torch.bfloat16, (1, 8, 35)), (torch.float32, (1, 8, 8))]


def test_bfloat16_features_give_float32_losses_and_bfloat16_gradients():
    """bfloat16 activations (pastiche.vgg on a CPU with bfloat16): the Gram product and the
    losses in float32 on the same values, the gradient back in bfloat16."""
    x = torch.randn(1, 6, 5, 7).bfloat16()
    target = gram(torch.randn(1, 6, 4, 4))
    features = x.clone().requires_grad_()
    wide = x.float().requires_grad_()
    assert gram(x).dtype == torch.float32 and torch.equal(gram(x), gram(wide.detach()))
    loss = style_loss(features, target)
    assert loss.dtype == torch.float32 and torch.equal(loss, style_loss(wide, target))
    (grad,) = torch.autograd.grad(loss, features)
    (ref,) = torch.autograd.grad(_reference_style_loss(wide, target), wide)
    assert grad.dtype == torch.bfloat16
    assert (grad.float() - ref).abs().max() <= 2 ** -7 * ref.abs().max()
    target = torch.randn(1, 6, 5, 7)
    assert content_loss(x, target).dtype == torch.float32
    assert content_loss(x, target) == content_loss(x.float(), target)


def test_content_loss_gradient_is_autograds_and_keeps_no_float32_copies():
    """bfloat16 activations: the gradient of F.mse_loss on float32 copies, to the bit, while
    backward keeps only the activations and the target themselves."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 8, 5, 7, generator=g).bfloat16().contiguous(memory_format=torch.channels_last)
    target = torch.randn(1, 8, 5, 7, generator=g).bfloat16()
    features, reference = x.clone().requires_grad_(), x.clone().requires_grad_()
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        loss = content_loss(features, target)
    (3.5 * loss).backward()
    (3.5 * F.mse_loss(reference.float(), target.float())).backward()
    assert loss == F.mse_loss(x.float(), target.float())
    assert torch.equal(features.grad, reference.grad) and features.grad.dtype == torch.bfloat16
    assert features.grad.is_contiguous(memory_format=torch.channels_last)  # the activations' layout
    assert [t.dtype for t in kept] == [torch.bfloat16, torch.bfloat16]


def test_tv_loss_of_an_image_one_pixel_wide_or_tall_is_its_other_direction():
    column = torch.arange(5.0).view(1, 1, 5, 1).expand(1, 3, 5, 1)
    assert tv_loss(column).item() == 1.0  # was NaN: the mean of no horizontal neighbours
    assert tv_loss(column.transpose(2, 3)).item() == 1.0 and tv_loss(torch.ones(1, 3, 1, 1)).item() == 0.0
