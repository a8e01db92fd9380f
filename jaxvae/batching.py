"""The on-device epoch pipeline: a permutation drawn on the device, cut into batches of row indices.

The dataset stays on the device for the whole run; each step gathers its rows by index, so an epoch
moves no data between host and device and Python does no per-batch work.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxvae.errors import InputError


class EpochIndices(NamedTuple):
    """Row indices of one epoch: ``full`` is ``[n_full_batches, batch_size]``; ``tail`` holds the
    rows of the last partial batch (empty when the data divide evenly or ``drop_last``)."""

    full: jax.Array
    tail: jax.Array


def batch_counts(n: int, batch_size: int, drop_last: bool) -> tuple[int, int]:
    """(number of full batches, size of the partial last batch kept) for ``n`` rows."""
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if n < 1:
        raise InputError("the dataset is empty: no rows to batch")
    n_full, rest = divmod(n, batch_size)
    return n_full, 0 if drop_last else rest


def steps_per_epoch(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Optimisation steps in one epoch over ``n`` rows: the full batches, plus the partial one if kept."""
    n_full, tail = batch_counts(n, batch_size, drop_last)
    return n_full + (1 if tail else 0)


def epoch_indices(key: jax.Array | None, n: int, batch_size: int, drop_last: bool = False) -> EpochIndices:
    """Shuffled (``key`` given) or ordered (``key=None``) batches of row indices for one epoch.

    Keeps the last partial batch unless ``drop_last``, as the blog's DataLoader does. Shapes depend
    only on ``n``, ``batch_size`` and ``drop_last``, so this traces once under ``jit``.
    """
    n_full, tail = batch_counts(n, batch_size, drop_last)
    order = jnp.arange(n, dtype=jnp.int32) if key is None else jax.random.permutation(key, n).astype(jnp.int32)
    full = order[: n_full * batch_size].reshape(n_full, batch_size)
    return EpochIndices(full, order[n_full * batch_size : n_full * batch_size + tail])
