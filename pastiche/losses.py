"""Loss terms of Gatys et al.: content MSE, Gram-matrix style MSE and total variation.

Pure functions on tensors; they run on whatever device their inputs live on.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def gram(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) activations → (N, C, C) Gram matrices divided by H*W (as pastiche 1.6.0)."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return torch.bmm(flat, flat.transpose(1, 2)) / (h * w)


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
