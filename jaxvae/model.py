"""The model protocol: what jaxvae needs of a model to train, sweep, evaluate and save it.

A model is a hashable value (static inside compiled code, as ``optax.GradientTransformation`` is a
pair of pure functions) whose methods are pure functions of arrays::

    params, state = model.init(key, dtype)                          # state: () or e.g. an EMA codebook
    loss, metrics, state = model.loss(params, state, batch, key, hyper)

``batch`` is any pytree of arrays with a leading example axis: ``x``, ``(x, y)`` or ``{"x": ..., "y": ...}``
(``inputs`` finds x in it, ``labels`` y). ``metrics`` is a dict of scalars: the history, the epoch line,
the sweep summary and TensorBoard show whatever it holds.

``hyperparameters`` declares what the loss reads besides the learning rate (``jaxvae.hyper.Hyperparameter``:
name, default, valid range); ``hyper`` holds their values as data (``jaxvae.hyper.Hyper``, the KL weight
already times its schedule). The declaration is the one list: a training config may set those and no
others, a sweep spans them, the command line offers them as flags.

``jaxvae.vae.VAEModel`` implements it for the blog's VAE, the Bernoulli likelihood, IWAE, beta-VAE,
the conv models and any NNX encoder/decoder pair.
"""
from __future__ import annotations

import abc
import importlib
from typing import Any

import jax
import jax.numpy as jnp

from jaxvae.errors import InputError
from jaxvae.hyper import Hyperparameter


def inputs(batch):
    """The array a model encodes in ``batch``: the batch itself, its first entry (a tuple or list),
    or its ``"x"`` (a dict).

    Args:
        batch: An array, a tuple or list, or a dict with ``"x"``.

    Returns:
        The inputs array.
    """
    if isinstance(batch, (tuple, list)):
        return batch[0]
    if isinstance(batch, dict):
        return batch["x"]
    return batch


def labels(batch):
    """The labels in ``batch``, beside its inputs: the second entry of a tuple or list, the ``"y"`` of a
    dict; None if it has none.

    Args:
        batch: An array, a tuple or list, or a dict.

    Returns:
        The labels, or None.
    """
    if isinstance(batch, (tuple, list)):
        return batch[1] if len(batch) > 1 else None
    if isinstance(batch, dict):
        return batch.get("y")
    return None


def with_inputs(batch, x):
    """``batch`` with its inputs (``inputs``) replaced by ``x``, the rest kept.

    Args:
        batch: An array, a tuple or list, or a dict with ``"x"``.
        x: The new inputs.

    Returns:
        A batch of the same kind.
    """
    if isinstance(batch, (tuple, list)):
        return type(batch)([x, *batch[1:]])
    if isinstance(batch, dict):
        return {**batch, "x": x}
    return x


def batch_size_of(batch) -> int:
    """The number of examples in ``batch``: the leading axis that all its leaves share.

    Args:
        batch: An array or a pytree of arrays.

    Returns:
        The first leaf's leading size.
    """
    return jax.tree.leaves(batch)[0].shape[0]


def take(batch, rows):
    """The examples ``rows`` of every leaf of ``batch``.

    Args:
        batch: An array or a pytree of arrays.
        rows: An index array, a slice or an int.

    Returns:
        A batch of the same structure.
    """
    return jax.tree.map(lambda leaf: leaf[rows], batch)


def class_path(obj) -> str:
    """``module:qualname`` of a class or function: where ``import_path`` finds it again.

    Args:
        obj: A class or function.

    Returns:
        The path, e.g. ``"jaxvae.vae:VAEModel"``.
    """
    return f"{obj.__module__}:{obj.__qualname__}"


def import_path(path: str):
    """The class or function a ``class_path`` names; InputError naming it when it cannot be imported.

    Args:
        path: ``module:qualname``.

    Returns:
        The object found.

    Raises:
        InputError: The module cannot be imported or has no such name.
    """
    module_name, _, qualname = str(path).partition(":")
    try:
        found = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError, ValueError) as e:
        raise InputError(f"{path} cannot be imported ({type(e).__name__}: {e}); import the module that defines "
                         "it first, or pass the model itself") from None
    return found


def model_from_record(record: dict) -> "Model":
    """The model a ``Model.describe`` record names, built again by its class's ``from_record``.

    Args:
        record: A ``Model.describe`` record, with ``"class"``.

    Returns:
        The model.

    Raises:
        InputError: The class cannot be imported, is not a ``Model``, or cannot be built from the record.
    """
    cls = import_path(record["class"])
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise InputError(f"{record['class']} is not a jaxvae.model.Model")
    return cls.from_record(record)


