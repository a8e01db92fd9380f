"""The checks of what comes in before any work: user arrays (shared by fit, evaluation, binarisation
and the command line) and the memory a training run needs."""
from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae.config import VAEConfig
from jaxvae.errors import InputError, MemoryLimitError
from jaxvae.models import param_shapes


def check_data(name: str, x, vae_config: VAEConfig | None = None, batch_size: int | None = None, *,
               probabilities: bool = False) -> None:
    """Raise ValueError naming ``name`` unless ``x`` is a finite float [N, features] array.

    With ``vae_config``: ``features == input_dim``, and values in [0, 1] for a Bernoulli likelihood.
    With ``batch_size``: at least that many rows. ``probabilities`` asks for [0, 1] regardless
    (binarisation reads pixels as Bernoulli probabilities).
    """
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != 2:
        raise InputError(f"{name} must be a 2-D array (samples, features), got shape {shape}")
    if shape[0] == 0:
        raise InputError(f"{name} is empty (shape {tuple(shape)})")
    if vae_config is not None and shape[1] != vae_config.input_dim:
        raise InputError(f"{name} has {shape[1]} features but the model expects input_dim={vae_config.input_dim}")
    if batch_size is not None and batch_size > shape[0]:
        raise InputError(f"batch_size={batch_size} is larger than {name} ({shape[0]} samples)")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise InputError(f"{name} must be floating point in [0, 1] (got dtype {x.dtype}); see jaxvae.data.to_unit_float")
    lo, hi = float(x.min()), float(x.max())  # NaN propagates through min/max: one pass finds it
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise InputError(f"{name} contains NaN or inf values")
    if probabilities or (vae_config is not None and vae_config.likelihood == "bernoulli"):
        if lo < 0 or hi > 1:
            raise InputError(f"{name} has values in [{lo:g}, {hi:g}]; a Bernoulli likelihood (and binarisation) "
                             "reads them as probabilities in [0, 1]")


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


def check_memory(vae_config: VAEConfig, batch_size: int, data_values: int, n_models: int = 1,
                 available: int | None = None) -> None:
    """ResourceError naming the sizes when training ``n_models`` models of ``vae_config`` on data of
    ``data_values`` float32 values (train and test, kept on the device) would not fit ``available``
    bytes (default: ``available_memory()``); checked before anything is allocated."""
    available = available_memory() if available is None else available
    if available is None:
        return
    shapes = param_shapes(vae_config)
    n_params = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes))
    model_bytes = 4 * n_params * _TRAINING_COPIES * n_models
    step_bytes = 4 * batch_size * vae_config.input_dim * _ACTIVATIONS_PER_INPUT * n_models
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
