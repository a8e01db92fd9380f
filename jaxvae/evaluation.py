"""Test-set likelihoods: the negative ELBO and the importance-sampled estimate of log p(x).

For each image, k samples z_j = mu + sigma * eps_j from q(z | x) give log weights
log w_j = log p(x | z_j) + log p(z_j) - log q(z_j | x), and

    log p(x) ~ logsumexp_j log w_j - log k      (Burda et al. 2015; a lower bound in expectation,
                                                 tight as k grows; k = 5000 in the literature)
    ELBO(x)  ~ mean_j log w_j                   (the same samples; its average over j is unbiased)

Both are computed in one compiled call: ``lax.map`` over batches of images and ``lax.scan`` over
chunks of the k samples with a running logsumexp, so memory is ``batch_size * chunk * input_dim``
floats whatever k and the number of images. The log-densities include every normalising constant
(the Gaussian's -D/2 log(2 pi sigma^2) too), so the numbers are comparable across models.
Reported: the means over images and their standard errors (sample std / sqrt(n)).
"""
from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae.binarize import prepare_eval_data
from jaxvae.checks import check_data
from jaxvae.config import TrainConfig, VAEConfig, check_non_negative_int, check_positive_int, check_seed
from jaxvae.errors import InputError, NumericalError
from jaxvae.hyper import Hyper
from jaxvae.runs import load_run, run_dataset
from jaxvae.training import eval_epoch, hyper_of, per_image_mean
from jaxvae.vae import VAEModel, as_model

#: Floats held by one chunk of decoder outputs when ``chunk`` is not given (64 MB in float32).
CHUNK_BUDGET = 2**24
#: Samples x images decoded at once inside a chunk (~6 MB of float32 outputs for 784 pixels).
BLOCK_ROWS = 2048


