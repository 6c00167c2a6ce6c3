"""Checks of the engine's options, shared by its callers: each names the option in a PasticheError.

numpy's scalars count as numbers (they register as ``numbers.Real``), bools do not: ``True``
steps or weights are a mistake, not 1. Weight lists may also be numpy arrays or torch tensors.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, List, Optional, Sequence, Union

import numpy as np
import torch

from .errors import PasticheError


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _plain(values: object) -> object:
    """A tensor as Python numbers (a list, or one number for 0 dimensions), a 0-dimensional array
    as its number; anything else as it is."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().tolist()
    return values.item() if isinstance(values, np.ndarray) and values.ndim == 0 else values


def weight_list(values: Union[None, float, Sequence[float]], count: int, default: Callable[[int], float],
                option: str, what: str) -> List[float]:
    """One weight per ``what`` (a single number counts as a list of one), or the defaults."""
    values = _plain(values)
    values = [values] if isinstance(values, numbers.Real) else values
    if values is not None and (isinstance(values, (str, bytes, dict, set, frozenset)) or not hasattr(values, "__len__")):
        raise PasticheError(f"{option} must be a list of numbers, one per {what}, got {values!r}")
    if values is None or len(values) == 0:
        return [default(i) for i in range(count)]
    if len(values) != count:
        raise PasticheError(f"{option} has {_count(len(values), 'value')} for {_count(count, what)};"
                            f" give one per {what} or none for the defaults")
    return [nonnegative(v, option) for v in values]


def given(values: Union[None, float, Sequence[float]]) -> bool:
    """Whether a weights option holds values (a number, or a non-empty list, array or tensor; or
    anything else, which :func:`weight_list` then refuses)."""
    values = _plain(values)
    return values is not None and (isinstance(values, numbers.Real) or not hasattr(values, "__len__")
                                   or len(values) > 0)


def whole(value: object) -> bool:
    """Whether ``value`` is a whole number of at least 1 (not a bool)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


MAX_PIXELS = 2 ** 31 - 1  # a side or pixel count past it is no image (and 10**400 overflows a float)


def pixel_count(value: object) -> bool:
    """Whether ``value`` is a whole number of pixels from 1 to MAX_PIXELS."""
    return whole(value) and value <= MAX_PIXELS


def check_flag(value: object, option: str) -> None:
    """An on/off option must be True or False (numpy's too), or 1 or 0: a string such as 'no', or
    None, would be taken as on or off by its truth."""
    if not (isinstance(value, (bool, np.bool_)) or (isinstance(value, numbers.Integral) and value in (0, 1))):
        raise PasticheError(f"{option} must be True or False, got {value!r}")


def check_positive(value: Optional[float], option: str, *, optional: bool = True) -> None:
    if not (value is None and optional) and not (isinstance(value, numbers.Real) and not isinstance(value, bool)
                                  and 0 < value < math.inf):
        raise PasticheError(f"{option} must be a positive number, got {value!r}")


def nonnegative(value: float, option: str) -> float:
    """A loss weight: 0 turns a term off; a negative or non-finite one would make the loss
    unbounded below, so the optimiser would blow up instead of stylising."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise PasticheError(f"{option} must be a number, got {value!r}")
    try:
        value = float(value)
    except OverflowError:  # a Python int past float's range
        raise PasticheError(f"{option} must be a finite number, got one too large for a float") from None
    if not (math.isfinite(value) and value >= 0):
        raise PasticheError(f"{option} must be zero or positive, got {value}")
    return value
