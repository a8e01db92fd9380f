"""The ``XLA_FLAGS`` that make JAX's CPU backend one single-threaded device per core, as text.

XLA reads ``XLA_FLAGS`` once, when JAX's backend starts (the first ``jax.devices()``, array or jit),
not when JAX is imported. This module imports nothing: the command line sets the flags with it
before JAX is loaded. ``jaxvae.parallel.use_host_cores`` is the call for Python.
"""
from __future__ import annotations

import os
import re

from jaxvae.errors import InputError

#: The number of CPU devices XLA makes.
HOST_DEVICE_COUNT = "--xla_force_host_platform_device_count"
#: Each CPU device's matmuls on the thread that runs it. ("intra_op_parallelism_threads=1", often
#: quoted beside it, is TensorFlow's: XLA ignores a word without "--" after the first flag.)
SINGLE_THREADED = ("--xla_cpu_multi_thread_eigen=false",)

_COUNT = re.compile(rf"(?:^|\s){HOST_DEVICE_COUNT}=(\S*)")


def host_device_count(flags: str | None) -> int | None:
    """The CPU device count that ``flags`` (an ``XLA_FLAGS`` value) asks for, else None.

    Args:
        flags: The text of ``XLA_FLAGS``; None or "" for none.

    Returns:
        The count, or None where ``flags`` does not give one (or gives no integer).
    """
    counts = _COUNT.findall(flags or "")
    try:
        return int(counts[-1]) if counts else None
    except ValueError:
        return None


def names_flag_file(flags: str | None) -> bool:
    """Whether ``flags`` (an ``XLA_FLAGS`` value) names a file of flags: XLA reads text that does not
    start with "-" so.

    Args:
        flags: The text of ``XLA_FLAGS``; None or "" for none.

    Returns:
        True for a file name.
    """
    return bool(flags and flags.strip() and not flags.strip().startswith("-"))


def with_host_devices(flags: str | None, n: int) -> str:
    """``flags`` with ``n`` single-threaded CPU devices: the device count and the threading flags
    replaced where given, every other flag kept.

    Args:
        flags: The text of ``XLA_FLAGS``; None or "" for none.
        n: The CPU devices.

    Returns:
        The new text of ``XLA_FLAGS``.

    Raises:
        InputError: ``flags`` names a file of flags (XLA reads text that does not start with "-" so).
    """
    if names_flag_file(flags):
        raise InputError(f"XLA_FLAGS names a file of flags ({flags.strip()!r}); write {HOST_DEVICE_COUNT}=N "
                         "in it, or give the flags themselves")
    names = {HOST_DEVICE_COUNT, *(flag.split("=")[0] for flag in SINGLE_THREADED)}
    kept = [flag for flag in (flags or "").split() if flag.split("=")[0] not in names]
    return " ".join([*kept, f"{HOST_DEVICE_COUNT}={int(n)}", *SINGLE_THREADED])


def cpu_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells it, else
    ``os.cpu_count()``; at least 1).

    Returns:
        The count.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1
