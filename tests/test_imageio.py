"""Tests for pastiche.imageio: odd-but-valid inputs load, bad ones fail with one clear line."""

import errno
import os
import re
import socket
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from pastiche.errors import PasticheError
from pastiche.imageio import (
    SUPPORTED_EXTENSIONS,
    check_output_path,
    check_output_size,
    load_image,
    open_image,
    resized_dims,
    save_image,
    to_pil,
)


def _load(source, **kw):
    t = load_image(source, **kw)
    assert t.dtype == torch.float32 and t.dim() == 4 and t.shape[:2] == (1, 3)
    assert 0.0 <= t.min().item() and t.max().item() <= 1.0
    return t


def _px(t, x=0, y=0):
    """RGB of pixel (x, y) as 0..255 ints."""
    return tuple(int(round(v * 255)) for v in t[0, :, y, x].tolist())


def _check_error(exc_info, *needles):
    msg = str(exc_info.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg


# --- odd but valid files -------------------------------------------------------------------

def test_float_files_keep_their_range_whatever_one_pixel_holds(tmp_path):
    """One pixel over 1 (or infinite) had made a 0..1 float TIFF read as 0..255: almost black."""
    ramp = np.tile(np.linspace(0, 1, 10, dtype=np.float32), (6, 1))
    for hot in (1.01, np.inf):
        a = ramp.copy()
        a[0, 0] = hot
        Image.fromarray(a).save(tmp_path / "f.tif")
        t = _load(tmp_path / "f.tif")
        assert _px(t, 0, 0) == (255, 255, 255) and _px(t, 9, 5) == (255, 255, 255) and _px(t, 5, 5)[0] == 142
    Image.fromarray(ramp * 255).save(tmp_path / "f255.tif")  # 0..255 data stays 0..255
    assert _px(_load(tmp_path / "f255.tif"), 5, 5)[0] == 142


def test_unreadable_exif_counts_as_no_turn(tmp_path):
    """The pixels decode; a garbage EXIF block had passed the first read and failed the engine's
    second (a resized copy), naming no file, or refused a PNG as corrupt."""
    junk = b"Exif\x00\x00" + b"\xff" * 40
    for name in ("junk.jpg", "junk.png"):
        Image.new("RGB", (64, 48), (200, 30, 30)).save(tmp_path / name, exif=junk)
        image = open_image(tmp_path / name)
        assert image.size == (64, 48) and "exif" not in image.info
        assert _px(_load(image.resize((32, 24))))[0] > 190


def test_pillows_warnings_do_not_reach_the_user(tmp_path, recwarn):
    buffer = tmp_path / "ok.tif"
    Image.new("RGB", (64, 48)).save(buffer)
    (tmp_path / "head.tif").write_bytes(buffer.read_bytes()[:30])  # Pillow warns "Corrupt EXIF data"
    with pytest.raises(PasticheError) as e:
        open_image(tmp_path / "head.tif")
    _check_error(e, "head.tif")
    assert not [w for w in recwarn if "PIL" in w.filename]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_named_pipe_is_refused_not_waited_on(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(PasticheError) as e:
        open_image(tmp_path / "pipe.png")
    _check_error(e, "pipe.png", "it is a pipe or a socket, not a file")


def test_transparency_the_common_converters_miss():
    """Premultiplied grey and alpha (La), a 16-bit grey level marked transparent, a palette with
    alpha in it (what quantize() makes of RGBA): transparent pixels read as white paper."""
    la = Image.new("LA", (4, 4), (0, 0)).convert("La")
    grey16 = Image.fromarray(np.full((4, 4), 1000, np.uint16))
    grey16.info["transparency"] = 1000
    palette = Image.new("P", (4, 4))
    palette.putpalette([255, 0, 0, 0, 0, 255, 0, 255], "RGBA")
    palette.putdata([0] * 8 + [1] * 8)
    assert _px(_load(la)) == _px(_load(grey16)) == _px(_load(palette)) == (255, 255, 255)
    assert _px(_load(palette), 0, 3) == (0, 255, 0)


def test_bool_arrays_are_black_and_white(tmp_path):
    Image.fromarray(np.eye(4, dtype=bool)).save(tmp_path / "bw.png")
    a = np.asarray(Image.open(tmp_path / "bw.png"))
    assert a.dtype == np.bool_
    t = _load(a)
    assert _px(t, 0, 0) == (255, 255, 255) and _px(t, 1, 0) == (0, 0, 0)



def test_grayscale_png(tmp_path):
    path = tmp_path / "gray.png"
    Image.new("L", (5, 3), 128).save(path)
    t = _load(path)
    assert t.shape == (1, 3, 3, 5)
    assert _px(t) == (128, 128, 128)


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_gray_keeps_range(tmp_path, ext):
    a = np.zeros((2, 3), np.uint16)
    a[0, 0], a[0, 1] = 65535, 32768
    path = tmp_path / f"deep{ext}"
    Image.fromarray(a).save(path)
    with Image.open(path) as im:
        assert im.mode in ("I;16", "I;16B", "I")
    t = _load(path)
    assert t[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0]
    assert _px(t, 1) == (128, 128, 128) and _px(t, 2) == (0, 0, 0)


def test_mode_I_pil_image_is_16bit_range():
    im = Image.new("I", (2, 1), 0)
    im.putpixel((0, 0), 65535)
    assert _px(_load(im)) == (255, 255, 255)


def test_float_images_scaled_by_range(tmp_path):
    unit = Image.fromarray(np.full((2, 2), 0.5, np.float32), "F")
    assert _px(_load(unit)) == (128, 128, 128)  # [0, 1] data is scaled x255
    big = Image.fromarray(np.array([[200.0, 999.0]], np.float32), "F")
    path = tmp_path / "float.tif"
    big.save(path)
    t = _load(path)  # > 1 means 0..255 data; values above 255 clip
    assert _px(t) == (200, 200, 200) and _px(t, 1) == (255, 255, 255)


def test_one_bit(tmp_path):
    im = Image.new("1", (4, 4), 0)
    im.putpixel((1, 0), 1)
    path = tmp_path / "bits.png"
    im.save(path)
    t = _load(path)
    assert _px(t) == (0, 0, 0) and _px(t, 1) == (255, 255, 255)


def test_cmyk(tmp_path):
    path = tmp_path / "cmyk.tif"
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(path)
    assert _px(_load(path)) == (255, 0, 0)


def test_palette_with_transparency(tmp_path):
    im = Image.new("P", (2, 1), 0)
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    im.putpixel((1, 0), 1)
    path = tmp_path / "pal.png"
    im.save(path, transparency=0)
    t = _load(path)
    assert _px(t) == (255, 255, 255)  # transparent index -> white
    assert _px(t, 1) == (0, 255, 0)


def test_alpha_composited_over_white(tmp_path):
    a = np.array([[[0, 0, 0, 0], [0, 0, 0, 255], [0, 0, 0, 128]]], np.uint8)
    path = tmp_path / "rgba.png"
    Image.fromarray(a, "RGBA").save(path)
    t = _load(path)
    assert _px(t, 0) == (255, 255, 255)
    assert _px(t, 1) == (0, 0, 0)
    assert _px(t, 2) == (127, 127, 127)
    la = Image.fromarray(np.array([[[10, 0], [10, 255]]], np.uint8), "LA")
    t = _load(la)
    assert _px(t, 0) == (255, 255, 255) and _px(t, 1) == (10, 10, 10)


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (4, 2), (0, 0, 255))
    im.putpixel((0, 0), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    path = tmp_path / "rotated.png"
    im.save(path, exif=exif)
    t = _load(path)
    assert t.shape == (1, 3, 4, 2)  # 2 wide x 4 tall
    assert _px(t, 1, 0) == (255, 0, 0)  # top-left pixel ends up top-right


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert _px(_load(path)) == (255, 0, 0)


def test_webp_and_animated_webp(tmp_path):
    path = tmp_path / "pic.webp"
    Image.new("RGB", (8, 6), (10, 200, 30)).save(path, lossless=True)
    t = _load(path)
    assert t.shape == (1, 3, 6, 8) and _px(t) == (10, 200, 30)
    frames = [Image.new("RGB", (8, 8), c) for c in [(0, 255, 0), (255, 0, 0)]]
    anim = tmp_path / "anim.webp"
    frames[0].save(anim, save_all=True, append_images=frames[1:], lossless=True, duration=50)
    assert _px(_load(anim)) == (0, 255, 0)


# --- in-memory inputs ----------------------------------------------------------------------


def test_numpy_arrays():
    assert _px(_load(np.full((2, 3, 3), 7, np.uint8))) == (7, 7, 7)
    assert _px(_load(np.full((2, 3), 65535, np.uint16))) == (255, 255, 255)
    rgba = np.zeros((2, 2, 4), np.float64)
    rgba[..., 0], rgba[..., 3] = 1.2, 1.0  # resampling overshoot clips to 1
    assert _px(_load(rgba)) == (255, 0, 0)
    assert open_image(np.zeros((4, 5), np.float32)).size == (5, 4)


@pytest.mark.parametrize("source", [np.full((2, 2, 3), 254.0, np.float32), torch.full((3, 2, 2), 254.0)])
def test_float_images_in_0_255_are_an_error_not_a_white_picture(source):
    with pytest.raises(PasticheError) as e:
        open_image(source, name="content image")
    kind = "numpy array" if isinstance(source, np.ndarray) else "tensor"
    assert str(e.value) == (f"cannot use content image ({kind}): float values must be in 0..1, this one"
                            " reaches 254; divide it by 255 (or pass uint8)")


@pytest.mark.parametrize(
    "bad", [np.full((2, 2), 256, np.int64), np.full((2, 2), -1, np.int8), np.zeros((2, 2, 5), np.uint8),
            np.zeros((1, 2, 2, 3)), np.zeros((2, 2), np.complex64)]
)
def test_bad_arrays_name_the_source(bad):
    with pytest.raises(PasticheError) as e:
        open_image(bad, name="style image")
    _check_error(e, "style image")


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_arrays_numpy_hands_out_are_read_as_their_pil_equivalents():
    values = np.array([[0, 100, 255]])
    assert values.dtype == np.int64  # np.array and np.random.randint's default
    assert [_px(_load(values), x)[0] for x in range(3)] == [0, 100, 255]
    big_endian = np.array([[0, 32768, 65535]], ">u2")
    assert [_px(_load(big_endian), x)[0] for x in range(3)] == [0, 128, 255]
    assert open_image(np.matrix([[0, 255]], np.uint8)).size == (2, 1)
    grey_alpha = np.array([[[0, 255], [0, 0]]], np.uint8)  # black opaque, then transparent
    assert [_px(_load(grey_alpha), x) for x in range(2)] == [(0, 0, 0), (255, 255, 255)]
    assert np.array_equal(open_image(grey_alpha), open_image(Image.fromarray(grey_alpha, "LA")))


@pytest.mark.parametrize("array", [
    np.array([[[0, 255], [0, 0]]], np.uint8), np.array([[0, 32768, 65535]], np.uint16), np.eye(3, dtype=bool),
    np.array([[0, 100, 255]], np.int64), np.array([[[0.25, 0.5, 1.0]]], np.float16)], ids=lambda a: str(a.dtype))
def test_a_tensor_is_read_as_the_array_it_holds(array):
    """Channels first, a tensor takes the dtypes, ranges and channel counts an array does."""
    tensor = torch.from_numpy(array)
    tensor = tensor.permute(2, 0, 1) if tensor.dim() == 3 else tensor
    assert np.array_equal(open_image(tensor), open_image(array))
    assert np.array_equal(open_image(tensor[None]), open_image(array))


def test_channels_first_arrays_get_the_transpose_they_need():
    with pytest.raises(PasticheError, match=r"\(for C x H x W, pass a.transpose\(1, 2, 0\)\)"):
        open_image(np.zeros((3, 8, 8), np.uint8))


@pytest.mark.parametrize("source", [Image.new("RGB", (0, 0)), Image.new("L", (5, 0)),
                                    torch.zeros(3, 4, 4, device="meta"), torch.zeros(3, 4, 4).to_sparse()])
def test_images_without_pixels_to_read_are_refused(source):
    with pytest.raises(PasticheError, match="^cannot use content image"):
        open_image(source, name="content image")


def test_pil_mode_i_holding_8_bit_values_is_not_read_as_16_bit():
    grey = Image.fromarray(np.array([[0, 100, 255]], np.uint8))
    assert [_px(_load(grey.convert("I")), x)[0] for x in range(3)] == [0, 100, 255]
    wide = Image.fromarray(np.array([[0, 32768, 65535]], np.int32))  # 16-bit data in mode I
    assert [_px(_load(wide), x)[0] for x in range(3)] == [0, 128, 255]


def test_tensors():
    assert _px(_load(torch.full((3, 2, 2), 0.5))) == (128, 128, 128)
    assert _px(_load(torch.full((1, 3, 2, 2), 1.25))) == (255, 255, 255)
    assert _px(_load(torch.full((2, 2), 0.0))) == (0, 0, 0)
    assert _px(_load(torch.full((3, 2, 2), 9, dtype=torch.uint8))) == (9, 9, 9)
    assert _px(_load(torch.full((1, 2, 2), 0.5))) == (128, 128, 128)  # grey, as an HxWx1 array
    rgba = torch.zeros(1, 4, 2, 2)
    rgba[0, 0], rgba[0, 3] = 1.0, 0.5  # half-transparent red over white
    assert _px(_load(rgba)) == (255, 128, 128)
    for shape in [(5, 3, 4), (3, 0, 5), (2, 1, 3, 4)]:
        with pytest.raises(PasticheError) as e:
            open_image(torch.zeros(shape), name="content")
        _check_error(e, f"content (tensor): unsupported tensor shape {shape};")  # its own shape
    with pytest.raises(PasticheError, match=r"^cannot use content \(tensor\): unsupported tensor dtype torch\.comp"):
        open_image(torch.zeros(3, 2, 2, dtype=torch.complex64), name="content")
    with pytest.raises(PasticheError, match=r"^cannot use content \(tensor\): int32 values must be in 0\.\.255"):
        open_image(torch.full((3, 2, 2), 256, dtype=torch.int32), name="content")
    # subclasses are named by what they are (before: "PIL image"); a nested tensor is refused
    with pytest.raises(PasticheError, match=r"^cannot use content \(tensor\): unsupported tensor shape"):
        open_image(torch.nn.Parameter(torch.rand(5, 3, 4)), name="content")
    with pytest.raises(PasticheError, match=r"^cannot use content \(numpy array\): unsupported array shape"):
        open_image(np.ma.masked_array(np.zeros((5, 5, 7))), name="content")
    with warnings.catch_warnings():  # torch: nested tensors are a prototype
        warnings.simplefilter("ignore")
        nested = torch.nested.nested_tensor([torch.rand(3, 4, 4)])
    with pytest.raises(PasticheError, match=r"^cannot use content \(tensor\): a nested tensor; pass one of its"):
        open_image(nested, name="content")
    with pytest.raises(PasticheError, match=r"spans -3\.\.-3; shift or scale it into 0\.\.255$"):
        open_image(np.full((8, 8), -3, np.int8), name="content")  # not "pass uint16"


# --- bad files -----------------------------------------------------------------------------


def _png_header_only(path, width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def _truncated(tmp_path, ext):
    path = tmp_path / f"half{ext}"
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda d: d / "missing.png", "no such file"),
        (lambda d: d, "directory"),
        (lambda d: (d / "notes.jpg").write_text("hello") and d / "notes.jpg", "not a recognised"),
        (lambda d: _truncated(d, ".jpg"), "truncated"),
        (lambda d: _truncated(d, ".png"), "truncated"),
        (lambda d: _png_header_only(d / "bomb.png", 20000, 10000) or d / "bomb.png", "too large"),
    ],
    ids=["missing", "directory", "text", "truncated-jpg", "truncated-png", "bomb"],
)
def test_bad_files_name_the_path(tmp_path, make, needle):
    path = make(tmp_path)
    with pytest.raises(PasticheError) as e:
        load_image(path)
    _check_error(e, str(path), needle)


