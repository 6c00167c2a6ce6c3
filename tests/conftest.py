"""Shared fixtures: tiny images made here (never downloaded) and a guard on torch's global flags.

``content_path`` is a smooth 48x40 colour gradient (non-square on purpose); ``style_path`` a
48x48 colourful checkerboard crossed by diagonal stripes, so it has texture the network sees.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from pastiche.devices import bfloat16_convolutions


def pytest_collection_modifyitems(config, items):
    """Tests marked ``bfloat16`` need oneDNN's bfloat16 convolutions; on a CPU without them
    (AVX2 only) pastiche refuses bfloat16, which tests/test_devices.py checks everywhere."""
    if bfloat16_convolutions():
        return
    skip = pytest.mark.skip(reason="this CPU has no bfloat16 convolutions (needs AVX-512 or AVX-NE-CONVERT)")
    for item in items:
        if item.get_closest_marker("bfloat16"):
            item.add_marker(skip)


def gradient_array(width: int = 48, height: int = 40) -> np.ndarray:
    """HxWx3 uint8: red grows left to right, green top to bottom, blue along the diagonal."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 40 + 170 * x / (width - 1)
    g = 30 + 180 * y / (height - 1)
    b = 200 - 120 * (x + y) / (width + height - 2)
    return np.rint(np.stack([r, g, b], axis=-1)).astype(np.uint8)


def checker_array(width: int = 48, height: int = 48, cell: int = 6) -> np.ndarray:
    """HxWx3 uint8: a four-colour checkerboard with dark diagonal stripes across it."""
    y, x = np.mgrid[0:height, 0:width]
    palette = np.array([[230, 40, 30], [30, 70, 220], [250, 210, 20], [20, 170, 60]], np.uint8)
    cells = ((x // cell) % 2) + 2 * ((y // cell) % 2)
    image = palette[cells]
    stripes = ((x + y) // 3) % 4 == 0
    image[stripes] = (image[stripes] * 0.25).astype(np.uint8)
    return image


@pytest.fixture
def content_array():
    return gradient_array()


@pytest.fixture
def style_array():
    return checker_array()


@pytest.fixture
def content_path(tmp_path, content_array):
    path = tmp_path / "content.png"
    Image.fromarray(content_array).save(path)
    return path


@pytest.fixture
def style_path(tmp_path, style_array):
    path = tmp_path / "style.png"
    Image.fromarray(style_array).save(path)
    return path


@pytest.fixture(autouse=True)
def _restore_torch_determinism():
    """``deterministic=True`` / ``--deterministic`` switch process-wide torch flags; undo them."""
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]
