"""VGG19's frozen 3x3 convolutions (stride 1, padding 1) on the CPU, and their input gradients.

Style transfer differentiates with respect to the image only, so a convolution needs no weight
gradient and keeps nothing for backward: the input gradient of a 3x3 convolution is the same
convolution with the kernel transposed (in <-> out) and flipped. Which algorithm runs depends on
the map (timings on 2 cores, benchmarks/PERFORMANCE.md):

- NNPACK (Winograd F(6x6, 3x3)) for most maps: 2-2.5x faster than oneDNN on VGG's layers. It
  transforms the kernel on every call, a fixed ~14 ms for 512x512 channels.
- F(2x2, 3x3) Winograd in torch ops with the kernel transformed once and kept (16/9 of the
  kernel's memory) for maps of ``WINOGRAD_MIN_PIXELS`` to ``WINOGRAD_MAX_PIXELS``: there NNPACK's
  per-call transform is most of its time (block4 of a 256 px image: 13 instead of 19 ms a call).
- oneDNN for bfloat16 and channels-last maps (see :func:`pastiche.devices.compute_dtype`),
  forward and input gradient alike: on a CPU with bfloat16 arithmetic 2x faster than any float32
  algorithm. On an Intel CPU with AVX-512 float32 maps are channels-last too
  (:func:`pastiche.devices.onednn_float32`): there oneDNN's float32 kernels beat NNPACK's AVX2
  ones and the cached-kernel Winograd alike (not on AMD's Zen 4). The kernels are kept in
  oneDNN's own layout: reordering them at every call costs 2-6 ms a step over VGG19 up to
  block5_conv1 at any size, a quarter of a 64x48 px step. Except bfloat16 kernels on images of
  more than ``PACK_MAX_PIXELS``: there the reorders are 2-3 % of a step, and the kept copies
  (49 MB) had raised a 256x192 px run's peak RSS by 30-60 MB (benchmarks/PERFORMANCE.md).
- torch's own convolution for tiny maps, other devices and dtypes, and without NNPACK.
"""

from __future__ import annotations

import sys
import threading
from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

# Asking whether NNPACK is available also initialises it: calls fail before.
_NNPACK = bool(getattr(torch, "_nnpack_available", lambda: False)())
# Below this many pixels a map goes to torch's convolution (oneDNN), unless the cached-kernel
# Winograd takes it (WINOGRAD_MIN_PIXELS): NNPACK's fixed cost per call would not pay.
_NNPACK_MIN_PIXELS = 256
# ... and NNPACK is slower than oneDNN at producing few channels: the image gradient (64 → 3
# channels) takes 10 ms by NNPACK and 3.5 ms by oneDNN at 256x192 px (57 and 41 ms at 577x433).
_NNPACK_MIN_CHANNELS = 16
# NNPACK's workspace is ~4x the output of a call and torch keeps the largest one for the life of
# the process (228 MB for block1 at 500^2 px). Calls on bigger maps go in strips of rows whose
# input and output each hold at most this many values (~30 MB of workspace), at the same speed.
_NNPACK_STRIP_VALUES = 1 << 21
# Maps of at most this many pixels use the cached-kernel Winograd below (512x512 channels: 13 vs
# 19 ms at 24x32 px, 20 vs 23 ms at 32x40, a loss from ~36x48 on).
WINOGRAD_MAX_PIXELS = 1024
# ... and of at least this many, for which it beats torch's convolution, NNPACK's minimum
# notwithstanding: forward and input gradient of 512x512 channels at 12x16 px (block5 of a 256 px
# image) 10.3 against 18.5 ms, at 12x12 10.8 against 14.1; at 6x8 8.6 against 6.3 (an AVX2 EPYC,
# 2 cores, session 29).
WINOGRAD_MIN_PIXELS = 144
# oneDNN's convolution on a kernel already in its layout (what torch.compile's CPU backend calls)
_ONEDNN_PACKED = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
# Bfloat16 kernels stay in oneDNN's layout only for images of at most this many pixels (see the
# module's notes and VGG19.clear_cache).
PACK_MAX_PIXELS = 128 * 128


def _pack(kernel: torch.Tensor) -> torch.Tensor:
    """(out, in, 3, 3) kernel → the same in oneDNN's layout for a stride-1, padding-1 convolution
    (the layout does not depend on the map's size: measured identical and as fast from 3x4 to
    96x128 px)."""
    return torch.ops.mkldnn._reorder_convolution_weight(kernel, [1, 1], [1, 1], [1, 1], 1, [1, kernel.shape[1], 8, 8])


