"""The style-transfer engine (Gatys et al.): optimise an image's pixels against VGG19 losses.

:class:`StyleTransfer` holds one optimisation and can be stepped, resized (coarse-to-fine) and read
at any point; :mod:`pastiche.schedule` runs one through a coarse-to-fine schedule. The image being
optimised is ``StyleTransfer.pixels``, (1, 3, H, W) float32 RGB in [0, 255] on the compute device,
kept in that range after every step so that what is saved is what was optimised.
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from . import color
from .checks import MAX_PIXELS, check_flag, check_positive, given, nonnegative, pixel_count, weight_list, whole
from .devices import compute_dtype, default_device, device_memory, fits_in_ram, resolve_device
from .errors import PasticheError, option_name, warn
from .imageio import ImageLike, describe_source, load_image, open_image, resized_dims, to_pil
from .losses import content_loss, gram, style_loss, tv_loss
from .optim import LBFGS, Adam
from .vgg import LAYER_INDEX, LAYER_NAMES, VGG19, check_layers, smallest_side, vgg19

DEFAULT_CONTENT_LAYERS = ("block4_relu2",)
DEFAULT_STYLE_LAYERS = ("block1_relu1", "block2_relu1", "block3_relu1", "block4_relu1", "block5_relu1")
DEFAULT_SIZE_PIXELS = 500 ** 2  # Gatys et al. 2017's recommendation, and pastiche 1.6.0's default
# L-BFGS's first step in bfloat16 (see optim.LBFGS): torch's moves the image by ~0.01 grey levels
# in all, and the gradient's rounding made its pair's cos(s, y) 0.006-0.011 where later pairs had
# 0.5-0.9 (tubingen at 64 px); a 48 px test image stalled after it. Moving the steepest pixel by
# 0.1 grey level tracked float32's losses on both (/tmp trial, benchmarks/PERFORMANCE.md).
LBFGS_PROBE = 0.1
# Coarse-to-fine: a level that starts from a coarser level's upsampled result leaves block 5's
# style layers out of its first BLOCK5_DELAY steps, the ~20 in which it puts back the detail that
# the upsampling blurred (block4_relu1's Gram term is 95 % of the loss then). block5_relu1's term
# is 0.01-1.3 % of the loss over a level, and hardly moved when it was left out of every
# full-size step; reaching it takes four 512-channel convolutions, ~22 % of a step. At 256 px the
# first full-size steps took 170 instead of 219 ms, pastiche 1.6.0's first judge level came at
# the same step, and the final judges were 0.4 and 1.0 % lower; at ~500^2 px within 0.5 %
# (benchmarks/PERFORMANCE.md, "Block 5 left out of a level's first steps").
BLOCK5_DELAY = 25
_BLOCK5 = LAYER_INDEX["block5_conv1"]


# Memory a run needs at least, per pixel of the output image (saved activations, the largest
# gradients of block1 and the L-BFGS history: with it full, peak RSS grew 0.88 KB per pixel from
# 1024 to 1600 px by default, 0.64 KB with --low-memory; session 27, bfloat16) and per pixel of a
# style image (its targets need no gradients: 0.49-0.50 KB, session 18). Lower bounds, so a
# refused run could not have fitted (README, "How much memory a size needs").
BYTES_PER_PIXEL, STYLE_BYTES_PER_PIXEL = 608, 448
OUT_OF_MEMORY = ("can't allocate memory", "out of memory")  # in allocation failures' messages
INIT_KEYWORDS = ("content", "random")  # the starts that are not an image


@dataclass
class Targets:
    """What the loss compares against at one size: content activations and style Grams."""

    content: Dict[str, torch.Tensor]  # layer → (1, C, H, W)
    styles: List[Dict[str, torch.Tensor]]  # per style image: layer → (1, C, C)
    style_sizes: List[Tuple[int, int]]  # per style image: (width, height) used


# The job's tensors are made and stepped outside torch.inference_mode(), also when a caller's code
# runs in it: the image is optimised by its gradient, which inference mode turns off (and a
# tensor made in it cannot take part in autograd afterwards)
_OUTSIDE_INFERENCE_MODE = torch.inference_mode(False)


def _supplemental(pairs: Sequence[Tuple[str, int]]) -> List[Tuple[torch.device, int]]:
    """``supplemental_devices`` checked: (device, layer index) pairs, one device per index."""
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, (list, tuple)):
        raise PasticheError(f"supplemental_devices must be a list of (device, layer index) pairs, got {pairs!r}")
    checked, seen = [], set()
    for pair in pairs:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise PasticheError(f"supplemental_devices needs (device, layer index) pairs, got {pair!r}")
        device, index = pair
        if not whole(index) or index >= len(LAYER_NAMES):
            raise PasticheError(f"{option_name('supplemental_devices')} layer index {index!r} is not a layer"
                                f" number from 1 to {len(LAYER_NAMES) - 1} (see 'pastiche --list-layers')"
                                + (f"; layer 0 is where {option_name('device')} starts" if index == 0 else ""))
        if index in seen:
            raise PasticheError(f"{option_name('supplemental_devices')} layer index {index} is given twice;"
                                " give each once")
        seen.add(index)
        checked.append((resolve_device(device, keyword="supplemental_devices"), index))
    return checked


def _check_options(*, size: Optional[int], size_pixels: Optional[int], style_size: Optional[int],
                   style_size_pixels: Optional[int], learning_rate: float, optimizer: str, preserve_color: bool,
                   luminance_only: bool, low_memory: bool) -> None:
    """StyleTransfer's sizes, learning rate, optimiser and switches: PasticheError naming the option."""
    for value, keyword in ((size, "size"), (size_pixels, "size_pixels"),
                           (style_size, "style_size"), (style_size_pixels, "style_size_pixels")):
        if value is not None and not pixel_count(value):
            raise PasticheError(f"{option_name(keyword)} must be a whole number of pixels, from 1 to {MAX_PIXELS},"
                                f" got {value!r}")
    check_positive(learning_rate, option_name("learning_rate"), optional=False)
    for value, keyword in ((preserve_color, "preserve_color"), (luminance_only, "luminance_only"),
                           (low_memory, "low_memory")):
        check_flag(value, option_name(keyword))
    if learning_rate > torch.finfo(torch.float32).max:  # the optimisers scale float32 tensors by it
        raise PasticheError(f"{option_name('learning_rate', learning_rate)} is too large for float32; try 1 (L-BFGS)"
                            " or 1 to 10 (Adam)")
    if optimizer not in ("lbfgs", "adam"):
        raise PasticheError(f"unknown optimizer '{optimizer}'; use 'lbfgs' or 'adam'")
    if preserve_color and luminance_only:
        raise PasticheError(f"{option_name('preserve_color')} and {option_name('luminance_only')} exclude each other;"
                            " pick one")


