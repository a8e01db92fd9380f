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


def dense(layer: dict, x: jax.Array, compute_dtype: str = "float32") -> jax.Array:
    return matmul(x, layer["kernel"], compute_dtype) + layer["bias"]


def matmul(x: jax.Array, kernel: jax.Array, compute_dtype: str = "float32") -> jax.Array:
    """``x @ kernel``; with compute_dtype "bfloat16" both operands are rounded to bfloat16 and the
    product accumulates and returns in float32 (parameters and everything else stay float32)."""
    if compute_dtype == "float32":
        return x @ kernel
    low = jnp.dtype(compute_dtype)
    return jnp.matmul(x.astype(low), kernel.astype(low), preferred_element_type=x.dtype)


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
            h = act(dense(self.linear(f"{prefix}_{i}", h.shape[-1], width, h.dtype), h, self.config.compute_dtype))
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
        mu, log_sigma = jnp.split(matmul(h, kernel, cfg.compute_dtype) + bias, 2, axis=-1)
        return mu, log_sigma


def output_activation_fn(config: VAEConfig, return_logits: bool = False):
    """The decoder's last non-linearity: none for Bernoulli logits, sigmoid for Bernoulli
    probabilities, the config's ``output_activation`` for the Gaussian mean."""
    if config.likelihood == "bernoulli":
        return (lambda x: x) if return_logits else jax.nn.sigmoid
    return activation_fn(config.output_activation)


class Decoder(_LinearStack):
    """z -> x_hat: an MLP with the output activation of the config (sigmoid by default).

    With a Bernoulli likelihood and ``return_logits`` it returns the logits instead of probabilities.
    """

    config: VAEConfig
    return_logits: bool = False

    @nn.compact
    def __call__(self, z):
        cfg = self.config
        h = self.hidden_layers("hidden", cfg.decoder_widths, z)
        out = dense(self.linear("output", h.shape[-1], cfg.input_dim, z.dtype), h, cfg.compute_dtype)
        return output_activation_fn(cfg, self.return_logits)(out)


def _conv(features: int, compute_dtype: str, transpose: bool = False, name: str | None = None):
    """A 3x3 'SAME' convolution (or a 2x2 stride-2 transposed one that doubles the side) with Flax's
    default initialisation; float32 parameters, computed in ``compute_dtype``."""
    dtype = jnp.dtype(compute_dtype)
    if transpose:
        return nn.ConvTranspose(features, (2, 2), strides=(2, 2), dtype=dtype, param_dtype=jnp.float32, name=name)
    return nn.Conv(features, (3, 3), padding="SAME", dtype=dtype, param_dtype=jnp.float32, name=name)


class ConvEncoder(_LinearStack):
    """x -> (mu, log_sigma) for ``architecture="conv"``: per entry of ``conv_channels`` a VGG-style
    block of two 3x3 convolutions and a 2x2 average pool, then the two linear heads."""

    config: VAEConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        act = activation_fn(cfg.activation, cfg.negative_slope)
        side = cfg.image_side
        h = x.reshape(x.shape[0], side, side, 1)
        for b, channels in enumerate(cfg.conv_channels):
            h = act(_conv(channels, cfg.compute_dtype, name=f"block{b}_conv0")(h)).astype(x.dtype)
            h = act(_conv(channels, cfg.compute_dtype, name=f"block{b}_conv1")(h)).astype(x.dtype)
            h = nn.avg_pool(h, (2, 2), strides=(2, 2))
        h = h.reshape(x.shape[0], -1)
        mu = dense(self.linear("mu", h.shape[-1], cfg.latent_dim, x.dtype), h, cfg.compute_dtype)
        log_sigma = dense(self.linear("log_sigma", h.shape[-1], cfg.latent_dim, x.dtype), h, cfg.compute_dtype)
        return mu, log_sigma


class ConvDecoder(_LinearStack):
    """z -> x_hat for ``architecture="conv"``, the encoder mirrored: a linear map to the smallest
    feature map, then per block (reversed) a stride-2 transposed conv that doubles the side and a
    3x3 conv, and a last 3x3 conv to one channel."""

    config: VAEConfig
    return_logits: bool = False

    @nn.compact
    def __call__(self, z):
        cfg = self.config
        act = activation_fn(cfg.activation, cfg.negative_slope)
        channels = tuple(reversed(cfg.conv_channels))
        small = cfg.image_side // 2 ** len(channels)
        h = act(dense(self.linear("input", z.shape[-1], small * small * channels[0], z.dtype), z, cfg.compute_dtype))
        h = h.reshape(z.shape[0], small, small, channels[0])
        for b, width in enumerate(channels):
            h = act(_conv(width, cfg.compute_dtype, transpose=True, name=f"block{b}_up")(h)).astype(z.dtype)
            h = act(_conv(width, cfg.compute_dtype, name=f"block{b}_conv")(h)).astype(z.dtype)
        out = _conv(1, cfg.compute_dtype, name="output")(h).astype(z.dtype).reshape(z.shape[0], -1)
        return output_activation_fn(cfg, self.return_logits)(out)


def _encoder_module(config: VAEConfig) -> nn.Module:
    return ConvEncoder(config) if config.architecture == "conv" else Encoder(config)


def _decoder_module(config: VAEConfig, return_logits: bool = False) -> nn.Module:
    cls = ConvDecoder if config.architecture == "conv" else Decoder
    return cls(config, return_logits=return_logits)


class VAE(nn.Module):
    """Encoder, reparameterised sample z = mu + sigma * eps, decoder."""

    config: VAEConfig

    def setup(self):
        self.encoder = _encoder_module(self.config)
        self.decoder = _decoder_module(self.config)

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
    return _encoder_module(config).apply({"params": params["encoder"]}, x)


def decode(params: dict, z: jax.Array, config: VAEConfig) -> jax.Array:
    """The decoder's output for latent codes z (pixel means in [0, 1] with the sigmoid output;
    pixel probabilities with a Bernoulli likelihood)."""
    return _decoder_module(config).apply({"params": params["decoder"]}, z)


def decoder_output(params: dict, z: jax.Array, config: VAEConfig) -> jax.Array:
    """The parameter of p(x | z) that the likelihood takes: the mean (``decode``) for the Gaussian,
    the logits for the Bernoulli (so the loss never takes log of a sigmoid)."""
    return _decoder_module(config, return_logits=True).apply({"params": params["decoder"]}, z)
