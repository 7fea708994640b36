"""Devices: the data-parallel mesh, and global batches from process-local data."""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ssm.train.config import ConfigError, DistributedConfig

DATA = "data"


def initialize(config: DistributedConfig) -> None:
    """``jax.distributed.initialize`` when the config asks for multi-host.

    CPU processes exchange data through gloo; GPU and TPU use their own collectives.
    """
    if config.multihost and not jax.distributed.is_initialized():
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(config.coordinator_address, config.num_processes, config.process_id)


def is_primary() -> bool:
    """Whether this process writes the run's files (metrics, summary, plot)."""
    return jax.process_index() == 0


def data_mesh(n_devices: int | None, batch_sizes: dict[str, int]) -> Mesh:
    """A 1-d mesh over the devices (axis ``"data"``); all of them by default.

    With several processes every device of every process joins; ``n_devices``
    picks the first local ones of a single process. Every batch size (config key
    -> size) must split evenly over the devices.
    """
    if jax.process_count() > 1:
        devices = jax.devices()
    else:
        local = jax.local_devices()
        if n_devices is not None and n_devices > len(local):
            raise ConfigError(f"trainer.devices: {n_devices} asked, but only {len(local)} local devices exist")
        devices = local[: n_devices or len(local)]
    for key, size in batch_sizes.items():
        if size % len(devices):
            raise ConfigError(f"{key}: {size} must be divisible by the {len(devices)} devices")
    return Mesh(np.asarray(devices), (DATA,))


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding that puts a whole copy of an array on every device of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def replicate(tree, mesh: Mesh):
    """Copy a pytree that every process holds identically onto every device of the mesh.

    A jitted identity rather than ``jax.device_put``, which cannot place process-local
    values on another process's devices.
    """
    return jax.jit(lambda t: t, out_shardings=replicated(mesh))(tree)


def process_rows(batch_size: int) -> slice:
    """The rows of a global batch that this process loads."""
    per = batch_size // jax.process_count()
    return slice(jax.process_index() * per, (jax.process_index() + 1) * per)


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """Process-local numpy rows -> global arrays split over ``"data"``."""
    sharding = NamedSharding(mesh, PartitionSpec(DATA))
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


def live_bytes(compiled) -> int | None:
    """Bytes a compiled program holds at its peak by XLA's memory analysis: arguments +
    outputs - donated aliases + temporaries (None where the backend gives no analysis)."""
    analysis = compiled.memory_analysis()
    if analysis is None:
        return None
    return (analysis.argument_size_in_bytes + analysis.output_size_in_bytes - analysis.alias_size_in_bytes
            + analysis.temp_size_in_bytes)


def peak_memory_mib(compiled) -> tuple[float | None, str]:
    """Peak memory of a compiled step, MiB, and where the number comes from: the
    device's own peak where it keeps one (GPU, TPU), else :func:`live_bytes`."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**20, "device memory stats"
    live = live_bytes(compiled)
    return (None, "unavailable") if live is None else (live / 2**20, "XLA memory analysis")


def host_memory_bytes() -> int | None:
    """This machine's physical memory (None where the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def device_memory_bytes() -> int | None:
    """Memory of the first local device: its own limit (GPU, TPU), the host's on CPU."""
    stats = jax.local_devices()[0].memory_stats() or {}
    return stats.get("bytes_limit") or host_memory_bytes()