def test_bomb_warning_range_is_an_error(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (12, 12)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 144 px: PIL would only warn
    with pytest.raises(PasticheError) as e:
        open_image(path)
    _check_error(e, "big.png", "too large")


def test_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "secret.png"
    Image.new("RGB", (2, 2)).save(path)

    def deny(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(Image, "open", deny)  # chmod is no use when tests run as root
    with pytest.raises(PasticheError) as e:
        open_image(path)
    _check_error(e, "secret.png", "permission denied")


# --- resizing ------------------------------------------------------------------------------


def test_resized_dims_matches_1_6_0():
    assert resized_dims(1024, 768, size=256) == (256, 192)
    assert resized_dims(768, 1024, size=256) == (192, 256)
    assert resized_dims(300, 300, size=64) == (64, 64)
    assert resized_dims(8, 5, size=4) == (4, 2)  # round(2.5) == 2, as Python's round did
    h = int(round((500**2 * 768 / 1024) ** 0.5))
    assert resized_dims(1024, 768, pixels=500**2) == (int(round(1024 / 768 * h)), h) == (577, 433)
    assert resized_dims(1024, 768, size=100, pixels=500**2) == (100, 75)  # size wins
    assert resized_dims(1024, 768) == (1024, 768)
    assert resized_dims(1000, 1, size=10) == (10, 1)  # never 0
    with pytest.raises(PasticheError) as e:
        resized_dims(10, 10, size=0)
    _check_error(e, "invalid size 0")  # the keyword, not a flag: callers are the library's users


def test_load_image_resizes_and_checks_min_side(tmp_path):
    path = tmp_path / "small.png"
    Image.new("RGB", (64, 48), (1, 2, 3)).save(path)
    assert _load(path, size=32).shape == (1, 3, 24, 32)
    with pytest.raises(PasticheError) as e:
        load_image(path, size=16, min_side=32)
    _check_error(e, str(path), "too small", "16x12 px", "32 px")


# --- writing -------------------------------------------------------------------------------


def test_to_pil_rounds_and_clamps():
    t = torch.tensor([0.5, -0.2, 1.2]).view(1, 3, 1, 1)  # resampling's overshoot is clamped
    assert to_pil(t).getpixel((0, 0)) == (128, 0, 255)
    assert to_pil(t[0]).size == (1, 1)
    assert to_pil(torch.tensor([7, 128, 255], dtype=torch.uint8).view(3, 1, 1)).getpixel((0, 0)) == (7, 128, 255)


def test_save_image_takes_every_tensor_load_image_gives_or_open_image_takes(tmp_path):
    """Grey and RGBA tensors too (only 3-channel ones were saved): the same contract both ways."""
    grey, rgba = torch.full((1, 2, 2), 0.5), torch.tensor([1.0, 0.0, 0.0, 0.0]).view(4, 1, 1).expand(4, 2, 2)
    for tensor, pixel in ((grey, (128, 128, 128)), (grey[0], (128, 128, 128)), (rgba, (255, 255, 255))):
        save_image(tensor, tmp_path / "t.png")
        assert Image.open(tmp_path / "t.png").getpixel((1, 1)) == pixel
    with pytest.raises(PasticheError, match="to_pil takes a tensor, got ndarray"):
        to_pil(np.zeros((2, 2, 3)))


@pytest.mark.parametrize("values, needle", [([0.0, 128.0, 255.0], "reaches 255; divide it by 255"),
                                            ([-1.0, 0.0, 1.0], "down to -1; map it to 0..1")])
def test_floats_in_another_range_are_refused_not_washed_out(values, needle):
    """0..255 floats would clip to white and -1..1 ones lose their dark half: both are errors,
    on the way in (open_image) and out (to_pil, save_image)."""
    t = torch.tensor(values).view(3, 1, 1)
    for call in (lambda: open_image(t, name="content image"), lambda: open_image(t.permute(1, 2, 0).numpy()),
                 lambda: to_pil(t)):
        with pytest.raises(PasticheError) as e:
            call()
        _check_error(e, needle)


def test_png_round_trip_is_exact(tmp_path):
    t = torch.rand(1, 3, 7, 9, generator=torch.Generator().manual_seed(0))
    out = save_image(t, tmp_path / "out.png")
    assert out == tmp_path / "out.png"
    assert torch.equal(load_image(out), torch.round(t * 255) / 255)


@pytest.mark.parametrize(
    "name, magic",
    [("a.jpg", b"\xff\xd8\xff"), ("a.JPEG", b"\xff\xd8\xff"), ("a.webp", b"RIFF"),
     ("a.tif", (b"II*\x00", b"MM\x00*")), ("a.bmp", b"BM"), ("a.PNG", b"\x89PNG")],
)
def test_format_follows_extension(tmp_path, name, magic):
    save_image(torch.rand(3, 4, 4), tmp_path / name)
    data = (tmp_path / name).read_bytes()
    assert data.startswith(magic)
    if name.endswith("webp"):
        assert data[8:12] == b"WEBP"
    assert os.listdir(tmp_path) == [name]


def test_jpeg_quality_is_used(tmp_path):
    t = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))
    low = save_image(t, tmp_path / "low.jpg", quality=10).stat().st_size
    high = save_image(t, tmp_path / "high.jpg", quality=95).stat().st_size
    assert low < high
    numpy = save_image(t, tmp_path / "numpy.jpg", quality=np.int64(10))  # numpy's integers count
    assert numpy.read_bytes() == (tmp_path / "low.jpg").read_bytes()