def _either(*keywords: str) -> str:
    """Options named for a message, 'a or b'."""
    return " or ".join(map(option_name, keywords))


def _note_stretch(size: Tuple[int, int], content: Tuple[int, int], label: str) -> None:
    """A note where an init image of ``size`` (w, h) is stretched, not only scaled, to the
    ``content``'s shape: it starts the picture, so a 4:3 one under a 3:2 content is distorted."""
    (w, h), (cw, ch) = size, content
    if abs((cw / w) / (ch / h) - 1) > 0.02:
        warn(f"{label} is {w}x{h} px and the content {cw}x{ch} px: it is stretched to the content's"
             " shape; crop it to that shape to start undistorted")


class _Checked:
    """A loss weight attribute, checked whenever it is set as the constructor checks it: a
    callback may tune the weights between steps, and a bad value is refused there, not met as
    a TypeError (or a loss unbounded below) inside the next step. ``check(job, value)`` returns
    the value to keep."""

    def __init__(self, check: Callable[["StyleTransfer", object], object]):
        self.check = check

    def __set_name__(self, owner: type, name: str) -> None:
        self.attribute = "_" + name

    def __get__(self, job: Optional["StyleTransfer"], owner: Optional[type] = None):
        return self if job is None else getattr(job, self.attribute)

    def __set__(self, job: "StyleTransfer", value: object) -> None:
        setattr(job, self.attribute, self.check(job, value))


