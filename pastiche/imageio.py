"""Reading, resizing and writing images, with one-line PasticheErrors for bad files (the path
checks and atomic writes are :mod:`pastiche.files`'s).

Everything that enters the engine goes through :func:`open_image`, so the network only
ever sees upright 8-bit RGB, whatever the file's mode, bit depth, orientation or alpha, and
RGB files' colour profiles are turned into sRGB.
"""

from __future__ import annotations

import errno
import io
import math
import numbers
import os
import pathlib
import struct
import sys
import warnings
from typing import TYPE_CHECKING, Dict, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from .errors import PasticheError, option_name
from .files import atomic_file, check_readable, check_writable, output_path

if TYPE_CHECKING:
    import torch

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray, "torch.Tensor"]

SUPPORTED_EXTENSIONS: Dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}
_SUPPORTED = ", ".join(sorted(SUPPORTED_EXTENSIONS))
# The formats whose encoders refuse larger sides (libjpeg's JPEG_MAX_DIMENSION, libwebp's
# WEBP_MAX_DIMENSION): checked before a run (check_output_size), where the encoder would fail
# only at its end, with the picture lost.
MAX_SIDE: Dict[str, int] = {"JPEG": 65500, "WEBP": 16383}
# Errors PIL plugins raise while decoding damaged data (struct.error: short headers).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)


