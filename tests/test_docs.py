"""The documentation site builds offline with warnings as errors, as ``make docs`` runs it,
and has a page for every module, guide and notebook."""

import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_make_docs_builds_the_site_without_a_warning(tmp_path):
    makefile = (ROOT / "Makefile").read_text()
    command = re.search(r"^docs:.*\n\t\$\(PY\) (.*)$", makefile, re.M).group(1)
    assert command == "-m sphinx -W --keep-going -q -b html docs docs/_build/html"
    out = tmp_path / "html"
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                             "-d", str(tmp_path / "doctrees"), "docs", str(out)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stderr, result.stderr

    api = sorted(p.stem for p in (ROOT / "docs" / "api").glob("ssm.*.md"))
    assert len(api) > 10
    for name in api:
        page = (out / "api" / f"{name}.html").read_text()
        # autodoc found the module and documented its members
        assert f'id="module-{name}"' in page, name
        assert page.count('class="sig sig-object py"') > 0, f"{name}: no documented member"
        # Shape annotations render as written, Float[ArrayLike, 'batch length channels'],
        # not as a union spelled with jax's private class path.
        assert "jaxlib._jax" not in page, f"{name}: an annotation rendered with jaxlib's class path"
    from ssm.typing import DIMENSIONS

    notation = (out / "api" / "ssm.typing.html").read_text()
    assert notation.count("<tr") == len(DIMENSIONS) + 1  # the notation table: its header and a row each
    scan = re.sub(r"<[^>]+>", "", (out / "api" / "ssm.scan.html").read_text())
    assert "delta (Float[ArrayLike, 'batch length channels'])" in scan
    for guide in ("getting_started", "which_layer", "config", "benchmarks"):
        assert (out / f"{guide}.html").exists(), guide
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    for name in notebooks:
        page = (out / "notebooks" / f"{name}.html").read_text()
        assert "<img" in page or "data:image/png" in page, f"{name}: rendered without its plots"
        # The math renders without a network: MathJax ships with the site.
        assert 'src="../_static/mathjax/tex-chtml.js"' in page, f"{name}: MathJax is not the site's own"
    assert (out / "_static" / "mathjax" / "tex-chtml.js").is_file()
    # The README's first commands are on the getting-started page (highlighting splits
    # the words of a command, not its comment).
    assert "# creates .venv, installs, trains the default experiment" in (out / "getting_started.html").read_text()


def test_every_module_has_an_api_page():
    import ssm

    pages = {p.stem for p in (ROOT / "docs" / "api").glob("ssm.*.md")}
    index = (ROOT / "docs" / "api" / "index.md").read_text()
    # ssm.bench is a set of programs: the Benchmarks page (BENCHMARKS.md) documents them.
    for name in set(ssm._SUBMODULES) - {"bench"}:
        assert f"ssm.{name}" in pages, name
        assert f"\nssm.{name}\n" in index, name
