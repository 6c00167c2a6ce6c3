"""The 'step elapsed loss' rows both tools print (pastiche 1.6.0's format), parsed.

Kept apart from time_to_quality.py, which imports torch through judge.py: step_time.py reads a
child's peak RSS from wait4, and on Linux that figure starts from the parent's own peak (exec
keeps the old memory's high-water mark), so its parent must stay small.
"""

from __future__ import annotations

import re
from typing import Dict, Tuple

ROW = re.compile(r"^(\d+)\s+([\d.]+)\s+([\d.e+-]+|nan)\s*$")


def step_rows(text: str) -> Dict[int, Tuple[float, str]]:
    """{step: (elapsed seconds, loss as printed)} from a program's output."""
    return {int(m.group(1)): (float(m.group(2)), m.group(3))
            for m in map(ROW.match, map(str.strip, text.splitlines())) if m}


def step_times(text: str) -> Dict[int, float]:
    """{step: elapsed seconds} from a program's output."""
    return {step: elapsed for step, (elapsed, _) in step_rows(text).items()}
