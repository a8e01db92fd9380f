import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flax import nnx

from jaxvae import VAE, VAEConfig, bind, decode, encode, init_params, params_of
from jaxvae.models import param_shapes


def test_param_tree_and_shapes():
    params = init_params(jax.random.PRNGKey(0), VAEConfig())
    shapes = jax.tree.map(lambda a: a.shape, params)
    assert shapes == {
        "encoder": {"trunk": {0: {"kernel": (784, 400), "bias": (400,)}}, "mu": {"kernel": (400, 2), "bias": (2,)},
                    "log_sigma": {"kernel": (400, 2), "bias": (2,)}},
        "decoder": {"hidden": {0: {"kernel": (2, 400), "bias": (400,)}}, "output": {"kernel": (400, 784), "bias": (784,)}},
    }



@pytest.mark.parametrize("config", [VAEConfig(), VAEConfig(architecture="conv", latent_dim=3)], ids=["mlp", "conv"])
def test_param_shapes_are_init_params_shapes_without_arrays(config):
    shapes = param_shapes(config)
    params = init_params(jax.random.PRNGKey(1), config)
    assert jax.tree.structure(shapes) == jax.tree.structure(params)
    for shape, param in zip(jax.tree.leaves(shapes), jax.tree.leaves(params)):
        assert isinstance(shape, jax.ShapeDtypeStruct)
        assert (shape.shape, shape.dtype) == (param.shape, param.dtype)

def test_init_matches_torch_linear_default_in_distribution():
    # torch's nn.Linear: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    params = init_params(jax.random.PRNGKey(1), VAEConfig())
    for layer, fan_in in [(params["encoder"]["trunk"][0], 784), (params["decoder"]["output"], 400),
                          (params["decoder"]["hidden"][0], 2)]:
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
    h = leaky(lin(enc["trunk"][1], leaky(lin(enc["trunk"][0], x))))
    mu, log_sigma = encode(params, jnp.asarray(x), cfg)
    np.testing.assert_allclose(mu, lin(enc["mu"], h), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(log_sigma, lin(enc["log_sigma"], h), rtol=1e-5, atol=1e-6)
    dec = params["decoder"]
    z = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    out = 1 / (1 + np.exp(-lin(dec["output"], leaky(lin(dec["hidden"][1], leaky(lin(dec["hidden"][0], z)))))))
    np.testing.assert_allclose(decode(params, jnp.asarray(z), cfg), out, rtol=1e-5, atol=1e-6)
    assert dec["hidden"][0]["kernel"].shape == (3, 8)  # the decoder mirrors the encoder


NUMPY_ACTIVATIONS = {
    "relu": lambda v: np.maximum(v, 0), "tanh": np.tanh, "identity": lambda v: v,
    "elu": lambda v: np.where(v > 0, v, np.expm1(np.minimum(v, 0))),
    "softplus": lambda v: np.log1p(np.exp(v)), "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
}


@pytest.mark.parametrize("activation", sorted(NUMPY_ACTIVATIONS))
def test_activations_are_configurable(activation):
    cfg = VAEConfig(input_dim=6, hidden=(4,), latent_dim=2, activation=activation, output_activation="identity")
    params = init_params(jax.random.PRNGKey(0), cfg)
    x = np.linspace(-3, 3, 12).reshape(2, 6)
    trunk, head = params["encoder"]["trunk"][0], params["encoder"]["mu"]
    h = NUMPY_ACTIVATIONS[activation](x @ np.asarray(trunk["kernel"], np.float64) + np.asarray(trunk["bias"]))
    mu, _ = encode(params, jnp.asarray(x, jnp.float32), cfg)
    np.testing.assert_allclose(mu, h @ np.asarray(head["kernel"], np.float64) + np.asarray(head["bias"]), rtol=1e-5, atol=1e-6)


def test_the_nnx_module_is_the_functional_model():
    cfg = VAEConfig(input_dim=20, hidden=(16,), latent_dim=3)
    key = jax.random.PRNGKey(4)
    model = VAE(cfg, rngs=key)
    params = params_of(model)
    assert jax.tree.structure(params) == jax.tree.structure(init_params(key, cfg))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(init_params(key, cfg))))
    x = jnp.asarray(np.random.default_rng(0).random((4, 20)), jnp.float32)
    eps = jax.random.normal(jax.random.PRNGKey(5), (4, 3))
    x_hat, mu, log_sigma = model(x, eps)
    np.testing.assert_allclose(mu, encode(params, x, cfg)[0], rtol=1e-6)
    np.testing.assert_allclose(x_hat, decode(params, mu + jnp.exp(log_sigma) * eps, cfg), rtol=1e-6)
    rebound = bind(params, cfg)
    np.testing.assert_allclose(rebound.decode(mu), model.decode(mu), rtol=1e-6)
    # with nnx.Rngs, the layers draw their keys from its stream: two models from one Rngs differ
    rngs = nnx.Rngs(0)
    first, second = params_of(VAE(cfg, rngs=rngs)), params_of(VAE(cfg, rngs=rngs))
    assert not np.array_equal(first["encoder"]["mu"]["kernel"], second["encoder"]["mu"]["kernel"])


def test_bernoulli_decoder_outputs_logits_and_decodes_probabilities():
    cfg = VAEConfig(input_dim=10, hidden=(8,), latent_dim=2, likelihood="bernoulli")
    model = VAE(cfg, rngs=jax.random.PRNGKey(0))
    z = 5 * jax.random.normal(jax.random.PRNGKey(1), (6, 2))
    logits = model.decoder_output(z)
    np.testing.assert_allclose(model.decode(z), jax.nn.sigmoid(logits), rtol=1e-6)
    assert float(jnp.min(logits)) < 0 < float(jnp.max(logits))


