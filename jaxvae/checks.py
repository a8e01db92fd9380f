"""The checks of what comes in before any work: user arrays (shared by fit, evaluation, binarisation
and the command line) and the memory a training run needs."""
from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae.errors import InputError, MemoryLimitError
from jaxvae.likelihoods import Bernoulli
from jaxvae.model import inputs
from jaxvae.vae import as_model


def check_data(name: str, batch, model=None, batch_size: int | None = None, *, probabilities: bool = False) -> None:
    """Raise ValueError naming ``name`` unless ``batch`` is data a model can train on.

    ``batch`` is an array or a pytree of arrays (``(x, y)``, a dict), checked leaf by leaf: each has
    a leading axis of examples, the same length for all and at least one; floating leaves are finite;
    the inputs (``jaxvae.model.inputs``) are floating point. Then ``model`` (a ``Model`` or a
    ``VAEConfig``) checks what it needs (the blog's VAE: [N, input_dim], values in [0, 1] for a
    Bernoulli likelihood). With ``batch_size``: at least that many rows. ``probabilities`` asks for
    [0, 1] regardless (binarisation reads pixels as Bernoulli probabilities).
    """
    x = inputs(batch)
    named = [(name if leaf is x else name + jax.tree_util.keystr(path), leaf)
             for path, leaf in jax.tree_util.tree_leaves_with_path(batch)]
    if not named:
        raise InputError(f"{name} holds no arrays")
    for where, leaf in named:
        shape = getattr(leaf, "shape", None)
        if not shape or (model is None and leaf is x and len(shape) != 2):
            raise InputError(f"{where} must be a 2-D array (samples, features), got shape {shape}")
        if shape[0] == 0:
            raise InputError(f"{where} is empty (shape {tuple(shape)})")
        if shape[0] != x.shape[0]:
            raise InputError(f"{where} has {shape[0]} rows but the inputs have {x.shape[0]}: every part of a "
                             "batch needs one row per example")
    model = None if model is None else as_model(model)
    if model is not None:
        model.check_shapes(name, batch)
    if batch_size is not None and batch_size > x.shape[0]:
        raise InputError(f"batch_size={batch_size} is larger than {name} ({x.shape[0]} samples)")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise InputError(f"{name} must be floating point in [0, 1] (got dtype {x.dtype}); see jaxvae.data.to_unit_float")
    if jnp.finfo(x.dtype).bits < 32:
        # float16 overflows in the loss's sums long before the lr could matter: refuse it here, named
        raise InputError(f"{name} has dtype {x.dtype}; jaxvae trains on float32 or float64 data "
                         "(x.astype(np.float32)); bfloat16 compute is VAEConfig(compute_dtype='bfloat16')")
    for where, leaf in named:
        # NaN propagates through min/max: one pass finds it
        if jnp.issubdtype(leaf.dtype, jnp.floating) and not np.isfinite(float(leaf.min()) + float(leaf.max())):
            raise InputError(f"{where} contains NaN or inf values")
    if probabilities:
        Bernoulli().check(name, x)
    if model is not None:
        model.check_values(name, batch)


class ResourceError(MemoryLimitError):
    """A model, its optimizer state or its data would not fit the device's memory; the message names
    the sizes and the flags that shrink them."""


# Float32 copies of every parameter that training holds at once: the weights, their gradient, Adam's
# two moments, and the updated weights before the old ones are freed.
_TRAINING_COPIES = 5
# Activations of one training step per input value of the batch, forward and backward (generous:
# the MLP's layers are narrower than the input; the conv model's feature maps are not).
_ACTIVATIONS_PER_INPUT = 16


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def available_memory(device=None) -> int | None:
    """Bytes the device can still allocate: the accelerator's free memory, or the host's available
    RAM for the CPU (Linux's MemAvailable); None where neither is known."""
    device = device or jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    with contextlib.suppress(OSError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def check_memory(vae_config, batch_size: int, data_values: int, n_models: int = 1,
                 available: int | None = None) -> None:
    """ResourceError naming the sizes when training ``n_models`` models of ``vae_config`` on data of
    ``data_values`` float32 values (train and test, kept on the device) would not fit ``available``
    bytes (default: ``available_memory()``); checked before anything is allocated."""
    available = available_memory() if available is None else available
    if available is None:
        return
    model = as_model(vae_config)
    shapes = model.param_shapes()
    n_params = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes))
    model_bytes = 4 * n_params * _TRAINING_COPIES * n_models
    step_bytes = 4 * batch_size * (getattr(model, "input_dim", None) or 0) * _ACTIVATIONS_PER_INPUT * n_models
    data_bytes = 4 * data_values
    needed = model_bytes + step_bytes + data_bytes
    if needed > available:
        models = f" x {n_models} models" if n_models > 1 else ""
        raise ResourceError(
            f"training needs about {_gib(needed)} but the device has {_gib(available)} free: {n_params:,} parameters"
            f"{models} with their gradients and Adam's moments take {_gib(model_bytes)}, a batch of {batch_size} "
            f"{_gib(step_bytes)}, the data {_gib(data_bytes)}; use a smaller --hidden or --latent-dim, "
            f"a smaller --batch-size, or fewer models")


def out_of_memory(error: BaseException) -> str | None:
    """What an allocation failure (Python's MemoryError, XLA's RESOURCE_EXHAUSTED) says, in one short
    line; None for any other error."""
    if not (isinstance(error, MemoryError) or "RESOURCE_EXHAUSTED" in str(error)):
        return None
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    return first[:200]
