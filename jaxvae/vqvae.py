"""The VQ-VAE (van den Oord, Vinyals and Kavukcuoglu 2017) as one more implementation of the model protocol.

The encoder maps x to an embedding z; each of z's D-dimensional vectors (z itself ``[B, D]``, or every
position of ``[B, ..., D]``) is replaced by its nearest code in a codebook of K codes, and the decoder
reconstructs x from the codes. The gradient passes the quantisation straight through (the decoder's
gradient with respect to the codes is the encoder's with respect to z). The loss is

    ||x - x_hat||^2  +  commitment * mean (z - sg(e))^2  +  quantization * mean (sg(z) - e)^2

the first term summed over each example's features and averaged over the batch, the two others
averaged over every entry of z (sg: stop-gradient; e: the codes chosen). With ``ema=True`` the codebook
is not trained by gradient: it is the model's state, moved after every training step to the running
mean of the vectors assigned to each code (the paper's appendix), and the loss has no codebook term.
These are the definitions of pythae's ``VQVAE`` (0.1.2), against which the tests check this model::

    model = VQVAEModel.from_config(VAEConfig(input_dim=64, hidden=(128,), latent_dim=8), num_codes=32)
    params, state = model.init(jax.random.PRNGKey(0))
    loss, metrics, state = model.loss(params, state, x, key, Hyper(lr=1e-3, commitment=0.25, quantization=1.0))
    x_hat = model.reconstruct(params, state, x)

The parameters are ``{"encoder": ..., "decoder": ..., "codebook": [K, D]}`` (no ``"codebook"`` with EMA,
whose state is ``{"codebook", "cluster_size", "ema_embed"}``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvae.config import COMMITMENT, QUANTIZATION, VQVAE_HYPERPARAMETERS, VAEConfig, check_positive_int, config_to_dict
from jaxvae.errors import InputError
from jaxvae.hyper import Hyperparameter
from jaxvae.likelihoods import gauss_similarity_loss
from jaxvae.model import Model, class_path, import_path, inputs
from jaxvae.models import Decoder, _dense, _dense_stack, _run_stack, output_parameter, params_of
from jaxvae.vae import ConfigModules, ModulePair, _graphdef, check_features

#: The additive smoothing of the EMA's code counts, which keeps an unused code's division finite.
EMA_EPSILON = 1e-5


def nearest_codes(z: jax.Array, codebook: jax.Array) -> jax.Array:
    """The index of the code nearest (in Euclidean distance) to each D-vector of ``z``; ties go to the
    lowest index. No gradient flows through the choice.

    Args:
        z: Embeddings ``[..., D]``.
        codebook: The codes ``[K, D]``.

    Returns:
        Integer indices, ``z``'s shape without its last axis.
    """
    z, codebook = jax.lax.stop_gradient(z), jax.lax.stop_gradient(codebook)
    flat = z.reshape(-1, z.shape[-1])
    distances = (jnp.sum(flat**2, axis=-1, keepdims=True) + jnp.sum(codebook**2, axis=-1)
                 - 2.0 * flat @ codebook.T)
    return jnp.argmin(distances, axis=-1).reshape(z.shape[:-1])


def straight_through(z: jax.Array, quantized: jax.Array) -> jax.Array:
    """``quantized`` in value, ``z`` in gradient: what the decoder reads, so that the encoder learns
    from the reconstruction as if there were no quantisation.

    Args:
        z: The encoder's embeddings.
        quantized: Their codes, shaped as ``z``.

    Returns:
        z + sg(quantized - z).
    """
    return z + jax.lax.stop_gradient(quantized - z)


def vq_terms(z: jax.Array, quantized: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The commitment and codebook losses before their weights: the same mean squared distance between
    z and its codes, one differentiated with respect to z only, the other with respect to the codes only.

    Args:
        z: The encoder's embeddings.
        quantized: Their codes, shaped as ``z``.

    Returns:
        ``(commitment, codebook)``: mean (z - sg(e))^2 and mean (sg(z) - e)^2 over every entry.
    """
    commitment = jnp.mean((z - jax.lax.stop_gradient(quantized)) ** 2)
    codebook = jnp.mean((jax.lax.stop_gradient(z) - quantized) ** 2)
    return commitment, codebook


