"""Observation models p(x | z) as small values: the blog's Gaussian with a fixed sigma, and the Bernoulli.

A likelihood knows the one thing that differs between the two everywhere else in jaxvae: what the
decoder's last layer outputs (the Gaussian's mean, after the configured output non-linearity; the
Bernoulli's logits), the per-sample log-density of x given that output, the pixel values it
produces (``mean``), which of the training hyperparameters it reads (``hyperparameters``), and
what input it accepts (``check``). ``likelihood_of(name)`` is the one place a likelihood's name is read.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp

from jaxvae.errors import InputError
from jaxvae.hyper import RECON_SIGMA, Hyperparameter

_LOG_2PI = math.log(2.0 * math.pi)


@jax.custom_jvp
def softplus(x: jax.Array) -> jax.Array:
    """log(1 + e^x): ``jax.nn.softplus``'s value and gradient bit for bit, as max(x, 0) + log1p(exp(-|x|))
    without ``logaddexp``'s NaN select: ~3x faster on XLA's CPU backend, which counts in the
    importance-sampled evaluation (benchmarks/README.md).

    Args:
        x: Any array.

    Returns:
        softplus(x), elementwise.
    """
    return jnp.maximum(x, 0) + jnp.log1p(jnp.exp(-jnp.abs(x)))


@softplus.defjvp
def _softplus_jvp(primals, tangents):
    # logaddexp(x, 0)'s own rule: d/dx = exp(x - out), with +inf read as 0 on both sides
    (x,), (t,) = primals, tangents
    out = softplus(x)

    def finite(v):
        return jnp.where(v == jnp.inf, jnp.zeros_like(v), v)

    return out, t * jnp.exp(finite(x) - finite(out))


def gauss_similarity_loss(x: jax.Array, x_hat: jax.Array, sigma: float = 1.0) -> jax.Array:
    """Per-sample -log N(x | x_hat, sigma^2 I) without its constant: sum (x - x_hat)^2 / (2 sigma^2),
    inputs flattened from axis 1 as the blog's loss does.

    Args:
        x: The inputs ``[B, ...]``.
        x_hat: The reconstructions, as ``x``.
        sigma: The Gaussian's sigma.

    Returns:
        ``[B]``.
    """
    x = x.reshape(x.shape[0], -1)
    x_hat = x_hat.reshape(x_hat.shape[0], -1)
    return jnp.sum((x - x_hat) ** 2, axis=-1) / (2.0 * sigma**2)


def gaussian_log_likelihood(x: jax.Array, mean: jax.Array, sigma: float = 1.0) -> jax.Array:
    """Per-sample log N(x | mean, sigma^2 I), normalising constant included:
    -sum (x - mean)^2 / (2 sigma^2) - D/2 log(2 pi sigma^2). Broadcasts over leading axes.

    Args:
        x: The inputs ``[..., D]``.
        mean: The Gaussian's mean, broadcastable to ``x``.
        sigma: The Gaussian's sigma.

    Returns:
        The log-density, summed over the last axis.
    """
    sq = jnp.sum((x - mean) ** 2, axis=-1)
    return -sq / (2.0 * sigma**2) - 0.5 * x.shape[-1] * (_LOG_2PI + 2.0 * jnp.log(sigma))


def bernoulli_log_likelihood(x: jax.Array, logits: jax.Array) -> jax.Array:
    """Per-sample log Bernoulli(x | sigmoid(logits)) = sum x*l - softplus(l), stable for any logit
    (no sigmoid-then-log). ``x`` may be fractional (then it is the cross-entropy). Broadcasts.

    Args:
        x: The inputs ``[..., D]`` in [0, 1].
        logits: The decoder's logits, broadcastable to ``x``.

    Returns:
        The log-likelihood, summed over the last axis.
    """
    return jnp.sum(x * logits - softplus(logits), axis=-1)


@dataclass(frozen=True)
class Gaussian:
    """The blog's N(x | decoder mean, sigma^2 I), sigma the ``recon_sigma`` hyperparameter.

    Attributes:
        name: ``"gaussian"``, as ``VAEConfig.likelihood`` names it.
        hyperparameters: What it reads: ``RECON_SIGMA``.
        outputs_logits: False: the decoder outputs the mean.
        loss_drops_constant: The training loss leaves out the normalising constant D/2 log(2 pi sigma^2),
            as the blog's does.
    """

    name: ClassVar[str] = "gaussian"
    hyperparameters: ClassVar[tuple[Hyperparameter, ...]] = (RECON_SIGMA,)
    outputs_logits: ClassVar[bool] = False
    #: The training loss leaves out the normalising constant D/2 log(2 pi sigma^2), as the blog's does.
    loss_drops_constant: ClassVar[bool] = True

    def reconstruction_loss(self, x, out, hyper) -> jax.Array:
        """The ELBO's per-sample -log p(x | z) without its constant (which has no gradient).

        Args:
            x: The inputs ``[B, ...]``.
            out: The decoder's mean.
            hyper: A ``jaxvae.hyper.Hyper`` (its ``recon_sigma``).

        Returns:
            ``[B]``.
        """
        return gauss_similarity_loss(x, out, hyper.recon_sigma)

    def log_prob(self, x, out, hyper) -> jax.Array:
        """Per-sample log p(x | z), constant included; broadcasts over leading axes.

        Args:
            x: The inputs ``[..., D]``.
            out: The decoder's mean.
            hyper: A ``jaxvae.hyper.Hyper`` (its ``recon_sigma``).

        Returns:
            The log-density over the last axis.
        """
        return gaussian_log_likelihood(x, out, hyper.recon_sigma)

    def mean(self, out) -> jax.Array:
        """The pixel values: the decoder's output itself.

        Args:
            out: The decoder's output.

        Returns:
            ``out``.
        """
        return out

    def check(self, name: str, x) -> None:
        """Any finite values will do: nothing to read.

        Args:
            name: The data's name.
            x: The data.
        """


@dataclass(frozen=True)
class Bernoulli:
    """Bernoulli(x | sigmoid(logits)) per pixel: the decoder outputs logits, x lies in [0, 1].

    Attributes:
        name: ``"bernoulli"``, as ``VAEConfig.likelihood`` names it.
        hyperparameters: None.
        outputs_logits: True: the decoder outputs logits.
        loss_drops_constant: False: the loss is the exact negative log-likelihood.
    """

    name: ClassVar[str] = "bernoulli"
    hyperparameters: ClassVar[tuple[Hyperparameter, ...]] = ()
    outputs_logits: ClassVar[bool] = True
    loss_drops_constant: ClassVar[bool] = False

    def reconstruction_loss(self, x, out, hyper) -> jax.Array:
        """The exact per-sample Bernoulli negative log-likelihood, from logits.

        Args:
            x: The inputs ``[B, ...]`` in [0, 1].
            out: The decoder's logits ``[B, D]``.
            hyper: Unused.

        Returns:
            ``[B]``.
        """
        return -bernoulli_log_likelihood(x.reshape(x.shape[0], -1), out)

    def log_prob(self, x, out, hyper) -> jax.Array:
        """Per-sample log p(x | z); broadcasts over leading axes.

        Args:
            x: The inputs ``[..., D]``.
            out: The decoder's logits.
            hyper: Unused.

        Returns:
            The log-likelihood over the last axis.
        """
        return bernoulli_log_likelihood(x, out)

    def mean(self, out) -> jax.Array:
        """The pixel probabilities.

        Args:
            out: The decoder's logits.

        Returns:
            sigmoid(out).
        """
        return jax.nn.sigmoid(out)

    def check(self, name: str, x) -> None:
        """InputError unless the values of ``x`` are probabilities.

        Args:
            name: The data's name, for the message.
            x: The data (a host or device array).

        Raises:
            InputError: A value below 0 or above 1.
        """
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            raise InputError(f"{name} has values in [{lo:g}, {hi:g}]; a Bernoulli likelihood (and binarisation) "
                             "reads them as probabilities in [0, 1]")


LIKELIHOODS = {likelihood.name: likelihood for likelihood in (Gaussian(), Bernoulli())}


def likelihood_of(name: str):
    """The likelihood called ``name`` (``VAEConfig.likelihood``: "gaussian" or "bernoulli").

    Args:
        name: ``"gaussian"`` or ``"bernoulli"``.

    Returns:
        The ``Gaussian`` or ``Bernoulli``.

    Raises:
        InputError: Another name.
    """
    try:
        return LIKELIHOODS[name]
    except KeyError:
        raise InputError(f"likelihood must be one of {', '.join(LIKELIHOODS)}; got {name!r}") from None