def test_unknown_extension_lists_supported(tmp_path):
    with pytest.raises(PasticheError) as e:
        save_image(torch.rand(3, 2, 2), tmp_path / "out.gif")
    _check_error(e, "out.gif", *SUPPORTED_EXTENSIONS)
    assert os.listdir(tmp_path) == []


def test_missing_or_unwritable_directory(tmp_path, monkeypatch):
    with pytest.raises(PasticheError) as e:
        save_image(torch.rand(3, 2, 2), tmp_path / "nope" / "out.png")
    _check_error(e, "nope", "does not exist")
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(os, "access", lambda *a, **k: False)  # root ignores chmod
    with pytest.raises(PasticheError) as e:
        save_image(torch.rand(3, 2, 2), tmp_path / "out.png")
    _check_error(e, "out.png", "not writable")
    assert os.listdir(tmp_path) == []


def test_read_only_file_and_folder_like_path_are_refused(tmp_path, monkeypatch):
    (tmp_path / "kept.png").write_bytes(b"precious")
    monkeypatch.setattr(os, "access", lambda p, mode: mode != os.W_OK)  # root ignores chmod
    with pytest.raises(PasticheError) as e:
        save_image(torch.rand(3, 2, 2), tmp_path / "kept.png")
    _check_error(e, "kept.png", "read-only")
    monkeypatch.undo()
    with pytest.raises(PasticheError) as e:
        save_image(torch.rand(3, 2, 2), f"{tmp_path}/new.png/")
    _check_error(e, "new.png/", "names a directory")
    assert os.listdir(tmp_path) == ["kept.png"] and (tmp_path / "kept.png").read_bytes() == b"precious"


