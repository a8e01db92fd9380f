"""Equality of functions by what they compute, so that a fresh but identical optax transformation or
schedule reuses a compiled program instead of compiling it again.

JAX keys its compiled code on the static arguments' hash and equality; two ``optax.adam(1e-3)`` calls
make two different closures, which compare unequal. ``structure_key`` traces a function to its jaxpr
(``jax.make_jaxpr``: JAX's public program representation, constants included) and hashes it: equal
keys mean the same computation, so sharing compiled code between them is safe.
"""
from __future__ import annotations

import hashlib

import jax
import numpy as np


def structure_key(fn, *example_args) -> str:
    """A digest of the computation ``fn(*example_args)`` performs: its jaxpr's text and the values of
    the constants it closes over. Functions with equal keys compute the same outputs from the same
    inputs (of the example's shapes and dtypes).

    Args:
        fn: The function to trace.
        *example_args: Arguments of the shapes and dtypes to trace it with.

    Returns:
        A SHA-256 hex digest.
    """
    closed = jax.make_jaxpr(fn)(*example_args)
    digest = hashlib.sha256(str(closed.jaxpr).encode())
    for const in closed.consts:
        value = np.asarray(const)
        digest.update(f"{value.dtype}{value.shape}".encode() + value.tobytes())
    return digest.hexdigest()
