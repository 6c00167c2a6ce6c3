"""The options' checks: what passes, and the one-line message naming the option otherwise."""

import numpy as np
import pytest
import torch

from pastiche.checks import check_positive, given, nonnegative, weight_list, whole
from pastiche.errors import PasticheError


def test_whole_takes_integers_of_at_least_one_and_not_bools():
    assert whole(1) and whole(np.int64(3))
    assert not any(whole(v) for v in (0, -2, 2.0, "3", True, None))


@pytest.mark.parametrize("value", [0, -1, float("nan"), "1", True])
def test_check_positive_names_the_option(value):
    with pytest.raises(PasticheError) as info:
        check_positive(value, "--size")
    assert str(info.value) == f"--size must be a positive number, got {value!r}"


def test_check_positive_passes_positive_numbers_and_none():
    for value in (1, 0.5, np.float32(2), None):
        check_positive(value, "--size")


def test_nonnegative_returns_a_float_and_refuses_negative_or_non_finite_weights():
    assert nonnegative(0, "--tv-weight") == 0.0 and nonnegative(np.float32(0.5), "--tv-weight") == 0.5
    for value, message in ((-1, "must be zero or positive, got -1.0"), (float("inf"), "got inf"),
                           (False, "must be a number, got False"), ("1", "must be a number, got '1'")):
        with pytest.raises(PasticheError, match=message):
            nonnegative(value, "--tv-weight")


def test_weight_list_takes_one_bare_number_a_list_or_the_defaults():
    assert weight_list(None, 2, lambda i: i / 10, "--style-weights", "style image") == [0.0, 0.1]
    assert weight_list([], 1, lambda i: 1.0, "--style-weights", "style image") == [1.0]
    assert weight_list(0.3, 1, lambda i: 1.0, "--style-weights", "style image") == [0.3]
    assert weight_list(np.array([1, 2]), 2, lambda i: 1.0, "--style-weights", "style image") == [1.0, 2.0]
    assert weight_list(torch.tensor([1.0, 2.0]), 2, lambda i: 1.0, "--style-weights", "style image") == [1.0, 2.0]
    assert weight_list(torch.tensor(0.5), 1, lambda i: 1.0, "--style-weights", "style image") == [0.5]
    with pytest.raises(PasticheError, match=r"--style-weights must be a number, got True"):
        weight_list(torch.tensor([True]), 1, lambda i: 1.0, "--style-weights", "style image")
    with pytest.raises(PasticheError) as info:
        weight_list([1, 2], 3, lambda i: 1.0, "--style-layer-weights", "style layer")
    assert str(info.value) == ("--style-layer-weights has 2 values for 3 style layers; give one per"
                               " style layer or none for the defaults")
    with pytest.raises(PasticheError, match="--style-weights must be zero or positive, got -1.0"):
        weight_list([-1], 1, lambda i: 1.0, "--style-weights", "style image")


def test_given_tells_an_empty_option_from_one_with_values():
    assert given(0.0) and given([1]) and given(np.array([0.5])) and given(torch.tensor([0.5])) and given(torch.tensor(0.5))
    assert not given(None) and not given([]) and not given(np.array([])) and not given(torch.tensor([]))