def test_failed_save_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "out.png"
    path.write_bytes(b"old bytes")

    def full_disk(self, fp, *args, **kwargs):
        fp.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    with pytest.raises(PasticheError) as e:
        save_image(torch.rand(3, 2, 2), path)
    _check_error(e, "out.png", "disk is full")
    assert path.read_bytes() == b"old bytes"
    assert os.listdir(tmp_path) == ["out.png"]  # temp file removed


def _rgb_profile(colorants, gamma=2.2):
    """A minimal ICC v2 display profile (matrix and gamma curves): ``colorants`` are the D50 XYZ
    of the file's full red, green and blue."""
    def fixed(values):  # s15Fixed16 numbers
        return b"".join(struct.pack(">i", round(v * 65536)) for v in values)
    xyz = [b"XYZ " + b"\0" * 4 + fixed(c) for c in colorants]
    curve = b"curv" + b"\0" * 4 + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    desc = b"desc" + b"\0" * 4 + struct.pack(">I", 5) + b"test\0" + b"\0" * 78
    white = b"XYZ " + b"\0" * 4 + fixed((0.9642, 1.0, 0.8249))
    tags = [(b"desc", desc), (b"wtpt", white), (b"rXYZ", xyz[0]), (b"gXYZ", xyz[1]), (b"bXYZ", xyz[2]),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    offset, table, data = 128 + 4 + 12 * len(tags), b"", b""
    for signature, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    header = (struct.pack(">I", offset + len(data)) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
              + b"\0" * 12 + b"acsp" + b"\0" * 28 + fixed((0.9642, 1.0, 0.8249)) + b"\0" * 48)
    return header + struct.pack(">I", len(tags)) + table + data


SRGB_COLORANTS = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141))
# A file whose "red" is sRGB's green and "green" sRGB's red: read as it is, red stays red.
SWAPPED = _rgb_profile((SRGB_COLORANTS[1], SRGB_COLORANTS[0], SRGB_COLORANTS[2]))


