"""Binarised MNIST: pixels in [0, 1] read as Bernoulli probabilities.

* dynamic: a fresh x ~ Bernoulli(pixel) each time a training batch is drawn, on the device, inside
  the compiled step (``TrainConfig(binarize="dynamic")``); the usual protocol of Burda et al. 2015.
* fixed: one draw per image from a seed, made once (``TrainConfig(binarize="fixed")``,
  ``binarize_seed``); the same seed gives the same binary data on any machine.

Validation and evaluation data are binarised once, from ``binarize_seed + 1`` (so never with the
training draw), whenever a binarisation is selected, so that every epoch and every run is scored on
the same binary images.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxvae.checks import check_data
from jaxvae.config import TrainConfig


def sample_binary(key: jax.Array, x: jax.Array) -> jax.Array:
    """x ~ Bernoulli(pixel) elementwise, in x's float dtype (0.0 / 1.0).

    Args:
        key: Draws the bits.
        x: Pixel probabilities in [0, 1].

    Returns:
        0.0 / 1.0, shaped as ``x``.
    """
    return jax.random.bernoulli(key, x).astype(x.dtype)


def fixed_binarization(x, seed: int) -> jax.Array:
    """One reproducible draw x ~ Bernoulli(pixel) from ``seed`` (threefry, so the same on every backend).

    Args:
        x: Pixel probabilities ``[N, D]`` in [0, 1].
        seed: The draw's seed.

    Returns:
        0.0 / 1.0, shaped as ``x``.

    Raises:
        InputError: ``x`` is not a finite float array in [0, 1].
    """
    check_data("binarisation input", x, probabilities=True)
    return sample_binary(jax.random.PRNGKey(seed), jnp.asarray(x))


def prepare_train_data(x, train_config: TrainConfig):
    """Training data as ``fit`` uses it: binarised once for "fixed", as given otherwise (for "dynamic"
    each batch is drawn inside the step, after this checks that the pixels are probabilities).

    Args:
        x: The training images.
        train_config: Gives ``binarize`` and ``binarize_seed``.

    Returns:
        The data to train on.

    Raises:
        InputError: A binarisation is selected and ``x`` is not probabilities.
    """
    if train_config.binarize == "fixed":
        return fixed_binarization(x, train_config.binarize_seed)
    if train_config.binarize == "dynamic":
        check_data("training data", x, probabilities=True)
    return x


def prepare_eval_data(x, train_config: TrainConfig):
    """Validation/test data: binarised once from ``binarize_seed + 1`` if a binarisation is selected, else as given.

    Args:
        x: The images.
        train_config: Gives ``binarize`` and ``binarize_seed``.

    Returns:
        The data to evaluate on.

    Raises:
        InputError: A binarisation is selected and ``x`` is not probabilities.
    """
    return x if train_config.binarize == "none" else fixed_binarization(x, train_config.binarize_seed + 1)
