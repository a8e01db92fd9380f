"""The blog's encoder and decoder as Flax NNX modules, and their parameters as a plain pytree.

    model = jaxvae.VAE(VAEConfig(), rngs=nnx.Rngs(0))
    x_hat, mu, log_sigma = model(x, eps)

The layers are ``nnx.Linear``, ``nnx.Conv`` and ``nnx.ConvTranspose``; a stack of them is an
``nnx.List``, which appears in the parameters as a dict keyed by position (0, 1, ...). The trainable
state is that plain nested dict, each layer ``{"kernel", "bias"}``::

    MLP:  {"encoder": {"trunk": {0: layer, 1: layer, ...}, "mu": layer, "log_sigma": layer},
           "decoder": {"hidden": {0: layer, ...}, "output": layer}}
    conv: {"encoder": {"blocks": {0: {"conv0", "conv1"}, ...}, "mu", "log_sigma"},
           "decoder": {"input", "blocks": {0: {"up", "conv"}, ...}, "output"}}

(an empty stack, ``hidden=()``, has no entry). Kernels are ``[in, out]`` (torch's ``weight``
transposed) and ``[kh, kw, in, out]`` for convolutions; ``jaxvae.interop`` maps torchref's layers
onto this layout, ``jaxvae.checkpoint`` renames older files' flat names (``trunk_0``, ``block0_conv0``).

Every layer starts from ``VAEConfig.init``, its keys drawn from ``rngs``' ``params`` stream in
declaration order (encoder, then decoder; kernel, then bias). Training never holds a module: the hot
loop is a pure function of that dict, which ``bind`` merges into a module while jit traces (Flax's
advice for small models; ``nnx.jit`` would add Python work to every call).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvae.config import VAEConfig
from jaxvae.likelihoods import likelihood_of, softplus


def activation_fn(name: str, negative_slope: float = 0.01):
    """The element-wise non-linearity called ``name`` in VAEConfig.

    Args:
        name: One of ``config.ACTIVATIONS``.
        negative_slope: LeakyReLU's slope below 0.

    Returns:
        The function.

    Raises:
        KeyError: An unknown name (``VAEConfig`` has checked it).
    """
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


def _torch_uniform(fan_in: int):
    """PyTorch's default init for Linear and Conv layers: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the
    weight (kaiming_uniform with a = sqrt(5)) and the same bound for the bias, as an initializer."""
    bound = 1.0 / jnp.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def _layer_init(config: VAEConfig, torch_fan_in: int) -> dict:
    """The ``kernel_init`` and ``bias_init`` arguments of a layer under ``config.init``: PyTorch's
    bound from the fan_in of the layer's torch counterpart, nothing for Flax's (the layer's own
    defaults: lecun-normal kernel, zero bias), or the config's pair."""
    if config.init == "flax":
        return {}
    kernel_init, bias_init = (_torch_uniform(torch_fan_in),) * 2 if config.init == "torch" else config.init
    return {"kernel_init": kernel_init, "bias_init": bias_init}


def _bias_kept(args, *, dtype):
    """``nnx.Linear``'s ``promote_dtype`` for a low-precision compute dtype: the input and the kernel
    are rounded to ``dtype``; the bias is not (it is added to the float32 product)."""
    inputs, kernel, bias = args
    return inputs.astype(dtype), kernel.astype(dtype), bias


def _dense(fan_in: int, fan_out: int, config: VAEConfig, rngs: nnx.Rngs, dtype) -> nnx.Linear:
    """A dense layer with parameters of ``dtype``, computing in ``VAEConfig.compute_dtype``: float32 as
    it is; bfloat16 operands whose product accumulates and returns in float32, plus the float32 bias."""
    low_precision = {"dtype": jnp.dtype(config.compute_dtype), "promote_dtype": _bias_kept,
                     "preferred_element_type": jnp.float32}
    return nnx.Linear(fan_in, fan_out, param_dtype=dtype, rngs=rngs, **_layer_init(config, fan_in),
                      **({} if config.compute_dtype == "float32" else low_precision))


def _dense_stack(widths, config: VAEConfig, rngs: nnx.Rngs, dtype) -> nnx.List:
    """Dense layers from ``widths[0]`` through each later width."""
    return nnx.List([_dense(a, b, config, rngs, dtype) for a, b in zip(widths, widths[1:])])


