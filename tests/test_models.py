import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvae import VAEConfig, decode, encode, init_params


def test_param_tree_and_shapes():
    params = init_params(jax.random.PRNGKey(0), VAEConfig())
    shapes = jax.tree.map(lambda a: a.shape, params)
    assert shapes == {
        "encoder": {"trunk_0": {"kernel": (784, 400), "bias": (400,)}, "mu": {"kernel": (400, 2), "bias": (2,)},
                    "log_sigma": {"kernel": (400, 2), "bias": (2,)}},
        "decoder": {"hidden_0": {"kernel": (2, 400), "bias": (400,)}, "output": {"kernel": (400, 784), "bias": (784,)}},
    }


def test_init_matches_torch_linear_default_in_distribution():
    # torch's nn.Linear: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    params = init_params(jax.random.PRNGKey(1), VAEConfig())
    for layer, fan_in in [(params["encoder"]["trunk_0"], 784), (params["decoder"]["output"], 400),
                          (params["decoder"]["hidden_0"], 2)]:
        bound = 1 / np.sqrt(fan_in)
        for leaf in ("kernel", "bias"):
            values = np.asarray(layer[leaf]).ravel()
            assert values.min() >= -bound and values.max() <= bound
            if values.size > 1000:  # uniform: mean 0, variance bound^2 / 3
                assert abs(values.mean()) < 0.02 * bound
                assert values.var() == pytest.approx(bound**2 / 3, rel=0.03)
    heads = params["encoder"]
    assert not np.array_equal(heads["mu"]["kernel"], heads["log_sigma"]["kernel"])


def test_forward_matches_a_plain_numpy_forward():
    cfg = VAEConfig(input_dim=20, hidden=(16, 8), latent_dim=3)
    params = init_params(jax.random.PRNGKey(2), cfg)
    x = np.random.default_rng(0).random((5, 20)).astype(np.float32)
    leaky = lambda v: np.where(v > 0, v, 0.01 * v)
    lin = lambda p, v: v @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)
    enc = params["encoder"]
    h = leaky(lin(enc["trunk_1"], leaky(lin(enc["trunk_0"], x))))
    mu, log_sigma = encode(params, jnp.asarray(x), cfg)
    np.testing.assert_allclose(mu, lin(enc["mu"], h), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(log_sigma, lin(enc["log_sigma"], h), rtol=1e-5, atol=1e-6)
    dec = params["decoder"]
    z = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    out = 1 / (1 + np.exp(-lin(dec["output"], leaky(lin(dec["hidden_1"], leaky(lin(dec["hidden_0"], z)))))))
    np.testing.assert_allclose(decode(params, jnp.asarray(z), cfg), out, rtol=1e-5, atol=1e-6)
    assert dec["hidden_0"]["kernel"].shape == (3, 8)  # the decoder mirrors the encoder


@pytest.mark.parametrize("activation", ["relu", "tanh", "elu", "identity"])
def test_activations_are_configurable(activation):
    cfg = VAEConfig(input_dim=6, hidden=(4,), latent_dim=2, activation=activation, output_activation="identity")
    params = init_params(jax.random.PRNGKey(0), cfg)
    x = jnp.linspace(-1, 1, 12).reshape(2, 6)
    mu, _ = encode(params, x, cfg)
    assert mu.shape == (2, 2) and bool(jnp.all(jnp.isfinite(mu)))
