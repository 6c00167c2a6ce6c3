"""Loss terms of Gatys et al.: content MSE, Gram-matrix style MSE and total variation.

Pure functions on tensors; they run on whatever device their inputs live on.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch.nn import functional as F


@contextmanager
def _convolutions_precision(x: torch.Tensor) -> Iterator[None]:
    """Matrix products on a GPU at the precision cuDNN's convolutions use (TF32 on Ampere and
    later unless torch.backends.cudnn.allow_tf32 is off): Grams of their outputs gain nothing from
    more, and a Gram in full float32 took 1.6 of the 16 ms of a step at 1024 px on an H100."""
    if x.device.type != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def _wide(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if it is in a narrower dtype (bfloat16 activations), else as it is."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class _Gram(torch.autograd.Function):
    """(N, C, L) F → F Fᵀ, float32. Autograd's bmm backward makes two products, Gᵀ-side and
    F-side, and adds them; the Gram matrix is symmetric, so one product does: dF = (dG + dGᵀ) F.
    When F is a transposed view of (N, L, C) memory (channels-last features), dF is made in that
    layout. Bfloat16 F: the product in float32 (rounding G to bfloat16 would swamp the differences
    the style loss measures), dF in bfloat16 (0.5 instead of 2 ms for block1's at 256x192 px)."""

    @staticmethod
    def forward(ctx, flat: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(flat)
        flat = _wide(flat)
        with _convolutions_precision(flat):
            return torch.bmm(flat, flat.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (flat,) = ctx.saved_tensors
        symmetric = (grad + grad.transpose(1, 2)).to(flat.dtype)
        with _convolutions_precision(flat):
            if flat.is_contiguous():
                return torch.bmm(symmetric, flat)
            return torch.bmm(flat.transpose(1, 2), symmetric).transpose(1, 2)  # (dG + dGᵀ)ᵀ = itself


def gram(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) float32 or bfloat16 activations → (N, C, C) float32 Gram matrices divided by
    H*W (as pastiche 1.6.0)."""
    n, c, h, w = features.shape
    # (N, C, H*W) as a view of either layout: no copy of the activations
    flat = (features.reshape(n, c, h * w) if features.is_contiguous()
            else features.permute(0, 2, 3, 1).reshape(n, h * w, c).transpose(1, 2))
    return _Gram.apply(flat) / (h * w)


class _WideMSE(torch.autograd.Function):
    """F.mse_loss in float32 of activations and a constant target, keeping for backward the two
    as they are: for bfloat16 ones autograd would keep float32 copies of both, 8 bytes per value
    (16 MB for block4_relu2 at 577x433 px) where these keep 2 (the target is kept anyway)."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(features, target)
        return F.mse_loss(_wide(features), _wide(target))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        features, target = ctx.saved_tensors
        diff = _wide(features) - _wide(target)  # as torch's: (x - t) * 2 / n * grad
        return diff.mul_(2.0 / diff.numel()).mul_(grad).to(features.dtype), None


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between activations of the same shape, in float32; ``target`` is
    constant (no gradient)."""
    return _WideMSE.apply(features, target)


def style_loss(features: torch.Tensor, target_gram: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the Gram matrix of ``features`` and a precomputed one."""
    return F.mse_loss(gram(features), target_gram)


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Total variation of (N, C, H, W) ``image``: mean absolute difference of neighbours,
    horizontal plus vertical (pastiche 1.6.0's definition)."""
    return ((image[..., :, 1:] - image[..., :, :-1]).abs().mean()
            + (image[..., 1:, :] - image[..., :-1, :]).abs().mean())
