"""Packages for setuptools (the rest of the metadata is in pyproject.toml): every
``ssm*`` package, and the repository's ``configs/`` folder shipped as ``ssm/configs``
(its folders as data packages) so that ``ssm-train --config copying/s4.yaml`` works
from a wheel."""

from pathlib import Path

from setuptools import find_packages, setup

configs = ["ssm.configs", *sorted(f"ssm.configs.{d.name}" for d in Path("configs").iterdir() if d.is_dir())]
setup(
    packages=[*find_packages(include=["ssm*"]), *configs],
    package_dir={"ssm.configs": "configs"},
    package_data={"ssm": ["py.typed"], **{name: ["*.yaml"] for name in configs}},
)
