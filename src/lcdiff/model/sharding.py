"""Running LCD on several devices: a one-axis device mesh and the shardings that use it.

Every device holds a full copy of the (small) generator and score-network parameters and of
the training data; what is split is the work:

- stage B training is data-parallel: each step's batch of ``score_batch_size`` states is split
  along its first axis over the mesh axis ``"data"`` (``score_batch_size`` must be a multiple of
  the number of devices); XLA inserts the gradient all-reduce;
- stage A training splits each step's M prior samples (``mc_samples``, a multiple of the
  number of devices) over the mesh: every device runs the drawn condition's generator on its
  share of the samples; the logsumexp over M and the gradients are reduced across devices. The
  generators and optimizer state are replicated (they are small: one MLP per condition).
- prediction (annealed Langevin) splits the conditions of each compiled chunk over the devices;
  a condition's chains never talk to another condition's, so no communication is needed.

The random numbers of a step are drawn from the same keys whatever the mesh, so one and several
devices give the same results up to the order of floating-point sums (tested with 1 and 4 CPU
devices).

Several hosts: start every process with the same program and call
``jax.distributed.initialize(coordinator_address, num_processes, process_id)`` before anything
else touches JAX; ``jax.devices()`` then lists the devices of all hosts and ``devices=None``
uses all of them (see the README section "Fitting LCD", "Many devices").
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lcdiff.errors import ConfigError

AXIS = "data"


def device_mesh(devices: int | None = None) -> Mesh:
    """A one-axis mesh (axis ``"data"``) over the first ``devices`` visible devices.

    Parameters
    ----------
    devices
        How many devices to use; ``None`` means all of ``jax.devices()`` (on several hosts: all
        devices of all processes).

    Raises
    ------
    ConfigError
        If more devices are requested than are visible, or ``devices`` is not positive.
    """
    visible = jax.devices()
    if devices is None:
        chosen = visible
    else:
        if not isinstance(devices, int | np.integer) or isinstance(devices, bool) or devices < 1:
            raise ConfigError(f"devices must be a positive integer or None, got {devices!r}.")
        if devices > len(visible):
            raise ConfigError(
                f"devices={devices} but only {len(visible)} device(s) are visible "
                f"({visible[0].platform}); pass devices=None to use all of them, or set "
                "XLA_FLAGS=--xla_force_host_platform_device_count=N before importing JAX to "
                "emulate N CPU devices."
            )
        chosen = visible[: int(devices)]
    return Mesh(np.asarray(chosen), (AXIS,))


def mesh_size(mesh: Mesh) -> int:
    """Number of devices in the mesh."""
    return int(mesh.devices.size)


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy on every device of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def split_leading(mesh: Mesh) -> NamedSharding:
    """Sharding that splits the first axis over the devices of ``mesh`` (others replicated)."""
    return NamedSharding(mesh, PartitionSpec(AXIS))


def put_replicated(tree, mesh: Mesh):
    """Place every leaf of ``tree`` on every device of ``mesh``.

    A leaf that is already a ``jax.Array`` (on a mesh of this process's devices) is moved with
    ``jax.device_put``, which keeps its buffer where it already lies on the right device (e.g. a
    freshly initialized state on a one-device mesh) instead of copying it through host memory.
    The training steps donate their state: XLA can update a buffer it owns in place, whereas a
    copy made from host memory is an external buffer that the first step copies again (one extra
    training state at the peak; benchmarks/memory_conditions.py). The result may share buffers
    with ``tree``: a step that donates it invalidates those leaves of ``tree`` (JAX then refuses
    to read them).
    """
    sharding = replicated(mesh)

    def put(x):
        if isinstance(x, jax.Array) and sharding.is_fully_addressable:
            return jax.device_put(x, sharding)
        return _put(np.asarray(x), sharding)

    return jax.tree.map(put, tree)


def put_split(array, mesh: Mesh) -> jax.Array:
    """Place ``array`` split along its first axis (length must be a multiple of the mesh size)."""
    array = np.asarray(array)
    if array.shape[0] % mesh_size(mesh):
        raise ConfigError(
            f"Cannot split an axis of length {array.shape[0]} over {mesh_size(mesh)} devices."
        )
    return _put(array, split_leading(mesh))


def _put(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
    # make_array_from_callback only materializes the shards this process addresses, so the same
    # call works with one process and with several (each host passes the same global array).
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def to_host(array: jax.Array) -> np.ndarray:
    """A numpy copy of a (possibly sharded, possibly multi-host) array, on every process."""
    if getattr(array, "is_fully_addressable", True):
        return np.asarray(array)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def check_divisible(size: int, mesh: Mesh, name: str) -> None:
    """Refuse a configuration value ``name`` = ``size`` that cannot be split over the devices."""
    n = mesh_size(mesh)
    if size % n:
        raise ConfigError(
            f"{name}={size} cannot be split evenly over {n} devices; choose a multiple of {n} "
            f"(e.g. {-(-size // n) * n}) or set devices= to a divisor."
        )


def check_batch_divisible(batch_size: int, mesh: Mesh) -> None:
    """Refuse a stage-B batch that cannot be split evenly over the devices."""
    check_divisible(batch_size, mesh, "score_batch_size")
