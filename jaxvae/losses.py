"""The VAE's loss as pure functions of arrays, shared by training, evaluation, benchmarks and the parity tests.

Per-sample building blocks return one value per row; ``vae_loss`` averages them over the batch, as the
blog's ``GaussSimilarityLoss`` and ``UnitGaussKullbackLeiblerDivergenceLoss`` do. Beyond the blog:
full log-densities, the importance weights and the IWAE bound (Burda, Grosse, Salakhutdinov 2015);
``objective_loss`` picks a config's training loss. The KL weight and the Gaussian's sigma are
arguments (1 by default), not config fields: training passes each model's values as arrays.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxvae.config import VAEConfig
from jaxvae.models import bind, softplus

_LOG_2PI = math.log(2.0 * math.pi)


def gauss_similarity_loss(x: jax.Array, x_hat: jax.Array, sigma: float = 1.0) -> jax.Array:
    """Per-sample -log N(x | x_hat, sigma^2 I) without its constant: sum (x - x_hat)^2 / (2 sigma^2),
    inputs flattened from axis 1 as the blog's loss does."""
    x = x.reshape(x.shape[0], -1)
    x_hat = x_hat.reshape(x_hat.shape[0], -1)
    return jnp.sum((x - x_hat) ** 2, axis=-1) / (2.0 * sigma**2)


def unit_gauss_kl(mu: jax.Array, log_sigma: jax.Array) -> jax.Array:
    """Per-sample KL(N(mu, sigma^2) || N(0, I)) = 0.5 sum(sigma^2 + mu^2 - 1 - 2 log sigma).

    In log-sigma: the blog's log(exp(log_sigma)) is -inf once exp underflows (log_sigma < ~-103 in
    float32); this form is finite wherever the KL is, and equal to the blog's wherever that is finite.
    """
    return 0.5 * jnp.sum(jnp.exp(2.0 * log_sigma) + mu**2 - 1.0 - 2.0 * log_sigma, axis=-1)


def gaussian_log_likelihood(x: jax.Array, mean: jax.Array, sigma: float = 1.0) -> jax.Array:
    """Per-sample log N(x | mean, sigma^2 I), normalising constant included:
    -sum (x - mean)^2 / (2 sigma^2) - D/2 log(2 pi sigma^2). Broadcasts over leading axes."""
    sq = jnp.sum((x - mean) ** 2, axis=-1)
    return -sq / (2.0 * sigma**2) - 0.5 * x.shape[-1] * (_LOG_2PI + 2.0 * jnp.log(sigma))


def bernoulli_log_likelihood(x: jax.Array, logits: jax.Array) -> jax.Array:
    """Per-sample log Bernoulli(x | sigmoid(logits)) = sum x*l - softplus(l), stable for any logit
    (no sigmoid-then-log). ``x`` may be fractional (then it is the cross-entropy). Broadcasts."""
    return jnp.sum(x * logits - softplus(logits), axis=-1)


def log_normal_diag(z: jax.Array, mu: jax.Array, log_sigma: jax.Array) -> jax.Array:
    """log N(z | mu, diag(exp(log_sigma))^2), summed over the last axis."""
    u = (z - mu) * jnp.exp(-log_sigma)
    return jnp.sum(-0.5 * u**2 - log_sigma - 0.5 * _LOG_2PI, axis=-1)


def log_standard_normal(z: jax.Array) -> jax.Array:
    """log N(z | 0, I), summed over the last axis."""
    return jnp.sum(-0.5 * z**2 - 0.5 * _LOG_2PI, axis=-1)


def log_likelihood(x: jax.Array, decoder_out: jax.Array, config: VAEConfig, recon_sigma=1.0) -> jax.Array:
    """Per-sample log p(x | z) of the config's observation model, constant included;
    ``decoder_out`` is ``models.decoder_output`` (Gaussian mean or Bernoulli logits)."""
    if config.likelihood == "bernoulli":
        return bernoulli_log_likelihood(x, decoder_out)
    return gaussian_log_likelihood(x, decoder_out, recon_sigma)


