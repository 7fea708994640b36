"""ssm.typing: one notation table for the library, and shape annotations that keep to it."""

import importlib
import inspect
import re
import typing

from ssm.typing import DIMENSIONS

# The numerical modules whose public functions carry shape annotations.
ANNOTATED = ("ssm.scan", "ssm.ssd", "ssm.kernels", "ssm.monarch", "ssm.attention")


def test_no_letter_and_no_name_means_two_things():
    letters = [letter for letter, _, _ in DIMENSIONS if letter]
    names = [name for _, name, _ in DIMENSIONS]
    assert len(set(letters)) == len(letters), sorted(x for x in letters if letters.count(x) > 1)
    assert len(set(names)) == len(names), sorted(x for x in names if names.count(x) > 1)
    assert all(len(letter) == 1 and letter.islower() for letter in letters)  # einsum takes single letters
    # The conventions' letters (a position; the two axes of a square matrix) are no dimension's.
    assert not {"t", "i", "j"} & set(letters)
    assert all(name.isidentifier() for name in names)  # as jaxtyping and einops read them


def _public_functions():
    for name in ANNOTATED:
        module = importlib.import_module(name)
        for public in module.__all__:
            obj = getattr(module, public)
            if inspect.isfunction(obj):
                yield f"{name}.{public}", obj


def _array_types(annotation):
    """The jaxtyping array types inside an annotation (through unions and tuples)."""
    if hasattr(annotation, "dim_str"):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _array_types(arg)


def test_every_parameter_of_the_numerical_functions_is_annotated():
    missing = [f"{qualname}({p.name})" for qualname, fn in _public_functions()
               for p in inspect.signature(fn).parameters.values() if p.annotation is inspect.Parameter.empty]
    assert not missing, missing


def test_shape_annotations_use_the_tables_names_only():
    names = {name for _, name, _ in DIMENSIONS}
    unknown, count = {}, 0
    for qualname, fn in _public_functions():
        for argument, hint in typing.get_type_hints(fn, include_extras=True).items():  # they resolve
            for array in _array_types(hint):
                count += 1
                used = set(re.findall(r"[A-Za-z_]\w*", array.dim_str))
                if used - names:
                    unknown[f"{qualname}({argument})"] = sorted(used - names)
    print(f"{count} array annotations")
    assert count > 100
    assert not unknown, unknown


def test_the_annotations_are_not_checked_at_run_time():
    """No runtime type checker wraps the functions (jaxtyping's ``jaxtyped`` would)."""
    wrapped = [qualname for qualname, fn in _public_functions() if hasattr(fn, "__wrapped__")]
    assert not wrapped, wrapped
    import jax.numpy as jnp
    import numpy as np

    from ssm.ssd import ssd_step

    # Integer inputs where the annotation says float, NumPy where it says an array: as before.
    rng = np.random.default_rng(0)
    y, state = ssd_step(np.zeros((1, 2, 2, 3)), rng.integers(-3, 3, (1, 2, 2)), np.full((1, 2), 0.5),
                        np.array([-1.0, -2.0]), rng.normal(size=(1, 1, 3)), rng.normal(size=(1, 1, 3)))
    assert y.shape == (1, 2, 2) and state.shape == (1, 2, 2, 3) and y.dtype == jnp.float32
