"""The example scripts still run against the current API (they are what users copy)."""

import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_notebook_api_example_runs_and_lowers_the_loss(tmp_path):
    out = tmp_path / "out.png"
    done = subprocess.run([sys.executable, str(EXAMPLES / "notebook_api.py"), str(out), "--size", "64",
                           "--steps", "10"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    start, end = map(float, re.search(r"loss (\S+) -> (\S+)", done.stdout).groups())
    assert end < start
    for path in (out, tmp_path / "out-transfer.png"):
        with Image.open(path) as image:
            assert image.mode == "RGB" and max(image.size) == 64


def test_medley_example_shows_this_runs_frames_only(tmp_path):
    """Two styles, 2 steps each, a frame every step (3) and the last held 1 s at 2 fps (2 more):
    10 frames, 5 s. A frame an earlier run left in the workspace is not among them."""
    stale = tmp_path / "ws" / "00-style"
    stale.mkdir(parents=True)
    Image.new("RGB", (32, 24), "red").save(stale / "00099.png")
    out = tmp_path / "medley.gif"
    style = EXAMPLES / "style.jpg"
    done = subprocess.run([sys.executable, str(EXAMPLES / "medley.py"), str(EXAMPLES / "content.jpg"), str(style),
                           str(style), "-o", str(out), "--size", "32", "--steps", "2", "--every", "1", "--fps", "2",
                           "--hold", "1", "--workspace", str(tmp_path / "ws")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    with Image.open(out) as gif:  # Pillow merges repeated frames into one of their summed duration
        durations = []
        for i in range(gif.n_frames):
            gif.seek(i)
            durations.append(gif.info["duration"])
    assert sum(durations) == 5000
