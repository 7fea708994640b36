"""Test settings that must be in place before JAX or datasets are imported."""

import os
import pathlib
import zlib

ROOT = pathlib.Path(__file__).resolve().parents[1]

# No network at run time: datasets and the hub stay offline in every test.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Eight CPU devices, so data-parallel training can be tested against one device.
# Single-device code is unaffected: it runs on the first device.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
# The suite is bound by XLA compilation (small shapes, thousands of programs): the
# backend's optimization level 0 compiles them about a quarter faster (measured on 2
# cores with an empty compilation cache: the layer tests 81 s -> 59 s, the training,
# README, notebook and benchmark tests 491 s -> 395 s); programs run slower, which
# these shapes do not feel. The suite passes at the default level too: set the flag in
# XLA_FLAGS to test another level.
if "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"
# Small NumPy matrix products in the float64 references must not spawn BLAS threads
# that fight the test workers for two cores (a 64x64 product went 2.7 us -> 375 us).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# One compilation cache for the whole suite, inside the repo's ignored files.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".cache" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng(request):
    """A NumPy generator per test, seeded from the test's id plus ``SSM_TEST_SEED``
    (default 0): reproducible, and redrawn for every test by changing the variable."""
    seed = zlib.crc32(request.node.nodeid.encode()) + int(os.environ.get("SSM_TEST_SEED", "0"))
    return np.random.default_rng(seed)


@pytest.fixture
def x64():
    """Run the test body with float64 enabled in JAX."""
    with jax.enable_x64(True):
        yield