@partial(jax.jit, static_argnames=("model", "k", "chunk", "batch_size"))
def importance_sampled(params, x: jax.Array, key: jax.Array, model: VAEModel | VAEConfig, k: int, chunk: int,
                       batch_size: int, hyper: Hyper | None = None) -> tuple[jax.Array, jax.Array]:
    """Per-image ``(log_likelihood, elbo)`` estimates with ``k`` importance samples, as arrays [n].

    Args:
        params: The model's parameters.
        x: The images ``[n, ...]``.
        key: Draws the samples.
        model: A ``VAEConfig``, a ``VAEModel``, or any model with its ``latent_dim`` and
            ``log_importance_weights``.
        k: Samples per image.
        chunk: Samples per image decoded in one step of the scan.
        batch_size: Images per batch of the map.
        hyper: The model's hyperparameters (the Gaussian's sigma); None for their defaults.

    Returns:
        ``(log_likelihood, elbo)``, each ``[n]``.
    """
    model = as_model(model)
    hyper = hyper_of(model, {}) if hyper is None else hyper
    n, shape = x.shape[0], x.shape[1:]
    n_batches = -(-n // batch_size)
    n_chunks = -(-k // chunk)
    block = max(1, min(chunk, BLOCK_ROWS // batch_size))
    # Pad with copies of the first image to whole batches; their results are dropped at the end.
    padded = jnp.concatenate([x, jnp.broadcast_to(x[:1], (n_batches * batch_size - n, *shape))])
    batches = padded.reshape(n_batches, batch_size, *shape)

    def per_batch(args):
        xb, batch_key = args

        def per_chunk(carry, step):
            lse, total = carry
            index, chunk_key = step
            eps = jax.random.normal(chunk_key, (chunk, batch_size, model.latent_dim), x.dtype)
            # Decoded a block of samples at a time, so the decoder's outputs stay in the CPU's cache.
            blocks = -(-chunk // block)
            eps = jnp.concatenate([eps, jnp.zeros((blocks * block - chunk, *eps.shape[1:]), eps.dtype)])
            log_w = jax.lax.map(lambda e: model.log_importance_weights(params, xb, e, hyper)[0],
                                eps.reshape(blocks, block, *eps.shape[1:])).reshape(blocks * block, batch_size)[:chunk]
            # The last chunk may run past k: its surplus samples count for nothing.
            valid = (index * chunk + jnp.arange(chunk) < k)[:, None]
            lse = jnp.logaddexp(lse, jax.scipy.special.logsumexp(jnp.where(valid, log_w, -jnp.inf), axis=0))
            return (lse, total + jnp.sum(jnp.where(valid, log_w, 0.0), axis=0)), None

        init = (jnp.full((batch_size,), -jnp.inf, x.dtype), jnp.zeros((batch_size,), x.dtype))
        steps = (jnp.arange(n_chunks), jax.random.split(batch_key, n_chunks))
        (lse, total), _ = jax.lax.scan(per_chunk, init, steps)
        return lse - math.log(k), total / k

    log_px, elbo = jax.lax.map(per_batch, (batches, jax.random.split(key, n_batches)))
    return log_px.reshape(-1)[:n], elbo.reshape(-1)[:n]


def _mean_and_stderr(values: np.ndarray) -> tuple[float, float]:
    stderr = float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else float("nan")
    return float(values.mean()), stderr


def evaluate(params, x, config: VAEModel | VAEConfig, *, k: int = 5000, key: jax.Array | None = None, seed: int = 0,
             batch_size: int = 100, chunk: int | None = None, train_config: TrainConfig | None = None) -> dict:
    """The negative ELBO and the k-sample log-likelihood estimate of ``x`` ([n, input_dim]) under ``params``.

    Args:
        params: The model's parameters.
        x: The images ``[n, input_dim]``, floats in [0, 1].
        config: A ``VAEConfig``, or a ``VAEModel`` (your own encoder and decoder, too).
        k: Importance samples per image.
        key: Fixes the samples; None draws them from ``seed``.
        seed: Fixes the samples when ``key`` is None.
        batch_size: Images per batch.
        chunk: Samples per image in memory at once; None for a 64 MB budget.
        train_config: The model's: ``x`` is binarised as that run saw its validation data (once, from
            ``binarize_seed + 1``; see ``jaxvae.binarize``) and its ``recon_sigma`` is the Gaussian's
            sigma. None uses ``x`` as given, sigma 1.

    Returns:
        A dict: ``log_likelihood``, ``neg_elbo`` (means over images, nats), their ``*_stderr``, ``n``,
        ``k`` and the per-image arrays ``log_likelihood_per_image`` and ``elbo_per_image``.

    Raises:
        InputError: ``x`` the model cannot take, or ``k``, ``batch_size``, ``chunk`` or ``seed`` out of
            range.
        NumericalError: A non-finite estimate.
    """
    model = as_model(config)
    check_data("x", x, model)
    check_seed("seed", seed)
    x, hyper = jnp.asarray(x), hyper_of(model, {})
    if train_config is not None:
        x, hyper = prepare_eval_data(x, train_config), hyper_of(model, train_config)
    check_positive_int("k", k)
    check_positive_int("batch_size", batch_size)
    batch_size = min(batch_size, x.shape[0])
    if chunk is None:
        chunk = max(1, CHUNK_BUDGET // (batch_size * int(np.prod(x.shape[1:]))))
    check_positive_int("chunk", chunk)
    chunk = min(chunk, k)
    key = jax.random.PRNGKey(seed) if key is None else key
    log_px, elbo = importance_sampled(params, x, key, model, k, chunk, batch_size, hyper.as_arrays(x.dtype))
    log_px, elbo = np.asarray(log_px, np.float64), np.asarray(elbo, np.float64)
    if not (np.all(np.isfinite(log_px)) and np.all(np.isfinite(elbo))):
        bad = int(np.sum(~np.isfinite(log_px)))
        raise NumericalError(f"non-finite log-likelihood for {bad} of {log_px.size} images")
    ll_mean, ll_se = _mean_and_stderr(log_px)
    elbo_mean, elbo_se = _mean_and_stderr(elbo)
    return {
        "log_likelihood": ll_mean, "log_likelihood_stderr": ll_se,
        "neg_elbo": -elbo_mean, "neg_elbo_stderr": elbo_se,
        "n": int(log_px.size), "k": k,
        "log_likelihood_per_image": log_px, "elbo_per_image": elbo,
    }


def evaluate_run(run_dir, *, split: str = "test", seed: int = 0, k: int = 0, limit: int | None = None,
                 chunk: int | None = None, data_dir=None, download: bool = True, log=None) -> dict:
    """A run's model on its dataset's ``split``, as the run saw it (binarised likewise): the loss,
    reconstruction and KL with noise and batch order fixed by ``seed`` and, with ``k`` > 0, the
    k-sample log-likelihood (``evaluate``).

    Args:
        run_dir: The run directory.
        split: ``"test"`` or ``"train"``.
        seed: Fixes the noise, the batches' order and the samples.
        k: Importance samples per image; 0 for none.
        limit: Takes the first images only; None for all.
        chunk: As for ``evaluate``.
        data_dir: Where the run's dataset is (``jaxvae.runs.run_dataset``); None for where the run
            recorded it.
        download: Whether MNIST may be downloaded when not found.
        log: Called with messages about the data; None for none.

    Returns:
        A dict: ``run_dir``, ``dataset``, ``split``, ``samples``, ``epoch``, ``seed``, ``batch_size``,
        ``metrics`` (the names of the model's metrics), each metric (``loss``, ``recon``, ``kl`` for a
        VAE) and, with ``k``, ``evaluate``'s
        ``k``, ``log_likelihood``, ``neg_elbo`` and their ``*_stderr``.

    Raises:
        InputError: ``split``, ``seed``, ``k``, ``limit`` or ``chunk`` out of range.
        jaxvae.runs.format.RunError: The run directory cannot be read, or its data differ from the run's
            (``jaxvae.runs``).
        jaxvae.data.DataError: The dataset cannot be found or read.
        NumericalError: A non-finite estimate.
    """
    if split not in ("test", "train"):
        raise InputError(f"split must be 'test' or 'train', got {split!r}")
    check_seed("seed", seed)
    check_non_negative_int("k", k)
    for name, value in (("limit", limit), ("chunk", chunk)):
        if value is not None:
            check_positive_int(name, value)
    info, state = load_run(run_dir)
    model = as_model(info.model)
    if k and not hasattr(model, "log_importance_weights"):
        raise InputError(f"k={k}: {type(model).__name__} has no importance-sampled log-likelihood; evaluate with k=0")
    dataset = run_dataset(info, data_dir, download, log, run_dir=run_dir)
    tc = info.train_config
    images, labels = (dataset.test_x, dataset.test_y) if split == "test" else (dataset.train_x, dataset.train_y)
    x = prepare_eval_data(jnp.asarray(images[:limit]), tc)
    batch_size = min(tc.batch_size, len(x))
    metrics = eval_epoch(state.params, model.batch_of(x, labels[:limit]), jax.random.PRNGKey(seed), model, batch_size,
                         hyper=tc, model_state=state.train_state.model_state)
    result = {"run_dir": str(run_dir), "dataset": dataset.name, "split": split, "samples": int(len(x)),
              "epoch": state.epoch, "seed": seed, "batch_size": batch_size, "metrics": list(metrics),
              **{name: per_image_mean(v, len(x), batch_size) for name, v in metrics.items()}}
    if k:
        # x is binarised already; the train config still gives the likelihood's sigma
        estimate = evaluate(state.params, x, model, k=k, seed=seed, chunk=chunk,
                            train_config=tc.replace(binarize="none"))
        result.update({name: estimate[name] for name in ("k", "log_likelihood", "log_likelihood_stderr",
                                                         "neg_elbo", "neg_elbo_stderr")})
    return result
