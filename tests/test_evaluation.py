"""The importance-sampled log-likelihood against a model whose log p(x) is known in closed form."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxvae.binarize import fixed_binarization
from jaxvae.config import TrainConfig, VAEConfig
from jaxvae.evaluation import evaluate
from jaxvae.models import init_params

D, L, SIGMA = 6, 2, 0.5
# A linear-Gaussian VAE: x = W z + b + SIGMA * noise, z ~ N(0, I); W has orthogonal columns, so the
# exact posterior has a diagonal covariance and a linear encoder represents it exactly.
LINEAR = VAEConfig(input_dim=D, hidden=(), decoder_hidden=(), latent_dim=L, output_activation="identity")
SIGMA_CONFIG = TrainConfig(recon_sigma=SIGMA)  # the likelihood's sigma comes with the training config


def linear_gaussian(seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(D, L)))
    w = q * np.array([2.0, 0.7])  # orthogonal columns, W^T W = diag(4, 0.49)
    b = rng.normal(size=D)
    precision = np.diag(w.T @ w) + SIGMA**2  # M = W^T W + sigma^2 I, diagonal
    enc_kernel = w / precision  # posterior mean (x - b) W M^-1
    params = {
        "encoder": {
            "mu": {"kernel": enc_kernel, "bias": -b @ enc_kernel},
            "log_sigma": {"kernel": np.zeros((D, L)), "bias": 0.5 * np.log(SIGMA**2 / precision)},
        },
        "decoder": {"output": {"kernel": w.T, "bias": b}},
    }
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    truth = stats.multivariate_normal(b, w @ w.T + SIGMA**2 * np.eye(D))
    x = truth.rvs(size=40, random_state=rng).astype(np.float32)
    return params, x, truth.logpdf(x)


def test_params_match_the_model_layout():
    params, _, _ = linear_gaussian()
    fresh = init_params(jax.random.PRNGKey(0), LINEAR)
    assert jax.tree.structure(fresh) == jax.tree.structure(params)
    assert jax.tree.map(jnp.shape, fresh) == jax.tree.map(jnp.shape, params)


def test_exact_posterior_gives_the_closed_form_for_any_k_and_chunking():
    params, x, log_px = linear_gaussian()
    # 13 images in batches of 5 (padded) and k = 10 in chunks of 3 (the last chunk masked).
    for k, chunk, batch in ((1, 1, 40), (10, 3, 5)):
        result = evaluate(params, x[:13], LINEAR, k=k, chunk=chunk, batch_size=batch, seed=1, train_config=SIGMA_CONFIG)
        np.testing.assert_allclose(result["log_likelihood_per_image"], log_px[:13], atol=2e-4)
        # With the exact posterior log w is constant: the ELBO is tight.
        np.testing.assert_allclose(-result["neg_elbo"], log_px[:13].mean(), atol=2e-4)
        assert result["n"] == 13 and result["k"] == k


def test_imperfect_encoder_estimate_rises_with_k_to_the_truth():
    params, x, log_px = linear_gaussian()
    # Shift the posterior mean and widen it: a poor proposal, so small k is far below the truth.
    params["encoder"]["mu"]["bias"] = params["encoder"]["mu"]["bias"] + 0.4
    params["encoder"]["log_sigma"]["bias"] = params["encoder"]["log_sigma"]["bias"] + 0.5
    results = [evaluate(params, x, LINEAR, k=k, seed=2, train_config=SIGMA_CONFIG) for k in (1, 10, 1000)]
    means = [r["log_likelihood"] for r in results]
    assert means[0] < means[1] < means[2]
    assert -results[0]["neg_elbo"] < means[0] + 0.5  # k = 1 is the ELBO (one sample: noisy)
    assert all(r["log_likelihood"] >= -r["neg_elbo"] for r in results)
    assert abs(means[2] - log_px.mean()) < results[2]["log_likelihood_stderr"]  # the standard error reported
    assert abs(means[0] - log_px.mean()) > 0.3  # ... which k = 1 does not reach
    # The reported standard error is the spread over images.
    np.testing.assert_allclose(results[2]["log_likelihood_stderr"],
                               results[2]["log_likelihood_per_image"].std(ddof=1) / np.sqrt(40), rtol=1e-6)


@pytest.mark.slow
def test_evaluate_binarises_the_test_split_as_the_run_did():
    vc = VAEConfig(input_dim=10, hidden=(8,), latent_dim=2, likelihood="bernoulli")
    params = init_params(jax.random.PRNGKey(0), vc)
    x = np.random.default_rng(0).random((12, 10)).astype(np.float32)
    tc = TrainConfig(binarize="dynamic", binarize_seed=3)
    got = evaluate(params, x, vc, k=4, seed=0, train_config=tc)
    want = evaluate(params, fixed_binarization(x, 4), vc, k=4, seed=0)
    np.testing.assert_array_equal(got["log_likelihood_per_image"], want["log_likelihood_per_image"])


@pytest.mark.parametrize("kwargs, match", [
    ({"x": np.zeros((3, 5), np.float32)}, "5 features but the model expects input_dim=6"),
    ({"x": np.zeros((0, 6), np.float32)}, "empty"),
    ({"x": np.zeros((3, 6), np.int32)}, "floating"),
    ({"x": np.full((3, 6), np.nan, np.float32)}, "NaN"),
    ({"k": 0}, "k must"),
    ({"chunk": -2}, "chunk"),
])
def test_bad_arguments_are_named(kwargs, match):
    params, x, _ = linear_gaussian()
    args = {"x": x, **kwargs}
    with pytest.raises(ValueError, match=match):
        evaluate(params, args.pop("x"), LINEAR, **args)


@pytest.mark.slow
def test_decoding_in_blocks_gives_the_estimate_of_one_pass_over_the_chunk(monkeypatch):
    """Each chunk of samples is decoded a block at a time (BLOCK_ROWS); the estimate must be the
    one computed from the whole chunk's log weights at once (blocks of 2 samples: one padded)."""
    import importlib
    import math

    from jaxvae.losses import log_importance_weights

    evaluate_module = importlib.import_module("jaxvae.evaluation")

    params, x, _ = linear_gaussian()
    params["encoder"]["mu"]["bias"] = params["encoder"]["mu"]["bias"] + 0.4  # not the exact posterior
    monkeypatch.setattr(evaluate_module, "BLOCK_ROWS", 2 * 8)
    key = jax.random.PRNGKey(4)
    got = evaluate(params, x[:8], LINEAR, k=5, chunk=5, batch_size=8, key=key, train_config=SIGMA_CONFIG)
    batch_key = jax.random.split(key, 1)[0]
    chunk_key = jax.random.split(batch_key, 1)[0]
    eps = jax.random.normal(chunk_key, (5, 8, LINEAR.latent_dim))
    log_w, _ = log_importance_weights(params, jnp.asarray(x[:8]), eps, LINEAR, SIGMA)
    want = jax.scipy.special.logsumexp(log_w, axis=0) - math.log(5)
    np.testing.assert_allclose(got["log_likelihood_per_image"], want, rtol=1e-6)
    np.testing.assert_allclose(got["elbo_per_image"], np.mean(log_w, axis=0), rtol=1e-6)
