"""The VAE family as one implementation of the model protocol (``jaxvae.model.Model``).

``VAEModel`` is an encoder giving q(z | x) = N(mu, diag(sigma^2)), a decoder giving the parameter
of p(x | z) (``jaxvae.likelihoods``), and the bound it trains: the ELBO (with its KL weight: the
blog's VAE, a beta-VAE) or the IWAE bound with k samples. The modules are any Flax NNX modules:

    VAEModel.from_config(VAEConfig(...))                       # the blog's MLP, or the conv model
    VAEModel.from_modules(MyEncoder, MyDecoder, latent_dim=16)  # your own: MyEncoder(rngs=...)(x) -> (mu, log_sigma)

The parameters are the plain dict ``{"encoder": ..., "decoder": ...}``; training merges them into
the module while jit traces, so the hot loop holds no Python object.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvae.config import VAE_HYPERPARAMETERS, TrainConfig, VAEConfig, config_to_dict, configs_from_dicts
from jaxvae.errors import InputError, InputTypeError
from jaxvae.hyper import KL_WEIGHT, Hyperparameter
from jaxvae.likelihoods import Gaussian, likelihood_of
from jaxvae.losses import elbo_loss, importance_weights, iwae_loss_of, normal_noise
from jaxvae.model import Model, class_path, import_path, inputs, model_from_record
from jaxvae.models import VAE, params_of


@dataclass(frozen=True)
class ConfigModules:
    """Builds the modules a ``VAEConfig`` describes: ``modules(config, rngs=, dtype=)``, the blog's
    ``jaxvae.models.VAE`` by default (the VQ-VAE's ``VQModules``, say).

    Args:
        config: The model's config.
        modules: The NNX module class built from it.
    """

    config: VAEConfig
    modules: type = VAE

    def __call__(self, rngs: nnx.Rngs, dtype) -> nnx.Module:
        return self.modules(self.config, rngs=rngs, dtype=dtype)


class EncoderDecoder(nnx.Module):
    """A user's encoder and decoder as one module: ``encode(x) -> (mu, log_sigma)``, ``decoder_output(z)``.

    Args:
        encoder: Maps x to ``(mu, log_sigma)``.
        decoder: Maps z to the likelihood's parameter.
    """

    def __init__(self, encoder: nnx.Module, decoder: nnx.Module):
        self.encoder = encoder
        self.decoder = decoder

    def encode(self, x):
        """(mu, log_sigma) of q(z | x): the encoder's output.

        Args:
            x: The inputs ``[B, ...]``.

        Returns:
            ``(mu, log_sigma)``, each ``[B, latent_dim]``.
        """
        return self.encoder(x)

    def decoder_output(self, z):
        """The likelihood's parameter for z: the decoder's output.

        Args:
            z: Latent codes ``[B, latent_dim]``.

        Returns:
            The decoder's output.
        """
        return self.decoder(z)


@dataclass(frozen=True)
class ModulePair:
    """Builds ``EncoderDecoder(encoder(rngs=rngs), decoder(rngs=rngs))``: two NNX module classes, or
    any callables taking ``rngs`` (compared by identity: reuse them so equal models share compiled code).

    Args:
        encoder: Called as ``encoder(rngs=rngs)``.
        decoder: Called as ``decoder(rngs=rngs)``.
    """

    encoder: Callable[..., nnx.Module]
    decoder: Callable[..., nnx.Module]

    def __call__(self, rngs: nnx.Rngs, dtype) -> EncoderDecoder:
        module = EncoderDecoder(self.encoder(rngs=rngs), self.decoder(rngs=rngs))
        if jnp.dtype(dtype) != jnp.float32:
            params = nnx.state(module, nnx.Param)
            nnx.update(module, jax.tree.map(lambda p: p.astype(dtype), params))
        return module


def check_features(name: str, x, input_dim: int | None) -> None:
    """InputError naming ``name`` unless ``x`` is ``[N, input_dim]``; nothing when ``input_dim`` is None.

    Args:
        name: The data's name, for the message.
        x: The inputs.
        input_dim: The features the model expects, or None for no check.

    Raises:
        InputError: ``x`` is not 2-D, or has another number of features.
    """
    if input_dim is None:
        return
    if x.ndim != 2:
        raise InputError(f"{name} must be a 2-D array (samples, features), got shape {x.shape}")
    if x.shape[1] != input_dim:
        raise InputError(f"{name} has {x.shape[1]} features but the model expects input_dim={input_dim}")


@functools.lru_cache(maxsize=64)
def _graphdef(build: Callable, dtype_name: str):
    return nnx.graphdef(nnx.eval_shape(lambda: build(nnx.Rngs(params=jax.random.PRNGKey(0)), jnp.dtype(dtype_name))))


@dataclass(frozen=True)
class VAEModel(Model):
    """A Gaussian-encoder VAE: the module, z's size, p(x | z)'s family and the bound.

    Build one with ``from_config`` or ``from_modules``.

    Args:
        build: ``build(rngs, dtype)`` makes the module (``ConfigModules`` or ``ModulePair``).
        latent_dim: z's size.
        likelihood: p(x | z)'s family (``jaxvae.likelihoods``).
        iwae_k: The IWAE bound's samples; None for the ELBO.
        input_dim: x's features where known (batches are checked); None otherwise.
    """

    build: Callable
    latent_dim: int
    likelihood: Any = Gaussian()
    iwae_k: int | None = None
    input_dim: int | None = None

    @classmethod
    def for_dataset(cls, config: VAEConfig, dataset) -> "VAEModel":
        """The model ``jaxvae train --model vae`` builds: ``from_config(config)``.

        Args:
            config: The architecture and likelihood.
            dataset: The training data (a ``jaxvae.data.Dataset``).

        Returns:
            The model.
        """
        return cls.from_config(config)

    @classmethod
    def from_config(cls, config: VAEConfig) -> "VAEModel":
        """The model a ``VAEConfig`` describes (the blog's by default).

        Args:
            config: The model's config.

        Returns:
            The ``VAEModel``.
        """
        return cls(ConfigModules(config), config.latent_dim, likelihood_of(config.likelihood),
                   config.iwae_k if config.objective == "iwae" else None, config.input_dim)

    @classmethod
    def from_modules(cls, encoder, decoder, *, latent_dim: int, likelihood: str = "gaussian",
                     iwae_k: int | None = None, input_dim: int | None = None) -> "VAEModel":
        """Your own NNX encoder and decoder.

        Args:
            encoder: ``encoder(rngs=rngs)`` builds a module mapping x ``[B, ...]`` to ``(mu, log_sigma)``,
                each ``[B, latent_dim]``.
            decoder: ``decoder(rngs=rngs)`` builds a module mapping z to the likelihood's parameter,
                flattened to ``[B, features]`` (the Gaussian's mean, or Bernoulli logits).
            latent_dim: z's size.
            likelihood: ``"gaussian"`` or ``"bernoulli"``.
            iwae_k: The IWAE bound's samples; None for the ELBO.
            input_dim: x's features, to check batches against; None for no check.

        Returns:
            The ``VAEModel``.

        Raises:
            InputError: ``likelihood`` is not a known name.
        """
        return cls(ModulePair(encoder, decoder), latent_dim, likelihood_of(likelihood), iwae_k, input_dim)

    @property
    def config(self) -> VAEConfig | None:
        """The ``VAEConfig`` this model was made from, or None for your own modules."""
        return self.build.config if isinstance(self.build, ConfigModules) else None

    #: Every hyperparameter a model of this family may read: the command line's value flags.
    family_hyperparameters: ClassVar[tuple[Hyperparameter, ...]] = VAE_HYPERPARAMETERS

    @property
    def hyperparameters(self) -> tuple[Hyperparameter, ...]:
        """What the loss reads besides lr: the likelihood's (the Gaussian's sigma), and the KL weight for the ELBO."""
        return (*self.likelihood.hyperparameters, *(() if self.iwae_k else (KL_WEIGHT,)))

    def figures(self, params, state, x, y, image_shape, key: jax.Array) -> dict:
        """The blog's figures: the latent scatter, the manifold, reconstructions and prior samples
        (``jaxvae.plots.vae_figures``).

        Args:
            params: The parameters.
            state: The model's own state.
            x: The test images.
            y: Their labels (the scatter's colours).
            image_shape: ``(height, width)`` of one image.
            key: Draws the prior samples.

        Returns:
            The figures by file name.
        """
        from jaxvae.plots import vae_figures  # deferred: matplotlib, for the commands that draw only

        return vae_figures(params, self, x, y, image_shape, key)

    def module(self, params, dtype=None):
        """The module holding ``params`` (cheap inside jit: trace time only).

        Args:
            params: ``{"encoder": ..., "decoder": ...}``.
            dtype: The parameters' float type; None reads it from ``params``.

        Returns:
            The NNX module.
        """
        dtype = dtype or jax.tree.leaves(params)[0].dtype
        return nnx.merge(_graphdef(self.build, jnp.dtype(dtype).name), params)

    def init(self, key: jax.Array, dtype=jnp.float32) -> tuple[dict, tuple]:
        """Fresh parameters from ``key``; the model has no other state.

        Args:
            key: Draws the parameters.
            dtype: Their float type.

        Returns:
            ``(params, ())``.
        """
        return params_of(self.build(nnx.Rngs(params=jnp.asarray(key)), dtype)), ()

    def noise(self, key: jax.Array, batch: int, dtype=jnp.float32) -> jax.Array:
        """eps ~ N(0, I) for one batch: ``[batch, latent]``, or ``[iwae_k, batch, latent]``.

        Args:
            key: Draws the noise.
            batch: Examples in the batch.
            dtype: The noise's float type.

        Returns:
            The noise.
        """
        return normal_noise(key, self.iwae_k, batch, self.latent_dim, dtype)

    def draw_noise(self, key: jax.Array, batch) -> jax.Array:
        """``noise`` for ``batch`` (``Model.draw_noise``).

        Args:
            key: Draws the noise.
            batch: The inputs, or a pytree holding them.

        Returns:
            The noise.
        """
        x = inputs(batch)
        return self.noise(key, x.shape[0], x.dtype)

    def loss(self, params, state, batch, key: jax.Array, hyper) -> tuple[jax.Array, dict, Any]:
        """The bound's loss on ``batch``, its noise drawn from ``key`` (``Model.loss``).

        Args:
            params: The parameters.
            state: Passed through (``()``).
            batch: The inputs, or a pytree holding them (``jaxvae.model.inputs``).
            key: Draws the reparameterisation noise.
            hyper: A ``jaxvae.hyper.Hyper``.

        Returns:
            ``(loss, metrics, state)``; the ELBO's metrics are ``recon`` and ``kl``.
        """
        return self.loss_with_noise(params, state, batch, self.draw_noise(key, batch), hyper)

    def loss_with_noise(self, params, state, batch, eps: jax.Array, hyper) -> tuple[jax.Array, dict, Any]:
        """``loss`` with the reparameterisation noise ``eps`` given (how the parity tests share it).

        Args:
            params: The parameters.
            state: Passed through.
            batch: The inputs, or a pytree holding them.
            eps: The noise, as ``noise`` draws it.
            hyper: A ``jaxvae.hyper.Hyper``.

        Returns:
            ``(loss, metrics, state)``.
        """
        module, x = self.module(params), inputs(batch)
        bound = iwae_loss_of if self.iwae_k else elbo_loss
        loss, metrics = bound(module, self.likelihood, x, module.encode(x), eps, hyper)
        return loss, metrics, state

    def encode(self, params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(mu, log_sigma) of q(z | x).

        Args:
            params: The parameters.
            x: The inputs.

        Returns:
            ``(mu, log_sigma)``, each ``[B, latent_dim]``.
        """
        return self.module(params).encode(x)

    def decode(self, params, z: jax.Array) -> jax.Array:
        """The pixel values for latent codes z: the Gaussian's mean, or the Bernoulli's probabilities.

        Args:
            params: The parameters.
            z: Latent codes ``[B, latent_dim]``.

        Returns:
            The pixel values ``[B, features]``.
        """
        return self.likelihood.mean(self.module(params).decoder_output(z))

    def log_importance_weights(self, params, x: jax.Array, eps: jax.Array, hyper) -> tuple[jax.Array, jax.Array]:
        """``(log_w, log_px_given_z)``, both ``[k, B]``, for the noise ``eps [k, B, latent]``.

        Args:
            params: The parameters.
            x: The inputs ``[B, features]``.
            eps: The noise ``[k, B, latent]``.
            hyper: A ``jaxvae.hyper.Hyper`` (the Gaussian's sigma).

        Returns:
            ``(log_w, log_px_given_z)``.
        """
        module = self.module(params)
        return importance_weights(module, self.likelihood, x, module.encode(x), eps, hyper)

    def check_shapes(self, name: str, batch) -> None:
        """InputError naming ``name`` unless the inputs are ``[N, input_dim]`` (when ``input_dim`` is known).

        Args:
            name: The data's name, for the message.
            batch: The data.

        Raises:
            InputError: The inputs are not 2-D, or have another number of features.
        """
        check_features(name, inputs(batch), self.input_dim)

    def check_values(self, name: str, batch) -> None:
        """InputError naming ``name`` when the likelihood cannot take the inputs' values.

        Args:
            name: The data's name, for the message.
            batch: The data.

        Raises:
            InputError: Values outside [0, 1] for a Bernoulli likelihood.
        """
        self.likelihood.check(name, inputs(batch))

    def describe(self) -> dict:
        """Your own modules' record: their classes, the latent size, the likelihood and the bound. (A
        ``VAEConfig``'s model is recorded as its config.)

        Returns:
            The JSON-ready record.

        Raises:
            InputError: The config's ``init`` is a pair of functions, which JSON cannot hold.
        """
        if self.config is not None:
            return {**super().describe(), "config": config_to_dict(self.config)}
        return {**super().describe(), "encoder": class_path(self.build.encoder),
                "decoder": class_path(self.build.decoder), "latent_dim": self.latent_dim,
                "likelihood": self.likelihood.name, "iwae_k": self.iwae_k, "input_dim": self.input_dim}

    @classmethod
    def from_record(cls, record: dict) -> "VAEModel":
        """The model ``describe`` recorded: from its config, or by importing its modules' classes.

        Args:
            record: The record.

        Returns:
            The ``VAEModel``.

        Raises:
            InputError: A module class cannot be imported, or a config field is out of range.
        """
        if "config" in record:
            return cls.from_config(VAEConfig(**record["config"]))
        return cls.from_modules(import_path(record["encoder"]), import_path(record["decoder"]),
                                latent_dim=record["latent_dim"], likelihood=record["likelihood"],
                                iwae_k=record["iwae_k"], input_dim=record["input_dim"])


def as_model(model: Model | VAEConfig) -> Model:
    """``model`` itself, or the ``VAEModel`` of a ``VAEConfig``.

    Args:
        model: A ``Model`` or a ``VAEConfig``.

    Returns:
        The ``Model``.

    Raises:
        InputTypeError: ``model`` is neither.
    """
    if isinstance(model, Model):
        return model
    if isinstance(model, VAEConfig):
        return VAEModel.from_config(model)
    raise InputTypeError(f"model must be a jaxvae.model.Model or a VAEConfig, got {type(model).__name__}")


def model_record(model: Model | VAEConfig) -> dict:
    """How run directories and checkpoints record a model: a ``VAEConfig``'s fields (those of a
    ``VAEModel`` made from one, too), or any other model's ``describe()``: its class path and what
    rebuilds it.

    Args:
        model: The model, or a ``VAEConfig``.

    Returns:
        The JSON-ready record.

    Raises:
        InputError: A ``VAEConfig`` whose ``init`` is a pair of functions.
    """
    if type(model) is VAEModel and model.config is not None:
        model = model.config
    return config_to_dict(model) if isinstance(model, VAEConfig) else model.describe()


def read_model_record(record: dict, training: dict) -> tuple[Model | VAEConfig, TrainConfig]:
    """The model and ``TrainConfig`` of a ``model_record`` and a training config's dict: a
    ``VAEConfig`` (files of older versions upgraded by ``configs_from_dicts``), or the model a
    ``describe()`` record names, built again by importing its class.

    Args:
        record: The model's record.
        training: The ``TrainConfig``'s dict.

    Returns:
        ``(model or VAEConfig, train_config)``.

    Raises:
        InputError: A config out of range, or a class that cannot be imported or built again.
        TypeError: A dict holds a key that is no field of its config.
    """
    if not (isinstance(record, dict) and "class" in record):
        return configs_from_dicts(record, training)
    if not isinstance(training, dict):
        raise InputError("the training config must be a JSON object")
    return model_from_record(record), TrainConfig(**training)