@pytest.mark.slow
def test_conv_layers_start_from_torchs_init():
    """Conv2d: U(+-1/sqrt(in_channels * 9)); ConvTranspose2d: fan_in from torch's [in, out, kh, kw]
    weight, i.e. out_channels * 4; weights and biases alike."""
    cfg = VAEConfig(architecture="conv", conv_channels=(8, 16), latent_dim=2)
    params = init_params(jax.random.PRNGKey(0), cfg)
    for part, path, fan_in in [("encoder", ("blocks", 0, "conv0"), 9), ("encoder", ("blocks", 1, "conv1"), 16 * 9),
                               ("decoder", ("blocks", 0, "up"), 16 * 4), ("decoder", ("output",), 8 * 9),
                               ("encoder", ("mu",), 7 * 7 * 16)]:
        bound = 1 / np.sqrt(fan_in)
        layer = functools.reduce(dict.__getitem__, path, params[part])
        for leaf in ("kernel", "bias"):
            values = np.asarray(layer[leaf])
            assert values.min() >= -bound and values.max() <= bound, (path, leaf)
            if values.size >= 8:  # spread over the range, not Flax's narrower defaults (or zeros)
                assert np.abs(values).max() > 0.75 * bound, (path, leaf)


def test_softplus_is_jax_softplus_bit_for_bit_in_value_and_gradient():
    from jaxvae.models import softplus

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(20000).astype(np.float32) * scale for scale in (0.1, 1, 10, 100)]
                       + [np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 88.7, -88.7, 1e-30, 3e38, -3e38], np.float32)])
    x = jnp.asarray(x)
    assert jnp.array_equal(jax.jit(softplus)(x), jax.jit(jax.nn.softplus)(x), equal_nan=True)
    grad = lambda f: jax.jit(jax.grad(lambda v: jnp.sum(f(v) * 1.5)))(x)  # noqa: E731
    assert jnp.array_equal(grad(softplus), grad(jax.nn.softplus), equal_nan=True)


def _layer(params: dict, part: str, *path):
    return functools.reduce(lambda tree, key: tree[key], path, params[part])


@pytest.mark.slow
def test_flax_init_gives_lecun_normal_kernels_and_zero_biases():
    """Flax's defaults: kernels with std 1/sqrt(fan_in) (a normal truncated at 2 std, rescaled), fan_in
    Flax's (kh * kw * in_channels for both kinds of convolution), and biases of 0. A bound of 4
    standard errors of the sample std, so that torch's uniform (std 0.58 / sqrt(fan_in)) or torch's
    fan_in of the transposed conv (out * 4) fails it."""
    mlp, conv = VAEConfig(init="flax"), VAEConfig(architecture="conv", conv_channels=(8, 16), init="flax")
    cases = [(mlp, ("encoder", "trunk", 0), 784), (mlp, ("decoder", "output"), 400),
             (conv, ("encoder", "blocks", 1, "conv1"), 9 * 16), (conv, ("decoder", "blocks", 1, "up"), 4 * 16)]
    params = {cfg: init_params(jax.random.PRNGKey(0), cfg) for cfg in (mlp, conv)}
    for cfg, path, fan_in in cases:
        layer = _layer(params[cfg], *path)
        kernel = np.asarray(layer["kernel"], np.float64).ravel()
        std = 1 / np.sqrt(fan_in)
        assert kernel.std() == pytest.approx(std, rel=4 / np.sqrt(2 * kernel.size)), path
        assert abs(kernel.mean()) < 4 * std / np.sqrt(kernel.size), path
        assert 1.9 * std < np.abs(kernel).max() <= 2 * std / 0.87962566103423978 + 1e-6, path  # truncated at 2 std
        assert not np.any(np.asarray(layer["bias"])), path


def test_a_custom_init_pair_starts_every_layer():
    calls = []

    def kernel_init(key, shape, dtype=jnp.float32):
        calls.append(shape)
        return jnp.full(shape, 0.5, dtype)

    def bias_init(key, shape, dtype=jnp.float32):
        return jnp.full(shape, -0.25, dtype)

    for cfg in (VAEConfig(hidden=(16, 8), init=(kernel_init, bias_init)),
                VAEConfig(architecture="conv", conv_channels=(4,), init=(kernel_init, bias_init))):
        calls.clear()
        params = init_params(jax.random.PRNGKey(0), cfg)
        kernels = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params) if path[-1].key == "kernel"]
        biases = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params) if path[-1].key == "bias"]
        assert sorted(calls) == sorted(k.shape for k in kernels)
        assert all(np.all(np.asarray(k) == 0.5) for k in kernels) and all(np.all(np.asarray(b) == -0.25) for b in biases)


@pytest.mark.slow
def test_the_init_changes_training():
    """The same seed and data trained from each initialisation: three different models, all finite."""
    from jaxvae import TrainConfig, fit

    x = np.random.default_rng(0).random((40, 16)).astype(np.float32)
    pair = (jax.nn.initializers.normal(0.3), jax.nn.initializers.constant(0.1))
    train = TrainConfig(batch_size=20, max_epochs=1)
    fitted = {name: fit(x, vae_config=VAEConfig(input_dim=16, hidden=(8,), init=init), train_config=train,
                        data_parallel=None).params for name, init in (("torch", "torch"), ("flax", "flax"), ("pair", pair))}
    for params in fitted.values():
        assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(params))
    kernels = {name: np.asarray(params["encoder"]["trunk"][0]["kernel"]) for name, params in fitted.items()}
    assert not np.allclose(kernels["torch"], kernels["flax"])
    assert not np.allclose(kernels["flax"], kernels["pair"]) and not np.allclose(kernels["torch"], kernels["pair"])
