"""The conditional VAE (Sohn, Lee and Yan 2015) as one more implementation of the model protocol.

A condition c, the one-hot code of an integer label or any vector given with each example, joins
the encoder's input, q(z | x, c), and the decoder's latent, p(x | z, c); the prior stays N(0, I).
The modules are the blog's MLP encoder and decoder (``jaxvae.models``), one built for
``input_dim + num_classes`` inputs and one for ``latent_dim + num_classes`` latents, so the params
keep the blog's layout and map onto torchref's modules as the VAE's do. Batches are ``(x, y)`` or
``{"x": x, "y": y}``::

    cvae = ConditionalVAEModel.from_config(VAEConfig(input_dim=64, hidden=(128,)), num_classes=10)
    result = jaxvae.fit((x, y), (vx, vy), model=cvae, train_config=TrainConfig())
    images = cvae.sample(result.params, key, jnp.arange(10))   # one image per class
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvae.config import VAEConfig
from jaxvae.errors import InputError
from jaxvae.likelihoods import likelihood_of
from jaxvae.losses import elbo_loss
from jaxvae.model import inputs, labels
from jaxvae.models import Decoder, Encoder, output_parameter
from jaxvae.vae import VAEModel


def _labels_name(name: str, batch) -> str:
    """How a message names the labels of the batch called ``name`` (as ``checks.check_data`` names leaves)."""
    return f"{name}['y']" if isinstance(batch, dict) else f"{name}[1]"


class ConditionalVAE(nnx.Module):
    """The blog's encoder on [x, c] and decoder on [z, c]; ``config`` describes the unconditioned VAE.

    Args:
        config: The unconditioned VAE's config.
        num_classes: The condition's width.
        rngs: Draws the parameters.
        dtype: The parameters' float type.
    """

    def __init__(self, config: VAEConfig, num_classes: int, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.config = config
        self.encoder = Encoder(config.replace(input_dim=config.input_dim + num_classes), rngs, dtype)
        self.decoder = Decoder(config.replace(latent_dim=config.latent_dim + num_classes), rngs, dtype)

    def encode(self, x: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(mu, log_sigma) of q(z | x, c).

        Args:
            x: The inputs ``[B, input_dim]``.
            c: The condition ``[B, num_classes]``.

        Returns:
            ``(mu, log_sigma)``, each ``[B, latent_dim]``.
        """
        return self.encoder(jnp.concatenate([x, c], axis=-1))

    def decoder_output(self, z: jax.Array, c: jax.Array) -> jax.Array:
        """The parameter of p(x | z, c) (``models.output_parameter``).

        Args:
            z: Latent codes ``[B, latent_dim]``.
            c: The condition ``[B, num_classes]``.

        Returns:
            ``[B, input_dim]``: the Gaussian's mean or the Bernoulli's logits.
        """
        return output_parameter(self.config, self.decoder(jnp.concatenate([z, c], axis=-1)))


class Conditioned:
    """The module with its condition fixed: a decoder of z alone, as ``losses.elbo_loss`` reads one.

    Args:
        module: The conditional module.
        c: The condition ``[B, num_classes]``.
    """

    def __init__(self, module: ConditionalVAE, c: jax.Array):
        self.module, self.c = module, c

    def decoder_output(self, z: jax.Array) -> jax.Array:
        """The module's decoder output for z under the fixed condition.

        Args:
            z: Latent codes ``[B, latent_dim]``.

        Returns:
            ``[B, input_dim]``.
        """
        return self.module.decoder_output(z, self.c)


@dataclass(frozen=True)
class ConditionalModules:
    """Builds the ``ConditionalVAE`` of a ``VAEConfig`` and a condition width.

    Args:
        config: The unconditioned VAE's config.
        num_classes: The condition's width.
    """

    config: VAEConfig
    num_classes: int

    def __call__(self, rngs: nnx.Rngs, dtype) -> ConditionalVAE:
        return ConditionalVAE(self.config, self.num_classes, rngs=rngs, dtype=dtype)