class Model(abc.ABC):
    """A model jaxvae can train. Subclasses are hashable (frozen dataclasses, say): equal models
    share compiled code.

    Attributes:
        hyperparameters: What ``loss`` reads besides the learning rate (``jaxvae.hyper.Hyperparameter``);
            a config may set these, a sweep may vary them.
    """

    #: What ``loss`` reads besides the learning rate; a config may set these, a sweep may vary them.
    hyperparameters: tuple[Hyperparameter, ...] = ()
    #: Every hyperparameter a model of this class may read (a class whose models read different ones,
    #: as the VAE's likelihoods do, lists them all): the command line's value flags.
    family_hyperparameters: tuple[Hyperparameter, ...] = ()

    @abc.abstractmethod
    def init(self, key: jax.Array, dtype=jnp.float32) -> tuple[Any, Any]:
        """Fresh ``(params, state)`` from ``key``: the trainable pytree, and the rest (``()`` if none).

        Args:
            key: Draws the initial parameters.
            dtype: The parameters' float type.

        Returns:
            ``(params, state)``.
        """

    @abc.abstractmethod
    def loss(self, params, state, batch, key: jax.Array, hyper) -> tuple[jax.Array, dict, Any]:
        """``(loss, metrics, state)`` on ``batch``, its randomness drawn from ``key``. Pure; the loss
        is differentiated with respect to ``params``, and the returned ``state`` is kept in training.

        Args:
            params: The trainable parameters.
            state: The model's own state (``()`` if none).
            batch: An array or a pytree of arrays with a leading example axis.
            key: Draws the loss's randomness.
            hyper: A ``jaxvae.hyper.Hyper`` of ``hyperparameters`` and lr: the KL weight already times its
                schedule.

        Returns:
            ``(loss, metrics, state)``: a scalar, a dict of scalars, the new state.
        """

    def draw_noise(self, key: jax.Array, batch):
        """The randomness ``loss`` draws from ``key`` on ``batch``, drawn ahead of it (the training epoch
        draws a chunk of steps' noise in one call); ``key`` itself by default. Used only where this and
        ``loss_with_noise`` are defined with ``loss`` or below it (``draws_noise_ahead``).

        Args:
            key: The step's key.
            batch: The batch (its shapes; the values too, for a model whose noise depends on them).

        Returns:
            A pytree that ``loss_with_noise`` takes.
        """
        return key

    def loss_with_noise(self, params, state, batch, noise, hyper) -> tuple[jax.Array, dict, Any]:
        """``loss`` with its randomness given as ``draw_noise`` drew it: must equal ``loss`` on the key;
        by default ``loss`` itself, the noise being the key.

        Args:
            params: The trainable parameters.
            state: The model's own state.
            batch: The batch.
            noise: What ``draw_noise`` returned.
            hyper: A ``jaxvae.hyper.Hyper``.

        Returns:
            ``(loss, metrics, state)``.
        """
        return self.loss(params, state, batch, noise, hyper)

    def check_shapes(self, name: str, batch) -> None:
        """ValueError naming ``name`` when the shapes of ``batch`` do not suit this model; nothing by
        default (``checks.check_data`` has checked that every leaf has the same rows).

        Args:
            name: The data's name, for the message (``train_x``).
            batch: The data.

        Raises:
            InputError: In subclasses, a shape the model cannot take.
        """

    def check_values(self, name: str, batch) -> None:
        """ValueError naming ``name`` when the values of ``batch`` (finite, inputs floating point) do
        not suit this model; nothing by default.

        Args:
            name: The data's name, for the message.
            batch: The data.

        Raises:
            InputError: In subclasses, values the model cannot take.
        """

    def figures(self, params, state, x, y, image_shape, key: jax.Array) -> dict:
        """The figures a run directory keeps of this model beside its loss curves (``jaxvae.plots``
        draws them; the VAE's latent views, the conditional VAE's samples per class); none by default.

        Args:
            params: The parameters.
            state: The model's own state.
            x: The test images.
            y: Their labels.
            image_shape: ``(height, width)`` of one image.
            key: Draws whatever the figures sample.

        Returns:
            Matplotlib figures by file name (``"samples.png"``, say).
        """
        return {}

    def batch_of(self, x, y):
        """The batch this model trains on from a dataset's images and labels (what a run directory
        feeds it): the images alone by default; a model of labelled batches returns ``(x, y)``.

        Args:
            x: The images ``[N, ...]``.
            y: Their labels ``[N]``.

        Returns:
            An array or a pytree of arrays with a leading example axis.
        """
        return x

    def describe(self) -> dict:
        """This model as a JSON-ready record (checkpoints keep it): its class as ``module:qualname``, and
        what ``from_record`` needs to build it again.

        Returns:
            The record, ``{"class": ...}`` by default.
        """
        return {"class": class_path(type(self))}

    @classmethod
    def from_record(cls, record: dict) -> "Model":
        """The model ``describe`` recorded; by default ``cls()``, for models without fields.

        Args:
            record: The record ``describe`` wrote.

        Returns:
            The model.

        Raises:
            InputError: The class cannot be built without arguments.
        """
        try:
            return cls()
        except TypeError as e:
            raise InputError(f"{class_path(cls)} cannot be built again from its record ({e}); pass the model "
                             "itself") from None

    def param_shapes(self, dtype=jnp.float32):
        """The params pytree as ``jax.ShapeDtypeStruct`` leaves: nothing is allocated.

        Args:
            dtype: The parameters' float type.

        Returns:
            The pytree of shapes.
        """
        return jax.eval_shape(lambda: self.init(jax.random.PRNGKey(0), dtype)[0])


def _defined_in(cls: type, name: str) -> type:
    return next(c for c in cls.__mro__ if name in vars(c))


def draws_noise_ahead(model: Model) -> bool:
    """Whether training may draw ``model``'s noise ahead (``draw_noise``, then ``loss_with_noise``):
    both belong to its ``loss``, defined in the class that defines ``loss`` or below it. A subclass
    that overrides ``loss`` alone (a ``VAEModel`` with a loss of its own, say) is trained through its
    ``loss``, never through the parent's ``loss_with_noise``.

    Args:
        model: The model.

    Returns:
        True where ``loss_with_noise(draw_noise(key))`` is the model's ``loss``.
    """
    cls = type(model)
    owner = _defined_in(cls, "loss")
    return all(issubclass(_defined_in(cls, name), owner) for name in ("draw_noise", "loss_with_noise"))