def reconstruction_loss(x: jax.Array, decoder_out: jax.Array, config: VAEConfig, recon_sigma=1.0) -> jax.Array:
    """The ELBO's per-sample reconstruction term -log p(x | z): the blog's Gaussian loss (without its
    constant, which has no gradient) or the exact Bernoulli negative log-likelihood from logits."""
    if config.likelihood == "bernoulli":
        return -bernoulli_log_likelihood(x.reshape(x.shape[0], -1), decoder_out)
    return gauss_similarity_loss(x, decoder_out, recon_sigma)


def sample_eps(key: jax.Array, batch: int, config: VAEConfig, dtype=jnp.float32) -> jax.Array:
    """The reparameterisation noise eps ~ N(0, I), one row per sample: ``[batch, latent]``, or
    ``[iwae_k, batch, latent]`` for ``objective="iwae"``."""
    samples = (config.iwae_k,) if config.objective == "iwae" else ()
    return jax.random.normal(key, (*samples, batch, config.latent_dim), dtype)


def vae_loss(params: dict, x: jax.Array, eps: jax.Array, config: VAEConfig, *, kl_weight=1.0, recon_sigma=1.0):
    """The blog's loss: mean reconstruction term + kl_weight * mean KL, with the noise ``eps`` given.
    Returns ``(loss, aux)``, ``aux["recon"]`` and ``aux["kl"]`` the batch means."""
    model = bind(params, config)
    mu, log_sigma = model.encode(x)
    z = mu + jnp.exp(log_sigma) * eps
    recon = jnp.mean(reconstruction_loss(x, model.decoder_output(z), config, recon_sigma))
    kl = jnp.mean(unit_gauss_kl(mu, log_sigma))
    return recon + kl_weight * kl, {"recon": recon, "kl": kl}


def log_importance_weights(params: dict, x: jax.Array, eps: jax.Array, config: VAEConfig, recon_sigma=1.0):
    """log w = log p(x | z) + log p(z) - log q(z | x) for z = mu + sigma * eps, ``eps [k, B, latent]``.

    Returns ``(log_w, log_px_given_z)``, both ``[k, B]``. log q is computed from eps directly
    (log N(eps | 0, I) - sum log sigma), which is exact and avoids dividing by a tiny sigma.
    """
    model = bind(params, config)
    mu, log_sigma = model.encode(x)
    z = mu + jnp.exp(log_sigma) * eps
    k, batch = eps.shape[0], eps.shape[1]
    out = model.decoder_output(z.reshape(k * batch, -1)).reshape(k, batch, -1)
    log_px_z = log_likelihood(x.reshape(batch, -1), out, config, recon_sigma)
    log_qz = log_standard_normal(eps) - jnp.sum(log_sigma, axis=-1)
    return log_px_z + log_standard_normal(z) - log_qz, log_px_z


def iwae_bound(log_w: jax.Array) -> jax.Array:
    """Per-sample IWAE bound logsumexp_k log w_k - log k from ``log_w [k, B]``; k = 1 is the ELBO."""
    return jax.scipy.special.logsumexp(log_w, axis=0) - math.log(log_w.shape[0])


def iwae_loss(params: dict, x: jax.Array, eps: jax.Array, config: VAEConfig, *, recon_sigma=1.0):
    """The negative IWAE bound, averaged over the batch, with ``eps [k, B, latent]`` given.
    ``aux["recon"]`` (mean -log p(x | z)) and ``aux["kl"]`` (mean log q(z|x) - log p(z), Monte-Carlo)
    read as those of ``vae_loss``."""
    log_w, log_px_z = log_importance_weights(params, x, eps, config, recon_sigma)
    recon = -jnp.mean(log_px_z)
    return -jnp.mean(iwae_bound(log_w)), {"recon": recon, "kl": -jnp.mean(log_w) - recon}


def objective_loss(params: dict, x: jax.Array, eps: jax.Array, config: VAEConfig, *, kl_weight=1.0, recon_sigma=1.0):
    """The training loss the config asks for: ``vae_loss`` (the ELBO; the default) or ``iwae_loss``
    (whose bound has no KL term: ``config.check_configs`` refuses a KL weight for it)."""
    if config.objective == "iwae":
        return iwae_loss(params, x, eps, config, recon_sigma=recon_sigma)
    return vae_loss(params, x, eps, config, kl_weight=kl_weight, recon_sigma=recon_sigma)
