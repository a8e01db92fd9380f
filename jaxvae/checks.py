"""The one check of user arrays, shared by fit, evaluation, binarisation and the command line."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxvae.config import VAEConfig


def check_data(name: str, x, vae_config: VAEConfig | None = None, batch_size: int | None = None, *,
               probabilities: bool = False) -> None:
    """Raise ValueError naming ``name`` unless ``x`` is a finite float [N, features] array.

    With ``vae_config``: ``features == input_dim``, and values in [0, 1] for a Bernoulli likelihood.
    With ``batch_size``: at least that many rows. ``probabilities`` asks for [0, 1] regardless
    (binarisation reads pixels as Bernoulli probabilities).
    """
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != 2:
        raise ValueError(f"{name} must be a 2-D array (samples, features), got shape {shape}")
    if shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(shape)})")
    if vae_config is not None and shape[1] != vae_config.input_dim:
        raise ValueError(f"{name} has {shape[1]} features but the model expects input_dim={vae_config.input_dim}")
    if batch_size is not None and batch_size > shape[0]:
        raise ValueError(f"batch_size={batch_size} is larger than {name} ({shape[0]} samples)")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{name} must be floating point in [0, 1] (got dtype {x.dtype}); see jaxvae.data.to_unit_float")
    lo, hi = float(x.min()), float(x.max())  # NaN propagates through min/max: one pass finds it
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"{name} contains NaN or inf values")
    if probabilities or (vae_config is not None and vae_config.likelihood == "bernoulli"):
        if lo < 0 or hi > 1:
            raise ValueError(f"{name} has values in [{lo:g}, {hi:g}]; a Bernoulli likelihood (and binarisation) "
                             "reads them as probabilities in [0, 1]")
