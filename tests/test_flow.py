"""Tests for pastiche.flow: block matching finds a known motion, and the warp follows it."""

import torch
from torch.nn import functional as F

from pastiche.flow import estimate_flow, warp, warp_previous


def _texture(width: int, height: int, seed: int = 0) -> torch.Tensor:
    """A smooth random RGB texture, (1, 3, H, W) in [0, 1]."""
    small = torch.rand(1, 3, height // 4, width // 4, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(small, size=(height, width), mode="bicubic", align_corners=False).clamp(0, 1)


def test_flow_recovers_a_pan():
    big = _texture(72, 64, seed=3)  # 64 px: whole blocks at every level, no padding
    prev, cur = big[..., 0:64], big[..., 5:69]  # cur(x) = prev(x + 5)
    flow = estimate_flow(prev, cur)
    assert flow.shape == (1, 2, 64, 64)
    assert torch.allclose(flow[0, 0, 8:-8, 8:-16], torch.tensor(5.0)) and flow[0, 1].abs().max() == 0
    moved = warp_previous(prev, prev, cur)
    assert (moved - cur)[..., :-5].abs().max() < 1e-5  # the strip that came in is filled with cur


def test_flow_recovers_a_vertical_move_and_still_frames_stay():
    big = _texture(64, 70, seed=4)
    prev, cur = big[:, :, 0:64], big[:, :, 3:67]  # cur(y) = prev(y + 3)
    flow = estimate_flow(prev, cur)
    assert torch.allclose(flow[0, 1, 8:-16, 8:-8], torch.tensor(3.0)) and flow[0, 0].abs().max() == 0
    assert estimate_flow(cur, cur).abs().max() == 0
    assert torch.allclose(warp(cur, torch.zeros(1, 2, 64, 64)), cur, atol=1e-6)  # grid_sample rounding
