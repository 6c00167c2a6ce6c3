"""Tiny synthetic clips and frame folders for the video tests (test_video.py,
test_video_transfer.py), made with PyAV and Pillow."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

try:
    import av
except ImportError:  # only the tests that need no PyAV run
    av = None
needs_av = pytest.mark.skipif(av is None, reason="needs PyAV: pip install av")


def texture(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB texture, (H, W, 3) uint8."""
    small = np.random.default_rng(seed).integers(0, 256, (height // 4 + 2, width // 4 + 2, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width + 8, height + 8), Image.BICUBIC))[:height, :width]


def make_clip(path: Path, frames: int = 3, size=(48, 32), fps: int = 12, audio: str = "", sideways: bool = False,
              rate: int = 8000) -> Path:
    """A clip panning 2 px per frame across a texture; ``audio``: '' (none) or an encoder ('aac',
    'pcm_s16le', 'libmp3lame') of a 440 Hz tone at ``rate`` samples a second;
    ``sideways``: to be shown turned a quarter anticlockwise, as a phone stores a portrait clip
    (MP4 only: the track header's matrix, from which players and ffmpeg read the display rotation)."""
    w, h = size
    big = texture(w + 2 * frames, h)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        sound = out.add_stream(audio, rate=rate, layout="mono") if audio else None
        for i in range(frames):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(big[:, 2 * i:2 * i + w]),
                                                             format="rgb24")))
        out.mux(stream.encode(None))
        if sound is not None:
            t = np.arange(rate * frames // fps) / rate
            wave = (0.3 * np.sin(2 * np.pi * 440 * t))[None]
            fmt = "s16" if audio == "pcm_s16le" else "fltp"
            data = (wave * 32767).astype(np.int16) if fmt == "s16" else wave.astype(np.float32)
            chunk = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
            chunk.sample_rate = rate
            out.mux(sound.encode(chunk))
            out.mux(sound.encode(None))
    if sideways:
        data = path.read_bytes()
        identity, turned = (struct.pack(">9i", *m) for m in ((1 << 16, 0, 0, 0, 1 << 16, 0, 0, 0, 1 << 30),
                                                              (0, -1 << 16, 0, 1 << 16, 0, 0, 0, 0, 1 << 30)))
        at = data.index(identity, data.index(b"tkhd"))
        path.write_bytes(data[:at] + turned + data[at + len(identity):])
    return path


def write_frames(folder: Path, sizes, start: int = 0, name: str = "{:d}.png") -> list:
    folder.mkdir(parents=True, exist_ok=True)
    colours = []
    for i, size in enumerate(sizes, start):
        colour = ((i * 53) % 256, (i * 97 + 40) % 256, (i * 31 + 200) % 256)
        Image.new("RGB", size, colour).save(folder / name.format(i))
        colours.append(colour)
    return colours
