"""The two optimisers the engine offers, for one image tensor: L-BFGS and Adam.

They compute exactly what ``torch.optim.LBFGS(max_iter=1)`` (with pairs kept in float32) and
``torch.optim.Adam`` compute for a single parameter (tests compare them step by step), written out
here because creating any ``torch.optim`` optimiser imports ``torch._dynamo`` (with sympy and
triton): ~200 MB of resident memory and over a second of start-up for nothing a style transfer uses.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np
import torch

Closure = Callable[[], torch.Tensor]  # zeroes the gradient, returns the loss after backward()
# values of a narrower ring widened at a time (2 MB of float32)
_WIDEN_VALUES = 1 << 19


class LBFGS:
    """L-BFGS without line search, one loss evaluation per :meth:`step` (pastiche 1.6.0 used
    ``torch.optim.LBFGS(max_iter=1, lr=1)``, with its default tolerances). ``history`` pairs of
    image-sized vectors are kept. ``scale`` is the initial inverse Hessian's scale where it is
    known (a coarser level's, see StyleTransfer.resize): the first step is then ``-lr * scale * g``
    instead of torch's steepest descent of unit L1 length at most, which on a style loss barely
    moves. Without a known scale, ``probe`` makes the first step move the pixel of the largest
    gradient by ``lr * probe`` instead: for a gradient with rounding noise (bfloat16 convolutions),
    where torch's step changes the gradient less than its rounding does, so that the first pair
    teaches L-BFGS a false curvature.

    The two-loop recursion runs on the host, over coefficients: every vector it makes is the
    gradient plus a combination of the kept pairs, so it needs only inner products — among the
    pairs (kept on the host, float64, each computed once, when its pair arrives) and with the
    gradient. Per step the device makes those numbers in one matrix product, sends them in the
    step's one read, and makes the direction in one more: a handful of kernels where torch's
    recursion launches ~4 per kept pair and waits for 2 of them (a GPU idles through those).

    Its image-sized vectors live in buffers allocated once, at the first move: tensors that
    outlive a step, allocated anew on every step between the feature maps, would scatter the
    heap and keep the maps' freed memory from being reused (benchmarks/PERFORMANCE.md).
    ``pair_dtype`` (default: the image's) stores the kept pairs narrower: bfloat16 halves the
    history, its largest memory (20 pairs of float32: 0.47 KB per pixel); the pairs' inner
    products and the direction are still summed in the image's dtype, a few columns at a time.
    """

    def __init__(self, param: torch.Tensor, *, lr: float = 1.0, history: int = 100,
                 scale: Optional[float] = None, probe: Optional[float] = None, tolerance_grad: float = 1e-7,
                 tolerance_change: float = 1e-9, pair_dtype: Optional[torch.dtype] = None):
        self.param, self.lr, self.history, self.probe = param, lr, history, probe
        self.pair_dtype = pair_dtype or param.dtype
        self.tolerance_grad, self.tolerance_change = tolerance_grad, tolerance_change
        # (3, N) float32: this step's s = x_k - x_(k-1), y = g_k - g_(k-1) and g_k (kept for the
        # next y). (2 * history, N) pair_dtype: a ring of slots, slot i's pair in rows 2i, 2i + 1.
        self.vectors: Optional[torch.Tensor] = None
        self.ring: Optional[torch.Tensor] = None
        self.wide: Optional[torch.Tensor] = None  # (2 * history, W): a block of the ring, widened
        self.direction: Optional[torch.Tensor] = None  # (N,)
        self.filled = 0  # ring slots written so far; they fill from slot 0
        self.dots = np.zeros((2 * history, 2 * history))  # inner products of the ring's rows
        self.order: List[int] = []  # slots of the kept pairs, oldest first
        self.rho: List[float] = []  # 1 / (y_i . s_i), per kept pair
        self.t = 0.0
        self.known_scale = scale is not None
        self.scale = 1.0 if scale is None else scale  # the initial inverse Hessian is scale * I

    @torch.no_grad()
    def step(self, closure: Closure) -> float:
        """Evaluate ``closure`` at the current image and move it; returns the loss evaluated."""
        with torch.enable_grad():
            loss = closure()
        grad = self.param.grad.reshape(-1)
        magnitude = grad.abs()
        if self.vectors is None:
            products = magnitude.sum()
        else:
            s, y, previous = self.vectors[:3]
            torch.mul(self.direction, self.t, out=s)
            torch.sub(grad, previous, out=y)
            previous.copy_(grad)
            # every row's inner products with s, y and g: (3 + 2 * filled, 3)
            products = self._products()
        # The step's only read from the device: every decision on the host uses these numbers.
        loss_value, grad_max, *numbers = torch.cat([loss.detach().reshape(1), magnitude.max().reshape(1),
                                                    products.reshape(-1)]).tolist()
        if not math.isfinite(loss_value):
            return loss_value  # no move: the caller decides what to keep
        if not all(map(math.isfinite, numbers)):  # a finite loss, but a step or gradient past float32's range
            raise FloatingPointError("L-BFGS's inner products overflowed")
        if grad_max <= self.tolerance_grad:
            # optimal already (row 2 now holds this gradient where torch keeps the one before:
            # the two differ only after such a step, which a style loss does not reach)
            return loss_value
        if self.vectors is None:  # first step: steepest descent, scaled or at most of unit L1 length
            self.vectors = grad.new_empty(3, grad.numel())
            self.ring = grad.new_empty(2 * self.history, grad.numel(), dtype=self.pair_dtype)
            self.vectors[2].copy_(grad)
            self.direction = torch.neg(grad)
            first = (self.scale if self.known_scale else self.probe / grad_max if self.probe
                     else min(1.0, 1.0 / numbers[0]))
            t, descent = first * self.lr, True
        else:
            grad_dots, gg = self._update(np.reshape(numbers, (-1, 3)))
            g_coef, coefs = self._two_loop(grad_dots)
            self._direction(g_coef, torch.tensor(coefs, dtype=grad.dtype).to(grad.device))
            t, descent = self.lr, g_coef * gg + grad_dots @ coefs <= -self.tolerance_change
        self.t = t  # the direction is kept even without a move, as torch does
        # Move only along a descent direction (torch stops otherwise: no progress is possible).
        if descent:
            self.param.add_(self.direction.view_as(self.param), alpha=t)
        return loss_value

    def _widened(self, count: int) -> Iterator[Tuple[slice, torch.Tensor]]:
        """(columns, the first ``count`` kept rows over them in the image's dtype), block by
        block. A narrower ring is widened a block at a time (at most _WIDEN_VALUES values) into
        a buffer kept with it: a new one would be faulted in on every step."""
        ring = self.ring[:count]
        if ring.dtype == self.vectors.dtype:
            yield slice(None), ring
            return
        width = max(1, _WIDEN_VALUES // (2 * self.history))
        if self.wide is None:
            self.wide = self.vectors.new_empty(2 * self.history, width)
        for start in range(0, ring.shape[1], width):
            part = ring[:, start: start + width]
            yield slice(start, start + width), self.wide[:count, : part.shape[1]].copy_(part)

    def _products(self) -> torch.Tensor:
        """Inner products of s, y, g and the kept rows with s, y and g: (3 + 2 * filled, 3)."""
        rows = self.vectors
        kept = rows.new_zeros(3, 2 * self.filled)
        # rows @ ringᵀ, transposed afterwards: 0.40 against 0.53 ms for ring @ rowsᵀ at 1024 px
        # on an H100 (cuBLAS's kernel choice; session 11, one product over float32 rows)
        for columns, ring in self._widened(2 * self.filled):
            kept.addmm_(rows[:, columns], ring.T)
        return torch.cat([rows @ rows.T, kept.T])

    def _direction(self, g_coef: float, coefs: torch.Tensor) -> None:
        """direction = g_coef * g + coefs @ the kept rows (``coefs`` on the device)."""
        torch.mul(self.vectors[2], g_coef, out=self.direction)
        for columns, ring in self._widened(len(coefs)):
            self.direction[columns].addmv_(ring.T, coefs)

    def _update(self, products: np.ndarray) -> Tuple[np.ndarray, float]:
        """Keep this step's pair if its curvature is positive (copied into the ring, its inner
        products into ``dots``); return the ring rows' inner products with g, and g . g.
        ``products`` row r holds row r's inner products with s, y and g."""
        ring = products[3:]  # the ring's rows before this step
        grad_dots = np.zeros(2 * self.filled + 2)
        grad_dots[: len(ring)] = ring[:, 2]
        ys, yy = products[1, 0], products[1, 1]
        if ys > 1e-10:  # keep the pair only where curvature is positive
            if len(self.order) == self.history:  # full: the oldest pair's slot takes it
                slot = self.order.pop(0)
                del self.rho[0]
            else:
                slot, self.filled = self.filled, self.filled + 1
            self.ring[2 * slot: 2 * slot + 2].copy_(self.vectors[:2])
            pair = slice(2 * slot, 2 * slot + 2)
            self.dots[pair, : len(ring)] = ring[:, :2].T
            self.dots[: len(ring), pair] = ring[:, :2]
            self.dots[pair, pair] = products[:2, :2]  # the pair with itself (the slot held another)
            grad_dots[pair] = products[:2, 2]
            self.order.append(slot)
            self.rho.append(1.0 / ys)
            self.scale = ys / yy
        return grad_dots[: 2 * self.filled], products[2, 2]

    def _two_loop(self, grad_dots: np.ndarray) -> Tuple[float, np.ndarray]:
        """-H g by the two-loop recursion, as ``(g_coef, coefs)``: the result is ``g_coef``
        times g plus ``coefs`` (one per ring row) times the ring's rows. ``grad_dots`` holds the
        ring rows' inner products with g."""
        dots = self.dots[: len(grad_dots), : len(grad_dots)]
        g_coef, coefs = -1.0, np.zeros(len(grad_dots))  # q = -g

        def inner(row: int) -> float:  # row . q
            return g_coef * grad_dots[row] + dots[row] @ coefs

        alphas = []
        for slot, rho in zip(reversed(self.order), reversed(self.rho)):
            alpha = inner(2 * slot) * rho  # s . q * rho
            coefs[2 * slot + 1] -= alpha  # q -= alpha * y
            alphas.append(alpha)
        g_coef, coefs = g_coef * self.scale, coefs * self.scale
        for slot, rho, alpha in zip(self.order, self.rho, reversed(alphas)):
            coefs[2 * slot] += alpha - inner(2 * slot + 1) * rho  # q += (alpha - beta) * s
        return g_coef, coefs


class Adam:
    """Adam (Kingma & Ba) with torch's defaults: betas (0.9, 0.999), eps 1e-8."""

    def __init__(self, param: torch.Tensor, *, lr: float = 1.0, betas=(0.9, 0.999), eps: float = 1e-8):
        self.param, self.lr, self.betas, self.eps = param, lr, betas, eps
        self.mean = torch.zeros_like(param)
        self.square = torch.zeros_like(param)
        self.count = 0

    @torch.no_grad()
    def step(self, closure: Closure) -> float:
        """Evaluate ``closure`` at the current image and move it; returns the loss evaluated
        (the step's one read from the device)."""
        with torch.enable_grad():
            loss = closure()
        grad, (b1, b2) = self.param.grad, self.betas
        self.count += 1
        step = -self.lr / (1 - b1 ** self.count)  # the bias correction makes it 10 lr at first
        if abs(step) > torch.finfo(self.param.dtype).max:  # torch would refuse to scale by it
            raise FloatingPointError("Adam's step size overflowed the image's dtype")
        self.mean.lerp_(grad, 1 - b1)
        self.square.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denominator = self.square.sqrt().div_((1 - b2 ** self.count) ** 0.5).add_(self.eps)  # torch's order
        self.param.addcdiv_(self.mean, denominator, value=step)
        return float(loss)
