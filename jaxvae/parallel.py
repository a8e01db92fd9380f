"""Placement over devices with ``jax.sharding``: one Mesh with a "model" axis, over which the stacked
models of ``training.fit_models`` are split, and a "data" axis, over which each training batch is
split along its rows; the dataset is replicated.

The maths is the single-device program's. On the "data" axis, the same compiled epoch runs with a
sharding constraint on each gathered batch, and XLA partitions the step (per-device forward/backward
on its rows, an all-reduce of the gradient). Random numbers are drawn for the whole batch from the
same keys (JAX's threefry is partitionable), so the run equals the one-device run up to the order of
floating-point summation. The last partial batch of an epoch, whose size rarely divides by the device
count, is computed replicated over the "data" axis (the same result, a little redundant work). On the
"model" axis, each device holds and trains its own share of the models (the vmapped epoch is split
with ``spmd_axis_name``): N models on a model axis of M devices keep N / M models per device.

Multi-host: call ``jax.distributed.initialize()`` at the top of the same script in every process
(one per host); ``jax.devices()`` then lists every host's devices and the mesh spans them. Every
process must load the same data and use the same seed; arrays are built with
``jax.make_array_from_callback`` so each process only fills its own devices.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxvae.errors import InputError
from jaxvae.xla_flags import cpu_cores, with_host_devices

DATA_AXIS = "data"
MODEL_AXIS = "model"


@dataclass(frozen=True)
class DeviceMesh:
    """A device mesh: batches split over its ``"data"`` axis and, where it has a ``"model"`` axis, the
    stacked models split over that (axes ``("model", "data")``, or ``("data",)`` alone).

    Args:
        mesh: The mesh.
    """

    mesh: Mesh

    @property
    def num_devices(self) -> int:
        """The devices in the mesh."""
        return self.mesh.devices.size

    @property
    def model_axis(self) -> str | None:
        """``"model"`` when the mesh has that axis, else None."""
        return MODEL_AXIS if MODEL_AXIS in self.mesh.axis_names else None

    @property
    def shape(self) -> tuple[int, int]:
        """``(model devices, data devices)``; 1 for an axis the mesh lacks."""
        return self.mesh.shape.get(MODEL_AXIS, 1), self.mesh.shape.get(DATA_AXIS, 1)

    @property
    def batch_sharding(self) -> NamedSharding:
        """Rows split over the "data" axis, features whole."""
        return NamedSharding(self.mesh, PartitionSpec(DATA_AXIS))

    @property
    def replicated(self) -> NamedSharding:
        """A full copy on every device."""
        return NamedSharding(self.mesh, PartitionSpec())

    @property
    def models_sharding(self) -> NamedSharding:
        """The leading (model) axis split over the "model" axis, copies over "data"; replicated
        when the mesh has no "model" axis."""
        return NamedSharding(self.mesh, PartitionSpec(self.model_axis))

    def replicate(self, tree):
        """Every array of ``tree`` as a global array with a full copy on each device of the mesh.

        Args:
            tree: A pytree of arrays (on the host or a device).

        Returns:
            The same pytree of replicated global arrays.
        """
        return _put(tree, self.replicated)

    def split_models(self, tree):
        """Every array of ``tree`` (each with a leading model axis) as a global array split along it
        over the "model" axis (``models_sharding``).

        Args:
            tree: A pytree of arrays whose leading axis runs over the models.

        Returns:
            The same pytree of global arrays.
        """
        return _put(tree, self.models_sharding)


DataParallel = DeviceMesh  # its older name, from when the mesh had a "data" axis only


def _put(tree, sharding: NamedSharding):
    """``tree``'s arrays as global arrays of ``sharding``, each process filling only its own devices."""
    def put(leaf):
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
    return jax.tree.map(put, tree)