@dataclass(frozen=True)
class ConditionalVAEModel(VAEModel):
    """A conditional VAE trained with the ELBO (its KL weight makes a conditional beta-VAE). The labels
    are integers in [0, num_classes), one-hot coded, or float vectors of ``num_classes`` entries.

    Build one with ``from_config``; the fields are ``VAEModel``'s.
    """

    @classmethod
    def for_dataset(cls, config: VAEConfig, dataset) -> "ConditionalVAEModel":
        """The model ``jaxvae train --model cvae`` builds: conditioned on the dataset's labels, one class per label value.

        Args:
            config: The architecture and likelihood.
            dataset: The training data (a ``jaxvae.data.Dataset``).

        Returns:
            The model.
        """
        return cls.from_config(config, int(np.max(dataset.train_y)) + 1)

    @classmethod
    def from_config(cls, config: VAEConfig, num_classes: int) -> "ConditionalVAEModel":
        """The conditional VAE of the blog's MLP that ``config`` describes, for ``num_classes`` classes.

        Args:
            config: The unconditioned VAE's config; ``architecture="mlp"``, ``objective="elbo"``.
            num_classes: The condition's width, a positive integer.

        Returns:
            The ``ConditionalVAEModel``.

        Raises:
            InputError: ``num_classes`` is not a positive integer, or the config names the conv
                architecture or the IWAE bound.
        """
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise InputError(f"num_classes must be a positive integer, got {num_classes!r}")
        if config.architecture != "mlp":
            raise InputError(f"architecture={config.architecture!r}: the conditional VAE is built on the MLP "
                             "(architecture='mlp')")
        if config.objective != "elbo":
            raise InputError(f"objective={config.objective!r}: the conditional VAE trains the ELBO "
                             "(objective='elbo')")
        return cls(ConditionalModules(config, int(num_classes)), config.latent_dim, likelihood_of(config.likelihood),
                   None, config.input_dim)

    @classmethod
    def from_modules(cls, *args, **kwargs):
        """Not for this class: its modules are the blog's, widened by the condition (``from_config``).

        Raises:
            InputError: Always.
        """
        raise InputError("ConditionalVAEModel is built from a VAEConfig: ConditionalVAEModel.from_config(config, "
                         "num_classes)")

    @property
    def config(self) -> VAEConfig:
        """The unconditioned VAE's config (its rules for the hyperparameters hold here too)."""
        return self.build.config

    @property
    def num_classes(self) -> int:
        """The condition's width: the number of classes of integer labels."""
        return self.build.num_classes

    def condition(self, y, dtype=jnp.float32) -> jax.Array:
        """c for labels ``y``: the one-hot codes of integer labels ``[B]``, or the vectors ``[B, num_classes]``.

        Args:
            y: Integer labels ``[B]`` or condition vectors ``[B, num_classes]``.
            dtype: c's float type.

        Returns:
            c, ``[B, num_classes]``.
        """
        y = jnp.asarray(y)
        if y.ndim == 1:
            return jax.nn.one_hot(y.astype(jnp.int32), self.num_classes, dtype=dtype)
        return y.astype(dtype)

    def loss_with_noise(self, params, state, batch, eps, hyper):
        """The ELBO's loss on ``batch`` with the noise ``eps`` given, conditioned on the batch's labels.

        Args:
            params: The parameters.
            state: Passed through.
            batch: ``(x, y)`` or ``{"x": x, "y": y}``.
            eps: The noise ``[B, latent_dim]``.
            hyper: A ``jaxvae.hyper.Hyper``.

        Returns:
            ``(loss, metrics, state)``; the metrics are ``recon`` and ``kl``.
        """
        module, x = self.module(params), inputs(batch)
        c = self.condition(labels(batch), x.dtype)
        loss, metrics = elbo_loss(Conditioned(module, c), self.likelihood, x, module.encode(x, c), eps, hyper)
        return loss, metrics, state

    def encode(self, params, x: jax.Array, y) -> tuple[jax.Array, jax.Array]:
        """(mu, log_sigma) of q(z | x, y).

        Args:
            params: The parameters.
            x: The inputs ``[B, input_dim]``.
            y: Labels ``[B]`` or condition vectors ``[B, num_classes]``.

        Returns:
            ``(mu, log_sigma)``, each ``[B, latent_dim]``.
        """
        return self.module(params).encode(x, self.condition(y, x.dtype))

    def decode(self, params, z: jax.Array, y) -> jax.Array:
        """The pixel values for latent codes z and labels y (the Gaussian's mean, or the Bernoulli's
        probabilities).

        Args:
            params: The parameters.
            z: Latent codes ``[B, latent_dim]``.
            y: Labels ``[B]`` or condition vectors ``[B, num_classes]``.

        Returns:
            ``[B, input_dim]``.
        """
        return self.likelihood.mean(self.module(params).decoder_output(z, self.condition(y, z.dtype)))

    def sample(self, params, key: jax.Array, y) -> jax.Array:
        """Images generated for labels ``y``: one per row of ``y``, z drawn from the prior N(0, I).

        Args:
            params: The parameters.
            key: Draws z.
            y: Labels ``[B]`` or condition vectors ``[B, num_classes]``.

        Returns:
            ``[B, input_dim]``.
        """
        y = jnp.asarray(y)
        dtype = jax.tree.leaves(params)[0].dtype
        return self.decode(params, jax.random.normal(key, (y.shape[0], self.latent_dim), dtype), y)

    def log_importance_weights(self, params, x, eps, hyper):
        """Not available: the importance-sampled estimate needs each image's label.

        Raises:
            InputError: Always.
        """
        raise InputError("the conditional VAE has no importance-sampled estimate yet: it needs each image's label")

    def check_shapes(self, name: str, batch) -> None:
        """``VAEModel``'s checks of x, then the labels: present, ``[B]`` or ``[B, num_classes]``.

        Args:
            name: The data's name, for the message.
            batch: ``(x, y)`` or ``{"x": x, "y": y}``.

        Raises:
            InputError: The batch has no labels, or their shape does not suit the model.
        """
        super().check_shapes(name, batch)
        y = labels(batch)
        if y is None:
            raise InputError(f"{name} has no labels: a conditional VAE trains on batches (x, y) or {{'x': x, 'y': y}}")
        where, shape = _labels_name(name, batch), np.shape(y)
        if len(shape) == 2 and shape[1] != self.num_classes:
            raise InputError(f"{where} has {shape[1]} entries per row but the model's condition has "
                             f"num_classes={self.num_classes}")
        if len(shape) not in (1, 2):
            raise InputError(f"{where} must be labels [samples] or condition vectors [samples, {self.num_classes}], "
                             f"got shape {shape}")

    def check_values(self, name: str, batch) -> None:
        """``VAEModel``'s checks of x, then the labels: integers in [0, num_classes), or float vectors.

        Args:
            name: The data's name, for the message.
            batch: ``(x, y)`` or ``{"x": x, "y": y}``.

        Raises:
            InputError: A label out of range or not an integer (the first five named), or condition vectors
                that are not floats.
        """
        super().check_values(name, batch)
        y = np.asarray(labels(batch))
        if y.ndim == 2:
            if not np.issubdtype(y.dtype, np.floating):
                raise InputError(f"{_labels_name(name, batch)} holds {y.dtype} vectors; condition vectors are floats")
            return
        bad = np.flatnonzero((y < 0) | (y >= self.num_classes) | (y != np.floor(y)))
        if bad.size:
            raise InputError(f"{_labels_name(name, batch)} has labels that are not integers in [0, {self.num_classes}): "
                             f"{', '.join(f'{y[i]:g} (row {i})' for i in bad[:5])}{' ...' if bad.size > 5 else ''}")

    def figures(self, params, state, x, y, image_shape, key: jax.Array) -> dict:
        """Generated images per class, one row per class (``jaxvae.plots.class_samples``).

        Args:
            params: The parameters.
            state: The model's own state.
            x: The test images (unused).
            y: Their labels (unused).
            image_shape: ``(height, width)`` of one image.
            key: Draws z.

        Returns:
            ``{"class_samples.png": figure}``.
        """
        from jaxvae.plots import class_samples  # deferred: matplotlib, for the commands that draw only

        return {"class_samples.png": class_samples(params, self, image_shape, key)}

    def batch_of(self, x, y):
        """A dataset's images with their labels, the condition: ``(x, y)``.

        Args:
            x: The images.
            y: Their integer labels.

        Returns:
            ``(x, y)``.
        """
        return (x, y)

    def describe(self) -> dict:
        """``VAEModel``'s record of the config, with ``num_classes``.

        Returns:
            The JSON-ready record.
        """
        return {**super().describe(), "num_classes": self.num_classes}

    @classmethod
    def from_record(cls, record: dict) -> "ConditionalVAEModel":
        """The model ``describe`` recorded.

        Args:
            record: The record, with ``config`` and ``num_classes``.

        Returns:
            The ``ConditionalVAEModel``.

        Raises:
            InputError: A config field or ``num_classes`` is out of range.
        """
        return cls.from_config(VAEConfig(**record["config"]), record["num_classes"])
