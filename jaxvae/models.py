"""The blog's encoder and decoder as Flax (Linen) modules over a plain params pytree.

Parameter layout (it maps one-to-one onto torchref's state dict, see ``interop.py``)::

    {"encoder": {"trunk_0": {"kernel", "bias"}, ..., "mu": {...}, "log_sigma": {...}},
     "decoder": {"hidden_0": {"kernel", "bias"}, ..., "output": {...}}}

Kernels are ``[in, out]`` (torch's ``weight`` transposed). Every layer starts from PyTorch's default
``nn.Linear`` initialisation: weight and bias uniform in ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]``.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvae.config import VAEConfig


def torch_linear_init(key, fan_in: int, fan_out: int, dtype=jnp.float32) -> dict:
    """PyTorch's default Linear init (kaiming_uniform(a=sqrt(5)) for the weight, the same bound for the bias)."""
    bound = 1.0 / jnp.sqrt(fan_in)
    k_key, b_key = jax.random.split(key)
    return {
        "kernel": jax.random.uniform(k_key, (fan_in, fan_out), dtype, -bound, bound),
        "bias": jax.random.uniform(b_key, (fan_out,), dtype, -bound, bound),
    }


def dense(layer: dict, x: jax.Array) -> jax.Array:
    return x @ layer["kernel"] + layer["bias"]


def activation_fn(name: str, negative_slope: float = 0.01):
    """The element-wise non-linearity called ``name`` in VAEConfig."""
    if name == "leaky_relu":
        return functools.partial(jax.nn.leaky_relu, negative_slope=negative_slope)
    return {
        "relu": jax.nn.relu,
        "tanh": jnp.tanh,
        "sigmoid": jax.nn.sigmoid,
        "elu": jax.nn.elu,
        "gelu": jax.nn.gelu,
        "softplus": jax.nn.softplus,
        "identity": lambda x: x,
    }[name]


class _LinearStack(nn.Module):
    """Declares one torch-initialised Linear layer per name; the maths is in ``dense``."""

    def linear(self, name: str, fan_in: int, fan_out: int, dtype) -> dict:
        return self.param(name, torch_linear_init, fan_in, fan_out, dtype)

    def hidden_layers(self, prefix: str, widths, h):
        """``h`` through one Linear + activation per width, layers named ``prefix_0, prefix_1, ...``."""
        act = activation_fn(self.config.activation, self.config.negative_slope)
        for i, width in enumerate(widths):
            h = act(dense(self.linear(f"{prefix}_{i}", h.shape[-1], width, h.dtype), h))
        return h


class Encoder(_LinearStack):
    """x -> (mu, log_sigma): an MLP trunk and two linear heads, as the blog's SimpleGaussVAEFCEncoder."""

    config: VAEConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        h = self.hidden_layers("trunk", cfg.hidden, x)
        mu_layer = self.linear("mu", h.shape[-1], cfg.latent_dim, x.dtype)
        log_sigma_layer = self.linear("log_sigma", h.shape[-1], cfg.latent_dim, x.dtype)
        # The two heads run as one [hidden, 2 * latent] matmul: one GEMM instead of two in the forward
        # and backward passes. The parameters stay the blog's two separate layers.
        kernel = jnp.concatenate([mu_layer["kernel"], log_sigma_layer["kernel"]], axis=1)
        bias = jnp.concatenate([mu_layer["bias"], log_sigma_layer["bias"]])
        mu, log_sigma = jnp.split(h @ kernel + bias, 2, axis=-1)
        return mu, log_sigma


class Decoder(_LinearStack):
    """z -> x_hat: an MLP with the output activation of the config (sigmoid by default)."""

    config: VAEConfig

    @nn.compact
    def __call__(self, z):
        cfg = self.config
        h = self.hidden_layers("hidden", cfg.decoder_widths, z)
        out = dense(self.linear("output", h.shape[-1], cfg.input_dim, z.dtype), h)
        return activation_fn(cfg.output_activation)(out)


class VAE(nn.Module):
    """Encoder, reparameterised sample z = mu + sigma * eps, decoder."""

    config: VAEConfig

    def setup(self):
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)

    def __call__(self, x, eps):
        mu, log_sigma = self.encoder(x)
        z = mu + jnp.exp(log_sigma) * eps
        return self.decoder(z), mu, log_sigma

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z)


def init_params(key: jax.Array, config: VAEConfig, dtype=jnp.float32) -> dict:
    """Fresh parameters with PyTorch's default initialisation."""
    x = jnp.zeros((1, config.input_dim), dtype)
    eps = jnp.zeros((1, config.latent_dim), dtype)
    return VAE(config).init(key, x, eps)["params"]


def encode(params: dict, x: jax.Array, config: VAEConfig):
    """(mu, log_sigma) of q(z | x)."""
    return Encoder(config).apply({"params": params["encoder"]}, x)


def decode(params: dict, z: jax.Array, config: VAEConfig) -> jax.Array:
    """The decoder's output for latent codes z (pixel means in [0, 1] with the sigmoid output)."""
    return Decoder(config).apply({"params": params["decoder"]}, z)
