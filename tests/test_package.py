"""The ``ssm`` package itself: light to import, every submodule reachable, listed once."""

import pathlib
import subprocess
import sys

import ssm

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_module_of_the_package_is_a_lazy_attribute_listed_once_in_dir():
    modules = {p.stem for p in (ROOT / "ssm").glob("*.py") if p.stem != "__init__"}
    modules |= {p.parent.name for p in (ROOT / "ssm").glob("*/__init__.py")}
    assert modules == set(ssm._SUBMODULES)
    for name in sorted(modules):
        assert getattr(ssm, name).__name__ == f"ssm.{name}"
    listing = dir(ssm)  # after the imports above, every submodule is also in the module's globals
    assert len(listing) == len(set(listing)) and modules <= set(listing)
    for name in modules:
        assert f"``ssm.{name}``" in ssm.__doc__, name


def test_import_ssm_loads_no_submodule_and_no_jax():
    code = "import sys, ssm; print(sorted(m for m in sys.modules if m.startswith(('ssm.', 'jax'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