def _packed_conv(x: torch.Tensor, packed: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    return torch.ops.mkldnn._convolution_pointwise(x, packed, bias, [1, 1], [1, 1], [1, 1], 1, "none", [], "")


def _nnpack_conv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """3x3 convolution, stride 1, padding 1, of (1, C, H, W) ``x`` by NNPACK, in strips of rows."""
    x = x.contiguous()
    height, width = x.shape[2:]
    rows = max(1, _NNPACK_STRIP_VALUES // (max(weight.shape[:2]) * width))  # input or output side
    if rows >= height:
        return torch._nnpack_spatial_convolution(x, weight, bias, [1, 1])
    out = x.new_empty(1, weight.shape[0], height, width)
    for top in range(0, height, rows):
        bottom = min(top + rows, height)
        first = max(top - 1, 0)  # one row of context each side; the zero padding NNPACK adds
        strip = x[:, :, first:min(bottom + 1, height)]  # at inner edges lands in discarded rows
        result = torch._nnpack_spatial_convolution(strip.contiguous(), weight, bias, [1, 1])
        out[:, :, top:bottom] = result[:, :, top - first:top - first + bottom - top]
    return out


# F(2x2, 3x3) Winograd (Lavin & Gray, 2016): a 4x4 input tile d and a 3x3 kernel g give the 2x2
# output tile  Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A.  Over channels the ⊙ becomes 16 matrix products
# U[ξ] @ V[ξ], one per position ξ of the 4x4 transformed tile: U = G g Gᵀ is (16, out, in).
_BT = torch.tensor([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=torch.float32)
_G = torch.tensor([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], dtype=torch.float32)
_AT = torch.tensor([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=torch.float32)
_TILE_IN = torch.kron(_BT, _BT)  # (16, 16): flattened 4x4 input tile → transformed tile
_TILE_OUT = torch.kron(_AT, _AT)  # (4, 16): transformed tile → flattened 2x2 output tile
_KERNEL_IN = torch.kron(_G, _G)  # (16, 9): flattened 3x3 kernel → transformed kernel
# A flipped kernel's transform is the original's with rows/columns 0 and 3 swapped (G J = P G),
# so the input gradient reuses U, transposed, with inputs and outputs of the products permuted.
_SWAP = torch.tensor([3, 1, 2, 0])
_FLIP = (_SWAP.view(4, 1) * 4 + _SWAP.view(1, 4)).flatten()  # on the 16 flattened positions
_TILE_IN_FLIPPED, _TILE_OUT_FLIPPED = _TILE_IN[_FLIP], _TILE_OUT[:, _FLIP]


def winograd_kernel(weight: torch.Tensor) -> torch.Tensor:
    """(out, in, 3, 3) kernel → its (16, out, in) F(2x2, 3x3) transform U."""
    # U[a*4+b] = sum_ij G[a,i] g[i,j] G[b,j]: one product by kron(G, G) (16, 9) on the kernel seen
    # as (out*in, 9), 2.6 instead of 11-18 ms by einsum for 512x512 channels (2 cores)
    return torch.mm(_KERNEL_IN.to(weight), weight.reshape(-1, 9).t()).view(16, *weight.shape[:2])


def winograd_conv(x: torch.Tensor, u: torch.Tensor, bias: Optional[torch.Tensor] = None, *,
                  transposed: bool = False) -> torch.Tensor:
    """3x3 convolution, padding 1, of (1, C, H, W) ``x`` given the kernel's transform ``u``
    (16, out, in). ``transposed``: convolve with the kernel transposed and flipped instead, i.e.
    the input gradient of the convolution whose output gradient is ``x`` (``u`` unchanged)."""
    _, channels, height, width = x.shape
    th, tw = -(-height // 2), -(-width // 2)  # 2x2 output tiles down and across
    tile_in, tile_out = (_TILE_IN_FLIPPED, _TILE_OUT_FLIPPED) if transposed else (_TILE_IN, _TILE_OUT)
    products = u.transpose(1, 2) if transposed else u  # (16, out', in')
    padded = F.pad(x, (1, 2 * tw + 1 - width, 1, 2 * th + 1 - height))  # (1, C, 2th+2, 2tw+2)
    tiles = padded.unfold(2, 4, 2).unfold(3, 4, 2)  # (1, C, th, tw, 4, 4), overlapping by 2
    tiles = tiles[0].permute(3, 4, 0, 1, 2).reshape(16, channels * th * tw)
    v = (tile_in.to(x) @ tiles).view(16, channels, th * tw)  # transformed input tiles
    m = torch.bmm(products, v)  # (16, out', tiles)
    out_channels = m.shape[1]
    y = (tile_out.to(x) @ m.view(16, -1)).view(2, 2, out_channels, th, tw)
    y = y.permute(2, 3, 0, 4, 1).reshape(1, out_channels, 2 * th, 2 * tw)[:, :, :height, :width]
    return y + bias.view(1, -1, 1, 1) if bias is not None else y.contiguous()


_INDEX_CHUNK = 1 << 18  # int32 indices widened at a time (1 MB)
_buffers = threading.local()  # per thread: two jobs in two threads must not share them
# Two centroids side by side as one integer, by a centroid's size in bytes (bfloat16, float32).
_PAIR_DTYPES = {2: torch.int32, 4: torch.int64}
_SAME_SIZE_INT = {2: torch.int16, 4: torch.int32}


def _kept_buffer(role: str, numel: int, dtype: torch.dtype) -> torch.Tensor:
    """A (numel,) CPU buffer for ``role`` kept for this thread, grown to the largest asked for;
    its contents last until the next call for the same role."""
    kept = _buffers.__dict__.setdefault("kept", {})
    key = role, dtype
    if key not in kept or len(kept[key]) < numel:
        kept[key] = torch.empty(numel, dtype=dtype)
    return kept[key][:numel]


def _lookup(table: torch.Tensor, codes: torch.Tensor, out: torch.Tensor, mask: int = 0) -> None:
    """out[i] = table[codes[i] (& mask)] for (n,) integer ``codes``, widened to int32 a chunk at
    a time into a kept buffer (index_select takes int32 or int64 indices only)."""
    chunk = min(_INDEX_CHUNK, len(codes))
    scratch = _kept_buffer("indices", chunk, torch.int32)
    for start in range(0, len(codes), chunk):
        part = scratch[: len(codes) - start].copy_(codes[start: start + chunk])
        if mask:
            part.bitwise_and_(mask)
        torch.index_select(table, 0, part, out=out[start: start + len(part)])


def _pair_table(centroids: torch.Tensor) -> torch.Tensor:
    """(65536,) kept table whose entry lo + 256 hi holds centroids[lo] then centroids[hi] in
    memory, as one integer twice a centroid's width (little-endian)."""
    size = centroids.element_size()
    wide, bits = _PAIR_DTYPES[size], 8 * size
    codes = torch.zeros(256, dtype=wide)
    codes[: len(centroids)] = centroids.view(_SAME_SIZE_INT[size]).to(wide) & ((1 << bits) - 1)
    table = _kept_buffer("pairs", 1 << 16, wide).view(256, 256)
    torch.bitwise_or(codes.view(256, 1) << bits, codes.view(1, 256), out=table)
    return table.view(-1)


def decode(indices: torch.Tensor, centroids: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out`` (n,) = ``centroids`` (K ≤ 256,) at the (n,) uint8 ``indices``, on the CPU.

    Two indices at a time where it can: read as one little-endian uint16, a pair of indices picks
    a pair of centroids from a 65536-entry table (256 KB for bfloat16, in L2), so the lookup runs
    half as many times (2.4 M bfloat16 weights: ~1.0 instead of ~1.5 ms, one core does it)."""
    n, size = len(indices), centroids.element_size()
    pairs = (size in _PAIR_DTYPES and len(centroids) <= 256 and sys.byteorder == "little"
             and indices.storage_offset() % 2 == 0 and out.storage_offset() % 2 == 0)
    done = n - n % 2 if pairs else 0
    if done:
        _lookup(_pair_table(centroids), indices[:done].view(torch.int16), out[:done].view(_PAIR_DTYPES[size]),
                mask=0xFFFF)  # int16 sign-extends: the mask makes it the uint16 lo + 256 hi
    if done < n:
        _lookup(centroids, indices[done:], out[done:])
    return out


class _FrozenConv3x3(torch.autograd.Function):
    """A :class:`Conv3x3` in autograd: no weight gradient, and no activation saved for backward,
    since the input gradient needs only the kernel (see :meth:`Conv3x3.input_grad`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, conv: "Conv3x3") -> torch.Tensor:
        ctx.conv, ctx.input_shape = conv, x.shape
        return conv.convolve(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return ctx.conv.input_grad(grad, ctx.input_shape), None


class Conv3x3(nn.Module):
    """A frozen 3x3 convolution, padding 1. Unlike nn.Conv2d it takes its tensors as given, so
    building VGG19 spends no time on random initialisation of 20 M weights.

    ``weight`` is the (out, in, 3, 3) kernel, or, with ``centroids`` (K,), its uint8 codebook
    indices (kept as ``indices``): a quarter of the memory, and no transformed
    copies kept, for a table lookup at each use (:func:`decode`; a pass over the 13 M weights up
    to block5_conv1 takes 6.5 ms into the kept buffers of :meth:`kernel`, 2 cores). A compact
    convolution never takes the cached-kernel Winograd (a transform per call would cost more than
    NNPACK's), so on small maps its results differ from the float kernel's by rounding. The
    kernel (or centroids) and ``bias`` are float32, or bfloat16 for bfloat16 inputs.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, *, centroids: Optional[torch.Tensor] = None):
        super().__init__()
        compact = centroids is not None
        self.in_channels = weight.shape[1]
        self.weight = None if compact else nn.Parameter(weight, requires_grad=False)  # (out, in, 3, 3)
        if compact and not weight.is_contiguous(memory_format=torch.channels_last):
            weight = weight.contiguous()  # dense, so that kernel() can read it in memory order
        self.register_buffer("indices", weight if compact else None)  # (out, in, 3, 3) uint8
        self.register_buffer("centroids", centroids)  # (K,)
        self.bias = nn.Parameter(bias, requires_grad=False)  # (out,)
        self._winograd: Optional[torch.Tensor] = None  # (16, out, in): the kept transform
        self._packed: Optional[Tuple[torch.Tensor, torch.Tensor]] = None  # kernel and kernel_t, oneDNN's
        self.pack_bfloat16 = True  # whether bfloat16 kernels get _packed (see clear_cache)

    def __getstate__(self) -> dict:
        """Copies and pickles leave the kept transforms out (oneDNN's packed kernels cannot be
        copied); each is made again at its next use."""
        return {**self.__dict__, "_winograd": None, "_packed": None}

    def clear_cache(self, *, pack_bfloat16: bool = True) -> None:
        """Forget the Winograd transform (rebuilt at the next use): a new image size may not need
        it. The oneDNN-packed kernels stay, since every size uses them in the same layout, unless
        ``pack_bfloat16`` is false for a bfloat16 kernel: then they go, and are not made again
        until a call with it true."""
        self._winograd = None
        self.pack_bfloat16 = pack_bfloat16
        if not self._keeps_packed():
            self._packed = None

    def kernel(self, *, reuse: bool = False) -> torch.Tensor:
        """The (out, in, 3, 3) kernel. ``reuse``: a compact one on the CPU is decoded into a
        buffer kept for this thread, valid until the next such call; for uses within a
        convolution, not for autograd to keep."""
        if self.indices is None:
            return self.weight
        # index_select with int32 indices (decode): torch.take, which needs int64 ones, took 17 ms
        # for block4's 2.4 M weights and twice the temporary memory (2 cores, torch 2.14). The
        # indices are decoded in memory order and the kernel given their strides: they are
        # stored in the maps' layout (channels-last for oneDNN's bfloat16, see vgg19), for which
        # the convolution would otherwise copy the whole kernel at every call.
        flat = self.indices.as_strided((self.indices.numel(),), (1,))
        shape, strides = self.indices.shape, self.indices.stride()
        # A GPU: new memory is cheap there, and a CUDA graph would go on writing to a kept buffer
        # replaced since its capture.
        if flat.device.type != "cpu":
            return torch.index_select(self.centroids, 0, flat.int()).as_strided(shape, strides)
        # On the CPU the indices are widened a chunk at a time into a kept buffer, and the kernel
        # decoded into another: new memory for them, each page faulted in, was 156 MB per step
        # (int32 104 MB of it) at any size, a quarter of a --low-memory step at 256x192 px.
        kernel = (_kept_buffer("kernel", len(flat), self.centroids.dtype) if reuse
                  else self.centroids.new_empty(flat.shape))
        return decode(flat, self.centroids, kernel).as_strided(shape, strides)

    def kernel_t(self) -> torch.Tensor:
        """The kernel of the input gradient, (in, out, 3, 3): for stride 1 and padding 1 that
        gradient is the same convolution with the kernel transposed and flipped. Made at each
        use, not kept: 8 ms per step over all of VGG19's kernels up to block5_conv1, where a kept
        copy would hold 42 MB at 500² px."""
        return self.kernel(reuse=True).transpose(0, 1).flip(2, 3).contiguous()

    def _winograd_kernel(self) -> torch.Tensor:
        """The kernel's (16, out, in) transform, made at the first use and kept (float kernels
        only: compact ones never take this path)."""
        if self._winograd is None or self._winograd.device != self.weight.device:
            self._winograd = winograd_kernel(self.weight)
        return self._winograd

    def _keeps_packed(self) -> bool:
        """Whether this kernel is kept in oneDNN's layout: a float one, bfloat16 only with
        ``pack_bfloat16`` (compact kernels are rebuilt at each use anyway)."""
        return self.indices is None and (self.pack_bfloat16 or self.weight.dtype != torch.bfloat16)

    def _packed_kernels(self) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """The kernel and :meth:`kernel_t` in oneDNN's layout, made at the first use and kept for
        every size; None for compact kernels (rebuilt at each use anyway), bfloat16 ones without
        ``pack_bfloat16``, or where torch lacks the ops."""
        if self._packed is None and _ONEDNN_PACKED and self._keeps_packed():
            self._packed = _pack(self.weight), _pack(self.kernel_t())
        return self._packed

    def _algorithm(self, x: torch.Tensor) -> str:
        # bfloat16 maps, and a bfloat16 model's float32 channels-last ones: its image into the
        # first convolution (vgg._layout) and the gradient handed back to that convolution (2 ms at
        # 256x192 px where conv2d_input took 9.6)
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        if x.device.type == "cpu" and (x.dtype == torch.bfloat16 or channels_last):
            return "onednn"
        pixels = x.shape[-1] * x.shape[-2]
        # NNPACK strips and the Winograd tiles are written for one image (batch 1)
        if x.device.type != "cpu" or x.dtype != torch.float32 or x.shape[0] != 1:
            return "torch"
        if WINOGRAD_MIN_PIXELS <= pixels <= WINOGRAD_MAX_PIXELS and self.indices is None:  # compact: no kept transform
            return "winograd"
        return "nnpack" if _NNPACK and pixels >= _NNPACK_MIN_PIXELS else "torch"

    def convolve(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution of (1, in, H, W) ``x`` by the fastest algorithm for its size."""
        algorithm = self._algorithm(x)
        if algorithm == "winograd":
            return winograd_conv(x, self._winograd_kernel(), self.bias)
        if algorithm == "nnpack":
            return _nnpack_conv(x, self.kernel(reuse=True), self.bias)
        packed = self._packed_kernels() if algorithm == "onednn" else None
        if packed:
            return _packed_conv(x, packed[0], self.bias)
        return F.conv2d(x, self.kernel(reuse=True), self.bias, padding=1)  # never under autograd

    def input_grad(self, grad: torch.Tensor, input_shape: torch.Size) -> torch.Tensor:
        """Gradient with respect to the input (``input_shape``) given ``grad`` at the output."""
        algorithm = self._algorithm(grad)
        if algorithm == "winograd":
            return winograd_conv(grad, self._winograd_kernel(), transposed=True)
        if algorithm == "nnpack" and self.in_channels >= _NNPACK_MIN_CHANNELS:
            return _nnpack_conv(grad, self.kernel_t(), None)
        if algorithm == "onednn":
            packed = self._packed_kernels()
            # a compact kernel: the transposed convolution takes it as it is, where conv2d would
            # take kernel_t, a transposed and flipped copy (4.2 instead of 5.1 ms for block4 of a
            # 256 px image, bfloat16, 2 cores; the same values)
            return (_packed_conv(grad, packed[1], None) if packed
                    else F.conv_transpose2d(grad, self.kernel(reuse=True), padding=1))
        return torch.nn.grad.conv2d_input(input_shape, self.kernel(reuse=True), grad, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._algorithm(x) == "torch":
            return F.conv2d(x, self.kernel(), self.bias, padding=1)  # autograd's own backward
        if not torch.is_grad_enabled() or not x.requires_grad:
            return self.convolve(x)
        return _FrozenConv3x3.apply(x, self)