def make_data_parallel(batch_size: int, devices=None) -> DeviceMesh | None:
    """A ``DeviceMesh`` with one axis, "data", over ``devices`` (default: all devices, of every host),
    or None when there is a single device.

    Full batches must split evenly: when ``batch_size`` is not divisible by the device count, the
    mesh uses the largest number of devices that divides it (None if that is 1).

    Args:
        batch_size: Rows per batch.
        devices: The devices; None for ``jax.devices()``.

    Returns:
        The ``DeviceMesh``, or None.

    Raises:
        InputError: ``batch_size`` below 1.
    """
    devices = list(jax.devices() if devices is None else devices)
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    count = max(d for d in range(1, len(devices) + 1) if batch_size % d == 0)
    if count == 1:
        return None
    return DeviceMesh(Mesh(np.array(devices[:count]), (DATA_AXIS,)))


def mesh_shape(text: str) -> tuple[int, int]:
    """``"4x2"`` as ``(4, 2)``: devices on the "model" axis, then on the "data" axis.

    Args:
        text: Two positive integers joined by ``x``.

    Returns:
        ``(model, data)``.

    Raises:
        InputError: ``text`` is not of that form.
    """
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not match or 0 in (shape := (int(match[1]), int(match[2]))):
        raise InputError(f"mesh {text!r}: give the devices on the model axis and on the data axis, as 4x2")
    return shape


def make_mesh(shape: tuple[int, int] | str, devices=None) -> DeviceMesh:
    """A ``DeviceMesh`` of axes ("model", "data") of ``shape`` over the first of ``devices``.

    Args:
        shape: ``(model, data)`` device counts, or ``"4x2"``.
        devices: The devices; None for ``jax.devices()`` (every host's, in process order: a data axis
            within a host keeps its all-reduce there).

    Returns:
        The ``DeviceMesh``.

    Raises:
        InputError: A shape that is not two positive integers, or needs more devices than there are.
    """
    devices = list(jax.devices() if devices is None else devices)
    if isinstance(shape, str):
        shape = mesh_shape(shape)
    try:
        model, data = (int(n) for n in shape)
    except (TypeError, ValueError):
        raise InputError(f"mesh {shape!r}: give the devices on the model axis and on the data axis, as (4, 2)") from None
    if model < 1 or data < 1:
        raise InputError(f"mesh {shape!r}: each axis needs at least one device")
    if model * data > len(devices):
        raise InputError(f"mesh {model}x{data}: needs {model * data} devices, there are {len(devices)}")
    return DeviceMesh(Mesh(np.array(devices[:model * data]).reshape(model, data), (MODEL_AXIS, DATA_AXIS)))


def plan_mesh(spec="auto", *, n_models: int, batch_size: int, devices=None) -> DeviceMesh | None:
    """Where ``n_models`` stacked models and their batches go: a ``DeviceMesh``, or None for one device.

    ``"auto"`` puts every device on the "model" axis when there are several models and their number
    divides by the device count (N / devices models each, every batch whole); otherwise it is
    ``make_data_parallel`` (every model on every device, each batch split over the devices). A lone
    model is therefore always data-parallel.

    Args:
        spec: ``"auto"``; None for one device; a ``jax.sharding.Mesh`` with axes ``("model",
            "data")`` (or ``("data",)``); a shape ``(model, data)`` or ``"4x2"`` (``make_mesh``); or a
            ``DeviceMesh``.
        n_models: The models trained together; the model axis must divide it.
        batch_size: Rows per batch; the data axis must divide it.
        devices: The devices for ``"auto"`` and a shape; None for ``jax.devices()``.

    Returns:
        The ``DeviceMesh``, or None where it would hold a single device.

    Raises:
        InputError: A mesh whose axes are not ("model", "data"), a shape ``make_mesh`` refuses, a
            model axis that does not divide ``n_models``, or a data axis that does not divide
            ``batch_size``; the message names both numbers.
    """
    if spec is None:
        return None
    if isinstance(spec, str) and spec == "auto":
        devices = list(jax.devices() if devices is None else devices)
        if n_models > 1 and len(devices) > 1 and n_models % len(devices) == 0:
            spec = (len(devices), 1)
        else:
            return make_data_parallel(batch_size, devices)
    if isinstance(spec, Mesh):
        if tuple(spec.axis_names) not in ((MODEL_AXIS, DATA_AXIS), (DATA_AXIS,)):
            raise InputError(f"mesh: its axes are {tuple(spec.axis_names)}; give ('model', 'data') or ('data',)")
        spec = DeviceMesh(spec)
    placement = spec if isinstance(spec, DeviceMesh) else make_mesh(spec, devices)
    model, data = placement.shape
    if n_models % model:
        raise InputError(f"mesh {model}x{data}: {n_models} models do not split evenly over a model axis of {model} "
                         f"devices; train a multiple of {model} models or give another mesh")
    if batch_size % data:
        raise InputError(f"mesh {model}x{data}: batch_size {batch_size} does not split evenly over a data axis of "
                         f"{data} devices; give a batch size divisible by {data} or another mesh")
    return placement if placement.num_devices > 1 else None


