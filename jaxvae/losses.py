"""The VAE's loss as pure functions of arrays: written once, used by training, evaluation,
benchmarks and the parity tests alike.

Per-sample building blocks return one value per row; ``vae_loss`` averages them over the batch,
as the blog's ``GaussSimilarityLoss`` and ``UnitGaussKullbackLeiblerDivergenceLoss`` do.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxvae.config import VAEConfig
from jaxvae.models import decode, encode


def gauss_similarity_loss(x: jax.Array, x_hat: jax.Array, sigma: float = 1.0) -> jax.Array:
    """Per-sample -log N(x | x_hat, sigma^2 I) without its constant: sum (x - x_hat)^2 / (2 sigma^2).

    Inputs are flattened from axis 1, as the blog's loss does.
    """
    x = x.reshape(x.shape[0], -1)
    x_hat = x_hat.reshape(x_hat.shape[0], -1)
    return jnp.sum((x - x_hat) ** 2, axis=-1) / (2.0 * sigma**2)


def unit_gauss_kl(mu: jax.Array, log_sigma: jax.Array) -> jax.Array:
    """Per-sample KL(N(mu, sigma^2) || N(0, I)) = 0.5 sum(sigma^2 + mu^2 - 1 - 2 log sigma).

    Written in log-sigma: the blog computes log(exp(log_sigma)), which is -inf once exp underflows
    (log_sigma < ~-103 in float32) and NaN once it overflows; this form is finite wherever the KL is
    representable and equal to the blog's wherever that one is finite.
    """
    return 0.5 * jnp.sum(jnp.exp(2.0 * log_sigma) + mu**2 - 1.0 - 2.0 * log_sigma, axis=-1)


def sample_eps(key: jax.Array, batch: int, config: VAEConfig, dtype=jnp.float32) -> jax.Array:
    """The reparameterisation noise eps ~ N(0, I), one row per sample."""
    return jax.random.normal(key, (batch, config.latent_dim), dtype)


def vae_loss(params: dict, x: jax.Array, eps: jax.Array, config: VAEConfig):
    """The blog's loss: mean reconstruction term + kl_weight * mean KL, with the noise ``eps`` given.

    Returns ``(loss, aux)`` with ``aux["recon"]`` and ``aux["kl"]`` the batch means.
    """
    mu, log_sigma = encode(params, x, config)
    z = mu + jnp.exp(log_sigma) * eps
    x_hat = decode(params, z, config)
    recon = jnp.mean(gauss_similarity_loss(x, x_hat, config.recon_sigma))
    kl = jnp.mean(unit_gauss_kl(mu, log_sigma))
    return recon + config.kl_weight * kl, {"recon": recon, "kl": kl}


def vae_loss_from_key(params: dict, x: jax.Array, key: jax.Array, config: VAEConfig):
    """``vae_loss`` with the noise drawn from ``key``: the usual path for users."""
    return vae_loss(params, x, sample_eps(key, x.shape[0], config, x.dtype), config)