def squared_error(x: jax.Array, x_hat: jax.Array) -> jax.Array:
    """Per-example sum of squared errors over the features (inputs flattened from axis 1).

    Args:
        x: The inputs ``[B, ...]``.
        x_hat: The reconstructions, with as many entries per example.

    Returns:
        ``[B]``.
    """
    return 2.0 * gauss_similarity_loss(x, x_hat, 1.0)  # sum / 2, times 2: exact


def perplexity(codes: jax.Array, num_codes: int, dtype=jnp.float32) -> jax.Array:
    """exp of the entropy of the codes' frequencies in ``codes``: 1 when one code takes every vector,
    ``num_codes`` when all are used equally often.

    Args:
        codes: Integer code indices, any shape.
        num_codes: K, the codebook's size.
        dtype: The result's float type.

    Returns:
        The perplexity, a scalar.
    """
    usage = jnp.mean(jax.nn.one_hot(codes.reshape(-1), num_codes, dtype=dtype), axis=0)
    return jnp.exp(jnp.sum(jax.scipy.special.entr(usage)))


def ema_update(state: dict, z: jax.Array, codes: jax.Array, decay) -> dict:
    """The EMA codebook after one batch: each code's count and vector sum decay towards the batch's,
    the counts are smoothed by ``EMA_EPSILON`` (their total kept) and each code becomes its sum over its
    count. The smoothed counts are what is kept, as pythae keeps them.

    Args:
        state: ``{"codebook": [K, D], "cluster_size": [K], "ema_embed": [K, D]}``.
        z: The encoder's embeddings ``[..., D]`` (no gradient flows into the state).
        codes: Their nearest codes, ``z``'s shape without its last axis.
        decay: The moving averages' decay, in [0, 1].

    Returns:
        The new state, of the same structure.
    """
    num_codes = state["cluster_size"].shape[0]
    flat = jax.lax.stop_gradient(z).reshape(-1, z.shape[-1])
    one_hot = jax.nn.one_hot(codes.reshape(-1), num_codes, dtype=flat.dtype)
    counts = state["cluster_size"] * decay + jnp.sum(one_hot, axis=0) * (1 - decay)
    ema_embed = state["ema_embed"] * decay + (one_hot.T @ flat) * (1 - decay)
    total = jnp.sum(counts)
    counts = (counts + EMA_EPSILON) / (total + num_codes * EMA_EPSILON) * total
    return {"codebook": ema_embed / counts[:, None], "cluster_size": counts, "ema_embed": ema_embed}


