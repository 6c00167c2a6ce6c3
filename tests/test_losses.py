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


def test_gram_gradient_matches_autograd_through_bmm():
    """gram() has its own backward (one product instead of two): same gradient as autograd's."""
    x = torch.randn(2, 5, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gram, (x,))
    weights = torch.randn(2, 5, 5, dtype=torch.float64)
    (ours,) = torch.autograd.grad((gram(x) * weights).sum(), x)
    flat = x.reshape(2, 5, 12)
    (ref,) = torch.autograd.grad((torch.bmm(flat, flat.transpose(1, 2)) / 12 * weights).sum(), x)
    assert torch.allclose(ours, ref)


def test_gram_of_channels_last_features_is_the_same_and_keeps_the_layout():
    """On a GPU the features are channels-last (pastiche.vgg): gram() reads them without a copy
    and hands back their gradient in that layout, with the same values."""
    x = torch.randn(1, 6, 5, 7, dtype=torch.float64)
    weights = torch.randn(1, 6, 6, dtype=torch.float64)
    grads = []
    for layout in (torch.contiguous_format, torch.channels_last):
        features = x.contiguous(memory_format=layout).requires_grad_()
        (grad,) = torch.autograd.grad((gram(features) * weights).sum(), features)
        assert grad.is_contiguous(memory_format=layout)
        grads.append((gram(features), grad))
    assert torch.allclose(grads[0][0], grads[1][0]) and torch.allclose(grads[0][1], grads[1][1])
    assert torch.autograd.gradcheck(gram, (x.contiguous(memory_format=torch.channels_last).requires_grad_(),))


def test_bfloat16_features_give_float32_losses_and_bfloat16_gradients():
    """bfloat16 activations (pastiche.vgg on a CPU with bfloat16): the Gram product and the
    losses in float32 on the same values, the gradient back in bfloat16."""
    x = torch.randn(1, 6, 5, 7).bfloat16()
    weights = torch.randn(1, 6, 6)
    features = x.clone().requires_grad_()
    wide = x.float().requires_grad_()
    g = gram(features)
    assert g.dtype == torch.float32 and torch.equal(g, gram(wide))
    (grad,) = torch.autograd.grad((g * weights).sum(), features)
    (ref,) = torch.autograd.grad((gram(wide) * weights).sum(), wide)
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
