"""Optical flow for video: coarse-to-fine block matching, and moving the previous stylised frame
along it so that each new frame starts from the last one (temporal coherence).

Tensors are (1, C, H, W) float32; images in [0, 1]; flow (1, 2, H, W) in px, x then y.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch.nn import functional as F


def _grid(flow: torch.Tensor) -> torch.Tensor:
    """(1, 2, H, W) flow in px → (1, H, W, 2) grid_sample coordinates of x + flow (align_corners)."""
    _, _, h, w = flow.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=flow.dtype), torch.arange(w, dtype=flow.dtype), indexing="ij")
    gx = (xs + flow[0, 0]) * 2 / max(w - 1, 1) - 1
    gy = (ys + flow[0, 1]) * 2 / max(h - 1, 1) - 1
    return torch.stack([gx, gy], dim=-1)[None]


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``image`` (1, C, H, W) sampled at (x, y) + ``flow`` (1, 2, H, W) px, bilinear, edges clamped."""
    return F.grid_sample(image, _grid(flow), mode="bilinear", padding_mode="border", align_corners=True)


@torch.no_grad()
def estimate_flow(prev: torch.Tensor, cur: torch.Tensor, *, levels: int = 3, radius: int = 3,
                  block: int = 8) -> torch.Tensor:
    """Coarse-to-fine block matching: integer flow (1, 2, H, W) in px, cur(x) ≈ prev(x + flow(x)).

    ``prev``, ``cur``: (1, 3, H, W) in [0, 1]. At each level of a 2× pyramid, every ``block``²
    block takes the shift with the least mean absolute difference within ±``radius`` px of its
    block's estimate from the level above (±21 px in all by default); ties go to that estimate."""
    _, _, h, w = cur.shape
    m = block * 2 ** (levels - 1)  # pad so that blocks nest exactly across levels
    pad = (0, -w % m, 0, -h % m)
    a = F.pad(prev.float().mean(1, keepdim=True), pad, mode="replicate")
    b = F.pad(cur.float().mean(1, keepdim=True), pad, mode="replicate")
    shifts = torch.tensor([(dx, dy) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)],
                          dtype=torch.float32)
    penalty = 1e-4 * shifts.abs().sum(1).view(1, -1, 1, 1)
    flow = torch.zeros(1, 2, b.shape[2] // m, b.shape[3] // m)  # per block, in px of the level
    for level in reversed(range(levels)):
        p, c = (F.avg_pool2d(a, 2 ** level), F.avg_pool2d(b, 2 ** level)) if level else (a, b)
        if level < levels - 1:
            flow = F.interpolate(flow * 2, scale_factor=2, mode="nearest")
        cost = torch.cat([F.avg_pool2d((warp(p, (flow + d.view(1, 2, 1, 1)).repeat_interleave(block, 2)
                                             .repeat_interleave(block, 3)) - c).abs(), block)
                          for d in shifts], dim=1) + penalty
        flow = flow + shifts[cost.argmin(1)].permute(0, 3, 1, 2)
    return flow.repeat_interleave(block, 2).repeat_interleave(block, 3)[..., :h, :w]


def warp_previous(stylised: torch.Tensor, prev: torch.Tensor, cur: torch.Tensor, *,
                  fill: Optional[torch.Tensor] = None, tolerance: float = 0.1) -> torch.Tensor:
    """The previous stylised frame moved from content ``prev`` onto content ``cur``; where the motion
    leaves the frame or does not explain the content (occlusions), ``fill`` (default ``cur``).
    All (1, 3, H, W) in [0, 1]."""
    flow = estimate_flow(prev, cur)
    grid = _grid(flow)
    inside = (grid.abs() <= 1 + 1e-6).all(-1)[:, None]
    explained = (warp(prev, flow) - cur).abs().mean(1, keepdim=True) < tolerance
    return torch.where(inside & explained, warp(stylised, flow), cur if fill is None else fill)
