import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvae import VAEConfig, decode, encode, init_params, sample_eps, vae_loss
from jaxvae.losses import gauss_similarity_loss, unit_gauss_kl


@pytest.mark.parametrize("sigma", [1.0, 0.5, 2.3])
def test_gauss_similarity_loss_equals_float64_numpy(sigma):
    rng = np.random.default_rng(0)
    x, x_hat = rng.random((7, 4, 5)), rng.random((7, 20))
    expected = np.sum((x.reshape(7, -1) - x_hat) ** 2, axis=1) / (2 * sigma**2)
    got = gauss_similarity_loss(jnp.asarray(x, jnp.float32), jnp.asarray(x_hat, jnp.float32), sigma)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_kl_equals_the_blogs_formula_in_float64():
    rng = np.random.default_rng(1)
    mu, log_sigma = rng.normal(size=(9, 3)), rng.normal(size=(9, 3))
    sigma = np.exp(log_sigma)
    expected = 0.5 * np.sum(sigma**2 + mu**2 - 1 - 2 * np.log(sigma), axis=-1)
    np.testing.assert_allclose(unit_gauss_kl(jnp.asarray(mu, jnp.float32), jnp.asarray(log_sigma, jnp.float32)),
                               expected, rtol=1e-5)


def test_kl_is_zero_at_the_prior_and_finite_where_the_blog_form_is_not():
    assert float(unit_gauss_kl(jnp.zeros((1, 4)), jnp.zeros((1, 4)))[0]) == 0.0
    log_sigma = jnp.array([[-200.0, -1e4]])
    blog_form = 0.5 * jnp.sum(jnp.exp(log_sigma) ** 2 - 1 - 2 * jnp.log(jnp.exp(log_sigma)), axis=-1)
    assert not bool(jnp.isfinite(blog_form[0]))  # log(exp(-200)) = log(0) = -inf in float32
    ours = unit_gauss_kl(jnp.zeros((1, 2)), log_sigma)
    np.testing.assert_allclose(ours, [0.5 * (-2 + 400 + 2e4)], rtol=1e-6)
    grad = jax.grad(lambda ls: unit_gauss_kl(jnp.zeros((1, 2)), ls).sum())(log_sigma)
    assert bool(jnp.all(jnp.isfinite(grad)))


def test_vae_loss_is_recon_plus_weighted_kl_with_given_noise():
    cfg = VAEConfig(input_dim=12, hidden=(8,), latent_dim=2)
    params = init_params(jax.random.PRNGKey(0), cfg)
    x = jax.random.uniform(jax.random.PRNGKey(1), (6, 12))
    eps = jax.random.normal(jax.random.PRNGKey(2), (6, 2))
    loss, aux = vae_loss(params, x, eps, cfg, kl_weight=0.3, recon_sigma=0.7)
    mu, log_sigma = encode(params, x, cfg)
    x_hat = decode(params, mu + jnp.exp(log_sigma) * eps, cfg)
    recon = np.mean(np.sum((np.asarray(x) - np.asarray(x_hat)) ** 2, 1) / (2 * 0.7**2))
    kl = np.mean(unit_gauss_kl(mu, log_sigma))
    np.testing.assert_allclose([aux["recon"], aux["kl"], loss], [recon, kl, recon + 0.3 * kl], rtol=1e-5)
    # the noise matters; the KL weight scales the KL term only
    other, _ = vae_loss(params, x, -eps, cfg, kl_weight=0.3, recon_sigma=0.7)
    assert float(other) != float(loss)
    warm, warm_aux = vae_loss(params, x, eps, cfg, kl_weight=0.0, recon_sigma=0.7)
    assert float(warm) == float(warm_aux["recon"]) == float(aux["recon"])


def test_sample_eps_shapes_follow_the_objective():
    key = jax.random.PRNGKey(0)
    assert sample_eps(key, 5, VAEConfig(latent_dim=3)).shape == (5, 3)
    iwae = VAEConfig(latent_dim=3, likelihood="bernoulli", objective="iwae", iwae_k=4)
    eps = sample_eps(key, 5, iwae)
    assert eps.shape == (4, 5, 3) and not np.allclose(eps[0], eps[1])
