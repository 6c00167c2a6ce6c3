"""Paint examples/style.jpg: a swirling, brush-stroke "painting" made from code, free to share.

Thousands of short strokes follow a flow field made of a few vortices (think of a night sky
painted with thick, curling strokes). Each stroke takes a vivid colour from the region it starts
in, jittered, and is drawn three times — a dark edge, the body, a light ridge — so it reads as
impasto paint. Deterministic: the same seed gives the same picture, byte for byte with the same
Pillow version.

    python3 examples/make_style.py               # writes examples/style.jpg (512x512)
    python3 examples/make_style.py out.png --size 768 --seed 7
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# A vivid palette: ultramarine, cobalt, turquoise, viridian, cadmium yellow, orange, vermilion,
# magenta, and near-white / near-black for contrast.
PALETTE = np.array([
    (24, 42, 140), (40, 90, 200), (30, 170, 190), (20, 120, 80), (250, 205, 30),
    (245, 130, 20), (220, 45, 35), (170, 40, 130), (245, 240, 215), (20, 22, 40),
], dtype=np.float64)


def flow_angle(x: np.ndarray, y: np.ndarray, vortices, waves: float) -> np.ndarray:
    """Direction of the brush at (x, y) in [0, 1]²: a sum of vortices plus a gentle wave."""
    vx = np.full_like(x, 0.35)  # a drift to the right, like wind
    vy = 0.25 * np.sin(2 * math.pi * waves * x)
    for cx, cy, strength, radius in vortices:
        dx, dy = x - cx, y - cy
        r2 = dx * dx + dy * dy
        falloff = strength * np.exp(-r2 / (2 * radius * radius)) / (np.sqrt(r2) + 0.02)
        vx += -dy * falloff
        vy += dx * falloff
    return np.arctan2(vy, vx)


def colour_field(size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size) palette index per pixel: smooth blobs of colour, from low-frequency noise."""
    coarse = rng.random((6, 6, len(PALETTE)))
    weights = np.stack([np.asarray(Image.fromarray((coarse[..., k] * 255).astype(np.uint8))
                                   .resize((size, size), Image.BICUBIC), np.float64)
                        for k in range(len(PALETTE))], axis=-1)
    weights[..., 8] *= 0.7  # less white and black than colour
    weights[..., 9] *= 0.6
    return weights.argmax(-1)


def paint(size: int = 512, seed: int = 1889) -> Image.Image:
    rng = np.random.default_rng(seed)
    vortices = [(rng.uniform(0.15, 0.85), rng.uniform(0.15, 0.85), rng.uniform(0.6, 1.1) * rng.choice([-1, 1]),
                 rng.uniform(0.08, 0.18)) for _ in range(5)]
    regions = colour_field(size, rng)

    # Underpainting: the colour regions, blurred, so gaps between strokes are not blank.
    under = PALETTE[regions].astype(np.uint8)
    canvas = Image.fromarray(under).filter(ImageFilter.GaussianBlur(size / 40))
    draw = ImageDraw.Draw(canvas)

    def stroke(x0: float, y0: float, length: int, width: int, step: float) -> None:
        points = [(x0, y0)]
        x, y = x0, y0
        for _ in range(length):
            a = flow_angle(np.array([x / size]), np.array([y / size]), vortices, 1.5)[0]
            x, y = x + step * math.cos(a), y + step * math.sin(a)
            points.append((x, y))
        base = PALETTE[regions[int(min(max(y0, 0), size - 1)), int(min(max(x0, 0), size - 1))]]
        body = np.clip(base * rng.uniform(0.8, 1.15) + rng.normal(0, 18, 3), 0, 255)
        dark = tuple(int(c) for c in body * 0.45)
        light = tuple(int(c) for c in np.clip(body * 1.25 + 40, 0, 255))
        draw.line(points, fill=dark, width=width + 2, joint="curve")
        draw.line(points, fill=tuple(int(c) for c in body), width=width, joint="curve")
        ridge = [(px + width * 0.2, py - width * 0.2) for px, py in points]
        draw.line(ridge, fill=light, width=max(1, width // 3), joint="curve")

    # Coarse to fine: big strokes block in the picture, small ones add texture on top.
    scale = size / 512
    for count, length, width, step in ((900, 10, 14, 7.0), (2200, 8, 8, 5.0), (3500, 6, 4, 3.5)):
        for _ in range(int(count * scale * scale)):
            stroke(rng.uniform(-10, size + 10), rng.uniform(-10, size + 10), length,
                   max(1, round(width * scale)), step * scale)

    # Canvas grain.
    grain = rng.normal(0, 6, (size, size, 1))
    return Image.fromarray(np.clip(np.asarray(canvas, np.float64) + grain, 0, 255).astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", default=str(Path(__file__).with_name("style.jpg")))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=1889)
    args = parser.parse_args()
    image = paint(args.size, args.seed)
    options = {"quality": 90, "optimize": True} if args.output.lower().endswith((".jpg", ".jpeg")) else {}
    image.save(args.output, **options)
    print(f"wrote {args.output} ({args.size}x{args.size})")


if __name__ == "__main__":
    main()
