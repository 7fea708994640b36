"""Test settings that must be in place before JAX or datasets are imported."""

import os
import pathlib
import zlib

ROOT = pathlib.Path(__file__).resolve().parents[1]

# A test worker (pytest-xdist's, started by the pytest process that read this file
# first) takes the flags of the tests, not those its parent left for commands (below).
if "SSM_TEST_XLA_FLAGS" in os.environ:
    os.environ["XLA_FLAGS"] = os.environ["SSM_TEST_XLA_FLAGS"]
# No network at run time: datasets and the hub stay offline in every test.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Eight CPU devices, so data-parallel training can be tested against one device.
# Single-device code is unaffected: it runs on the first device.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
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

# This process compiles at XLA's default optimization level: the numerical tests check
# what users run (a float32 exp within one ulp holds at the default level, not at 0).
# The processes the tests start (train.py, the benchmark and generation commands, the
# notebooks' kernels) are checked against files, messages and each other, and are bound
# by compilation: they compile at level 0 (the training, README, notebook and benchmark
# test files ran in 395 s instead of 491 s with everything at level 0, 2 cores, a cold
# cache; most of their time is in such processes).
# The backend reads XLA_FLAGS once, when it starts, so it starts here first.
jax.devices()
os.environ["SSM_TEST_XLA_FLAGS"] = os.environ["XLA_FLAGS"]
if "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"


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
