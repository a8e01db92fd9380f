"""The blog's encoder and decoder as Flax NNX modules, and their parameters as a plain pytree.

    model = jaxvae.VAE(VAEConfig(), rngs=nnx.Rngs(0))
    x_hat, mu, log_sigma = model(x, eps)

The trainable state is a plain nested dict that maps one-to-one onto torchref's state dict (the
table is in ``jaxvae.interop``)::

    {"encoder": {"trunk_0": {"kernel", "bias"}, ..., "mu": {...}, "log_sigma": {...}},
     "decoder": {"hidden_0": {"kernel", "bias"}, ..., "output": {...}}}

Kernels are ``[in, out]`` (torch's ``weight`` transposed). Every layer starts from PyTorch's default
initialisation for its kind: weight and bias uniform in ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]``.

Training never holds a module: the hot loop is a pure function of that dict, and ``bind`` merges it
into a module while jit traces (Flax's advice for small models; ``nnx.jit`` would add Python work
to every call). ``encode``, ``decode`` and ``decoder_output`` are that pure form.
"""
from __future__ import annotations

import functools
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvae.config import VAEConfig


def matmul(x: jax.Array, kernel: jax.Array, compute_dtype: str = "float32") -> jax.Array:
    """``x @ kernel``; with compute_dtype "bfloat16" both operands are rounded to bfloat16 and the
    product accumulates and returns in float32 (parameters and everything else stay float32)."""
    if compute_dtype == "float32":
        return x @ kernel
    low = jnp.dtype(compute_dtype)
    return jnp.matmul(x.astype(low), kernel.astype(low), preferred_element_type=x.dtype)


@jax.custom_jvp
def softplus(x: jax.Array) -> jax.Array:
    """log(1 + e^x): ``jax.nn.softplus``'s value and gradient bit for bit, computed as
    max(x, 0) + log1p(exp(-|x|)) without ``logaddexp``'s NaN select, which XLA's CPU backend
    vectorises ~3x better (the Bernoulli likelihood evaluates it on every pixel)."""
    return jnp.maximum(x, 0) + jnp.log1p(jnp.exp(-jnp.abs(x)))


@softplus.defjvp
def _softplus_jvp(primals, tangents):
    # logaddexp(x, 0)'s own rule: d/dx = exp(x - out), with +inf read as 0 on both sides
    (x,), (t,) = primals, tangents
    out = softplus(x)

    def finite(v):
        return jnp.where(v == jnp.inf, jnp.zeros_like(v), v)

    return out, t * jnp.exp(finite(x) - finite(out))


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
        "softplus": softplus,
        "identity": lambda x: x,
    }[name]


