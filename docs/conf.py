"""Sphinx configuration: the documentation site of ssm.

Built offline with warnings as errors (``make docs``): the stored notebooks are rendered
without being executed (myst-nb), the API pages come from the docstrings (autodoc with
napoleon, Google style).
"""

import pathlib
import sys

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
    "sphinx.ext.viewcode",
]

# Notebooks: rendered from their stored outputs (the test suite executes them).
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

exclude_patterns = ["_build", "**/.ipynb_checkpoints", "benchmarks/memory/**"]
html_theme = "sphinx_book_theme"
html_title = f"ssm {version}"
html_theme_options = {"show_toc_level": 2}
html_static_path = []