def _conv(in_channels: int, features: int, config: VAEConfig, rngs: nnx.Rngs) -> nnx.Conv:
    """A 3x3 'SAME' convolution, torch's fan_in in_channels * 9; float32 parameters, computed (and
    returned) in the compute dtype."""
    return nnx.Conv(in_channels, features, (3, 3), padding="SAME", dtype=jnp.dtype(config.compute_dtype),
                    param_dtype=jnp.float32, rngs=rngs, **_layer_init(config, in_channels * 9))


def _run_stack(layers: nnx.List, config: VAEConfig, h: jax.Array) -> jax.Array:
    act = activation_fn(config.activation, config.negative_slope)
    for layer in layers:
        h = act(layer(h))
    return h


def _fused_heads(mu: nnx.Linear, log_sigma: nnx.Linear, h: jax.Array):
    """``(mu(h), log_sigma(h))`` as one [width, 2 * latent] matmul, computed as the layers compute
    (their promote_dtype and preferred_element_type): one GEMM instead of two each way, the parameters
    still the blog's two layers. No gain shown on CPU (2 shared cores: separate/fused median 0.96).
    """
    kernel = jnp.concatenate([mu.kernel[...], log_sigma.kernel[...]], axis=1)
    bias = jnp.concatenate([mu.bias[...], log_sigma.bias[...]])
    h, kernel, bias = mu.promote_dtype((h, kernel, bias), dtype=mu.dtype)
    out = jax.lax.dot_general(h, kernel, (((h.ndim - 1,), (0,)), ((), ())), precision=mu.precision,
                              preferred_element_type=mu.preferred_element_type) + bias
    return tuple(jnp.split(out, 2, axis=-1))


class Encoder(nnx.Module):
    """x -> (mu, log_sigma): an MLP trunk and two linear heads, as the blog's SimpleGaussVAEFCEncoder.

    Args:
        config: The model's config.
        rngs: Draws the parameters (the ``params`` stream).
        dtype: The dense layers' parameter type.
    """

    def __init__(self, config: VAEConfig, rngs: nnx.Rngs, dtype=jnp.float32):
        self.config = config
        widths = (config.input_dim, *config.hidden)
        self.trunk = _dense_stack(widths, config, rngs, dtype)
        self.mu = _dense(widths[-1], config.latent_dim, config, rngs, dtype)
        self.log_sigma = _dense(widths[-1], config.latent_dim, config, rngs, dtype)

    def __call__(self, x: jax.Array):
        return _fused_heads(self.mu, self.log_sigma, _run_stack(self.trunk, self.config, x))


class Decoder(nnx.Module):
    """z -> the pre-activation of the output layer: an MLP mirroring the encoder's trunk
    (``VAEConfig.decoder_widths``). ``VAE.decoder_output`` applies the output non-linearity.

    Args:
        config: The model's config.
        rngs: Draws the parameters (the ``params`` stream).
        dtype: The dense layers' parameter type.
    """

    def __init__(self, config: VAEConfig, rngs: nnx.Rngs, dtype=jnp.float32):
        self.config = config
        widths = (config.latent_dim, *config.decoder_widths)
        self.hidden = _dense_stack(widths, config, rngs, dtype)
        self.output = _dense(widths[-1], config.input_dim, config, rngs, dtype)

    def __call__(self, z: jax.Array) -> jax.Array:
        return self.output(_run_stack(self.hidden, self.config, z))


class ConvBlock(nnx.Module):
    """Two 3x3 convolutions (``conv0``, ``conv1``) and a 2x2 average pool that halves the side.

    Args:
        in_channels: Input channels.
        features: Output channels.
        config: Gives the initialisation and the compute dtype.
        rngs: Draws the parameters.
    """

    def __init__(self, in_channels: int, features: int, config: VAEConfig, rngs: nnx.Rngs):
        self.conv0 = _conv(in_channels, features, config, rngs)
        self.conv1 = _conv(features, features, config, rngs)

    def __call__(self, h: jax.Array, act, dtype) -> jax.Array:
        h = act(self.conv0(h)).astype(dtype)
        h = act(self.conv1(h)).astype(dtype)
        return nnx.avg_pool(h, (2, 2), strides=(2, 2))


class UpBlock(nnx.Module):
    """A stride-2 transposed convolution that doubles the side (``up``), then a 3x3 one (``conv``).

    Args:
        in_channels: Input channels.
        features: Output channels.
        config: Gives the initialisation and the compute dtype.
        rngs: Draws the parameters.
    """

    def __init__(self, in_channels: int, features: int, config: VAEConfig, rngs: nnx.Rngs):
        # torch stores a transposed convolution's weight as [in, out, kh, kw]: its fan_in is features * 4
        self.up = nnx.ConvTranspose(in_channels, features, (2, 2), strides=(2, 2),
                                    dtype=jnp.dtype(config.compute_dtype), param_dtype=jnp.float32, rngs=rngs,
                                    **_layer_init(config, features * 4))
        self.conv = _conv(features, features, config, rngs)

    def __call__(self, h: jax.Array, act, dtype) -> jax.Array:
        h = act(self.up(h)).astype(dtype)
        return act(self.conv(h)).astype(dtype)