class StyleTransfer:
    """One style transfer, steppable. Images may be paths, PIL images, arrays or tensors.

    ``content``: the picture to restyle; ``styles``: one or more style images, blended with
    ``style_weights`` (default 1/N each). Sizes follow pastiche 1.6.0: ``size`` is the long edge and
    overrides ``size_pixels`` (default 500²); the styles get the content's pixel count unless
    ``style_size`` (long edge) or ``style_size_pixels`` says otherwise. ``lbfgs_history`` is
    L-BFGS's memory: 20 pairs of image-sized vectors, where pastiche 1.6.0 kept torch's default 100
    (600 MB at 500² px) for little gain per step; kept in bfloat16 when VGG19 computes in bfloat16
    (57 instead of 114 MB at 577x433 px; final judges within run-to-run noise;
    benchmarks/PERFORMANCE.md). ``low_memory`` keeps VGG19's kernels as uint8 codebook indices
    (13 instead of 52 MB, ~6 ms per pass to rebuild them) and 10 L-BFGS pairs unless
    ``lbfgs_history`` says otherwise (half the pairs' memory, ~4 % higher loss after 150 steps at
    256 px).
    ``precision``: VGG19's arithmetic (:func:`pastiche.devices.compute_dtype`): ``"auto"`` is
    bfloat16 on a CPU that has it in hardware (~1.6x faster steps on an AMD EPYC, the judge
    within 3 % after the same steps), else float32; ``"float32"`` or ``"bfloat16"`` (CPUs only) force one.
    The loss weights (``content_weight``, ``style_weights``, ``tv_weight`` and the per-layer
    lists) may be changed between steps, and are checked as they are set.
    ``loss`` is that of the image the last :meth:`step` started from (a step evaluates the loss
    once, there, as pastiche 1.6.0's reports do), or the current image's after :meth:`evaluate`.
    After :meth:`resize` to a larger size, the first BLOCK5_DELAY steps leave block 5's style
    layers out of the loss they take and report (see BLOCK5_DELAY); :meth:`evaluate` takes all.
    Targets are computed at the first :meth:`resize` (``run`` does it), so construction is cheap;
    it raises PasticheError for a bad option, or for sizes that cannot fit in the device's memory.
    Running out of memory later also raises PasticheError, with the image kept as it was.
    """

    content_weight = _Checked(lambda job, w: nonnegative(w, option_name("content_weight")))
    tv_weight = _Checked(lambda job, w: nonnegative(w, option_name("tv_weight")))
    content_layer_weights = _Checked(lambda job, w: weight_list(
        w, len(job.content_layers), lambda i: 0.01, option_name("content_layer_weights"), "content layer"))
    style_layer_weights = _Checked(lambda job, w: weight_list(  # None: 10/C² each, C the layer's channels
        w, len(job.style_layers), None, option_name("style_layer_weights"), "style layer") if given(w) else None)
    style_weights = _Checked(lambda job, w: weight_list(
        w, job.n_styles, lambda i: 1 / job.n_styles, option_name("style_weights"), "style image"))

    @_OUTSIDE_INFERENCE_MODE
    def __init__(self, content: ImageLike, styles: Union[ImageLike, Sequence[ImageLike]], *,
                 content_layers: Sequence[str] = DEFAULT_CONTENT_LAYERS,
                 style_layers: Sequence[str] = DEFAULT_STYLE_LAYERS,
                 content_layer_weights: Optional[Sequence[float]] = None,
                 style_layer_weights: Optional[Sequence[float]] = None,
                 content_weight: float = 1.0, style_weights: Optional[Sequence[float]] = None,
                 tv_weight: float = 0.0, init: Union[str, ImageLike] = "content",
                 optimizer: str = "lbfgs", learning_rate: float = 1.0, pooling: str = "max",
                 size: Optional[int] = None, size_pixels: Optional[int] = DEFAULT_SIZE_PIXELS,
                 style_size: Optional[int] = None, style_size_pixels: Optional[int] = None,
                 preserve_color: bool = False, luminance_only: bool = False,
                 device: Union[str, torch.device, None] = None,
                 supplemental_devices: Sequence[Tuple[str, int]] = (),
                 weights: Union[str, os.PathLike, None] = None, lbfgs_history: Optional[int] = None,
                 low_memory: bool = False, precision: str = "auto"):
        styles = list(styles) if isinstance(styles, (list, tuple)) else [styles]
        if not styles:
            raise PasticheError("no style image given; pass at least one")
        self._set_losses(content_layers, style_layers, content_layer_weights, style_layer_weights, content_weight,
                         style_weights, tv_weight, len(styles))
        _check_options(size=size, size_pixels=size_pixels, style_size=style_size, style_size_pixels=style_size_pixels,
                       learning_rate=learning_rate, optimizer=optimizer, preserve_color=preserve_color,
                       luminance_only=luminance_only, low_memory=low_memory)
        self.optimizer_name, self.learning_rate = optimizer, learning_rate
        self.preserve_color, self.luminance_only, self.low_memory = preserve_color, luminance_only, low_memory
        self.lbfgs_history = lbfgs_history if lbfgs_history is not None else 10 if low_memory else 20
        if not whole(self.lbfgs_history) or self.lbfgs_history > MAX_PIXELS:
            raise PasticheError(f"lbfgs_history must be a whole number of pairs, from 1 to {MAX_PIXELS}, got"
                                f" {lbfgs_history!r}")
        self._set_network(device, supplemental_devices, precision, weights, pooling)
        self._content_image = open_image(content, name="content image")
        self._content_label = describe_source(content, "content image")
        names = [f"style image {i + 1}" if len(styles) > 1 else "style image" for i in range(len(styles))]
        self._style_images = [open_image(s, name=name) for s, name in zip(styles, names)]
        self._style_labels = [describe_source(s, name) for s, name in zip(styles, names)]
        self._sizes = dict(size=size, pixels=None if size else size_pixels,
                           style_size=style_size, style_pixels=style_size_pixels)
        self._init = self._init_source(init)
        if not isinstance(self._init, str):
            _note_stretch(self._init[0].size, self._content_image.size, self._init[1])
        self.step_count = 0
        self._block5_delay = 0  # steps left that leave block 5's style layers out (see BLOCK5_DELAY)
        self.loss = math.nan
        self.pixels: Optional[torch.Tensor] = None
        self.optimizer: Union[LBFGS, Adam, None] = None
        self.full_size = resized_dims(*self._content_image.size, size=size,
                                      pixels=None if size else size_pixels)
        self._check_memory(self.full_size)
        # Targets and the image are made by the first resize(), at run()'s first level; stepping
        # before that starts at full size.

    def _set_losses(self, content_layers: Sequence[str], style_layers: Sequence[str],
                    content_layer_weights: Optional[Sequence[float]], style_layer_weights: Optional[Sequence[float]],
                    content_weight: float, style_weights: Optional[Sequence[float]], tv_weight: float,
                    n_styles: int) -> None:
        """The loss's layers and weights, checked; at least one term must weigh something."""
        self.content_layers = check_layers(content_layers, option="content layer")
        self.style_layers = check_layers(style_layers, option="style layer")
        if not self.content_layers and not self.style_layers:
            raise PasticheError("no content or style layers chosen; name at least one"
                                " (see 'pastiche --list-layers')")
        self.n_styles = n_styles
        self.content_layer_weights, self.style_layer_weights = content_layer_weights, style_layer_weights
        self.style_weights, self.content_weight, self.tv_weight = style_weights, content_weight, tv_weight
        content_on = self.content_weight > 0 and any(w > 0 for w in self.content_layer_weights)
        style_on = any(w > 0 for w in self.style_weights) and self.style_layers and any(
            w > 0 for w in self.style_layer_weights or [1.0])  # None: 10/C² each
        if not (content_on or style_on or self.tv_weight > 0):
            raise PasticheError("every loss term is weighted 0, so the image would not change; give"
                                f" {option_name('content_weight')}, {option_name('style_weights')} or their"
                                " layer weights a positive value")

    def _set_network(self, device: Union[str, torch.device, None], supplemental_devices: Sequence[Tuple[str, int]],
                     precision: str, weights: Union[str, os.PathLike, None], pooling: str) -> None:
        """The devices (checked), VGG19 on them up to the deepest layer the loss uses, its dtype."""
        self.device = resolve_device(default_device() if device is None else device)
        supplemental = _supplemental(supplemental_devices)
        self._devices = [self.device, *(d for d, _ in supplemental)]
        # On one CUDA device a step's forward and backward replay as a CUDA graph (see _graphed):
        # on torch's current one, as measured (capture and replay use its streams)
        self.use_cuda_graphs = (self.device.type == "cuda" and not supplemental
                                and self.device.index in (None, torch.cuda.current_device()))
        self._graph: Optional[Tuple[torch.cuda.CUDAGraph, torch.Tensor, tuple]] = None
        deepest = max(LAYER_INDEX[n] for n in self.content_layers + self.style_layers)
        for _, index in supplemental:
            if index > deepest:  # the device would hold nothing: the network is cut after `deepest`
                raise PasticheError(f"{option_name('supplemental_devices')} layer index {index} is past"
                                    f" {LAYER_NAMES[deepest]} ({deepest}), the deepest layer this run uses, so"
                                    f" that device would do nothing; give an index from 1 to {deepest}")
        self.dtype = compute_dtype(precision, self._devices)
        self.vgg: VGG19 = vgg19(weights=weights, pooling=pooling, up_to=LAYER_NAMES[deepest],
                                compact=self.low_memory, dtype=self.dtype)
        self.vgg.place(self.device, supplemental)
        self.min_side = smallest_side(deepest)

    # ------------------------------------------------------------------ sizes and targets

    @property
    def size(self) -> Optional[Tuple[int, int]]:
        """(width, height) of the image being optimised; None before the first resize."""
        return None if self.pixels is None else (self.pixels.shape[3], self.pixels.shape[2])

    def _ready(self) -> None:
        if self.pixels is None:
            self.resize(*self.full_size)

    @_OUTSIDE_INFERENCE_MODE
    def resize(self, width: int, height: int) -> None:
        """Optimise at (width, height) from now on: recompute targets, resample the current image
        (or create the initial one), and restart the optimiser (coarse-to-fine uses this)."""
        if not (pixel_count(width) and pixel_count(height)):
            raise PasticheError(f"resize needs whole numbers of pixels, from 1 to {MAX_PIXELS}, got"
                                f" {width!r} x {height!r}")
        if width * height > self.full_size[0] * self.full_size[1]:  # the constructor checked up to that
            self._check_memory((width, height))
        start = lbfgs_scale = None
        if self.size != (width, height):
            self.vgg.clear_cache(pixels=width * height)  # transformed kernels of the old size's algorithms
        if self.pixels is not None:
            start = F.interpolate(self.pixels.detach(), size=(height, width), mode="bicubic",
                                  align_corners=False).clamp_(0, 255)
            if isinstance(self.optimizer, LBFGS) and self.optimizer.order:
                # L-BFGS restarts with the curvature it learnt: the loss is a mean over pixels
                # (content MSE, Grams divided by H*W), so its curvature shrinks, and the inverse
                # Hessian's scale grows, with the pixel count. At 256 px every judge level came
                # 0-4 steps sooner than with a fresh L-BFGS's first step, which barely moves.
                lbfgs_scale = self.optimizer.scale * width * height / (self.size[0] * self.size[1])
        upsampled = start is not None and width * height > self.size[0] * self.size[1]
        self._retarget(width, height, start, lbfgs_scale=lbfgs_scale, block5_delay=BLOCK5_DELAY if upsampled else 0)

    @_OUTSIDE_INFERENCE_MODE
    def set_content(self, content: ImageLike, *, init: Union[str, ImageLike, None] = None) -> None:
        """Switch to a new content image of the same size (a video's next frame), keeping the style
        targets' settings. Optimisation continues from the current image, or from ``init``
        (as the constructor's: "content", "random" or an image)."""
        image = open_image(content, name="content image")
        dims = resized_dims(*image.size, size=self._sizes["size"], pixels=self._sizes["pixels"])
        if dims != self.full_size:
            raise PasticheError(f"{describe_source(content, 'content image')} would be {dims[0]}x{dims[1]}"
                                f" px, not this job's {self.full_size[0]}x{self.full_size[1]}; give it"
                                " the same shape, or start a new StyleTransfer")
        self._ready()
        self._retarget(*self.size, self.pixels.detach(), init=self._init_source(init) if init is not None else None,
                       content=(image, describe_source(content, "content image")))

    def _retarget(self, width: int, height: int, start: Optional[torch.Tensor], *,
                  lbfgs_scale: Optional[float] = None, init: Union[str, Tuple[Image.Image, str], None] = None,
                  content: Optional[Tuple[Image.Image, str]] = None, block5_delay: int = 0) -> None:
        """Targets at (width, height), and the image: ``init`` (see _init_source) if given, else
        ``start`` (1, 3, H, W) in [0, 255], else the constructor's init. ``content``: a new content
        image and its label. ``block5_delay``: steps that leave block 5's style layers out (see
        BLOCK5_DELAY). All or nothing: everything is made before any of it replaces the job's
        state, so an error or Ctrl-C part-way leaves the job as it was."""
        content_image, content_label = content or (self._content_image, self._content_label)
        with self._out_of_memory_is_an_error(width, height):
            scale = width / self.full_size[0]  # styles shrink with the content on coarse levels
            content_tensor = self._load(content_image, (width, height), content_label, _either("size", "size_pixels"))
            styles = []
            for image, label in zip(self._style_images, self._style_labels):
                sizing = _either("style_size", "style_size_pixels") + (
                    f", or fewer coarse levels ({option_name('coarse_steps')})" if scale < 1 else "")
                style = self._load(image, self._style_dims(image, scale), label, sizing)
                if self.preserve_color:
                    style = color.match_color(style, content_tensor)
                if self.luminance_only:
                    style = color.match_luminance(color.luminance(style), color.luminance(content_tensor))
                styles.append(style)
            targets = self._targets(content_tensor, styles)
            if init is not None or start is None:
                start = self._initial_image(content_tensor, self._init if init is None else init)
            pixels = start.to(self.device).contiguous().requires_grad_()
            # The last image whose loss was finite, and the buffer for the next one (kept, not
            # allocated per step: see optim.LBFGS on scattering the heap).
            good = pixels.detach().clone()
            spare = torch.empty_like(good)
            optimizer = self._new_optimizer(pixels, lbfgs_scale)
        (self._content_image, self._content_label, self.content, self.targets, self.pixels, self._good,
         self._spare, self.optimizer, self._graph, self._block5_delay) = (
            content_image, content_label, content_tensor, targets, pixels, good, spare, optimizer,
            None, block5_delay)  # _graph: the old image's

    def _new_optimizer(self, pixels: torch.Tensor, lbfgs_scale: Optional[float] = None) -> Union[LBFGS, Adam]:
        if self.optimizer_name == "adam":
            return Adam(pixels, lr=self.learning_rate)
        narrow = self.dtype == torch.bfloat16  # the pairs as rounded as the gradients' convolutions
        return LBFGS(pixels, lr=self.learning_rate, history=self.lbfgs_history, scale=lbfgs_scale,
                     probe=LBFGS_PROBE if narrow else None, pair_dtype=torch.bfloat16 if narrow else None)

    def _style_dims(self, image: Image.Image, scale: float = 1.0) -> Tuple[int, int]:
        """(width, height) of a style image on a level whose width is ``scale`` times the output's."""
        full, style_size = self.full_size, self._sizes["style_size"]
        style_size = style_size and max(1, round(style_size * scale))
        style_pixels = (self._sizes["style_pixels"] or full[0] * full[1]) * scale ** 2
        return resized_dims(*image.size, size=style_size, pixels=None if style_size else round(style_pixels))

    def _check_memory(self, size: Tuple[int, int]) -> None:
        """Refuse, before any resizing, an image ``size`` (and the styles' sizes) whose feature maps
        cannot fit in the devices' memory: such a run would allocate for minutes and then fail, or
        be killed by the system."""
        totals = [device_memory(d) for d in set(self._devices)]
        if None in totals:
            return  # no way to ask this platform
        total = sum(totals)
        sizes = [("output image", size, BYTES_PER_PIXEL, _either("size", "size_pixels"))]
        scale = size[0] / self.full_size[0]  # styles grow with a level past the output size (resize)
        sizes += [("style image", self._style_dims(image, scale), STYLE_BYTES_PER_PIXEL,
                   _either("style_size", "style_size_pixels")) for image in self._style_images]
        needs = [w * h * per_pixel for _, (w, h), per_pixel, _ in sizes]
        # BYTES_PER_PIXEL counts 20 L-BFGS pairs; each more holds two 3-channel images (bfloat16
        # where VGG19 computes in it, see _new_optimizer), and the pairs' inner products a
        # (2 history)² float64 matrix
        pair = 2 * 3 * (2 if self.dtype == torch.bfloat16 else 4)
        extra = (max(0, self.lbfgs_history - 20) * pair * size[0] * size[1] + 32 * self.lbfgs_history ** 2
                 if self.optimizer_name == "lbfgs" else 0)
        need = needs[0] + max(needs[1:]) + extra  # the styles' targets are made one style at a time
        if need <= total:
            return
        where = ("this machine" if all(d.type != "cuda" for d in self._devices)
                 else " + ".join(str(d) for d in dict.fromkeys(self._devices)))
        if need - extra <= total:
            raise PasticheError(f"lbfgs_history {self.lbfgs_history} pairs at {size[0]}x{size[1]} px"
                                f" need at least {need / 2 ** 30:,.1f} GB of memory and {where} has"
                                f" {total / 2 ** 30:,.1f} GB; keep fewer (20 by default, 100 in pastiche 1.6.0)")
        what, (w, h), _, options = sizes[needs.index(max(needs))]
        raise PasticheError(f"the {what} would be {w}x{h} px, which needs at least"
                            f" {need / 2 ** 30:,.1f} GB of memory and {where} has"
                            f" {total / 2 ** 30:,.1f} GB; choose a smaller {options}")

    def _load(self, image: Image.Image, dims: Tuple[int, int], label: str, sizing: str) -> torch.Tensor:
        """``image`` resized to ``dims`` as a (1, 3, H, W) [0, 1] tensor on the device; ``label``
        (see describe_source) and ``sizing`` (the options that set its size) are for the error."""
        if min(dims) < self.min_side:
            raise PasticheError(f"{label} is too small: {dims[0]}x{dims[1]} px after resizing; the"
                                f" chosen layers need at least {self.min_side} px on each side"
                                f" — use a larger, less elongated image or a larger {sizing}")
        return load_image(image.resize(dims, Image.BILINEAR)).to(self.device)

    @staticmethod
    def _init_source(init: Union[str, ImageLike]) -> Union[str, Tuple[Image.Image, str]]:
        """``init`` checked: "content", "random", or an image, opened now (with its label) so that a
        bad one is refused before any work."""
        if isinstance(init, str) and init in INIT_KEYWORDS:
            return init
        if isinstance(init, str) and not os.path.lexists(init):
            raise PasticheError(f"init '{init}' is not 'content', 'random' or an image file that exists;"
                                " check the path")
        return open_image(init, name="init image"), describe_source(init, "init image")

    @torch.no_grad()
    def _targets(self, content: torch.Tensor, styles: List[torch.Tensor]) -> Targets:
        if self.luminance_only:
            content = color.luminance(content)
        # Each target stays on the device of its layer (--supplemental-device), beside the
        # activations it is compared with.
        content_acts = self.vgg(content, self.content_layers) if self.content_layers else {}
        style_grams = [{k: gram(v) for k, v in self.vgg(s, self.style_layers).items()}
                       for s in styles] if self.style_layers else [{} for _ in styles]
        return Targets(content_acts, style_grams, [(s.shape[3], s.shape[2]) for s in styles])

    def _initial_image(self, content: torch.Tensor, init: Union[str, Tuple[Image.Image, str]]) -> torch.Tensor:
        """The start of an optimisation: ``init`` (see _init_source) as (1, 3, H, W) in [0, 255]."""
        if init == "content":
            image = content
        elif init == "random":
            image = torch.rand(content.shape, device=self.device)
        else:
            image, label = init
            image = self._load(image, self.size_of(content), label, _either("size", "size_pixels"))
        if self.luminance_only:
            image = color.luminance(image)
        return image * 255

    @staticmethod
    def size_of(image: torch.Tensor) -> Tuple[int, int]:
        return image.shape[3], image.shape[2]

    # ------------------------------------------------------------------ optimisation

    def objective(self, pixels: torch.Tensor, *, style_layers: Optional[Sequence[str]] = None) -> torch.Tensor:
        """Weighted content + style + TV loss of ``pixels`` (1, 3, H, W) in [0, 255]; a 0-dim
        tensor on the compute device. Weights and scales follow pastiche 1.6.0, so losses compare.
        ``style_layers``: a part of ``self.style_layers`` to take, the others left out (default all)."""
        style_layers = self.style_layers if style_layers is None else style_layers
        # Each layer's losses are taken as soon as its activation is made, not after the whole
        # forward: what they make (a float32 copy of bfloat16 features for the Gram) then comes
        # while little is kept for backward, and autograd, which runs the latest-made step first,
        # runs their backward when it reaches that layer rather than all at its start (the peak
        # of a --low-memory step at 256x192 px in-process: 610 instead of 620 MB;
        # benchmarks/PERFORMANCE.md).
        content, style = {}, {}  # layer → loss; layer → [loss per style image]
        for layer, acts in self.vgg.features(pixels / 255, self.content_layers + list(style_layers)):
            if layer in self.content_layers:
                content[layer] = content_loss(acts, self.targets.content[layer])
            if layer in style_layers:
                style[layer] = [style_loss(acts, grams[layer]) for grams in self.targets.styles]
        loss = pixels.new_zeros(())  # summed in a fixed order, as the options list the layers
        for layer, weight in zip(self.content_layers, self.content_layer_weights):
            loss = loss + self.content_weight * weight * content[layer].to(loss)
        for s, style_weight in enumerate(self.style_weights):
            for i, layer in enumerate(self.style_layers):
                if layer not in style:  # left out
                    continue
                layer_weight = (self.style_layer_weights[i] if self.style_layer_weights
                                else 10.0 / self.targets.styles[s][layer].shape[1] ** 2)
                loss = loss + style_weight * layer_weight * style[layer][s].to(loss)
        if self.tv_weight:
            loss = loss + 0.5 * self.tv_weight * tv_loss(pixels)
        return loss

    @_OUTSIDE_INFERENCE_MODE
    @torch.no_grad()
    def evaluate(self) -> float:
        """The loss of the current image, without stepping (sets ``self.loss``)."""
        self._ready()
        self.loss = float(self.objective(self.pixels))
        return self.loss

    @_OUTSIDE_INFERENCE_MODE
    def step(self) -> float:
        """One optimiser step (one loss evaluation); returns the loss before the step.

        A NaN or infinite loss restores the last image with a finite loss and raises PasticheError.
        """
        self._ready()
        style_layers = self._step_style_layers()

        def closure() -> torch.Tensor:
            if self.pixels.grad is not None:
                self.pixels.grad.zero_()  # accumulate into the same buffer on every step
            loss = self.objective(self.pixels, style_layers=style_layers)
            loss.backward()
            if self.luminance_only:  # the image stays grey, as it starts: its luminance is what is saved
                grad = self.pixels.grad  # (1, 3, H, W): the gradient of the grey image, on each channel
                grad.copy_(grad.mean(1, keepdim=True).expand_as(grad))
            return loss

        before = self._spare.copy_(self.pixels.detach())
        with self._out_of_memory_is_an_error(*self.size):  # the closure runs first: pixels unchanged
            try:
                loss = self.optimizer.step(self._graphed(closure, style_layers) if self.use_cuda_graphs else closure)
            except FloatingPointError:  # a step or gradient past float32's range (L-BFGS, Adam)
                loss = math.inf
        if not math.isfinite(loss):
            with torch.no_grad():
                self.pixels.copy_(self._good)
            self.optimizer = self._new_optimizer(self.pixels)  # its history holds the bad gradient (Adam's moments too)
            kept = "; kept the last good image" if self.step_count else " (the first; the image is the starting one)"
            raise PasticheError(f"the loss or its step became {loss} at step {self.step_count + 1}{kept} — try"
                                f" smaller weights or {option_name('learning_rate')}")
        self._good, self._spare = before, self._good
        with torch.no_grad():
            self.pixels.clamp_(0, 255)
        self.step_count += 1
        self._block5_delay = max(0, self._block5_delay - 1)
        self.loss = loss
        return loss

    def _step_style_layers(self) -> List[str]:
        """The style layers of the next step's loss: all, but block 5's while a delay runs (see
        BLOCK5_DELAY), unless nothing would be saved (a content layer is in block 5) or no style
        layer would be left."""
        earlier = [layer for layer in self.style_layers if LAYER_INDEX[layer] < _BLOCK5]
        if self._block5_delay and earlier and all(LAYER_INDEX[layer] < _BLOCK5 for layer in self.content_layers):
            return earlier  # all of them where none is in block 5
        return self.style_layers

    def _graphed(self, closure: Callable[[], torch.Tensor], style_layers: Sequence[str]) -> Callable[[], torch.Tensor]:
        """``closure`` (loss and gradient at ``pixels``) as a replay of a CUDA graph captured at
        the first step at each size: one launch instead of the ~200 kernels of VGG19's forward
        and backward, which the host launched one by one while the GPU waited (10.2-10.6 instead
        of 12.1-12.6 ms per step at 1024 px on an H100). The graph reads ``pixels`` and the
        targets where they are, and writes the loss and the gradient to the same tensors at
        every replay. The loss weights are baked into the capture as numbers, and the
        ``style_layers`` the closure takes into its kernels, so a change to them (a callback may
        tune ``style_weights``; block 5's layers return after BLOCK5_DELAY) captures again; a
        capture costs a few eager steps, so weights changed at every step are better run
        eagerly. ``use_cuda_graphs = False`` runs the closure as it is."""
        weights = (self.content_weight, self.tv_weight, tuple(self.content_layer_weights),
                   tuple(self.style_weights), tuple(self.style_layer_weights or ()), tuple(style_layers))
        if self._graph is not None and self._graph[2] != weights:
            self._graph = None  # its memory pool goes before the new capture makes one
        if self._graph is None:
            # torch's recipe: warm up on a side stream (cuDNN's workspaces, the gradient's
            # buffer), then capture; torch.cuda.graph first returns the warm-up's freed memory,
            # the capture having a pool of its own.
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                closure()
            torch.cuda.current_stream(self.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                loss = closure()
            self._graph = graph, loss, weights
        graph, loss, _ = self._graph

        def replay() -> torch.Tensor:
            graph.replay()
            return loss

        return replay

    @contextmanager
    def _out_of_memory_is_an_error(self, width: int, height: int) -> Iterator[None]:
        """Turn an allocation failure into a PasticheError that says what to change."""
        try:
            yield
        except (MemoryError, RuntimeError) as e:
            # torch's CPU allocator raises RuntimeError("...can't allocate memory..."), CUDA's
            # torch.cuda.OutOfMemoryError ("CUDA out of memory"), MPS "MPS backend out of memory".
            if not isinstance(e, MemoryError) and not any(m in str(e) for m in OUT_OF_MEMORY):
                raise
            raise PasticheError(f"out of memory at {width}x{height} px on {self.device}; choose a"
                                f" smaller {_either('size', 'size_pixels')}"
                                + ("" if self.low_memory else f", or {option_name('low_memory', True)}")) from None

    # ------------------------------------------------------------------ results

    def image_tensor(self, *, size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """The current image, (1, 3, H, W) float32 RGB in [0, 1] on the CPU (colour restored in
        luminance-only mode), resampled (bicubic) to ``size`` = (width, height) if given."""
        if size is not None:
            if not (isinstance(size, (tuple, list, np.ndarray)) and len(size) == 2 and all(map(whole, size))):
                raise PasticheError(f"size must be (width, height) in whole pixels, got {size!r}")
            size = (int(size[0]), int(size[1]))
        self._ready()
        pixels = self.pixels.detach()
        if not torch.isfinite(pixels).all():
            pixels = self._good
        image = pixels.to("cpu", torch.float32) / 255
        if self.luminance_only:
            image = color.with_chroma(image, self.content.to("cpu"))
        if size is not None and size != self.size:
            if not fits_in_ram(size[0] * size[1] * 56):  # 51 bytes a pixel measured at 4000x4000
                raise PasticheError(f"the image at {size[0]}x{size[1]} px would need more memory than this"
                                    " machine has; ask for a smaller size")
            image = F.interpolate(image, size=(size[1], size[0]), mode="bicubic", align_corners=False)
        return image.clamp(0, 1)

    def image(self, *, size: Optional[Tuple[int, int]] = None) -> Image.Image:
        """The current image as an 8-bit RGB PIL image (see :meth:`image_tensor`)."""
        return to_pil(self.image_tensor(size=size))


def check_keywords(options: dict, caller: str) -> None:
    """TypeError, as Python's own, for a keyword in ``options`` that :class:`StyleTransfer` does not
    take, named as the ``caller``'s and with the nearest one it does take (a typo such as
    ``style_weight`` read as ``StyleTransfer.__init__``'s, not the function the user called)."""
    known = list(inspect.signature(StyleTransfer.__init__).parameters)[3:]  # past self, content, styles
    for key in options:
        if key not in known:
            near = difflib.get_close_matches(key, known, n=1)
            raise TypeError(f"{caller}() got an unexpected keyword argument '{key}'"
                            + (f"; did you mean '{near[0]}'?" if near else ""))
