"""Tests for pastiche.optim: the same iterates as torch.optim's LBFGS(max_iter=1) and Adam."""

import subprocess
import sys

import pytest
import torch

from pastiche.optim import LBFGS, Adam


def _problem():
    """A badly conditioned smooth function of a (1, 3, 5, 4) 'image', like a style loss."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(60, 60, generator=g) / 8
    target = torch.rand(1, 3, 5, 4, generator=g) * 255

    def loss(x):
        d = (x - target).reshape(-1)
        return (a @ d).pow(2).sum() + 1e-3 * d.pow(4).sum()

    return loss, target.mean() * torch.ones(1, 3, 5, 4)


def _run(make, steps):
    loss_fn, start = _problem()
    x = start.clone().requires_grad_()
    optimizer = make(x)
    losses = []

    def closure():
        x.grad = None
        value = loss_fn(x)
        value.backward()
        return value

    for _ in range(steps):
        loss = optimizer.step(closure)  # ours: a float; torch's: a tensor
        losses.append(float(loss.detach() if torch.is_tensor(loss) else loss))
    return x.detach(), losses


@pytest.mark.parametrize("history", [3, 100])
def test_lbfgs_matches_torch(history):
    ours, our_losses = _run(lambda x: LBFGS(x, lr=1.0, history=history), 25)
    theirs, their_losses = _run(lambda x: torch.optim.LBFGS([x], lr=1.0, max_iter=1, history_size=history), 25)
    # the same iterates up to float32 rounding, which grows as the loss nears its minimum (ours
    # sums the recursion's inner products in another order: 1.05e-4 apart at step 15 on one CPU)
    assert our_losses[:15] == pytest.approx(their_losses[:15], rel=1e-3)
    assert our_losses == pytest.approx(their_losses, rel=1e-2)
    assert torch.allclose(ours, theirs, rtol=1e-3, atol=1e-2)
    assert our_losses[-1] < 1e-3 * our_losses[0]  # and it optimises


@pytest.mark.parametrize("widen_values", [1 << 20, 30])  # one column block / blocks of 5 (history 3)
def test_bfloat16_pairs_are_the_float32_recursion_on_rounded_pairs(monkeypatch, widen_values):
    """pair_dtype=bfloat16 keeps the ring in bfloat16 (half the memory) and sums in float32, a
    few columns at a time: the iterates of an L-BFGS whose float32 pairs are rounded to
    bfloat16 as they are kept, up to the order of the sums."""
    import pastiche.optim as optim

    class Rounded(LBFGS):  # float32 ring, its pairs rounded to bfloat16 as they arrive
        def _update(self, products):
            result = super()._update(products)
            self.ring[: 2 * self.filled] = self.ring[: 2 * self.filled].bfloat16().float()
            return result

    monkeypatch.setattr(optim, "_WIDEN_VALUES", widen_values)
    narrow = []
    ours, our_losses = _run(lambda x: narrow.append(LBFGS(x, history=3, pair_dtype=torch.bfloat16)) or narrow[0], 25)
    theirs, their_losses = _run(lambda x: Rounded(x, history=3), 25)
    assert narrow[0].ring.dtype == torch.bfloat16 and narrow[0].vectors.dtype == torch.float32
    if widen_values == 30:
        assert len(list(narrow[0]._widened(6))) == 12  # 60 values in blocks of 30 // 6 = 5 columns
    # the same up to the order of the sums, whose float32 rounding grows near the minimum (in
    # blocks of 5 columns: 3.2e-4 apart at step 15 on an AVX-512 Xeon, session 30)
    assert our_losses[:10] == pytest.approx(their_losses[:10], rel=1e-4)
    assert our_losses[:15] == pytest.approx(their_losses[:15], rel=1e-3)
    assert our_losses[-1] < 1e-3 * our_losses[0]  # and it optimises
    float32_losses = _run(lambda x: LBFGS(x, history=3), 25)[1]
    assert our_losses[5:15] != pytest.approx(float32_losses[5:15], rel=1e-6)  # the rounding shows


def test_adam_matches_torch():
    """Exactly, as the module says: the denominator in torch's order, sqrt(v) / sqrt(1 - b2^t)
    (sqrt(v / (1 - b2^t)) differed in the last bit for about half the values)."""
    ours, our_losses = _run(lambda x: Adam(x, lr=2.0), 30)
    for foreach in (None, False):
        theirs, their_losses = _run(lambda x: torch.optim.Adam([x], lr=2.0, foreach=foreach), 30)
        assert our_losses == their_losses and torch.equal(ours, theirs)
    assert our_losses[-1] < our_losses[0]


def test_lbfgs_stops_at_an_optimum_and_starts_afresh_when_it_can_move():
    x = torch.zeros(4, requires_grad=True)
    target = [0.0]
    optimizer = LBFGS(x)

    def closure():
        x.grad = None
        value = (x - target[0]).pow(2).sum()
        value.backward()
        return value

    optimizer.step(closure)
    assert torch.equal(x.detach(), torch.zeros(4))  # zero gradient: nothing moves
    target[0] = 1.0
    optimizer.step(closure)
    # its first move, as torch's: steepest descent, gradient -2 everywhere scaled to unit L1 norm
    assert torch.allclose(x.detach(), torch.full((4,), 0.25))


def test_a_style_transfer_never_imports_dynamo():
    """torch.optim's optimisers import torch._dynamo (~200 MB); the engine must not."""
    code = ("import sys, numpy as np, pastiche;"
            "pastiche.transfer(np.full((40, 40, 3), 0.5, np.float32), np.random.rand(40, 40, 3).astype(np.float32),"
            " size=40, num_steps=2, coarse_steps=(), device='cpu');"
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_lbfgs_with_a_known_scale_takes_a_scaled_first_step():
    """A coarser level's inverse-Hessian scale makes the first step -lr * scale * g, where a
    fresh L-BFGS (as torch's) moves at most a unit L1 length; later steps use pairs as usual."""
    x = torch.zeros(4, requires_grad=True)

    def closure():
        x.grad = None
        value = (x - 1).pow(2).sum()
        value.backward()
        return value

    optimizer = LBFGS(x, lr=0.5, scale=0.4)
    optimizer.step(closure)  # gradient -2 everywhere
    assert torch.allclose(x.detach(), torch.full((4,), 0.4))
    assert optimizer.step(closure) == pytest.approx(4 * 0.6 ** 2)
    assert optimizer.order and optimizer.scale == pytest.approx(0.5)  # s . y / y . y of 2 (x - 1)


def test_lbfgs_probe_moves_the_steepest_pixel_by_lr_times_probe():
    """Without a known scale, ``probe`` sets the first step's largest move; a known scale wins."""
    x = torch.zeros(4, requires_grad=True)

    def closure():
        x.grad = None
        value = ((x - 1) * torch.tensor([1.0, 2.0, 4.0, 8.0])).pow(2).sum()
        value.backward()
        return value

    LBFGS(x, lr=0.5, probe=0.1).step(closure)  # gradient -2 * (1, 4, 16, 64)
    assert torch.allclose(x.detach(), 0.05 * torch.tensor([1, 4, 16, 64]) / 64)
    x.data.zero_()
    LBFGS(x, lr=0.5, probe=0.1, scale=0.01).step(closure)
    assert torch.allclose(x.detach(), 0.005 * 2 * torch.tensor([1.0, 4, 16, 64]))