class ConvEncoder(nnx.Module):
    """x -> (mu, log_sigma) for ``architecture="conv"``: per entry of ``conv_channels`` a VGG-style
    ``ConvBlock``, then the two linear heads.

    Args:
        config: The model's config.
        rngs: Draws the parameters (the ``params`` stream).
        dtype: The dense layers' parameter type.
    """

    def __init__(self, config: VAEConfig, rngs: nnx.Rngs, dtype=jnp.float32):
        self.config = config
        channels = (1, *config.conv_channels)
        self.blocks = nnx.List([ConvBlock(c_in, c_out, config, rngs) for c_in, c_out in zip(channels, channels[1:])])
        small = config.image_side // 2 ** len(config.conv_channels)
        width = small * small * config.conv_channels[-1]
        self.mu = _dense(width, config.latent_dim, config, rngs, dtype)
        self.log_sigma = _dense(width, config.latent_dim, config, rngs, dtype)

    def __call__(self, x: jax.Array):
        cfg = self.config
        act = activation_fn(cfg.activation, cfg.negative_slope)
        h = x.reshape(x.shape[0], cfg.image_side, cfg.image_side, 1)
        for block in self.blocks:
            h = block(h, act, x.dtype)
        h = h.reshape(x.shape[0], -1)
        return self.mu(h), self.log_sigma(h)


