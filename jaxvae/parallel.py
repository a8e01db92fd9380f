"""Data-parallel training over all devices with ``jax.sharding``: one Mesh with a "data" axis, each
training batch split along its rows, parameters, optimiser state and the dataset replicated.

The maths is the single-device program's: the same compiled ``train_epoch`` runs with a sharding
constraint on each gathered batch, and XLA partitions the step (per-device forward/backward on
its rows, an all-reduce of the gradient). Random numbers are drawn for the whole batch from the
same keys (JAX's threefry is partitionable), so the run equals the one-device run up to the order
of floating-point summation. The last partial batch of an epoch, whose size rarely divides by the
device count, is computed replicated on every device (the same result, a little redundant work).

Multi-host: call ``jax.distributed.initialize()`` at the top of the same script in every process
(one per host); ``jax.devices()`` then lists every host's devices and the mesh spans them. Every
process must load the same data and use the same seed; arrays are built with
``jax.make_array_from_callback`` so each process only fills its own devices.
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxvae.errors import InputError

DATA_AXIS = "data"


@dataclass(frozen=True)
class DataParallel:
    """A 1-D device mesh over which batches are split (axis ``"data"``).

    Args:
        mesh: The mesh, its one axis named ``"data"``.
    """

    mesh: Mesh

    @property
    def num_devices(self) -> int:
        """The devices in the mesh."""
        return self.mesh.devices.size

    @property
    def batch_sharding(self) -> NamedSharding:
        """Rows split over the devices, features whole."""
        return NamedSharding(self.mesh, PartitionSpec(DATA_AXIS))

    @property
    def replicated(self) -> NamedSharding:
        """A full copy on every device."""
        return NamedSharding(self.mesh, PartitionSpec())

    def replicate(self, tree):
        """Every array of ``tree`` as a global array with a full copy on each device of the mesh.

        Args:
            tree: A pytree of arrays (on the host or a device).

        Returns:
            The same pytree of replicated global arrays.
        """
        def put(leaf):
            host = np.asarray(leaf)
            return jax.make_array_from_callback(host.shape, self.replicated, lambda index: host[index])
        return jax.tree.map(put, tree)


def make_data_parallel(batch_size: int, devices=None) -> DataParallel | None:
    """A ``DataParallel`` over ``devices`` (default: all devices, of every host), or None when there
    is a single device.

    Full batches must split evenly: when ``batch_size`` is not divisible by the device count, the
    mesh uses the largest number of devices that divides it (None if that is 1).

    Args:
        batch_size: Rows per batch.
        devices: The devices; None for ``jax.devices()``.

    Returns:
        The ``DataParallel``, or None.

    Raises:
        InputError: ``batch_size`` below 1.
    """
    devices = list(jax.devices() if devices is None else devices)
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    count = max(d for d in range(1, len(devices) + 1) if batch_size % d == 0)
    if count == 1:
        return None
    return DataParallel(Mesh(np.array(devices[:count]), (DATA_AXIS,)))


def is_writer() -> bool:
    """Whether this process writes run files (checkpoints, metrics, configs, figures): always in a
    single-process run; in a multi-process run (``jax.distributed.initialize``) process 0 only, so
    that the processes, which all hold the same replicated state, never race on one file.

    Returns:
        True on process 0.
    """
    return jax.process_index() == 0