def test_colours_are_read_through_the_files_icc_profile(tmp_path):
    """A profile's colours become sRGB (a phone's Display P3, a scan's Adobe RGB), once: the
    image open_image returns carries no profile, so reading it again changes nothing."""
    for name, mode, colour in (("p.png", "RGB", (255, 0, 0)), ("p.jpg", "RGB", (255, 0, 0)),
                               ("a.png", "RGBA", (255, 0, 0, 255))):
        Image.new(mode, (8, 8), colour).save(tmp_path / name, icc_profile=SWAPPED)
        for source in (tmp_path / name, Image.open(tmp_path / name)):
            im = open_image(source)
            r, g, b = im.getpixel((0, 0))
            assert r <= 2 and g >= 250 and b <= 2, (name, im.getpixel((0, 0)))
            assert "icc_profile" not in im.info and open_image(im).getpixel((0, 0)) == (r, g, b)
    Image.new("RGB", (8, 8), (200, 100, 50)).save(tmp_path / "s.png", icc_profile=_rgb_profile(SRGB_COLORANTS))
    assert np.abs(np.subtract(open_image(tmp_path / "s.png").getpixel((0, 0)), (200, 100, 50))).max() <= 5
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "bad.png", icc_profile=b"not a profile")
    assert open_image(tmp_path / "bad.png").getpixel((0, 0)) == (255, 0, 0)  # unusable: the pixels as they are