def _is_tensor(source: object) -> bool:
    """Whether ``source`` is a torch tensor, without importing torch: where it is not imported yet,
    nothing is one (``pastiche-video`` joins frames without torch's ~1 s and 500 MB)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(source, torch.Tensor)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__


def describe_source(source: object, name: str) -> str:
    """How messages refer to an image source: ``image 'x.png'`` for paths, ``image (numpy array)`` else."""
    if isinstance(source, (str, os.PathLike)):
        return f"{name} '{os.fspath(source)}'"
    kind = ("numpy array" if isinstance(source, np.ndarray) else "tensor" if _is_tensor(source)
            else "PIL image" if isinstance(source, Image.Image) else type(source).__name__)
    return f"{name} ({kind})"


# Float images are 0..1; resampling can overshoot a little, but one reaching past these is in
# another range (0..255, -1..1) that clipping would wash out.
_FLOAT_LIMITS = (-0.5, 1.5)


_DTYPES = "uint8 (0..255), uint16 (0..65535), float (0..1) or bool"


def _from_array(a: np.ndarray, label: str) -> Image.Image:
    """HxW or HxWxC array, C = 1 (grey), 2 (grey, alpha), 3 (RGB) or 4 (RGBA): uint8 0..255,
    uint16 0..65535, other integers 0..255, bool, or float 0..1 -> RGB."""
    a = np.asarray(a)  # np.matrix and other subclasses as plain arrays
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 2, 3, 4)) or a.size == 0:
        hint = (" (for C x H x W, pass a.transpose(1, 2, 0))" if a.ndim == 3 and a.shape[0] in (1, 2, 3, 4)
                else "")
        raise PasticheError(
            f"cannot use {label}: unsupported array shape {tuple(a.shape)}; "
            f"expected HxW or HxWxC with C = 1, 2, 3 or 4{hint}"
        )
    if not a.dtype.isnative:  # big-endian data, e.g. from a FITS or a network buffer
        a = a.astype(a.dtype.newbyteorder("="))
    if a.dtype == np.uint8 or a.dtype == np.bool_:  # bool: a 1-bit image, as np.asarray of mode "1" gives
        x = a.astype(np.float32) / (1.0 if a.dtype == np.bool_ else 255.0)
    elif a.dtype == np.uint16:
        x = a.astype(np.float32) / 65535.0
    elif np.issubdtype(a.dtype, np.integer):  # (numpy's bool is not one)
        # e.g. np.random.randint's int64: 8-bit values in a wider type, as PIL's mode "I" reads them
        if a.min() < 0 or a.max() > 255:
            raise PasticheError(f"cannot use {label}: {a.dtype} values must be in 0..255, this one spans"
                                f" {a.min()}..{a.max()}; " + ("pass uint16 for 16-bit data" if a.min() >= 0 else
                                                             "shift or scale it into 0..255"))
        x = a.astype(np.float32) / 255.0
    elif np.issubdtype(a.dtype, np.floating):
        x = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        if x.max() > _FLOAT_LIMITS[1]:  # clipping would turn the picture white
            raise PasticheError(f"cannot use {label}: float values must be in 0..1, this one reaches"
                                f" {x.max():g}; divide it by 255 (or pass uint8)")
        if x.min() < _FLOAT_LIMITS[0]:  # ... or its dark half black
            raise PasticheError(f"cannot use {label}: float values must be in 0..1, this one goes down"
                                f" to {x.min():g}; map it to 0..1 first (e.g. (x + 1) / 2 for -1..1)")
        # Slightly out-of-range values (resampling overshoot) are clipped, NaN treated as black.
        x = np.clip(x, 0.0, 1.0)
    else:
        raise PasticheError(f"cannot use {label}: unsupported array dtype {a.dtype}; use {_DTYPES}")
    if x.ndim == 2:
        x = x[:, :, None]
    if x.shape[2] == 2:  # grey and alpha, as PIL's mode LA
        x = x[:, :, [0, 0, 0, 1]]
    if x.shape[2] == 4:
        # Composite over white: transparent regions of a style/content image read as paper.
        alpha = x[:, :, 3:]
        x = x[:, :, :3] * alpha + (1.0 - alpha)
    if x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    return Image.fromarray(np.rint(x * 255.0).astype(np.uint8), "RGB")


def _pil_to_rgb(im: Image.Image, label: str) -> Image.Image:
    """Any PIL mode -> 8-bit RGB, keeping the value range of 16-bit and float images."""
    if 0 in im.size:
        raise PasticheError(f"cannot use {label}: it has no pixels ({im.width}x{im.height})")
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode.startswith("I;16") or mode == "I":
        # PIL's own convert() would clip 16-bit values at 255 instead of scaling them. Mode "I"
        # (32-bit) holds 16-bit PNGs in older Pillows, but also 8-bit data (L.convert("I"),
        # Image.fromarray of int32): values within 0..255 are read as 8-bit, not as near-black.
        a = np.asarray(im).astype(np.float64)
        top = 255.0 if mode == "I" and a.size and 0 <= a.min() and a.max() <= 255 else 65535.0
        grey = np.clip(a / top, 0.0, 1.0)
        if isinstance(im.info.get("transparency"), int):  # a grey level that is transparent (PNG tRNS)
            return _from_array(np.stack([grey, (a != im.info["transparency"]).astype(np.float64)], axis=2), label)
        return _from_array(grey, label)
    if mode == "F":
        # Float files declare no range: data up to the arrays' 0..1 tolerance is read as 0..1,
        # brighter as 0..255 (by their finite values: one bright or infinite pixel must not
        # darken the rest); values beyond clip, NaN reads as black, infinity as white.
        a = np.asarray(im, dtype=np.float32)
        finite = a[np.isfinite(a)]
        top = 1.0 if not finite.size or finite.max() <= _FLOAT_LIMITS[1] else 255.0
        return _from_array(np.clip(np.nan_to_num(a / top, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0), label)
    if mode == "La":  # premultiplied: Pillow converts it to LA only
        im, mode = im.convert("LA"), "LA"
    try:
        rgba_palette = mode == "P" and im.palette is not None and im.palette.mode == "RGBA"
        if mode in ("LA", "PA", "RGBA", "RGBa") or "transparency" in im.info or rgba_palette:
            return _from_array(np.asarray(im.convert("RGBA")), label)
        return im.convert("RGB")  # 1, L, P, CMYK, YCbCr, LAB, HSV
    except ValueError as exc:
        raise PasticheError(
            f"cannot use {label}: unsupported image mode {mode} ({exc}); convert it to RGB"
        ) from None


def _upright(im: Image.Image) -> Image.Image:
    """``im`` turned by its EXIF orientation, without the EXIF block (the turn is done, and a
    resized copy must not be turned again). An unreadable block counts as no turn: the pixels
    decoded, and the block is only metadata (Pillow warns about it: not the user's concern)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            upright = ImageOps.exif_transpose(im)
        except (SyntaxError, ValueError, struct.error, KeyError, TypeError, OSError):
            upright = im.copy()
    upright.info.pop("exif", None)
    return upright


def _to_srgb(im: Image.Image) -> Image.Image:
    """``im`` (this module's own copy: its ``info`` changes) with the colours of an embedded RGB
    ICC profile (a phone's Display P3, a scan's Adobe RGB) turned into sRGB, which the network's
    training images, the losses and every output assume: read as they are, a wide-gamut photo's
    colours come out duller. Other modes (CMYK, grey, palettes), a damaged profile or a Pillow
    without LittleCMS leave the pixels as they are. The profile is dropped either way, so that
    what open_image returns carries none and reading it again changes nothing."""
    profile = im.info.pop("icc_profile", None)
    if not profile or im.mode not in ("RGB", "RGBA") or "transparency" in im.info:
        return im
    try:
        converted = ImageCms.profileToProfile(im, ImageCms.ImageCmsProfile(io.BytesIO(profile)),
                                              ImageCms.createProfile("sRGB"), outputMode=im.mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError, ImportError):  # ImportError: no LittleCMS
        return im
    converted.info.pop("icc_profile", None)  # the sRGB profile it was given: sRGB is assumed
    return converted


def _open_path(path: str, label: str) -> Image.Image:
    check_readable(path, label)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. Pillow's "Corrupt EXIF data": the errors say what matters
            # Above MAX_IMAGE_PIXELS PIL only warns; a huge image would exhaust memory later.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # first frame of animated GIF/WebP/TIFF
                im.load()  # force a full decode now so truncation is reported here
                upright = _upright(im)
    except Exception as exc:
        if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
            why = f"image is too large (over {Image.MAX_IMAGE_PIXELS} pixels); downscale it first"
        elif isinstance(exc, UnidentifiedImageError):  # an OSError, so tested first
            why = "not a recognised image format; use PNG, JPEG, WebP, TIFF or BMP"
        elif isinstance(exc, PermissionError):
            why = "permission denied; check the file's permissions"
        elif isinstance(exc, _DECODE_ERRORS):
            why = f"file is truncated or corrupt ({_first_line(exc)}); re-export or re-download it"
        else:
            raise
        raise PasticheError(f"cannot read {label}: {why}") from None
    assert upright is not None
    return _pil_to_rgb(_to_srgb(upright), label)


def open_image(source: ImageLike, *, name: str = "image") -> Image.Image:
    """Return an upright 8-bit RGB PIL image (size w x h) from a path, PIL image, array or tensor.

    Arrays: HxW or HxWxC (C = 1, 2: grey and alpha, 3, 4), uint8 0..255, uint16 0..65535, other
    integers 0..255, bool (black and white), or float 0..1 (values from -0.5 to
    1.5 clipped; beyond, an error that says how to map them). Tensors: (H, W), (C, H, W) or
    (1, C, H, W) with C as for arrays, of the same dtypes and ranges (bfloat16 and float16 too).
    Alpha is composited over white.
    """
    label = describe_source(source, name)
    if isinstance(source, (str, os.PathLike)):
        return _open_path(os.fspath(source), label)
    if isinstance(source, Image.Image):
        try:  # an image the caller opened may still carry an EXIF rotation
            source.load()
            upright = _upright(source)
        except AssertionError:
            if getattr(source, "fp", "") is not None:  # not Pillow's closed-file assertion
                raise
            raise PasticheError(f"cannot use {label}: its file was closed before the image was read"
                                " (a `with Image.open(...)` block?); call .load() inside the block or"
                                " pass the path") from None
        except _DECODE_ERRORS as exc:
            raise PasticheError(f"cannot use {label}: {_first_line(exc)}; reopen the image") from None
        return _pil_to_rgb(_to_srgb(upright), label)
    if _is_tensor(source):
        import torch

        if source.device.type == "meta":
            raise PasticheError(f"cannot use {label}: a tensor on the meta device holds no values; pass one with data")
        if source.is_nested:
            raise PasticheError(f"cannot use {label}: a nested tensor; pass one of its images")
        if source.layout != torch.strided:
            raise PasticheError(f"cannot use {label}: a {str(source.layout).replace('torch.', '')} tensor;"
                                " pass t.to_dense()")
        t = source.detach().cpu()
        if t.dim() == 4 and t.shape[0] == 1:
            t = t[0]
        if not (t.dim() == 2 or (t.dim() == 3 and t.shape[0] in (1, 2, 3, 4))) or t.numel() == 0:
            raise PasticheError(
                f"cannot use {label}: unsupported tensor shape {tuple(source.shape)}; "
                "expected (H, W), (C, H, W) or (1, C, H, W) with C = 1, 2, 3 or 4"
            )
        if t.is_complex() or t.is_quantized:
            raise PasticheError(f"cannot use {label}: unsupported tensor dtype {t.dtype}; use {_DTYPES}")
        t = t.float() if t.is_floating_point() else t  # numpy has no bfloat16
        return _from_array((t.permute(1, 2, 0) if t.dim() == 3 else t).numpy(), label)
    if isinstance(source, np.ndarray):
        return _from_array(source, label)
    raise PasticheError(
        f"cannot use {name}: unsupported type {type(source).__name__}; "
        "pass a file path, PIL image, numpy array or torch tensor"
    )


def resized_dims(
    width: int, height: int, *, size: Optional[int] = None, pixels: Optional[int] = None
) -> Tuple[int, int]:
    """(w, h) after resizing, as pastiche 1.6.0: ``size`` sets the long edge, else ``pixels`` the area."""
    for option, value in (("size", size), ("pixels", pixels)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1
        ):
            raise PasticheError(f"invalid {option} {value!r}; use a positive whole number")
    w, h = width, height
    if size is not None:
        if w > h:
            w, h = size, int(round(size / w * h))
        elif w < h:
            w, h = int(round(size / h * w)), size
        else:
            w, h = size, size
    elif pixels is not None:
        h = int(round(math.sqrt(pixels * h / w)))
        w = int(round(width / height * h))
    return max(1, int(w)), max(1, int(h))


def load_image(
    source: ImageLike,
    *,
    size: Optional[int] = None,
    pixels: Optional[int] = None,
    name: str = "image",
    min_side: int = 1,
    size_option: Optional[str] = None,
) -> torch.Tensor:
    """(1, 3, H, W) float32 RGB in [0, 1], resized per :func:`resized_dims` (PIL bilinear, as 1.6.0);
    PasticheError, naming ``size_option``, if a side comes out under ``min_side``."""
    import torch

    from .devices import fits_in_ram

    size_option = size_option or ("size" if size is not None else "pixels")  # an API caller's keyword
    im = open_image(source, name=name)
    dims = resized_dims(im.width, im.height, size=size, pixels=pixels)
    if dims != im.size:
        if not fits_in_ram(dims[0] * dims[1] * 36):  # 32.5 bytes a pixel measured
            raise PasticheError(f"{describe_source(source, name)} would be {dims[0]}x{dims[1]} px, more"
                                f" than this machine's memory holds; choose a smaller {size_option}")
        im = im.resize(dims, Image.BILINEAR)
    if min(dims) < min_side:
        raise PasticheError(
            f"{describe_source(source, name)} is too small: {dims[0]}x{dims[1]} px after resizing; "
            f"the network needs at least {min_side} px on each side — use a larger image or {size_option}"
        )
    a = np.array(im, dtype=np.uint8)  # copy: torch wants a writable buffer
    return torch.from_numpy(a).permute(2, 0, 1).unsqueeze(0).float().div_(255.0).contiguous()


def to_pil(image: torch.Tensor) -> Image.Image:
    """An image tensor -> RGB uint8 PIL image: (1, 3, H, W) or (3, H, W), or any other tensor
    :func:`open_image` takes (grey, RGBA composited over white); float in [0, 1] (rounded, with
    the ranges and errors of its float arrays), or uint8 as it is."""
    if not _is_tensor(image):
        raise PasticheError(f"to_pil takes a tensor, got {type(image).__name__}")
    return open_image(image, name="image tensor")


def check_output_path(
    path: Union[str, os.PathLike], *, inputs: Sequence[object] = (), option: str = "output"
) -> pathlib.Path:
    """Validate an output path before a long run; return it as a Path. Errors name the option
    ``option`` (a keyword, see :func:`~pastiche.errors.option_name`) as what to change.

    Non-path entries of ``inputs`` (arrays, tensors, PIL images) are ignored.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise PasticheError(f"an output must be a file path, got {path!r}")
    p = output_path(path, option)
    ext = p.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS and not os.path.isdir(p):  # a folder: check_writable says so
        what = f"unsupported extension '{p.suffix}'" if p.suffix else "no file extension"
        raise PasticheError(f"cannot write output '{p}': {what}; use one of {_SUPPORTED}")
    return check_writable(path, inputs=inputs, kind="output", input_kind="input image", option=option)


def check_output_size(path: Union[str, os.PathLike], size: Tuple[int, int]) -> None:
    """PasticheError unless ``path``'s format (see :func:`check_output_path`) holds an image of
    ``size`` = (width, height)."""
    ext = pathlib.Path(os.fspath(path)).suffix.lower()
    limit = MAX_SIDE.get(SUPPORTED_EXTENSIONS.get(ext, ""))
    if limit and max(size) > limit:
        raise PasticheError(f"cannot write output '{os.fspath(path)}': a {ext} file holds at most {limit} px a"
                            f" side and the image is {size[0]}x{size[1]} px; choose a .png or .tif"
                            f" {option_name('output')}, or a smaller {option_name('size')} or"
                            f" {option_name('size_pixels')}")


def save_image(
    image: Union[torch.Tensor, Image.Image], path: Union[str, os.PathLike], *, quality: int = 95,
    option: Optional[str] = "output", replace: bool = True
) -> pathlib.Path:
    """Atomically write an image (a tensor, array or PIL image, as :func:`open_image` takes them) in
    the extension's format.

    ``quality`` (1..100) applies to JPEG and WebP. ``path`` is never left partially written.
    ``option``: the option an error tells the user to change (a keyword, see
    :func:`~pastiche.errors.option_name`; None: nothing, the caller says what to do).
    ``replace`` false: raise FileExistsError, writing nothing, where a file is at ``path`` by the
    time the image is written (a name picked as free a while ago, see ``pastiche.cli``).
    """
    if not replace and isinstance(path, (str, os.PathLike)) and os.path.lexists(path):  # a folder or a pipe too
        raise FileExistsError(errno.EEXIST, "File exists", os.fspath(path))
    p = check_output_path(path, option=option or "output")
    if isinstance(quality, bool) or not isinstance(quality, numbers.Integral) or not 1 <= quality <= 100:
        raise PasticheError(f"invalid quality {quality!r}; use a whole number from 1 to 100")
    quality = int(quality)  # numpy's too, as Pillow takes Python's
    im = open_image(image, name="output image")
    check_output_size(p, im.size)
    fmt = SUPPORTED_EXTENSIONS[p.suffix.lower()]
    options = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    try:
        with atomic_file(p, replace=replace) as tmp, open(tmp, "wb") as f:
            im.save(f, format=fmt, **options)
            f.flush()
            os.fsync(f.fileno())
    except Exception as exc:
        if isinstance(exc, FileExistsError) and not replace:
            raise  # the caller picks another name
        fix = f"choose another {option_name(option)}" if option else ""
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            reason = "the disk is full; free some space" + (f" or {fix}" if fix else "")
        else:
            reason = ("permission denied" if isinstance(exc, PermissionError) else _first_line(exc)) \
                + (f"; {fix}" if fix else "")
        raise PasticheError(f"cannot write output '{p}': {reason}") from None
    return p
