"""The VAE's loss as pure functions of arrays, shared by training, evaluation, benchmarks and the parity tests.

Per-sample building blocks return one value per row; the batch losses average them over the batch, as
the blog's ``GaussSimilarityLoss`` and ``UnitGaussKullbackLeiblerDivergenceLoss`` do. Beyond the blog:
full log-densities, the importance weights and the IWAE bound (Burda, Grosse, Salakhutdinov 2015).

Each bound is written once on a bound module (anything with ``encode`` and ``decoder_output``) and
a likelihood (``jaxvae.likelihoods``): ``elbo_loss``, ``iwae_loss_of`` and ``importance_weights``.
``vae_loss``, ``iwae_loss``, ``objective_loss`` and ``log_importance_weights`` are the same bounds for
a ``VAEConfig``'s parameters. The KL weight and the Gaussian's sigma are arguments (1 by default),
not config fields: training passes each model's values as arrays.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxvae.config import VAEConfig
from jaxvae.likelihoods import (bernoulli_log_likelihood, gauss_similarity_loss,  # noqa: F401 (public here too)
                                gaussian_log_likelihood, likelihood_of)
from jaxvae.models import bind

_LOG_2PI = math.log(2.0 * math.pi)


class Weights(NamedTuple):
    """The hyperparameters the bounds read (a ``jaxvae.hyper.Hyper`` may stand for it).

    Attributes:
        kl_weight: The KL term's weight.
        recon_sigma: The Gaussian likelihood's sigma.
    """

    kl_weight: float | jax.Array = 1.0
    recon_sigma: float | jax.Array = 1.0


def unit_gauss_kl(mu: jax.Array, log_sigma: jax.Array) -> jax.Array:
    """Per-sample KL(N(mu, sigma^2) || N(0, I)) = 0.5 sum(sigma^2 + mu^2 - 1 - 2 log sigma).

    In log-sigma: the blog's log(exp(log_sigma)) is -inf once exp underflows (log_sigma < ~-103 in
    float32); this form is finite wherever the KL is, and equal to the blog's wherever that is finite.

    Args:
        mu: The posterior means ``[..., latent]``.
        log_sigma: The posterior log standard deviations, as ``mu``.

    Returns:
        The KL, summed over the last axis.
    """
    return 0.5 * jnp.sum(jnp.exp(2.0 * log_sigma) + mu**2 - 1.0 - 2.0 * log_sigma, axis=-1)


def log_normal_per_dim(z: jax.Array, mu: jax.Array, log_sigma: jax.Array) -> jax.Array:
    """log N(z | mu, exp(log_sigma)^2) of each coordinate: the terms ``log_normal_diag`` sums. Broadcasts.

    Args:
        z: The points.
        mu: The means, broadcastable with ``z``.
        log_sigma: The log standard deviations, broadcastable with ``z``.

    Returns:
        The element-wise log-densities.
    """
    u = (z - mu) * jnp.exp(-log_sigma)
    return -0.5 * u**2 - log_sigma - 0.5 * _LOG_2PI


def log_normal_diag(z: jax.Array, mu: jax.Array, log_sigma: jax.Array) -> jax.Array:
    """log N(z | mu, diag(exp(log_sigma))^2), summed over the last axis.

    Args:
        z: The points ``[..., latent]``.
        mu: The means, broadcastable to ``z``.
        log_sigma: The log standard deviations, broadcastable to ``z``.

    Returns:
        The log-density over the last axis.
    """
    return jnp.sum(log_normal_per_dim(z, mu, log_sigma), axis=-1)


def log_standard_normal(z: jax.Array) -> jax.Array:
    """log N(z | 0, I), summed over the last axis.

    Args:
        z: The points ``[..., latent]``.

    Returns:
        The log-density over the last axis.
    """
    return jnp.sum(-0.5 * z**2 - 0.5 * _LOG_2PI, axis=-1)


def log_likelihood(x: jax.Array, decoder_out: jax.Array, config: VAEConfig, recon_sigma=1.0) -> jax.Array:
    """Per-sample log p(x | z) of the config's observation model, constant included.

    Args:
        x: The inputs ``[..., input_dim]``.
        decoder_out: ``models.decoder_output`` (Gaussian mean or Bernoulli logits).
        config: Gives the likelihood.
        recon_sigma: The Gaussian's sigma.

    Returns:
        The log-likelihood over the last axis.
    """
    return likelihood_of(config.likelihood).log_prob(x, decoder_out, Weights(recon_sigma=recon_sigma))


def reconstruction_loss(x: jax.Array, decoder_out: jax.Array, config: VAEConfig, recon_sigma=1.0) -> jax.Array:
    """The ELBO's per-sample reconstruction term -log p(x | z): the blog's Gaussian loss (without its
    constant, which has no gradient) or the exact Bernoulli negative log-likelihood from logits.

    Args:
        x: The inputs ``[B, ...]``.
        decoder_out: ``models.decoder_output`` (Gaussian mean or Bernoulli logits).
        config: Gives the likelihood.
        recon_sigma: The Gaussian's sigma.

    Returns:
        ``[B]``.
    """
    return likelihood_of(config.likelihood).reconstruction_loss(x, decoder_out, Weights(recon_sigma=recon_sigma))


def normal_noise(key: jax.Array, samples: int | None, batch: int, latent_dim: int, dtype=jnp.float32) -> jax.Array:
    """The reparameterisation noise eps ~ N(0, I): ``[batch, latent]``, or ``[samples, batch, latent]``.

    Args:
        key: Draws the noise.
        samples: Samples per example; None for no samples axis.
        batch: Examples.
        latent_dim: The latent's size.
        dtype: The noise's float type.

    Returns:
        The noise.
    """
    return jax.random.normal(key, (*(() if samples is None else (samples,)), batch, latent_dim), dtype)


def sample_eps(key: jax.Array, batch: int, config: VAEConfig, dtype=jnp.float32) -> jax.Array:
    """The noise of a config's objective, one row per sample: ``[batch, latent]``, or
    ``[iwae_k, batch, latent]`` for ``objective="iwae"``.

    Args:
        key: Draws the noise.
        batch: Examples.
        config: Gives the objective, ``iwae_k`` and ``latent_dim``.
        dtype: The noise's float type.

    Returns:
        The noise.
    """
    return normal_noise(key, config.iwae_k if config.objective == "iwae" else None, batch, config.latent_dim, dtype)


def elbo_loss(module, likelihood, x: jax.Array, posterior, eps: jax.Array, weights) -> tuple[jax.Array, dict]:
    """The blog's loss: mean reconstruction term + kl_weight * mean KL for the encoder's ``posterior``
    ``(mu, log_sigma)`` of ``x`` and the noise ``eps``.

    Args:
        module: Anything with ``decoder_output(z)`` (a bound module).
        likelihood: The observation model (``jaxvae.likelihoods``).
        x: The inputs ``[B, ...]``.
        posterior: The encoder's ``(mu, log_sigma)`` of ``x``, each ``[B, latent]``.
        eps: The noise ``[B, latent]``.
        weights: ``Weights`` or a ``jaxvae.hyper.Hyper``.

    Returns:
        ``(loss, {"recon": ..., "kl": ...})``, batch means.
    """
    mu, log_sigma = posterior
    z = mu + jnp.exp(log_sigma) * eps
    recon = jnp.mean(likelihood.reconstruction_loss(x, module.decoder_output(z), weights))
    kl = jnp.mean(unit_gauss_kl(mu, log_sigma))
    return recon + weights.kl_weight * kl, {"recon": recon, "kl": kl}


def importance_weights(module, likelihood, x: jax.Array, posterior, eps: jax.Array,
                       weights) -> tuple[jax.Array, jax.Array]:
    """log w = log p(x | z) + log p(z) - log q(z | x) for z = mu + sigma * eps, ``eps [k, B, latent]``.

    log q is computed from eps directly (log N(eps | 0, I) - sum log sigma), which is exact and avoids
    dividing by a tiny sigma. The arguments are ``elbo_loss``'s, with ``eps`` ``[k, B, latent]``.

    Returns:
        ``(log_w, log_px_given_z)``, both ``[k, B]``.
    """
    mu, log_sigma = posterior
    z = mu + jnp.exp(log_sigma) * eps
    k, batch = eps.shape[0], eps.shape[1]
    out = module.decoder_output(z.reshape(k * batch, -1)).reshape(k, batch, -1)
    log_px_z = likelihood.log_prob(x.reshape(batch, -1), out, weights)
    log_qz = log_standard_normal(eps) - jnp.sum(log_sigma, axis=-1)
    return log_px_z + log_standard_normal(z) - log_qz, log_px_z


def iwae_bound(log_w: jax.Array) -> jax.Array:
    """Per-sample IWAE bound logsumexp_k log w_k - log k from ``log_w [k, B]``; k = 1 is the ELBO.

    Args:
        log_w: The log importance weights ``[k, B]``.

    Returns:
        ``[B]``.
    """
    return jax.scipy.special.logsumexp(log_w, axis=0) - math.log(log_w.shape[0])


def iwae_loss_of(module, likelihood, x: jax.Array, posterior, eps: jax.Array, weights) -> tuple[jax.Array, dict]:
    """The negative IWAE bound, averaged over the batch, with ``eps [k, B, latent]`` given.
    ``recon`` (mean -log p(x | z)) and ``kl`` (mean log q(z|x) - log p(z), Monte-Carlo) read as the ELBO's.
    The arguments are ``elbo_loss``'s, with ``eps`` ``[k, B, latent]``.

    Returns:
        ``(loss, {"recon": ..., "kl": ...})``.
    """
    log_w, log_px_z = importance_weights(module, likelihood, x, posterior, eps, weights)
    recon = -jnp.mean(log_px_z)
    return -jnp.mean(iwae_bound(log_w)), {"recon": recon, "kl": -jnp.mean(log_w) - recon}


def _on_config(bound, params: dict, x: jax.Array, eps: jax.Array, config: VAEConfig, weights: Weights):
    module = bind(params, config)
    return bound(module, likelihood_of(config.likelihood), x, module.encode(x), eps, weights)


def vae_loss(params: dict, x: jax.Array, eps: jax.Array, config: VAEConfig, *, kl_weight: float | jax.Array = 1.0,
             recon_sigma: float | jax.Array = 1.0) -> tuple[jax.Array, dict]:
    """``elbo_loss`` of a config's parameters: ``(loss, {"recon", "kl"})``.

    Args:
        params: A ``VAEConfig``'s parameters.
        x: The inputs ``[B, input_dim]``.
        eps: The noise ``[B, latent]``.
        config: The model's config.
        kl_weight: The KL term's weight.
        recon_sigma: The Gaussian's sigma.

    Returns:
        ``(loss, {"recon": ..., "kl": ...})``, batch means.
    """
    return _on_config(elbo_loss, params, x, eps, config, Weights(kl_weight, recon_sigma))


def log_importance_weights(params: dict, x: jax.Array, eps: jax.Array, config: VAEConfig,
                           recon_sigma: float | jax.Array = 1.0) -> tuple[jax.Array, jax.Array]:
    """``importance_weights`` of a config's parameters: ``(log_w, log_px_given_z)``, both ``[k, B]``.

    Args:
        params: A ``VAEConfig``'s parameters.
        x: The inputs ``[B, input_dim]``.
        eps: The noise ``[k, B, latent]``.
        config: The model's config.
        recon_sigma: The Gaussian's sigma.

    Returns:
        ``(log_w, log_px_given_z)``, both ``[k, B]``.
    """
    return _on_config(importance_weights, params, x, eps, config, Weights(recon_sigma=recon_sigma))


def iwae_loss(params: dict, x: jax.Array, eps: jax.Array, config: VAEConfig, *,
              recon_sigma: float | jax.Array = 1.0) -> tuple[jax.Array, dict]:
    """``iwae_loss_of`` a config's parameters: ``(loss, {"recon", "kl"})``. The arguments are
    ``log_importance_weights``'.

    Returns:
        ``(loss, {"recon": ..., "kl": ...})``.
    """
    return _on_config(iwae_loss_of, params, x, eps, config, Weights(recon_sigma=recon_sigma))


def objective_loss(params: dict, x: jax.Array, eps: jax.Array, config: VAEConfig, *, kl_weight: float | jax.Array = 1.0,
                   recon_sigma: float | jax.Array = 1.0) -> tuple[jax.Array, dict]:
    """The training loss the config asks for: ``vae_loss`` (the ELBO; the default) or ``iwae_loss``
    (whose bound has no KL term: ``config.check_configs`` refuses a KL weight for it).

    Args:
        params: A ``VAEConfig``'s parameters.
        x: The inputs ``[B, input_dim]``.
        eps: The noise, as ``sample_eps`` draws it for the config.
        config: The model's config.
        kl_weight: The KL term's weight (the ELBO only).
        recon_sigma: The Gaussian's sigma.

    Returns:
        ``(loss, {"recon": ..., "kl": ...})``.
    """
    bound = iwae_loss_of if config.objective == "iwae" else elbo_loss
    return _on_config(bound, params, x, eps, config, Weights(kl_weight, recon_sigma))