def test_an_icc_profile_keeps_alpha_and_is_dropped_where_it_is_not_used(tmp_path, monkeypatch):
    rgba = Image.new("RGBA", (2, 1), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (255, 0, 0, 0))  # transparent: white once composited
    rgba.save(tmp_path / "a.png", icc_profile=SWAPPED)
    read = open_image(tmp_path / "a.png")
    assert [read.getpixel((0, 0)), read.getpixel((1, 0))] == [(0, 255, 0), (255, 255, 255)]
    palette = Image.new("RGB", (8, 8), (255, 0, 0)).convert("P")  # a mode left unconverted
    palette.info["icc_profile"] = SWAPPED
    once = open_image(palette)
    assert once.getpixel((0, 0)) == open_image(once).getpixel((0, 0)) == (255, 0, 0)
    assert "icc_profile" not in once.info and palette.info["icc_profile"] == SWAPPED  # the caller's image as it was
    monkeypatch.setattr(ImageCms, "profileToProfile", lambda *a, **k: (_ for _ in ()).throw(
        ImportError("The _imagingcms C module is not installed")))  # a Pillow built without LittleCMS
    assert open_image(tmp_path / "a.png").getpixel((0, 0)) == (255, 0, 0)


def test_an_image_too_wide_for_its_format_is_refused_before_encoding(tmp_path):
    """JPEG and WebP bound a side (65,500 and 16,383 px); their encoders fail only when asked,
    libjpeg with a line of its own on stderr."""
    for ext, limit in ((".webp", 16383), (".jpg", 65500)):
        save_image(torch.rand(3, 1, limit), tmp_path / f"widest{ext}")  # the limit itself is fine
        with pytest.raises(PasticheError) as e:
            save_image(torch.rand(3, 1, limit + 1), tmp_path / f"wide{ext}")
        assert str(e.value) == (f"cannot write output '{tmp_path / f'wide{ext}'}': a {ext} file holds at most"
                                f" {limit} px a side and the image is {limit + 1}x1 px; choose a .png or .tif"
                                " output, or a smaller size or size_pixels")
    check_output_size(tmp_path / "tall.png", (1, 70000))  # PNG and TIFF bound only what memory does
    check_output_size(tmp_path / "tall.TIF", (1, 70000))
    assert sorted(os.listdir(tmp_path)) == ["widest.jpg", "widest.webp"]