class _LayerKeys:
    """One PRNG key per layer of a part ("encoder" or "decoder"), in declaration order.

    Layer n (from 1) gets ``fold_in(key, first 4 bytes of SHA-1(part, n))``: the rule Flax Linen
    applied in jaxvae 0.1.0, kept so that a seed still gives the same initial weights, and so the
    same runs, as before.
    """

    def __init__(self, key: jax.Array, part: str):
        self.key, self.part, self.count = key, part, 0

    def __call__(self) -> jax.Array:
        self.count += 1
        n = self.count
        digest = hashlib.sha1(self.part.encode() + n.to_bytes((n.bit_length() + 7) // 8, "big")).digest()
        return jax.random.fold_in(self.key, np.uint32(int.from_bytes(digest[:4], "big")))


def _torch_uniform(fan_in: int):
    """PyTorch's default init for Linear and Conv layers: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the
    weight (kaiming_uniform with a = sqrt(5)) and the same bound for the bias."""
    bound = 1.0 / jnp.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class Linear(nnx.Module):
    """``x @ kernel + bias`` with PyTorch's default init; matmul in ``compute_dtype``."""

    def __init__(self, fan_in: int, fan_out: int, key: jax.Array, compute_dtype: str = "float32",
                 dtype=jnp.float32):
        init = _torch_uniform(fan_in)
        kernel_key, bias_key = jax.random.split(key)
        self.kernel = nnx.Param(init(kernel_key, (fan_in, fan_out), dtype))
        self.bias = nnx.Param(init(bias_key, (fan_out,), dtype))
        self.compute_dtype = compute_dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        return matmul(x, self.kernel[...], self.compute_dtype) + self.bias[...]


def _mlp(module: nnx.Module, prefix: str, widths, keys: _LayerKeys, config: VAEConfig, dtype) -> None:
    """Attach Linear layers ``prefix_0, prefix_1, ...`` from ``widths[0]`` through each later width."""
    for i, (fan_in, fan_out) in enumerate(zip(widths, widths[1:])):
        setattr(module, f"{prefix}_{i}", Linear(fan_in, fan_out, keys(), config.compute_dtype, dtype))


def _run_mlp(module: nnx.Module, prefix: str, count: int, act, h: jax.Array) -> jax.Array:
    for i in range(count):
        h = act(getattr(module, f"{prefix}_{i}")(h))
    return h


def _decoder_output(config: VAEConfig, pre_activation: jax.Array, probabilities: bool) -> jax.Array:
    """The decoder's last non-linearity: the Gaussian mean through ``output_activation``; for the
    Bernoulli the logits as they are, or their sigmoid when ``probabilities``."""
    if config.likelihood == "bernoulli":
        return jax.nn.sigmoid(pre_activation) if probabilities else pre_activation
    return activation_fn(config.output_activation)(pre_activation)


class Encoder(nnx.Module):
    """x -> (mu, log_sigma): an MLP trunk and two linear heads, as the blog's SimpleGaussVAEFCEncoder."""

    def __init__(self, config: VAEConfig, keys: _LayerKeys, dtype=jnp.float32):
        self.config = config
        _mlp(self, "trunk", (config.input_dim, *config.hidden), keys, config, dtype)
        width = config.hidden[-1] if config.hidden else config.input_dim
        self.mu = Linear(width, config.latent_dim, keys(), config.compute_dtype, dtype)
        self.log_sigma = Linear(width, config.latent_dim, keys(), config.compute_dtype, dtype)

    def __call__(self, x: jax.Array):
        cfg = self.config
        h = _run_mlp(self, "trunk", len(cfg.hidden), activation_fn(cfg.activation, cfg.negative_slope), x)
        # The two heads run as one [hidden, 2 * latent] matmul: one GEMM instead of two in the forward
        # and backward passes. The parameters stay the blog's two separate layers.
        kernel = jnp.concatenate([self.mu.kernel[...], self.log_sigma.kernel[...]], axis=1)
        bias = jnp.concatenate([self.mu.bias[...], self.log_sigma.bias[...]])
        mu, log_sigma = jnp.split(matmul(h, kernel, cfg.compute_dtype) + bias, 2, axis=-1)
        return mu, log_sigma


class Decoder(nnx.Module):
    """z -> the pre-activation of the output layer: an MLP mirroring the encoder's trunk
    (``VAEConfig.decoder_widths``). ``VAE.decode`` applies the output non-linearity."""

    def __init__(self, config: VAEConfig, keys: _LayerKeys, dtype=jnp.float32):
        self.config = config
        widths = (config.latent_dim, *config.decoder_widths)
        _mlp(self, "hidden", widths, keys, config, dtype)
        self.output = Linear(widths[-1], config.input_dim, keys(), config.compute_dtype, dtype)

    def __call__(self, z: jax.Array) -> jax.Array:
        cfg = self.config
        h = _run_mlp(self, "hidden", len(cfg.decoder_widths), activation_fn(cfg.activation, cfg.negative_slope), z)
        return self.output(h)


def _conv(fan_in_channels: int, features: int, key: jax.Array, compute_dtype: str, transpose: bool = False):
    """A 3x3 'SAME' convolution, or a 2x2 stride-2 transposed one that doubles the side, with
    PyTorch's init (fan_in: in_channels * 9 for Conv2d, features * 4 for ConvTranspose2d, whose
    weight torch stores as [in, out, kh, kw]); float32 parameters, computed in ``compute_dtype``."""
    dtype = jnp.dtype(compute_dtype)
    if transpose:
        init = _torch_uniform(features * 4)
        return nnx.ConvTranspose(fan_in_channels, features, (2, 2), strides=(2, 2), kernel_init=init, bias_init=init,
                                 dtype=dtype, param_dtype=jnp.float32, rngs=nnx.Rngs(params=key))
    init = _torch_uniform(fan_in_channels * 9)
    return nnx.Conv(fan_in_channels, features, (3, 3), padding="SAME", kernel_init=init, bias_init=init,
                    dtype=dtype, param_dtype=jnp.float32, rngs=nnx.Rngs(params=key))


class ConvEncoder(nnx.Module):
    """x -> (mu, log_sigma) for ``architecture="conv"``: per entry of ``conv_channels`` a VGG-style
    block of two 3x3 convolutions and a 2x2 average pool, then the two linear heads."""

    def __init__(self, config: VAEConfig, keys: _LayerKeys, dtype=jnp.float32):
        self.config = config
        channels = (1, *config.conv_channels)
        for b, (c_in, c_out) in enumerate(zip(channels, channels[1:])):
            setattr(self, f"block{b}_conv0", _conv(c_in, c_out, keys(), config.compute_dtype))
            setattr(self, f"block{b}_conv1", _conv(c_out, c_out, keys(), config.compute_dtype))
        small = config.image_side // 2 ** len(config.conv_channels)
        width = small * small * config.conv_channels[-1]
        self.mu = Linear(width, config.latent_dim, keys(), config.compute_dtype, dtype)
        self.log_sigma = Linear(width, config.latent_dim, keys(), config.compute_dtype, dtype)

    def __call__(self, x: jax.Array):
        cfg = self.config
        act = activation_fn(cfg.activation, cfg.negative_slope)
        h = x.reshape(x.shape[0], cfg.image_side, cfg.image_side, 1)
        for b in range(len(cfg.conv_channels)):
            h = act(getattr(self, f"block{b}_conv0")(h)).astype(x.dtype)
            h = act(getattr(self, f"block{b}_conv1")(h)).astype(x.dtype)
            h = nnx.avg_pool(h, (2, 2), strides=(2, 2))
        h = h.reshape(x.shape[0], -1)
        return self.mu(h), self.log_sigma(h)


class ConvDecoder(nnx.Module):
    """z -> output pre-activation for ``architecture="conv"``, the encoder mirrored: a linear map to
    the smallest feature map, then per block (reversed) a stride-2 transposed conv that doubles the
    side and a 3x3 conv, and a last 3x3 conv to one channel."""

    def __init__(self, config: VAEConfig, keys: _LayerKeys, dtype=jnp.float32):
        self.config = config
        channels = tuple(reversed(config.conv_channels))
        small = config.image_side // 2 ** len(channels)
        self.input = Linear(config.latent_dim, small * small * channels[0], keys(), config.compute_dtype, dtype)
        for b, c_out in enumerate(channels):
            c_in = channels[max(b - 1, 0)]  # block 0 starts from the linear map's channels[0]
            setattr(self, f"block{b}_up", _conv(c_in, c_out, keys(), config.compute_dtype, transpose=True))
            setattr(self, f"block{b}_conv", _conv(c_out, c_out, keys(), config.compute_dtype))
        self.output = _conv(channels[-1], 1, keys(), config.compute_dtype)

    def __call__(self, z: jax.Array) -> jax.Array:
        cfg = self.config
        act = activation_fn(cfg.activation, cfg.negative_slope)
        channels = tuple(reversed(cfg.conv_channels))
        small = cfg.image_side // 2 ** len(channels)
        h = act(self.input(z)).reshape(z.shape[0], small, small, channels[0])
        for b in range(len(channels)):
            h = act(getattr(self, f"block{b}_up")(h)).astype(z.dtype)
            h = act(getattr(self, f"block{b}_conv")(h)).astype(z.dtype)
        return self.output(h).astype(z.dtype).reshape(z.shape[0], -1)


class VAE(nnx.Module):
    """Encoder, reparameterised sample z = mu + sigma * eps, decoder.

    ``rngs`` is an ``nnx.Rngs`` (one key is drawn from its ``params`` stream) or a PRNG key used
    as it is (``init_params`` and ``fit`` pass the key, so a seed gives the weights it always gave).
    """

    def __init__(self, config: VAEConfig, *, rngs: nnx.Rngs | jax.Array, dtype=jnp.float32):
        key = rngs.params() if isinstance(rngs, nnx.Rngs) else rngs
        conv = config.architecture == "conv"
        self.config = config
        self.encoder = (ConvEncoder if conv else Encoder)(config, _LayerKeys(key, "encoder"), dtype)
        self.decoder = (ConvDecoder if conv else Decoder)(config, _LayerKeys(key, "decoder"), dtype)

    def __call__(self, x: jax.Array, eps: jax.Array):
        """``(decode(z), mu, log_sigma)`` for z = mu + exp(log_sigma) * eps."""
        mu, log_sigma = self.encoder(x)
        z = mu + jnp.exp(log_sigma) * eps
        return self.decode(z), mu, log_sigma

    def encode(self, x: jax.Array):
        """(mu, log_sigma) of q(z | x)."""
        return self.encoder(x)

    def decode(self, z: jax.Array) -> jax.Array:
        """Pixel means (Gaussian; in [0, 1] with the sigmoid output) or probabilities (Bernoulli)."""
        return _decoder_output(self.config, self.decoder(z), probabilities=True)

    def decoder_output(self, z: jax.Array) -> jax.Array:
        """The parameter of p(x | z) that the likelihood takes: the mean for the Gaussian, the logits
        for the Bernoulli (so the loss never takes the log of a sigmoid)."""
        return _decoder_output(self.config, self.decoder(z), probabilities=False)


def params_of(model: VAE) -> dict:
    """The model's parameters as a plain nested dict (the layout in this module's docstring)."""
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


@functools.lru_cache(maxsize=64)
def _graphdef(config: VAEConfig):
    return nnx.graphdef(nnx.eval_shape(lambda: VAE(config, rngs=jax.random.PRNGKey(0))))


def bind(params: dict, config: VAEConfig) -> VAE:
    """The VAE module of ``config`` holding ``params`` (cheap: inside jit it costs only trace time)."""
    return nnx.merge(_graphdef(config), params)


def init_params(key: jax.Array, config: VAEConfig, dtype=jnp.float32) -> dict:
    """Fresh parameters with PyTorch's default initialisation, from ``key``."""
    return params_of(VAE(config, rngs=key, dtype=dtype))


def encode(params: dict, x: jax.Array, config: VAEConfig):
    """(mu, log_sigma) of q(z | x)."""
    return bind(params, config).encode(x)


def decode(params: dict, z: jax.Array, config: VAEConfig) -> jax.Array:
    """The decoder's output for latent codes z (pixel means in [0, 1] with the sigmoid output;
    pixel probabilities with a Bernoulli likelihood)."""
    return bind(params, config).decode(z)


def decoder_output(params: dict, z: jax.Array, config: VAEConfig) -> jax.Array:
    """The parameter of p(x | z) that the likelihood takes (``VAE.decoder_output``)."""
    return bind(params, config).decoder_output(z)
