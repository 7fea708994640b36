"""Sphinx configuration: the documentation site of ssm.

Built offline with warnings as errors (``make docs``): the stored notebooks are rendered
without being executed (myst-nb), the API pages come from the docstrings (autodoc with
napoleon, Google style).
"""

import pathlib
import sys
import typing

# jaxtyping's switch for documentation builds (the one the Equinox family of libraries
# sets): shape annotations render as written, ``Float[ArrayLike, 'batch length channels']``,
# not as a union spelled with jax's private class path. Set before jaxtyping is imported.
typing.GENERATING_DOCUMENTATION = "ssm"

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ssm  # noqa: E402

project = "ssm"
author = "ssm developers"
copyright = "2026, ssm developers"
release = version = ssm.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax shipped with the site: the math renders without a network
    "sphinx.ext.viewcode",
]

# Notebooks: rendered from their stored outputs (the test suite executes them).
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
# Layers are called: document __call__, and the recurrent methods S4/S4D inherit from
# their shared base (but not flax's nnx.Module machinery, nor tuple's for NamedTuples).
autodoc_default_options = {"special-members": "__call__", "inherited-members": "Module,tuple"}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

exclude_patterns = ["_build", "**/.ipynb_checkpoints", "benchmarks/memory/**"]
html_theme = "sphinx_book_theme"
html_title = f"ssm {version}"
html_theme_options = {"show_toc_level": 2}
html_static_path = []


def _constructor_signature(app, what, name, obj, options, signature, return_annotation):
    """NNX modules are built through a metaclass whose signature is ``(*args, **kwargs)``:
    show the class's own ``__init__`` signature instead."""
    import inspect

    if what == "class" and signature in (None, "(*args, **kwargs)") and "__init__" in vars(obj):
        params = list(inspect.signature(obj.__init__).parameters.values())[1:]
        return str(inspect.Signature(params)), return_annotation
    return None


def setup(app):
    app.connect("autodoc-process-signature", _constructor_signature)
