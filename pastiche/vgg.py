"""VGG19 as a feature extractor, built from the bundled quantized weights.

The architecture is data (torchvision's configuration "E"); layer names follow pastiche 1.6.0 and
Keras: ``block1_conv1, block1_relu1, ..., block5_pool`` (37 of them). The module takes RGB images
in [0, 1] and applies the preprocessing its weights file declares (Caffe's BGR, 0-255, minus the
mean pixel for the bundled file; torchvision's RGB mean/std for a file made from torchvision).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .conv import PACK_MAX_PIXELS, Conv3x3
from .devices import onednn_float32, require_bfloat16, resolve_device
from .errors import PasticheError, option_name
from .files import check_readable
from .quantized import load_dequantized

# torchvision's cfg "E": channel counts of 3x3 convolutions, "M" for a 2x2 pooling.
CFG_E: Tuple[Union[int, str], ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                                      512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


def layer_names(cfg: Sequence[Union[int, str]] = CFG_E) -> Tuple[str, ...]:
    """Names of every layer for ``cfg``: blockB_convI, blockB_reluI, ..., blockB_pool."""
    names, block, index = [], 1, 1
    for item in cfg:
        if item == "M":
            names.append(f"block{block}_pool")
            block, index = block + 1, 1
        else:
            names += [f"block{block}_conv{index}", f"block{block}_relu{index}"]
            index += 1
    return tuple(names)


LAYER_NAMES = layer_names()
CONV_NAMES = tuple(n for n in LAYER_NAMES if "_conv" in n)
LAYER_INDEX = {name: i for i, name in enumerate(LAYER_NAMES)}


def conv_shapes(cfg: Sequence[Union[int, str]] = CFG_E) -> Dict[str, Tuple[int, int, int, int]]:
    """{blockB_convI: (out channels, in channels, 3, 3)} for ``cfg``, in order."""
    shapes, in_channels = [], 3
    for item in cfg:
        if item != "M":
            shapes.append((item, in_channels, 3, 3))
            in_channels = item
    return dict(zip((n for n in layer_names(cfg) if "_conv" in n), shapes))


# Input conventions a weights file may declare: what the bundled (Caffe) weights expect, and
# what weights made from torchvision's VGG19 expect (pastiche-compress --preprocessing).
CAFFE_PREPROCESSING = {"channel_order": "BGR", "scale": 255.0,
                       "mean": [103.939, 116.779, 123.68], "std": [1.0, 1.0, 1.0]}
TORCHVISION_PREPROCESSING = {"channel_order": "RGB", "scale": 1.0,
                             "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
PREPROCESSING = {"caffe": CAFFE_PREPROCESSING, "torchvision": TORCHVISION_PREPROCESSING}

# Bundled variants (pastiche --weights NAME). vgg19-8bit equals the float source exactly;
# vgg19-4bit (calibrated, ≈4 bits/weight, up to block5_relu1) is under half its size: see README.
# name → (file, sha256 of its header). The header lists every layer's crc32, so with the layers'
# own checks the hash pins each byte a load reads: a changed, swapped or damaged file is refused
# (hashing the whole 20 MB file would add ~23 ms to a ~34 ms load).
BUNDLED = {"vgg19-8bit": ("vgg19-8bit.pqw", "9755c23ea9540d20a6d9c5c9b6059de9572b9a5ee2977d2de3c2eaebf51d991d"),
           "vgg19-4bit": ("vgg19-4bit.pqw", "14dbed9de23a1d81382f53da2c99b0b25fe8e020c89598fac831a8f81f889212")}
DEFAULT_WEIGHTS = "vgg19-8bit"


def smallest_side(last: int) -> int:
    """The smallest image side, in px, that keeps at least 1 px through every pooling up to layer
    number ``last``, that one included (a pooling's output is what a loss on it reads)."""
    return 2 ** sum(1 for name in LAYER_NAMES[:last + 1] if name.endswith("pool"))


def _bundled_folder() -> Path:
    try:
        return Path(str(resources.files("pastiche.weights")))
    except ModuleNotFoundError:  # a checkout's pastiche/ imported ahead of the installed package:
        return Path(__file__).resolve().parent.parent / "weights"  # the files are beside it there


def _bundled(weights: Union[str, os.PathLike, None]) -> Optional[Tuple[str, str]]:
    """(file, header sha256) if ``weights`` (None: the default) names a bundled variant."""
    weights = DEFAULT_WEIGHTS if weights is None else weights
    return BUNDLED.get(weights) if isinstance(weights, str) else None


def weights_path(weights: Union[str, os.PathLike, None] = None) -> Path:
    """A bundled variant's name (see ``BUNDLED``) or a file path → the file's path; PasticheError
    if it is neither."""
    bundled, weights = _bundled(weights), DEFAULT_WEIGHTS if weights is None else weights
    if bundled:
        path = _bundled_folder() / bundled[0]
        if not path.is_file():
            raise PasticheError(f"the bundled weights '{weights}' are missing ({path}); reinstall pastiche")
        return path
    if not isinstance(weights, (str, os.PathLike)):
        raise PasticheError(f"weights must be one of {', '.join(BUNDLED)} or a file path, got {weights!r}")
    if not os.fspath(weights).strip():  # Path('') is '.', a directory: the message would name that
        raise PasticheError(f"{option_name('weights')} is empty; give one of {', '.join(BUNDLED)} or a .pqw file"
                            " made by pastiche-compress")
    path, expected = Path(weights), f"one of {', '.join(BUNDLED)} or a .pqw file made by pastiche-compress"
    if not os.path.lexists(path):
        raise PasticheError(f"weights '{path}' is neither a bundled name nor a file; give {expected}")
    check_readable(path, f"weights '{path}'", expected=expected)  # a loop of links, a folder, a pipe: said so
    return path


def check_layers(names: Union[str, Iterable[str]], *, option: str = "layer") -> List[str]:
    """Return ``names`` (one name or several) as a list, or raise a PasticheError naming the
    first unknown one."""
    try:
        names = [names] if isinstance(names, str) else list(names)
    except TypeError:  # None, a number
        raise PasticheError(f"{option}s must be layer names, got {names!r}; see 'pastiche --list-layers'") from None
    for name in names:
        if name not in LAYER_INDEX:
            raise PasticheError(f"unknown {option} '{name}'; run 'pastiche --list-layers' for the"
                                " 37 names (e.g. block4_relu2)")
    return names


def preprocessing_affine(preprocessing: Dict) -> Tuple[bool, torch.Tensor, torch.Tensor]:
    """A weights file's preprocessing as ``(bgr, gain, offset)`` for :func:`normalize`: whether
    the channels go in reverse (BGR) order, and (1, 3, 1, 1) float32 factors with ``x * gain +
    offset`` equal to ``(x * scale - mean) / std`` — one multiply-add."""
    std = torch.tensor(preprocessing["std"], dtype=torch.float64)
    gain = (preprocessing["scale"] / std).float().view(1, 3, 1, 1)
    offset = (-torch.tensor(preprocessing["mean"]) / std).float().view(1, 3, 1, 1)
    return preprocessing["channel_order"] == "BGR", gain, offset


def normalize(image: torch.Tensor, affine: Tuple[bool, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """RGB [0, 1] (N, 3, H, W) ``image`` → what the weights expect, given their
    :func:`preprocessing_affine`. BGR by flip, not by indexing: a flip's gradient is a flip, where
    indexing's is an index_put (0.07 instead of 0.5 ms forward and backward at 256x192 px)."""
    bgr, gain, offset = affine
    return (image.flip(1) if bgr else image) * gain + offset


def _ordered(x: torch.Tensor) -> torch.Tensor:
    """Non-negative ``x`` (a ReLU's output) as a tensor that compares and orders as ``x`` does:
    a bfloat16 one's bits as int16, which torch compares 2.3x as fast (0.46 instead of 1.04 ms
    for block1 of a 256 px image, 2 cores); other dtypes as they are. (-0.0 orders below +0.0,
    which only moves a zero's zero gradient.)"""
    return x.view(torch.int16) if x.dtype == torch.bfloat16 else x


class _ReLU(torch.autograd.Function):
    """ReLU that keeps for backward where it let values through, as a uint8 mask (1 byte per
    value) instead of autograd's float32 output (``keep="mask"``); or its output itself
    (``keep="output"``), where that is handed out to a loss, which keeps it anyway, so that the
    mask costs nothing (6.4 MB at 256x192 px, bfloat16, pastiche 1.6.0's layers); or nothing
    (``keep=None``): before a :class:`_MaxPool2x2`, whose gradient reaches only windows with a
    positive maximum, where this ReLU let the value through. The 4 ReLUs before VGG19's poolings
    would keep 5.6 of the 13.6 MB of masks at 256x192 px, 90 of 218 MB at 1024x768."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, inplace: bool, keep: Optional[str]) -> torch.Tensor:
        if inplace:
            ctx.mark_dirty(x)
        y = x.relu_() if inplace else x.relu()
        if keep is not None:
            ctx.save_for_backward(y if keep == "output" else (_ordered(y) > 0).view(torch.uint8))
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        saved = ctx.saved_tensors  # unpacked anew at each read
        if not saved:
            return grad, None, None
        (kept,) = saved
        if kept.dtype != torch.uint8:  # the output: one pass, no mask made (0.35 instead of
            # 1.5 ms for block1 of a 256 px image in bfloat16 as the product below, 2 cores)
            return torch.ops.aten.threshold_backward(grad, kept, 0), None, None
        # float * uint8: 1.4 ms on block1 of a 256 px image, where torch.where(bool, grad, 0) and
        # float * bool take 6.7 and 4.0 ms (2 cores, torch 2.14)
        return grad * kept, None, None


class _MaxPool2x2(torch.autograd.Function):
    """2x2 max pooling of a ReLU's output, and that ReLU's gradient: it keeps for backward which
    of its 4 inputs won each window, as uint8, where autograd keeps the float32 input and int64
    indices (12x the memory), and sends no gradient to a window whose maximum is 0, where the ReLU
    would stop it (so that the ReLU keeps nothing). Both directions work on the 4 strided views
    of the windows' corners: no scatter (max_unpool2d), which torch's deterministic mode flags,
    and half the time of F.max_pool2d with indices (2 cores). The input is non-negative, so
    compared as :func:`_ordered` gives it."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] // 2, x.shape[-1] // 2  # an odd last row/column is dropped
        ordered = _ordered(x)
        a, b, c, d = (ordered[..., dy: 2 * h: 2, dx: 2 * w: 2] for dy in (0, 1) for dx in (0, 1))
        # The first of equal values wins, in a, b, c, d order, as in F.max_pool2d.
        right_top, right_bottom = (b > a).view(torch.uint8), (d > c).view(torch.uint8)
        top, bottom = torch.maximum(a, b), torch.maximum(c, d)
        lower = (bottom > top).view(torch.uint8)
        # window position 0..3 = 2 * (row is odd) + (column is odd): right_bottom + 2 where lower,
        # else right_top. In uint8 arithmetic, whose wrap-around cancels: 0.6 instead of 2.1 ms
        # for block1 of a 256 px image with torch.where on the bool maps (2 cores, torch 2.14).
        # In place, as are the maximum and the no-position mark below: no temporaries beyond the
        # five maps above (28 instead of ~44 MB for block1 at 577x433 px, where a step peaks).
        position = right_bottom.sub_(right_top).add_(2).mul_(lower).add_(right_top)
        del right_top, lower
        maximum = torch.maximum(top, bottom, out=top)
        del bottom
        position.masked_fill_(maximum <= 0, 4)  # no position: backward sends nothing there
        ctx.save_for_backward(position)
        ctx.input_size = x.shape
        return maximum.view(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (position,) = ctx.saved_tensors
        # (N, C, H, W) in the maps' layout; an odd last row/column gets none
        out = torch.empty(ctx.input_size, dtype=grad.dtype, device=grad.device, memory_format=_layout(grad)).zero_()
        h, w = grad.shape[-2:]
        for k in range(4):
            dy, dx = divmod(k, 2)
            torch.mul(grad, (position == k).view(torch.uint8), out=out[..., dy: 2 * h: 2, dx: 2 * w: 2])
        return out


def _layout(x: torch.Tensor, model_dtype: Optional[torch.dtype] = None) -> torch.memory_format:
    """The memory format a (N, C, H, W) tensor like ``x`` should have: channels-last on a GPU,
    where cuDNN's fast kernels are NHWC and an NCHW tensor costs a transpose each way of every
    convolution (2 of the 13 ms of a step at 1024 px on an H100), and for oneDNN's convolutions on
    a CPU: bfloat16 ones (22 instead of 25 ms for VGG19's 9 shapes at 256x192 px), and float32
    ones where :func:`~pastiche.devices.onednn_float32`; else NCHW, which NNPACK and our Winograd
    expect. ``model_dtype``: a bfloat16 model's float32 image is channels-last too, so that its
    first convolution goes to oneDNN rather than NNPACK: 1.0 instead of 5.3 ms at 256x192 px
    with the cast to bfloat16 (21 instead of 64 ms at 577x433), and no NNPACK workspace kept for
    the process's life (15.6 MB at 256x192)."""
    bfloat16 = torch.bfloat16 in (x.dtype, model_dtype)
    channels_last = x.device.type == "cuda" or bfloat16 or (x.device.type == "cpu" and onednn_float32())
    return torch.channels_last if channels_last else torch.contiguous_format


class VGG19(nn.Module):
    """Pretrained VGG19 features; parameters are frozen and the module is in eval mode.

    ``forward(image, layers)`` takes ``image`` (N, 3, H, W) float32 RGB in [0, 1] and returns
    ``{name: activation}`` for ``layers``, running no deeper than the deepest one asked for.
    Activations have ``dtype``, the convolutions' (see :func:`vgg19`); the losses take either.
    """

    def __init__(self, layers: Dict[str, nn.Module], preprocessing: Dict, *, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.layers = nn.ModuleDict(layers)
        self.dtype = dtype
        self.preprocessing = dict(preprocessing)
        self.bgr, gain, offset = preprocessing_affine(preprocessing)
        self.register_buffer("gain", gain, persistent=False)
        self.register_buffer("offset", offset, persistent=False)
        self.devices: List[torch.device] = [torch.device("cpu")] * len(layers)
        self.requires_grad_(False).eval()

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """RGB [0, 1] (N, 3, H, W) → what the weights expect (channel order, scale, mean, std)."""
        return normalize(image, (self.bgr, self.gain, self.offset))

    def place(self, device: Union[str, torch.device],
              supplemental: Sequence[Tuple[Union[str, torch.device], int]] = ()) -> "VGG19":
        """Put layers on ``device``; each (device, index) in ``supplemental`` takes over from
        layer ``index`` on (as pastiche 1.6.0's --supplemental-device)."""
        starts = sorted(((index, torch.device(dev)) for dev, index in supplemental), key=lambda start: start[0])
        current = torch.device(device)
        self.gain, self.offset = self.gain.to(current), self.offset.to(current)
        for i, (name, layer) in enumerate(self.layers.items()):
            while starts and starts[0][0] <= i:
                current = starts.pop(0)[1]
            self.devices[i] = current
            layer.to(current)
        return self

    def clear_cache(self, *, pixels: int) -> None:
        """Forget the kernels' size-dependent transforms (see :class:`Conv3x3`); each is rebuilt
        when a convolution next needs it, so a new image size holds only those it uses. Images of
        more than ``PACK_MAX_PIXELS`` ``pixels`` keep no oneDNN-packed bfloat16 kernels."""
        for layer in self.layers.values():
            if isinstance(layer, Conv3x3):
                layer.clear_cache(pack_bfloat16=pixels <= PACK_MAX_PIXELS)

    def _max_pool_on_cpu(self, i: int) -> bool:
        """Whether layer ``i`` is a max pooling that runs as :class:`_MaxPool2x2`."""
        return (i < len(self.layers) and isinstance(self.layers[LAYER_NAMES[i]], nn.MaxPool2d)
                and self.devices[i].type == "cpu")

    def forward(self, image: torch.Tensor, layers: Iterable[str]) -> Dict[str, torch.Tensor]:
        return dict(self.features(image, layers))

    def features(self, image: torch.Tensor, layers: Iterable[str]) -> Iterator[Tuple[str, torch.Tensor]]:
        """``(name, activation)`` for ``layers`` in network order, each as soon as it is made:
        what :meth:`forward` returns, one at a time, so that a caller can use an activation
        (a loss on it) before the layers after it run."""
        wanted = set(check_layers(layers))
        if not wanted:
            raise PasticheError("no layers requested; name at least one (see 'pastiche --list-layers')")
        last = max(LAYER_INDEX[name] for name in wanted)
        if last >= len(self.layers):
            raise PasticheError(f"layer {LAYER_NAMES[last]} was not built (this model stops at"
                                f" {LAYER_NAMES[len(self.layers) - 1]}); build it with a deeper up_to")
        side = smallest_side(last)
        if not (isinstance(image, torch.Tensor) and image.dim() == 4 and image.shape[1] == 3
                and min(image.shape[2:]) >= side):
            raise PasticheError(f"VGG19 takes (N, 3, H, W) images of at least {side} px a side for"
                                f" {LAYER_NAMES[last]}, got {tuple(getattr(image, 'shape', ())) or type(image).__name__}")
        x = self.normalize(image)
        previous_wanted = False
        for i, (name, layer) in enumerate(self.layers.items()):
            if i > last:
                break
            x = x.to(self.devices[i])
            x = x.contiguous(memory_format=_layout(x, self.dtype))  # a no-op but at the first layer on a device
            # Under autograd on the CPU, ReLU and pooling keep uint8 masks for backward (RAM is
            # what runs out there); on a GPU torch's own kernels are faster (10.2-10.6 instead of
            # 14.2 ms per step at 1024 px on an H100, for 1.84 instead of 1.57 GB at the peak).
            masks = torch.is_grad_enabled() and x.requires_grad and x.device.type == "cpu"
            if isinstance(layer, nn.ReLU):
                # In place unless the conv output was handed out: halves activation memory.
                if masks:
                    # No mask where the pooling after it stops the gradient itself (a watched
                    # ReLU's gradient comes from the losses too); a watched ReLU keeps its
                    # output, which the loss on it keeps anyway.
                    keep = "output" if name in wanted else None if self._max_pool_on_cpu(i + 1) else "mask"
                    x = _ReLU.apply(x, not previous_wanted, keep)
                else:
                    x = torch.relu(x) if previous_wanted else torch.relu_(x)
            elif isinstance(layer, nn.MaxPool2d) and masks:
                x = _MaxPool2x2.apply(x)
            else:  # the first convolution is float32 (see vgg19), the rest have self.dtype
                x = layer(x).to(self.dtype)
            previous_wanted = name in wanted
            if previous_wanted:
                yield name, x


def vgg19(*, weights: Union[str, os.PathLike, None] = None, pooling: str = "max",
          device: Union[str, torch.device] = "cpu", up_to: Optional[str] = None,
          compact: bool = False, dtype: torch.dtype = torch.float32) -> VGG19:
    """Build the VGG19 feature extractor from a quantized weights file.

    ``weights``: a bundled name (default ``"vgg19-8bit"``) or a path made by pastiche-compress.
    ``pooling``: ``"max"`` or ``"avg"``. ``up_to``: build only the layers up to this name
    (deeper layers' weights are not even dequantized); by default, every layer the file holds
    (a file may hold only the first convolutions, e.g. the bundled ``vgg19-4bit``). ``compact``:
    keep the kernels as the file's uint8 indices (see :class:`Conv3x3`): 13 instead of 52 MB
    resident up to block5_conv1 (plus up to 52 MB of transformed kernels kept for speed), same
    results. ``dtype``: the convolutions' arithmetic, ``torch.float32`` or ``torch.bfloat16``
    (CPUs with :func:`pastiche.devices.bfloat16_convolutions` only; see
    :func:`pastiche.devices.compute_dtype`).
    """
    if pooling not in ("max", "avg"):
        raise PasticheError(f"unknown pooling '{pooling}'; use 'max' or 'avg'")
    device = resolve_device(device)
    if dtype not in (torch.float32, torch.bfloat16):
        raise PasticheError(f"unsupported dtype {dtype} for VGG19; use torch.float32 or torch.bfloat16")
    if dtype == torch.bfloat16:
        require_bfloat16("dtype=torch.bfloat16", "torch.float32")
    path = weights_path(weights)
    last = LAYER_INDEX[check_layers([up_to])[0]] if up_to else len(LAYER_NAMES) - 1
    bundled = _bundled(weights)
    header, tensors = load_dequantized(path, names=[n for n in LAYER_NAMES[: last + 1] if n in CONV_NAMES],
                                       indexed=compact, header_sha256=bundled and bundled[1])
    held = _check_arch(header, path)
    # The deepest layer computable: the last one, or the one before the first missing convolution.
    deepest = len(LAYER_NAMES) - 1 if held == len(CONV_NAMES) else LAYER_INDEX[CONV_NAMES[held]] - 1
    if up_to and last > deepest:
        raise PasticheError(f"weights '{weights}' hold VGG19 only up to {LAYER_NAMES[deepest]}, so"
                            f" {LAYER_NAMES[last]} cannot be computed; choose shallower layers or"
                            f" complete weights such as '{DEFAULT_WEIGHTS}'")
    names = LAYER_NAMES[: min(last, deepest) + 1]
    layers: Dict[str, nn.Module] = {}
    for name in names:
        if "_conv" in name:
            arrays = [torch.from_numpy(a) for a in tensors.pop(name)]  # float32 freed layer by layer
            # The image stays float32 into the first convolution: in bfloat16 a pixel's change
            # under 0.5 of 255 would vanish, and L-BFGS's first, small steps with it.
            kind = torch.float32 if name == CONV_NAMES[0] else dtype
            if compact:  # indices stay uint8, in the layout of the maps they will meet
                indices = arrays[0].contiguous(memory_format=_layout(arrays[0], dtype))
                layers[name] = Conv3x3(indices, arrays[2].to(kind), centroids=arrays[1].to(kind))
            else:
                kernel = arrays[0].to(kind)
                layers[name] = Conv3x3(kernel.contiguous(memory_format=_layout(kernel)), arrays[1].to(kind))
        elif "_relu" in name:
            layers[name] = nn.ReLU()
        else:
            layers[name] = nn.MaxPool2d(2, 2) if pooling == "max" else nn.AvgPool2d(2, 2)
    return VGG19(layers, header["preprocessing"], dtype=dtype).place(device)


def _check_arch(header: Dict, path: Path) -> int:
    """The file must hold VGG19's first convolutions, in order, with their shapes (all 16, or
    a prefix of them); returns how many."""
    expected = [[name, list(shape)] for name, shape in conv_shapes().items()]
    found = [[e["name"], e["shape"]] for e in header["layers"]]
    if header.get("arch") != "vgg19" or found != expected[: len(found)]:
        raise PasticheError(f"invalid weights file '{path}': it does not hold VGG19's convolutions"
                            " in order; use a file made by pastiche-compress")
    return len(found)  # the preprocessing was checked with the header (quantized.read_header)