class ConvDecoder(nnx.Module):
    """z -> output pre-activation for ``architecture="conv"``, the encoder mirrored: a linear map
    (``input``) to the smallest feature map, an ``UpBlock`` per block (reversed), and a last 3x3
    conv to one channel (``output``).

    Args:
        config: The model's config.
        rngs: Draws the parameters (the ``params`` stream).
        dtype: The dense layers' parameter type.
    """

    def __init__(self, config: VAEConfig, rngs: nnx.Rngs, dtype=jnp.float32):
        self.config = config
        channels = tuple(reversed(config.conv_channels))
        small = config.image_side // 2 ** len(channels)
        self.input = _dense(config.latent_dim, small * small * channels[0], config, rngs, dtype)
        # block 0 starts from the linear map's channels[0]
        self.blocks = nnx.List([UpBlock(c_in, c_out, config, rngs)
                                for c_in, c_out in zip(channels[:1] + channels, channels)])
        self.output = _conv(channels[-1], 1, config, rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        cfg = self.config
        act = activation_fn(cfg.activation, cfg.negative_slope)
        small = cfg.image_side // 2 ** len(cfg.conv_channels)
        h = act(self.input(z)).reshape(z.shape[0], small, small, -1)
        for block in self.blocks:
            h = block(h, act, z.dtype)
        return self.output(h).astype(z.dtype).reshape(z.shape[0], -1)


class VAE(nnx.Module):
    """Encoder, reparameterised sample z = mu + sigma * eps, decoder.

    Calling it, ``model(x, eps)``, gives ``(decode(z), mu, log_sigma)`` for z = mu + exp(log_sigma) * eps.

    Args:
        config: The model's config.
        rngs: An ``nnx.Rngs`` whose ``params`` stream gives every layer its keys, or a PRNG key: the key
            of that stream (``init_params`` and ``fit`` pass one, so a seed gives the same weights).
        dtype: The dense layers' parameter type.
    """

    def __init__(self, config: VAEConfig, *, rngs: nnx.Rngs | jax.Array, dtype=jnp.float32):
        if not isinstance(rngs, nnx.Rngs):
            rngs = nnx.Rngs(params=jnp.asarray(rngs))
        conv = config.architecture == "conv"
        self.config = config
        self.encoder = (ConvEncoder if conv else Encoder)(config, rngs, dtype)
        self.decoder = (ConvDecoder if conv else Decoder)(config, rngs, dtype)

    def __call__(self, x: jax.Array, eps: jax.Array):
        """``(decode(z), mu, log_sigma)`` for z = mu + exp(log_sigma) * eps."""
        mu, log_sigma = self.encoder(x)
        z = mu + jnp.exp(log_sigma) * eps
        return self.decode(z), mu, log_sigma

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(mu, log_sigma) of q(z | x).

        Args:
            x: The inputs ``[B, input_dim]``.

        Returns:
            ``(mu, log_sigma)``, each ``[B, latent_dim]``.
        """
        return self.encoder(x)

    def decode(self, z: jax.Array) -> jax.Array:
        """Pixel means (Gaussian; in [0, 1] with the sigmoid output) or probabilities (Bernoulli).

        Args:
            z: Latent codes ``[B, latent_dim]``.

        Returns:
            ``[B, input_dim]``.
        """
        return likelihood_of(self.config.likelihood).mean(self.decoder_output(z))

    def decoder_output(self, z: jax.Array) -> jax.Array:
        """The parameter of p(x | z) that the likelihood takes: the mean for the Gaussian, the logits
        for the Bernoulli (so the loss never takes the log of a sigmoid).

        Args:
            z: Latent codes ``[B, latent_dim]``.

        Returns:
            ``[B, input_dim]``.
        """
        return output_parameter(self.config, self.decoder(z))


def output_parameter(config: VAEConfig, out: jax.Array) -> jax.Array:
    """The likelihood's parameter from the decoder's last layer ``out``: the logits as they are (Bernoulli),
    else ``config.output_activation`` of them (the Gaussian's mean).

    Args:
        config: Gives the likelihood and the output activation.
        out: The decoder's last layer's output.

    Returns:
        The parameter, shaped as ``out``.
    """
    return out if likelihood_of(config.likelihood).outputs_logits else activation_fn(config.output_activation)(out)


def params_of(model: VAE) -> dict:
    """The model's parameters as a plain nested dict (the layout in this module's docstring).

    Args:
        model: The module.

    Returns:
        The parameters.
    """
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


@functools.lru_cache(maxsize=64)
def _graphdef(config: VAEConfig):
    return nnx.graphdef(nnx.eval_shape(lambda: VAE(config, rngs=jax.random.PRNGKey(0))))


def bind(params: dict, config: VAEConfig) -> VAE:
    """The VAE module of ``config`` holding ``params`` (cheap: inside jit it costs only trace time).

    Args:
        params: Parameters in this module's layout.
        config: The model's config.

    Returns:
        The ``VAE`` module.
    """
    return nnx.merge(_graphdef(config), params)


def init_params(key: jax.Array, config: VAEConfig, dtype=jnp.float32) -> dict:
    """Fresh parameters with the config's initialisation (``VAEConfig.init``), from ``key``.

    Built eagerly, not under one jit: the eager per-layer draws reuse their compiled programs across
    configs of the same layer shapes, where a jitted init compiles again for each (measured: 3x slower
    for four configs that differ only in the activation).

    Args:
        key: Draws the parameters.
        config: The model's config.
        dtype: The dense layers' parameter type.

    Returns:
        The parameters as a plain nested dict.
    """
    return params_of(VAE(config, rngs=key, dtype=dtype))


def param_shapes(config: VAEConfig) -> dict:
    """The float32 params pytree of ``config`` as ``jax.ShapeDtypeStruct`` leaves: nothing is allocated.

    Args:
        config: The model's config.

    Returns:
        The pytree of shapes.
    """
    return jax.eval_shape(lambda: init_params(jax.random.PRNGKey(0), config))


def encode(params: dict, x: jax.Array, config: VAEConfig) -> tuple[jax.Array, jax.Array]:
    """(mu, log_sigma) of q(z | x).

    Args:
        params: The parameters.
        x: The inputs ``[B, input_dim]``.
        config: The model's config.

    Returns:
        ``(mu, log_sigma)``, each ``[B, latent_dim]``.
    """
    return bind(params, config).encode(x)


def decode(params: dict, z: jax.Array, config: VAEConfig) -> jax.Array:
    """The decoder's output for latent codes z (pixel means in [0, 1] with the sigmoid output;
    pixel probabilities with a Bernoulli likelihood).

    Args:
        params: The parameters.
        z: Latent codes ``[B, latent_dim]``.
        config: The model's config.

    Returns:
        ``[B, input_dim]``.
    """
    return bind(params, config).decode(z)


def decoder_output(params: dict, z: jax.Array, config: VAEConfig) -> jax.Array:
    """The parameter of p(x | z) that the likelihood takes (``VAE.decoder_output``).

    Args:
        params: The parameters.
        z: Latent codes ``[B, latent_dim]``.
        config: The model's config.

    Returns:
        ``[B, input_dim]``: the Gaussian's mean or the Bernoulli's logits.
    """
    return bind(params, config).decoder_output(z)
