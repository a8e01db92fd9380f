"""The beta-TCVAE (Chen, Li, Grosse and Duvenaud 2018, "Isolating Sources of Disentanglement in VAEs").

The ELBO's KL term, averaged over the data, splits into three parts, each weighted on its own::

    loss = recon + alpha * MI + beta * TC + gamma * dimKL      (per example, then the batch mean)
    MI    = log q(z | x) - log q(z)                (index-code mutual information)
    TC    = log q(z) - log prod_d q(z_d)           (total correlation)
    dimKL = log prod_d q(z_d) - log p(z)           (dimension-wise KL)

for one reparameterised sample z of q(z | x). The three telescope: their sum is log q(z | x) - log p(z),
a one-sample estimate of the KL, so alpha = beta = gamma = 1 trains the ELBO. The aggregate posterior
q(z) = 1/N sum_n q(z | x_n) and its marginals q(z_d) are estimated on the minibatch, from the B x B
densities q(z_i | x_j), weighted by the dataset's size N:

- minibatch-weighted sampling (MWS, ``estimator="mws"``): every pair weighs 1 / (B N);
- minibatch-stratified sampling (MSS, ``estimator="mss"``): an example's own pair weighs 1 / N, one other
  (N - B + 1) / (N (B - 1)) and the rest 1 / (B - 1) (``log_weight_matrix``).

The encoder, decoder and likelihood are ``VAEModel``'s::

    model = BetaTCVAEModel.from_config(VAEConfig(input_dim=64, hidden=(128,)), dataset_size=len(train_x))
    loss, metrics, state = model.loss(params, (), x, key, Hyper(lr=1e-3, recon_sigma=1.0, alpha=1.0,
                                                                 beta=6.0, gamma=1.0))
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae.config import ALPHA, BETA, BETATC_HYPERPARAMETERS, GAMMA, VAEConfig
from jaxvae.errors import InputError
from jaxvae.hyper import Hyperparameter
from jaxvae.likelihoods import likelihood_of
from jaxvae.losses import log_normal_per_dim, log_standard_normal, unit_gauss_kl
from jaxvae.model import import_path, inputs
from jaxvae.vae import ConfigModules, ModulePair, VAEModel


#: The estimators of q(z) on a minibatch: minibatch-weighted and minibatch-stratified sampling.
ESTIMATORS = ("mws", "mss")



def pairwise_log_density(z: jax.Array, mu: jax.Array, log_sigma: jax.Array) -> jax.Array:
    """log q(z_i,d | x_j) for every sample i, example j and latent coordinate d.

    Args:
        z: The samples ``[B, D]``, z_i drawn from q(z | x_i).
        mu: The posterior means ``[B, D]``.
        log_sigma: The posterior log standard deviations ``[B, D]``.

    Returns:
        ``[B, B, D]``: entry ``[i, j, d]`` is log N(z_id | mu_jd, sigma_jd^2); its diagonal over (i, j) is
        log q(z_i | x_i) per coordinate.
    """
    return log_normal_per_dim(z[:, None, :], mu[None, :, :], log_sigma[None, :, :])


def log_weight_matrix(batch: int, dataset_size: int, estimator: str = "mws", dtype=jnp.float32) -> jax.Array:
    """The log-weights w_ij with which log q(z_i) = logsumexp_j (w_ij + log q(z_i | x_j)).

    ``"mws"``: every entry is -log(B N). ``"mss"``: with M = B - 1, the diagonal (an example's own sample)
    is -log N, the entry (i, i + 1 mod B) is log((N - M) / (N M)) and the others -log M; each row's
    weights sum to one.

    Args:
        batch: The minibatch's size B (at least 2 for ``"mss"``).
        dataset_size: The dataset's size N, at least B.
        estimator: ``"mws"`` or ``"mss"``.
        dtype: The matrix's float type.

    Returns:
        ``[B, B]``.

    Raises:
        InputError: An unknown estimator, a dataset smaller than the batch, or one example for ``"mss"``.
    """
    if estimator not in ESTIMATORS:
        raise InputError(f"estimator must be one of {', '.join(ESTIMATORS)}; got {estimator!r}")
    if dataset_size < batch:
        raise InputError(f"dataset_size={dataset_size} is smaller than the batch of {batch} examples; "
                         "dataset_size is the number of training examples")
    if estimator == "mws":
        return jnp.full((batch, batch), -math.log(batch * dataset_size), dtype)
    if batch < 2:
        raise InputError("the stratified estimator (estimator='mss') needs batches of at least 2 examples, got 1")
    n, m = dataset_size, batch - 1
    own, next_one = np.eye(batch, dtype=bool), np.roll(np.eye(batch, dtype=bool), 1, axis=1)
    log_w = np.where(own, -math.log(n), np.where(next_one, math.log(n - m) - math.log(n * m), -math.log(m)))
    return jnp.asarray(log_w, dtype)


def kl_decomposition(z: jax.Array, mu: jax.Array, log_sigma: jax.Array,
                     log_weights: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-example (MI, TC, dimKL) of the samples ``z``, q(z) estimated on the batch.

    Args:
        z: The samples ``[B, D]``, z_i drawn from q(z | x_i).
        mu: The posterior means ``[B, D]``.
        log_sigma: The posterior log standard deviations ``[B, D]``.
        log_weights: ``log_weight_matrix`` ``[B, B]``.

    Returns:
        ``(mi, tc, dim_kl)``, each ``[B]``; they sum to log q(z | x) - log p(z).
    """
    pairs = pairwise_log_density(z, mu, log_sigma)
    log_qz_given_x = jnp.sum(jnp.diagonal(pairs, axis1=0, axis2=1), axis=0)
    log_qz = jax.scipy.special.logsumexp(log_weights + jnp.sum(pairs, axis=-1), axis=1)
    log_prod_qzd = jnp.sum(jax.scipy.special.logsumexp(log_weights[:, :, None] + pairs, axis=1), axis=-1)
    log_pz = log_standard_normal(z)
    return log_qz_given_x - log_qz, log_qz - log_prod_qzd, log_prod_qzd - log_pz


def betatc_loss(module, likelihood, x: jax.Array, posterior, eps: jax.Array, hyper, dataset_size: int,
                estimator: str = "mws") -> tuple[jax.Array, dict]:
    """The beta-TCVAE's loss: the batch mean of recon + alpha MI + beta TC + gamma dimKL.

    Args:
        module: Anything with ``decoder_output(z)`` (a bound module).
        likelihood: The observation model (``jaxvae.likelihoods``).
        x: The inputs ``[B, ...]``.
        posterior: The encoder's ``(mu, log_sigma)`` of ``x``, each ``[B, latent]``.
        eps: The noise ``[B, latent]``.
        hyper: A ``jaxvae.hyper.Hyper`` with ``alpha``, ``beta``, ``gamma`` and the likelihood's values.
        dataset_size: The training set's size N.
        estimator: ``"mws"`` or ``"mss"`` (``log_weight_matrix``).

    Returns:
        ``(loss, metrics)``; the metrics are the batch means ``recon``, ``mi``, ``tc``, ``dim_kl`` and, for
        reference, the closed-form ``kl`` (the three estimates' sum is a one-sample estimate of it).
    """
    mu, log_sigma = posterior
    z = mu + jnp.exp(log_sigma) * eps
    recon = likelihood.reconstruction_loss(x, module.decoder_output(z), hyper)
    log_weights = log_weight_matrix(z.shape[0], dataset_size, estimator, z.dtype)
    mi, tc, dim_kl = kl_decomposition(z, mu, log_sigma, log_weights)
    loss = jnp.mean(recon + hyper.alpha * mi + hyper.beta * tc + hyper.gamma * dim_kl)
    return loss, {"recon": jnp.mean(recon), "mi": jnp.mean(mi), "tc": jnp.mean(tc), "dim_kl": jnp.mean(dim_kl),
                  "kl": jnp.mean(unit_gauss_kl(mu, log_sigma))}


def _check_dataset_size(dataset_size) -> int:
    """``dataset_size`` as an int, or InputError unless it is a positive integer."""
    if isinstance(dataset_size, bool) or not isinstance(dataset_size, (int, np.integer)) or dataset_size < 1:
        raise InputError(f"dataset_size must be a positive integer (the number of training examples), "
                         f"got {dataset_size!r}")
    return int(dataset_size)


@dataclass(frozen=True, kw_only=True)
class BetaTCVAEModel(VAEModel):
    """A beta-TCVAE: ``VAEModel``'s encoder, decoder and likelihood, trained with ``betatc_loss``.

    Build one with ``from_config`` or ``from_modules``; the fields besides ``VAEModel``'s are keywords.

    Args:
        dataset_size: The training set's size N, which the estimator of q(z) weighs the batch by.
        estimator: ``"mws"`` (minibatch-weighted sampling, the default) or ``"mss"`` (stratified).

    Raises:
        InputError: ``dataset_size`` is not a positive integer, an unknown estimator, or an IWAE bound.
    """

    dataset_size: int
    estimator: str = "mws"

    def __post_init__(self):
        object.__setattr__(self, "dataset_size", _check_dataset_size(self.dataset_size))
        if self.estimator not in ESTIMATORS:
            raise InputError(f"estimator must be one of {', '.join(ESTIMATORS)}; got {self.estimator!r}")
        if self.iwae_k is not None:
            raise InputError(f"iwae_k={self.iwae_k}: the beta-TCVAE trains its own split of the ELBO, "
                             "not the IWAE bound")

    @classmethod
    def for_dataset(cls, config: VAEConfig, dataset) -> "BetaTCVAEModel":
        """The model ``jaxvae train --model betatc`` builds: the minibatch-weighted estimator over the training split's size.

        Args:
            config: The architecture and likelihood.
            dataset: The training data (a ``jaxvae.data.Dataset``).

        Returns:
            The model.
        """
        return cls.from_config(config, len(dataset.train_x))

    @classmethod
    def from_config(cls, config: VAEConfig, dataset_size: int, estimator: str = "mws") -> "BetaTCVAEModel":
        """The beta-TCVAE of the modules a ``VAEConfig`` describes.

        Args:
            config: The model's config; ``objective="elbo"``.
            dataset_size: The training set's size.
            estimator: ``"mws"`` or ``"mss"``.

        Returns:
            The ``BetaTCVAEModel``.

        Raises:
            InputError: The config names the IWAE bound, or ``dataset_size`` or ``estimator`` is invalid.
        """
        if config.objective != "elbo":
            raise InputError(f"objective={config.objective!r}: the beta-TCVAE splits the ELBO's KL "
                             "(objective='elbo')")
        return cls(ConfigModules(config), config.latent_dim, likelihood_of(config.likelihood), None,
                   config.input_dim, dataset_size=dataset_size, estimator=estimator)

    @classmethod
    def from_modules(cls, encoder, decoder, *, latent_dim: int, dataset_size: int, likelihood: str = "gaussian",
                     input_dim: int | None = None, estimator: str = "mws") -> "BetaTCVAEModel":
        """Your own NNX encoder and decoder (as ``VAEModel.from_modules``).

        Args:
            encoder: ``encoder(rngs=rngs)`` builds a module mapping x to ``(mu, log_sigma)``.
            decoder: ``decoder(rngs=rngs)`` builds a module mapping z to the likelihood's parameter.
            latent_dim: z's size.
            dataset_size: The training set's size.
            likelihood: ``"gaussian"`` or ``"bernoulli"``.
            input_dim: x's features, to check batches against; None for no check.
            estimator: ``"mws"`` or ``"mss"``.

        Returns:
            The ``BetaTCVAEModel``.

        Raises:
            InputError: An unknown likelihood, or ``dataset_size`` or ``estimator`` is invalid.
        """
        return cls(ModulePair(encoder, decoder), latent_dim, likelihood_of(likelihood), None, input_dim,
                   dataset_size=dataset_size, estimator=estimator)

    #: Every hyperparameter a beta-TCVAE may read: the Gaussian's sigma and the three weights (no KL weight).
    family_hyperparameters: ClassVar[tuple[Hyperparameter, ...]] = BETATC_HYPERPARAMETERS

    @property
    def hyperparameters(self) -> tuple[Hyperparameter, ...]:
        """The likelihood's (the Gaussian's ``recon_sigma``), then ``alpha``, ``beta``, ``gamma``."""
        return (*self.likelihood.hyperparameters, ALPHA, BETA, GAMMA)

    def loss_with_noise(self, params, state, batch, eps: jax.Array, hyper):
        """The beta-TCVAE's loss on ``batch`` with the noise ``eps`` given.

        Args:
            params: The parameters.
            state: Passed through.
            batch: The inputs, or a pytree holding them.
            eps: The noise ``[B, latent_dim]``.
            hyper: A ``jaxvae.hyper.Hyper`` with ``alpha``, ``beta``, ``gamma`` (and ``recon_sigma`` for the
                Gaussian).

        Returns:
            ``(loss, metrics, state)``; the metrics are ``recon``, ``mi``, ``tc``, ``dim_kl`` and ``kl``.
        """
        module, x = self.module(params), inputs(batch)
        loss, metrics = betatc_loss(module, self.likelihood, x, module.encode(x), eps, hyper, self.dataset_size,
                                    self.estimator)
        return loss, metrics, state

    def describe(self) -> dict:
        """``VAEModel``'s record, with ``dataset_size`` and ``estimator``.

        Returns:
            The JSON-ready record.
        """
        return {**super().describe(), "dataset_size": self.dataset_size, "estimator": self.estimator}

    @classmethod
    def from_record(cls, record: dict) -> "BetaTCVAEModel":
        """The model ``describe`` recorded.

        Args:
            record: The record.

        Returns:
            The ``BetaTCVAEModel``.

        Raises:
            InputError: A module class cannot be imported, or a field is out of range.
        """
        extra = {"dataset_size": record["dataset_size"], "estimator": record["estimator"]}
        if "config" in record:
            return cls.from_config(VAEConfig(**record["config"]), **extra)
        return cls.from_modules(import_path(record["encoder"]), import_path(record["decoder"]),
                                latent_dim=record["latent_dim"], likelihood=record["likelihood"],
                                input_dim=record["input_dim"], **extra)