def test_an_output_that_is_a_symbolic_link_is_written_through(tmp_path):
    """As open() does: the link's target gets the image and the link stays (the atomic rename
    had replaced the link with a file and left the target as it was)."""
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "other.png"
    target.write_bytes(b"old")
    (tmp_path / "link.png").symlink_to(target)
    save_image(torch.rand(3, 4, 4), tmp_path / "link.png")
    assert (tmp_path / "link.png").is_symlink() and target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path / "real")) == ["other.png"]


def test_save_image_without_replace_never_replaces_anything(tmp_path):
    """replace=False: whatever is at the name when the image is ready (a file, a link, even one
    leading nowhere) stays as it was, no temporary file is left, and FileExistsError says so."""
    (tmp_path / "taken.png").write_bytes(b"someone else's")
    (tmp_path / "link.png").symlink_to(tmp_path / "gone.png")
    for name in ("taken.png", "link.png"):
        with pytest.raises(FileExistsError):
            save_image(torch.rand(3, 4, 4), tmp_path / name, replace=False)
    assert (tmp_path / "taken.png").read_bytes() == b"someone else's"
    assert os.readlink(tmp_path / "link.png") == str(tmp_path / "gone.png")
    save_image(torch.rand(3, 4, 4), tmp_path / "free.png", replace=False)
    assert sorted(os.listdir(tmp_path)) == ["free.png", "link.png", "taken.png"]
    assert (tmp_path / "free.png").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_an_output_that_is_no_regular_file_or_whose_link_leads_nowhere_is_refused(tmp_path):
    """A pipe or a device (a link to /dev/null) was replaced by a regular file; a link into a
    missing folder passed the check and failed after the whole run."""
    os.mkfifo(tmp_path / "pipe.png")
    socket_path = tmp_path / "socket.png"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(socket_path))
    (tmp_path / "null.png").symlink_to(os.devnull)
    (tmp_path / "nowhere.png").symlink_to(tmp_path / "missing" / "x.png")
    for name, needle in (("pipe.png", "it is a pipe or other special file, not a regular one; choose another"),
                         ("socket.png", "it is a socket or other special file, not a regular one; choose another"),
                         ("null.png", "it is a device or other special file, not a regular one; choose another"),
                         ("nowhere.png", f"directory '{tmp_path / 'missing'}' does not exist; create it")):
        with pytest.raises(PasticheError, match=f"^cannot write output '.*{name}': {re.escape(needle)}"):
            check_output_path(tmp_path / name)
    assert (tmp_path / "pipe.png").is_fifo() and os.path.realpath(tmp_path / "null.png") == os.devnull