def use_host_cores(n: int | None = None) -> int:
    """Make JAX's CPU backend ``n`` devices, each single-threaded: on a CPU, a sweep of several models
    then trains them one device per core (``plan_mesh("auto")`` puts the devices on the "model" axis
    where they divide the models), faster than one device whose thread pool shares the cores.

    It sets ``XLA_FLAGS`` (other flags kept), which XLA reads when JAX's backend starts, so it must be
    called before anything uses JAX (``jax.devices()``, an array, a jit); importing JAX is fine. It
    then starts the backend and checks the CPU device count. A backend already started with ``n``
    CPU devices passes that check although its threads are as they were.

    Args:
        n: The devices; None for one per core this process may use.

    Returns:
        ``n``.

    Raises:
        InputError: ``n`` below 1, or JAX's backend already started with another CPU device count
            (``XLA_FLAGS`` is then left as it was).
    """
    n = cpu_cores() if n is None else n
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"use_host_cores: n must be a positive number of devices, got {n!r}")
    previous = os.environ.get("XLA_FLAGS")
    os.environ["XLA_FLAGS"] = with_host_devices(previous, int(n))
    count = len(jax.devices("cpu"))
    if count != n:
        if previous is None:
            del os.environ["XLA_FLAGS"]
        else:
            os.environ["XLA_FLAGS"] = previous
        raise InputError(f"use_host_cores({n}): JAX's backend has already started, with {count} CPU device"
                         f"{'s' * (count > 1)}; call it before anything uses JAX (jax.devices(), an array, a jit), "
                         "or set XLA_FLAGS before starting Python")
    return int(n)


class Writer:
    """The one gate of every run-directory write (configs, metrics, checkpoints, figures, a sweep's
    files, the directories themselves and their locks): calling it writes on the writing process and
    does nothing on any other. That is always this process in a single-process run, and process 0 of a
    multi-process run (``jax.distributed.initialize``), so that the processes, which train the same
    models, never race on one file, and only the writer locks a directory. ``WRITER`` is the one instance.
    """

    @property
    def active(self) -> bool:
        """Whether this process writes: True on process 0."""
        return jax.process_index() == 0

    def __call__(self, write, *args, **kwargs):
        """``write(*args, **kwargs)`` on the writing process; nothing elsewhere.

        Args:
            write: The function that writes.
            *args: Its positional arguments.
            **kwargs: Its keyword arguments.

        Returns:
            What ``write`` returns; None off the writing process.
        """
        return write(*args, **kwargs) if self.active else None


WRITER = Writer()


def is_writer() -> bool:
    """Whether this process writes run files (``WRITER.active``): always in a single-process run; in a
    multi-process run process 0 only.

    Returns:
        True on process 0.
    """
    return WRITER.active
