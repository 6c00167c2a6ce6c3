"""Tests for pastiche/__init__.py: the allocator and threading settings made before torch loads."""

import ast
import os
import subprocess
import sys

_SETTINGS = ("THP_MEM_ALLOC_ENABLE", "MKL_DISABLE_FAST_MM")
_PRINT = "import os; print([os.environ.get(k) for k in %r])" % (_SETTINGS,)


def _environment_after(code: str, **env: str) -> list:
    clean = {k: v for k, v in os.environ.items() if k not in _SETTINGS}
    done = subprocess.run([sys.executable, "-c", f"{code}\n{_PRINT}"], capture_output=True, text=True,
                          env={**clean, **env}, check=True)
    return ast.literal_eval(done.stdout)


def test_settings_made_when_pastiche_loads_first():
    assert _environment_after("import pastiche, torch") == ["1", "1"]


def test_a_users_own_setting_wins():
    """MKL reads any value of MKL_DISABLE_FAST_MM, 0 included, as 'off': an empty one keeps its pools."""
    assert _environment_after("import pastiche", MKL_DISABLE_FAST_MM="") == ["1", ""]


def test_nothing_set_once_torch_is_loaded():
    """Both only take effect before torch's first import, so after it pastiche leaves them alone."""
    assert _environment_after("import torch, pastiche") == [None, None]
