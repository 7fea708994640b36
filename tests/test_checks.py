"""The package's argument checks: one message for a value outside its choices and one
for a bad count, wherever the check is made (a function, a layer, the config)."""

import re

import numpy as np
import pytest

from ssm import linalg, optim
from ssm.checks import check_choice, check_positive, check_positive_int
from ssm.train.config import ConfigError, load_config


def test_check_choice_returns_the_value_or_names_the_argument_the_value_and_the_choices():
    assert check_choice("form", "b", ("a", "b")) == "b"
    assert check_choice("scaling", None, ("rms", None)) is None
    with pytest.raises(ValueError, match=r"^form='x'; expected one of \('a', 'b'\)$"):
        check_choice("form", "x", ("a", "b"))
    with pytest.raises(ValueError, match=r"^layer='gru'; expected one of \('s4', 's4d'\)$"):
        check_choice("layer", "gru", {"s4": 1, "s4d": 2})  # a mapping's keys are its choices


def test_check_choice_raises_the_error_class_it_is_given():
    with pytest.raises(ConfigError, match=r"^model\.norm='batch'; expected one of \('layer', 'rms'\)$"):
        check_choice("model.norm", "batch", ("layer", "rms"), error=ConfigError)


def test_the_math_the_optimizer_and_the_config_report_a_bad_choice_alike():
    with pytest.raises(ValueError, match=r"^form='x'; expected one of \("):
        linalg.mclip(np.eye(3), 0.0, 1.0, form="x")
    with pytest.raises(ValueError, match=r"^shape_scaling='x'; expected one of \("):
        optim.scale_by_msign(shape_scaling="x")
    with pytest.raises(ConfigError, match=r"^schedule\.decay='step'; expected one of \("):
        load_config(None, ["schedule.decay=step"])


@pytest.mark.parametrize("value", [1, 7, np.int64(3)])
def test_check_positive_int_returns_a_python_int(value):
    out = check_positive_int("d_model", value)
    assert out == value and type(out) is int


@pytest.mark.parametrize("value", [0, -2, 2.0, 2.5, True, "4", None])
def test_check_positive_int_names_the_argument_and_the_value(value):
    with pytest.raises(ValueError, match=f"^{re.escape(f'd_model={value!r}')}; expected a positive integer$"):
        check_positive_int("d_model", value)


@pytest.mark.parametrize("value", [1e-5, 2, np.float64(0.5)])
def test_check_positive_returns_a_python_float(value):
    out = check_positive("norm_eps", value)
    assert type(out) is float and out == float(value)


@pytest.mark.parametrize("value", [0, -1e-3, True, "1e-5", None, float("nan")])
def test_check_positive_names_the_argument_and_the_value(value):
    with pytest.raises(ValueError, match=r"norm_eps=.*; expected a number > 0"):
        check_positive("norm_eps", value)
