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
