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


def hidden(module: str, code: str) -> subprocess.CompletedProcess:
    """``code`` run where ``module`` cannot be found (as without the extra that brings it)."""
    prelude = ("import importlib.util\n"
               "real = importlib.util.find_spec\n"
               f"importlib.util.find_spec = lambda name, *a: None if name == {module!r} else real(name, *a)\n")
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, cwd=ROOT)


def test_training_without_the_train_extra_names_the_pip_install():
    result = hidden("datasets", "import ssm.train")
    assert result.returncode == 1
    assert "ModuleNotFoundError: ssm.train needs datasets, which is not installed: pip install 'ssm-jax[train]'" \
        in result.stderr
    assert hidden("datasets", "import ssm.layers, ssm.kernels, ssm.scan").returncode == 0  # layers need no extra


def test_tensorboard_logging_without_its_extra_is_a_config_error_naming_the_key_and_the_extra():
    code = ("from ssm.train import load_config\n"
            "load_config(None, ['logging.tensorboard=true'])")
    result = hidden("tensorboardX", code)
    assert "ConfigError: logging.tensorboard: true needs tensorboardX, which is not installed: " \
           "pip install 'ssm-jax[tensorboard]'" in result.stderr


def test_the_package_ships_its_type_marker():
    assert (ROOT / "ssm" / "py.typed").is_file()
    assert '"py.typed"' in (ROOT / "setup.py").read_text()  # (test_cli checks the built wheel holds it)