class CodeEncoder(nnx.Module):
    """x -> z: the blog's MLP trunk (``VAEConfig.hidden``) and one linear layer to ``latent_dim``, the
    code's dimension D.

    Args:
        config: The model's config.
        rngs: Draws the parameters.
        dtype: The parameters' float type.
    """

    def __init__(self, config: VAEConfig, rngs: nnx.Rngs, dtype=jnp.float32):
        self.config = config
        widths = (config.input_dim, *config.hidden)
        self.trunk = _dense_stack(widths, config, rngs, dtype)
        self.embed = _dense(widths[-1], config.latent_dim, config, rngs, dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.embed(_run_stack(self.trunk, self.config, x))


class VQModules(nnx.Module):
    """The ``CodeEncoder`` and the blog's decoder (``models.Decoder``, its output non-linearity applied).

    Args:
        config: The model's config.
        rngs: Draws the parameters (encoder, then decoder).
        dtype: The parameters' float type.
    """

    def __init__(self, config: VAEConfig, rngs: nnx.Rngs, dtype=jnp.float32):
        self.config = config
        self.encoder = CodeEncoder(config, rngs, dtype)
        self.decoder = Decoder(config, rngs, dtype)

    def encode(self, x: jax.Array) -> jax.Array:
        """z for x.

        Args:
            x: The inputs ``[B, input_dim]``.

        Returns:
            ``[B, latent_dim]``.
        """
        return self.encoder(x)

    def decoder_output(self, z: jax.Array) -> jax.Array:
        """The reconstruction of (quantised) z.

        Args:
            z: ``[B, latent_dim]``.

        Returns:
            ``[B, input_dim]``.
        """
        return output_parameter(self.config, self.decoder(z))


@dataclass(frozen=True)
class VQVAEModel(Model):
    """A VQ-VAE: an encoder to D-dimensional embeddings, a codebook of ``num_codes`` codes, a decoder.

    Build one with ``from_config`` (the blog's MLP) or ``from_modules`` (your own NNX modules). The
    loss's metrics are ``recon`` (mean per-example squared error), ``commitment`` and ``codebook`` (the
    two VQ terms, each times its weight; no ``codebook`` with EMA), ``vq_loss`` (their sum, pythae's
    ``vq_loss``) and ``perplexity`` (how many codes the batch uses, effectively).

    Args:
        build: ``build(rngs, dtype)`` makes the module, with ``encode(x) -> z [B, ..., D]`` and
            ``decoder_output(z) -> x_hat``.
        embedding_dim: D, each code's size.
        num_codes: K, the codebook's size.
        ema: True: the codebook is an exponential moving average of the embeddings assigned to each
            code, kept in the model's state; False: it is a parameter, trained by the codebook loss.
        decay: The EMA's decay (with ``ema``).
        input_dim: x's features where known (batches are checked); None otherwise.

    Raises:
        InputError: ``embedding_dim`` or ``num_codes`` is not a positive integer, or ``decay`` is not in [0, 1].
    """

    build: Callable
    embedding_dim: int
    num_codes: int = 512
    ema: bool = False
    decay: float = 0.99
    input_dim: int | None = None

    def __post_init__(self):
        check_positive_int("embedding_dim", self.embedding_dim)
        check_positive_int("num_codes", self.num_codes)
        if not isinstance(self.ema, bool):
            raise InputError(f"ema must be True or False, got {self.ema!r}")
        number = not isinstance(self.decay, bool) and isinstance(self.decay, (int, float))
        if not (number and 0.0 <= self.decay <= 1.0):
            raise InputError(f"decay must be a number in [0, 1], got {self.decay!r}")
        if self.input_dim is not None:
            check_positive_int("input_dim", self.input_dim)

    @classmethod
    def for_dataset(cls, config: VAEConfig, dataset) -> "VQVAEModel":
        """The model ``jaxvae train --model vqvae`` builds: 512 codes of ``config.latent_dim`` entries
        and the EMA codebook (on MNIST, 10 epochs at a 16-entry code, the EMA codebook used 333 codes
        and the trained one collapsed to 10: docs/numbers/family.json).

        Args:
            config: The architecture and likelihood.
            dataset: The training data (a ``jaxvae.data.Dataset``).

        Returns:
            The model.
        """
        return cls.from_config(config, ema=True)

    @classmethod
    def from_config(cls, config: VAEConfig, num_codes: int = 512, *, ema: bool = False,
                    decay: float = 0.99) -> "VQVAEModel":
        """The VQ-VAE of the blog's MLP: the encoder's trunk ``config.hidden`` and a linear layer to
        ``config.latent_dim`` (D), the decoder and output non-linearity as the VAE's.

        Args:
            config: The architecture; ``architecture="mlp"``, ``likelihood="gaussian"``, ``objective="elbo"``.
            num_codes: K, the codebook's size.
            ema: Whether the codebook is an EMA of the embeddings (else a parameter).
            decay: The EMA's decay.

        Returns:
            The ``VQVAEModel``.

        Raises:
            InputError: The config names the conv architecture, the Bernoulli likelihood or the IWAE
                bound; or a field is out of range.
        """
        if config.architecture != "mlp":
            raise InputError(f"architecture={config.architecture!r}: the VQ-VAE is built on the MLP "
                             "(architecture='mlp'); pass your own modules to VQVAEModel.from_modules")
        if config.likelihood != "gaussian":
            raise InputError(f"likelihood={config.likelihood!r}: the VQ-VAE's reconstruction term is the "
                             "squared error (likelihood='gaussian')")
        if config.objective != "elbo":
            raise InputError(f"objective={config.objective!r}: the VQ-VAE has no importance-weighted bound "
                             "(objective='elbo')")
        return cls(ConfigModules(config, VQModules), config.latent_dim, num_codes, ema, decay, config.input_dim)

    @classmethod
    def from_modules(cls, encoder, decoder, *, embedding_dim: int, num_codes: int = 512, ema: bool = False,
                     decay: float = 0.99, input_dim: int | None = None) -> "VQVAEModel":
        """Your own NNX encoder and decoder.

        Args:
            encoder: ``encoder(rngs=rngs)`` builds a module mapping x ``[B, ...]`` to z ``[B, ..., D]``
                (D last: every position's vector is quantised).
            decoder: ``decoder(rngs=rngs)`` builds a module mapping quantised z to the reconstruction,
                with as many entries per example as x.
            embedding_dim: D.
            num_codes: K.
            ema: Whether the codebook is an EMA of the embeddings.
            decay: The EMA's decay.
            input_dim: x's features, to check batches against; None for no check.

        Returns:
            The ``VQVAEModel``.

        Raises:
            InputError: A size that is not a positive integer, or ``decay`` not in [0, 1].
        """
        return cls(ModulePair(encoder, decoder), embedding_dim, num_codes, ema, decay, input_dim)

    @property
    def config(self) -> VAEConfig | None:
        """The ``VAEConfig`` this model was made from, or None for your own modules."""
        return self.build.config if isinstance(self.build, ConfigModules) else None

    #: Every hyperparameter a VQ-VAE may read: the command line's value flags.
    family_hyperparameters: ClassVar[tuple[Hyperparameter, ...]] = VQVAE_HYPERPARAMETERS

    @property
    def hyperparameters(self) -> tuple[Hyperparameter, ...]:
        """The loss's weights: ``commitment``, and ``quantization`` unless the codebook is an EMA."""
        return (COMMITMENT,) if self.ema else (COMMITMENT, QUANTIZATION)

    def module(self, params, dtype=None):
        """The encoder/decoder module holding ``params`` (its codebook aside).

        Args:
            params: The parameters.
            dtype: Their float type; None reads it from ``params``.

        Returns:
            The NNX module.
        """
        dtype = dtype or jax.tree.leaves(params["encoder"])[0].dtype
        return nnx.merge(_graphdef(self.build, jnp.dtype(dtype).name),
                         {name: params[name] for name in ("encoder", "decoder")})

    def init(self, key: jax.Array, dtype=jnp.float32) -> tuple[dict, Any]:
        """Fresh parameters and state from ``key``. The codes start uniform in [-1/K, 1/K]; an EMA
        codebook starts as if each code had been assigned once, at its own place (count 1).

        Args:
            key: Draws the parameters.
            dtype: Their float type.

        Returns:
            ``(params, state)``: the state ``()``, or the EMA's.
        """
        module_key, codes_key = jax.random.split(jnp.asarray(key))
        params = params_of(self.build(nnx.Rngs(params=module_key), dtype))
        bound = 1.0 / self.num_codes
        codebook = jax.random.uniform(codes_key, (self.num_codes, self.embedding_dim), dtype, -bound, bound)
        if self.ema:
            return params, {"codebook": codebook, "cluster_size": jnp.ones(self.num_codes, dtype),
                            "ema_embed": codebook}
        return {**params, "codebook": codebook}, ()

    def codebook(self, params, state) -> jax.Array:
        """The codes ``[K, D]``: a parameter, or the EMA's state.

        Args:
            params: The parameters.
            state: The model's state.

        Returns:
            The codebook.
        """
        return state["codebook"] if self.ema else params["codebook"]

    def encode(self, params, x: jax.Array) -> jax.Array:
        """The encoder's embeddings z (before quantisation).

        Args:
            params: The parameters.
            x: The inputs.

        Returns:
            z, ``[B, ..., D]``.
        """
        return self.module(params).encode(x)

    def quantize(self, params, state, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Each D-vector of z replaced by its nearest code.

        Args:
            params: The parameters.
            state: The model's state.
            z: Embeddings ``[..., D]``.

        Returns:
            ``(quantized, codes)``: the codes' vectors, shaped as ``z``, and their indices.
        """
        codebook = self.codebook(params, state)
        codes = nearest_codes(z, codebook)
        return codebook[codes], codes

    def decode(self, params, z: jax.Array) -> jax.Array:
        """The decoder's reconstruction of (quantised) embeddings.

        Args:
            params: The parameters.
            z: Embeddings ``[B, ..., D]``.

        Returns:
            The reconstruction (pixel values).
        """
        return self.module(params).decoder_output(z)

    def figures(self, params, state, x, y, image_shape, key: jax.Array) -> dict:
        """Test images above their reconstructions through the codebook (``jaxvae.plots.image_pairs``).

        Args:
            params: The parameters.
            state: The model's state (the EMA codebook).
            x: The test images.
            y: Their labels (unused).
            image_shape: ``(height, width)`` of one image.
            key: Unused: nothing is sampled.

        Returns:
            ``{"reconstructions.png": figure}``.
        """
        from jaxvae.plots import image_pairs  # deferred: matplotlib, for the commands that draw only

        x = jnp.asarray(x[:12])
        return {"reconstructions.png": image_pairs(x, self.reconstruct(params, state, x), image_shape,
                                                   "decode(nearest code)")}

    def reconstruct(self, params, state, x: jax.Array) -> jax.Array:
        """x encoded, quantised and decoded.

        Args:
            params: The parameters.
            state: The model's state.
            x: The inputs.

        Returns:
            The reconstructions.
        """
        return self.decode(params, self.quantize(params, state, self.encode(params, x))[0])

    def loss(self, params, state, batch, key: jax.Array, hyper) -> tuple[jax.Array, dict, Any]:
        """The VQ-VAE's loss on ``batch`` (``Model.loss``); with EMA, the state after the batch.

        Args:
            params: The parameters.
            state: The model's state (``()``, or the EMA codebook).
            batch: The inputs, or a pytree holding them (``jaxvae.model.inputs``).
            key: Unused: the model is deterministic.
            hyper: A ``jaxvae.hyper.Hyper`` with ``commitment`` (and ``quantization`` without EMA).

        Returns:
            ``(loss, metrics, state)``: recon + vq_loss, the metrics in the class docstring, the new state.
        """
        module, x = self.module(params), inputs(batch)
        z = module.encode(x)
        quantized, codes = self.quantize(params, state, z)
        commitment, codebook = vq_terms(z, quantized)
        recon = jnp.mean(squared_error(x, module.decoder_output(straight_through(z, quantized))))
        metrics = {"recon": recon, "commitment": hyper.commitment * commitment}
        if self.ema:
            state = ema_update(state, z, codes, self.decay)
        else:
            metrics["codebook"] = hyper.quantization * codebook
        vq_loss = sum(metrics[name] for name in ("commitment", "codebook") if name in metrics)
        metrics.update(vq_loss=vq_loss, perplexity=perplexity(codes, self.num_codes, z.dtype))
        return recon + vq_loss, metrics, state

    def check_shapes(self, name: str, batch) -> None:
        """InputError naming ``name`` unless the inputs are ``[N, input_dim]`` (when ``input_dim`` is known).

        Args:
            name: The data's name, for the message.
            batch: The data.

        Raises:
            InputError: The inputs are not 2-D, or have another number of features.
        """
        check_features(name, inputs(batch), self.input_dim)

    def describe(self) -> dict:
        """The record checkpoints keep: the config (or the modules' classes), K, D and the EMA's settings.

        Returns:
            The JSON-ready record.

        Raises:
            InputError: The config's ``init`` is a pair of functions, which JSON cannot hold.
        """
        codes = {"num_codes": self.num_codes, "ema": self.ema, "decay": self.decay}
        if self.config is not None:
            return {**super().describe(), "config": config_to_dict(self.config), **codes}
        return {**super().describe(), "encoder": class_path(self.build.encoder),
                "decoder": class_path(self.build.decoder), "embedding_dim": self.embedding_dim,
                "input_dim": self.input_dim, **codes}

    @classmethod
    def from_record(cls, record: dict) -> "VQVAEModel":
        """The model ``describe`` recorded.

        Args:
            record: The record.

        Returns:
            The ``VQVAEModel``.

        Raises:
            InputError: A module class cannot be imported, or a field is out of range.
        """
        codes = {"num_codes": record["num_codes"], "ema": record["ema"], "decay": record["decay"]}
        if "config" in record:
            return cls.from_config(VAEConfig(**record["config"]), **codes)
        return cls.from_modules(import_path(record["encoder"]), import_path(record["decoder"]),
                                embedding_dim=record["embedding_dim"], input_dim=record["input_dim"], **codes)