def test_check_output_path_refuses_inputs(tmp_path):
    src = tmp_path / "in.png"
    Image.new("RGB", (2, 2)).save(src)
    os.link(src, tmp_path / "hard.png")
    for out in [src, str(tmp_path / "sub" / ".." / "in.png"), tmp_path / "hard.png"]:
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(PasticheError) as e:
            check_output_path(out, inputs=[np.zeros((2, 2)), str(src)])
        _check_error(e, "in.png", "refusing to overwrite", "choose another output")
    assert check_output_path(tmp_path / "new.png", inputs=[src]) == tmp_path / "new.png"
    (tmp_path / "dir.png").mkdir()
    for folder in (tmp_path / "dir.png", f"{tmp_path}/sub/"):  # with an extension or without one
        with pytest.raises(PasticheError) as e:
            check_output_path(folder)
        _check_error(e, "it is a directory; give a file name")


def test_pil_input_with_exif_rotation_and_bad_options(tmp_path):
    im = Image.new("RGB", (4, 2))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "r.jpg"
    im.save(path, exif=exif)
    with Image.open(path) as opened:
        assert open_image(opened).size == (2, 4)
    with pytest.raises(PasticheError) as e:
        save_image(torch.rand(3, 2, 2), tmp_path / "q.jpg", quality=0)
    _check_error(e, "invalid quality 0")
    with pytest.raises(PasticheError):
        open_image(5)


def test_pil_image_whose_file_a_with_block_closed(tmp_path):
    path = tmp_path / "c.png"
    Image.new("RGB", (4, 2), "red").save(path)
    with Image.open(path) as opened:
        pass  # never read: Pillow would fail on an assertion
    with pytest.raises(PasticheError) as e:
        open_image(opened, name="content image")
    _check_error(e, "content image (PIL image)", "closed", ".load()")
    with Image.open(path) as opened:
        opened.load()
    assert open_image(opened).getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.parametrize("error, needle", [
    (OSError(errno.ELOOP, "Too many levels of symbolic links"), "loop"),
    (PermissionError(errno.EACCES, "Permission denied"), "permission denied (the file, or a folder on its path)"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory"), "no such file"),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory"), "a part of the path is a file"),
    (OSError(errno.ENAMETOOLONG, "File name too long"), "name is too long"),
])
def test_unusable_paths_say_why(tmp_path, monkeypatch, error, needle):
    """stat() finds what open() would: a file in a folder the user may not search is not "missing"
    (chmod is no use when tests run as root, so stat is made to fail)."""
    path = tmp_path / "in.png"
    Image.new("RGB", (2, 2)).save(path)
    real_stat = os.stat

    def stat(p, *args, **kwargs):
        if os.fspath(p) == str(path):
            raise error
        return real_stat(p, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    with pytest.raises(PasticheError) as e:
        open_image(path, name="style image")
    _check_error(e, f"cannot read style image '{path}'", needle)


def test_a_loop_of_links_as_input_or_output(tmp_path):
    os.symlink("b.png", tmp_path / "a.png")
    os.symlink("a.png", tmp_path / "b.png")
    with pytest.raises(PasticheError) as e:
        load_image(tmp_path / "a.png")
    _check_error(e, "a.png", "loop")
    # as an output it is a name like any other: the link is replaced, not followed
    assert check_output_path(tmp_path / "a.png", inputs=[tmp_path / "b.png"]) == tmp_path / "a.png"
    save_image(torch.rand(3, 2, 2), tmp_path / "a.png")
    assert not os.path.islink(tmp_path / "a.png") and load_image(tmp_path / "a.png").shape == (1, 3, 2, 2)


def test_the_longest_name_the_filesystem_allows_is_written(tmp_path):
    """The temporary file beside the output has a short name of its own: one made from the
    output's name would pass the filesystem's limit first, and fail only after the run."""
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    longest = tmp_path / ("a" * (limit - 4) + ".png")
    save_image(torch.rand(3, 2, 2), longest)
    assert os.listdir(tmp_path) == [longest.name]
    with pytest.raises(PasticheError) as e:
        check_output_path(tmp_path / ("a" * limit + ".png"))
    _check_error(e, f"{limit + 4} bytes", f"this filesystem's {limit}", "choose a shorter output")
    with pytest.raises(PasticheError) as e:
        check_output_path(longest / "b.png")  # under a file
    _check_error(e, f"directory '{longest}' is a file, not a directory")


@pytest.mark.parametrize("answer", [-1, OSError(errno.EINVAL, "Invalid argument")])
def test_a_filesystem_that_does_not_say_its_name_limit_gets_255(tmp_path, monkeypatch, answer):
    def pathconf(path, name):
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(os, "pathconf", pathconf)
    assert save_image(torch.rand(3, 2, 2), tmp_path / "out.png").is_file()
    with pytest.raises(PasticheError, match="over this filesystem's 255"):
        check_output_path(tmp_path / ("a" * 256 + ".png"))
