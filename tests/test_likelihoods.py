"""Observation models, log-densities, the IWAE bound, binarisation, conv and bfloat16 options."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxvae.binarize import fixed_binarization, prepare_eval_data, sample_binary
from jaxvae.config import TrainConfig, VAEConfig
from jaxvae.losses import (
    bernoulli_log_likelihood, gaussian_log_likelihood, iwae_bound, iwae_loss, log_importance_weights,
    log_normal_diag, log_standard_normal, objective_loss, sample_eps, vae_loss,
)
from jaxvae.models import decode, decoder_output, encode, init_params
from jaxvae.training import TrainStep, fit

RNG = np.random.default_rng(0)
SMALL = VAEConfig(input_dim=12, hidden=(8,), latent_dim=3, likelihood="bernoulli")


def test_gaussian_log_likelihood_equals_scipy():
    x, mean = RNG.normal(size=(4, 7)), RNG.normal(size=(4, 7))
    for sigma in (1.0, 0.3):
        got = gaussian_log_likelihood(jnp.asarray(x, jnp.float32), jnp.asarray(mean, jnp.float32), sigma)
        want = [stats.multivariate_normal(m, sigma**2 * np.eye(7)).logpdf(r) for r, m in zip(x, mean)]
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_normal_log_densities_equal_scipy():
    z, mu, log_sigma = RNG.normal(size=(5, 3)), RNG.normal(size=(5, 3)), RNG.normal(size=(5, 3)) * 0.5
    np.testing.assert_allclose(log_normal_diag(jnp.asarray(z), jnp.asarray(mu), jnp.asarray(log_sigma)),
                               stats.norm.logpdf(z, mu, np.exp(log_sigma)).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(log_standard_normal(jnp.asarray(z)), stats.norm.logpdf(z).sum(-1), rtol=1e-5)


def test_bernoulli_log_likelihood_equals_float64_and_is_stable():
    x = (RNG.random((6, 9)) < 0.5).astype(np.float64)
    logits = RNG.normal(size=(6, 9)) * 4
    p = 1 / (1 + np.exp(-logits))
    want = np.sum(x * np.log(p) + (1 - x) * np.log1p(-p), axis=-1)
    got = bernoulli_log_likelihood(jnp.asarray(x, jnp.float32), jnp.asarray(logits, jnp.float32))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # Saturated logits: right answers (0 when confident and right, -|l| when confident and wrong), finite.
    extreme = bernoulli_log_likelihood(jnp.array([[1.0, 0.0, 1.0, 0.0]]), jnp.array([[1e4, -1e4, -1e4, 1e4]]))
    assert np.isfinite(extreme).all()
    np.testing.assert_allclose(extreme, [-2e4], rtol=1e-6)
    grad = jax.grad(lambda l: bernoulli_log_likelihood(jnp.ones((1, 2)), l).sum())(jnp.array([[1e4, -1e4]]))
    assert np.isfinite(grad).all()


@pytest.mark.slow
def test_iwae_with_one_sample_is_exactly_the_elbo_estimate():
    params = init_params(jax.random.PRNGKey(1), SMALL)
    x = jnp.asarray(RNG.random((5, 12)) < 0.5, jnp.float32)
    eps = jax.random.normal(jax.random.PRNGKey(2), (1, 5, 3))
    loss, aux = iwae_loss(params, x, eps, SMALL.replace(objective="iwae"))
    # The single-sample ELBO built from independent pieces: -log p(x|z) from vae_loss, log q and log p by scipy.
    _, elbo_aux = vae_loss(params, x, eps[0], SMALL)
    mu, log_sigma = (np.asarray(a, np.float64) for a in encode(params, x, SMALL))
    z = mu + np.exp(log_sigma) * np.asarray(eps[0], np.float64)
    kl_sample = stats.norm.logpdf(z, mu, np.exp(log_sigma)).sum(-1) - stats.norm.logpdf(z).sum(-1)
    np.testing.assert_allclose(loss, elbo_aux["recon"] + kl_sample.mean(), rtol=1e-5)
    np.testing.assert_allclose(aux["recon"], elbo_aux["recon"], rtol=1e-6)


@pytest.mark.slow
def test_iwae_k1_averages_to_the_analytic_elbo():
    params = init_params(jax.random.PRNGKey(3), SMALL)
    x = jnp.asarray(RNG.random((4, 12)) < 0.5, jnp.float32)
    eps = jax.random.normal(jax.random.PRNGKey(4), (20000, 4, 3))
    log_w, log_px_z = log_importance_weights(params, x, eps, SMALL)
    # E_q[log w] = E_q[log p(x|z)] - KL(q || p) with the KL in closed form (vae_loss's term).
    _, aux = vae_loss(params, x[:1], eps[0, :1], SMALL)
    mu, log_sigma = encode(params, x, SMALL)
    kl = 0.5 * jnp.sum(jnp.exp(2 * log_sigma) + mu**2 - 1 - 2 * log_sigma, -1)
    np.testing.assert_allclose(aux["kl"], kl[0], rtol=1e-6)
    stderr = jnp.std(log_w, 0) / math.sqrt(eps.shape[0])
    assert np.all(np.abs(jnp.mean(log_w, 0) - (jnp.mean(log_px_z, 0) - kl)) < 4 * stderr)


@pytest.mark.slow
def test_iwae_bound_rises_with_k_and_dominates_the_elbo():
    params = init_params(jax.random.PRNGKey(5), SMALL)
    x = jnp.asarray(RNG.random((16, 12)) < 0.5, jnp.float32)
    log_w, _ = log_importance_weights(params, x, jax.random.normal(jax.random.PRNGKey(6), (1000, 16, 3)), SMALL)
    bounds = [float(jnp.mean(iwae_bound(log_w[:k]))) for k in (1, 10, 100, 1000)]
    assert bounds == sorted(bounds) and bounds[-1] > bounds[0] + 0.1
    assert np.all(iwae_bound(log_w) >= jnp.mean(log_w, 0) - 1e-5)  # Jensen, on the very same samples


def test_objective_loss_is_vae_loss_for_the_default_config():
    vc = VAEConfig()
    params = init_params(jax.random.PRNGKey(0), vc)
    x = jnp.asarray(RNG.random((3, 784)), jnp.float32)
    eps = sample_eps(jax.random.PRNGKey(1), 3, vc)
    a, b = objective_loss(params, x, eps, vc), vae_loss(params, x, eps, vc)
    assert jax.tree.all(jax.tree.map(lambda u, v: bool(jnp.array_equal(u, v)), a, b))
    assert sample_eps(jax.random.PRNGKey(1), 3, vc.replace(objective="iwae", iwae_k=4)).shape == (4, 3, 2)


def test_bernoulli_decode_returns_probabilities_of_the_logits():
    params = init_params(jax.random.PRNGKey(0), SMALL)
    z = jax.random.normal(jax.random.PRNGKey(1), (4, 3))
    np.testing.assert_allclose(decode(params, z, SMALL), jax.nn.sigmoid(decoder_output(params, z, SMALL)), rtol=1e-6)
    # output_activation is ignored with a Bernoulli likelihood.
    np.testing.assert_array_equal(decode(params, z, SMALL), decode(params, z, SMALL.replace(output_activation="identity")))


@pytest.mark.parametrize("field, value", [
    ("likelihood", "poisson"), ("objective", "vi"), ("iwae_k", 0), ("architecture", "rnn"),
    ("compute_dtype", "float16"), ("conv_channels", ()), ("conv_channels", (8, -1)),
])
def test_bad_new_vae_fields_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        VAEConfig(**{field: value})


def test_config_cross_checks():
    with pytest.raises(ValueError, match="iwae_k"):
        VAEConfig(iwae_k=5)  # the ELBO has one sample
    with pytest.raises(ValueError, match="kl_weight"):
        TrainStep.from_configs(VAEConfig(objective="iwae", iwae_k=5), TrainConfig(kl_weight=0.5))
    with pytest.raises(ValueError, match="not a square image"):
        VAEConfig(input_dim=780, architecture="conv")
    with pytest.raises(ValueError, match="divisible"):
        VAEConfig(input_dim=36, architecture="conv", conv_channels=(4, 4))
    with pytest.raises(ValueError, match="binarize"):
        TrainConfig(binarize="otsu")
    with pytest.raises(ValueError, match="binarize_seed"):
        TrainConfig(binarize_seed=1.5)


@pytest.mark.slow
def test_binarisation_fixed_is_reproducible_and_dynamic_is_a_fresh_draw():
    x = jnp.asarray(RNG.random((200, 30)), jnp.float32)
    a, b = fixed_binarization(x, 7), fixed_binarization(x, 7)
    assert np.array_equal(a, b) and set(np.unique(a)) <= {0.0, 1.0}
    assert not np.array_equal(a, fixed_binarization(x, 8))
    assert abs(float(a.mean()) - float(x.mean())) < 0.02
    assert np.array_equal(prepare_eval_data(x, TrainConfig(binarize="dynamic", binarize_seed=7)), fixed_binarization(x, 8))
    with pytest.raises(ValueError, match=r"values in \[0\.\d+, 1\.99\d*\]; .*probabilities in \[0, 1\]"):
        fixed_binarization(x * 2, 0)
    # A dynamically binarised training step is the plain step on sample_binary(split key) of the batch.
    tc = TrainConfig(batch_size=200, binarize="dynamic")
    vc = SMALL.replace(input_dim=30)
    params = init_params(jax.random.PRNGKey(0), vc)
    key = jax.random.PRNGKey(9)
    dynamic = TrainStep.from_configs(vc, tc)
    got, _ = jax.jit(dynamic)(dynamic.init(params), x, key)
    eps_key, binarize_key = jax.random.split(key)
    plain = TrainStep.from_configs(vc, TrainConfig(batch_size=200))
    assert dynamic.binarize and not plain.binarize
    want, _ = jax.jit(plain.with_noise)(plain.init(params), sample_binary(binarize_key, x), sample_eps(eps_key, 200, vc))
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-6), got.params, want.params)


def _binary_data(n, dim, seed=0):
    rng = np.random.default_rng(seed)
    prototypes = rng.random((4, dim)) < 0.5
    return np.clip(prototypes[rng.integers(0, 4, n)] * 0.9 + 0.05, 0, 1).astype(np.float32)


@pytest.mark.slow
def test_iwae_bernoulli_training_with_dynamic_binarisation_learns():
    x = _binary_data(200, 16)
    vc = VAEConfig(input_dim=16, hidden=(32,), latent_dim=2, activation="tanh", likelihood="bernoulli",
                   objective="iwae", iwae_k=5)
    tc = TrainConfig(batch_size=20, lr=1e-2, max_epochs=3, binarize="dynamic")
    history = fit(x, vae_config=vc, train_config=tc, data_parallel=None).history
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 1.0
    assert all(np.isfinite(h["val_loss"]) for h in history)


@pytest.mark.slow
def test_conv_shapes_and_one_epoch():
    vc = VAEConfig(input_dim=64, latent_dim=3, architecture="conv", conv_channels=(4, 8), likelihood="bernoulli",
                   activation="relu")
    params = init_params(jax.random.PRNGKey(0), vc)
    x = jnp.asarray(_binary_data(40, 64))
    mu, log_sigma = encode(params, x, vc)
    assert mu.shape == log_sigma.shape == (40, 3)
    x_hat = decode(params, mu, vc)
    assert x_hat.shape == (40, 64) and float(x_hat.min()) >= 0 and float(x_hat.max()) <= 1
    assert params["encoder"]["blocks"][1]["conv1"]["kernel"].shape == (3, 3, 8, 8)
    result = fit(x[:20], vae_config=vc, train_config=TrainConfig(batch_size=10, max_epochs=1), data_parallel=None)
    assert np.isfinite(result.history[0]["train_loss"])
    moved = jax.tree.map(lambda a, b: not np.allclose(a, b), result.params, params)
    assert all(jax.tree.leaves(moved))  # every conv and dense layer was trained


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_bfloat16_compute_keeps_float32_params_and_stays_close(architecture):
    vc = VAEConfig(input_dim=64, hidden=(32,), latent_dim=4, architecture=architecture, conv_channels=(4,),
                   likelihood="bernoulli")
    low = vc.replace(compute_dtype="bfloat16")
    params = init_params(jax.random.PRNGKey(0), low)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
    x = jnp.asarray(_binary_data(8, 64))
    eps = sample_eps(jax.random.PRNGKey(1), 8, vc)
    full, _ = vae_loss(params, x, eps, vc)
    half, _ = vae_loss(params, x, eps, low)
    assert half.dtype == jnp.float32
    assert full != half  # really computed in bfloat16 ...
    np.testing.assert_allclose(half, full, rtol=2e-2)  # ... to bfloat16's precision
