"""Schedules: how the learning rate and the KL weight change during training, as values.

A schedule is a small frozen dataclass giving a *factor* at each step, times the model's
hyperparameter (``TrainConfig.lr`` or ``kl_weight``, data in the train state): lr_t = lr *
lr_schedule(t), so models with any lr or KL weight share one compiled program.

``value(state, step, steps_per_epoch)`` is the factor at the global step ``step`` (from 0), inside the
compiled step. A schedule that reacts to the validation loss (``Plateau``) keeps a state between
epochs: ``init()`` makes it, ``update(state, val_loss, base)`` advances it on the host after each
epoch (``base``: the hyperparameter it multiplies, for absolute rules such as ``min_lr``), checkpoints
save it. ``finished(state, epochs_done, base)`` says when the schedule ends the run.

    Constant()                           the hyperparameter itself (the blog's constant KL weight)
    Plateau()                            PyTorch's ReduceLROnPlateau on the validation loss (the blog)
    Stages.burda()                       Burda et al. 2015: 3**i epochs at 10**(-i/7) times the lr, i = 0..7
    Cosine(epochs=100)                   cosine decay to 0
    LinearWarmup(epochs=10)              0 -> 1 over 10 epochs, step by step (KL warm-up)
    FromOptax(optax.exponential_decay(1.0, ...))   any optax schedule of the step count

``lr_from_config`` and ``kl_from_config`` build the schedules that a ``TrainConfig`` names.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax.numpy as jnp
import optax

from jaxvae.config import TrainConfig
from jaxvae.errors import InputError, InputTypeError
from jaxvae.structure import structure_key


class Schedule:
    """The interface; stateless schedules only implement ``value``. The subclasses' methods take and
    return what these document."""

    def init(self) -> Any:
        """The state before the first epoch.

        Returns:
            ``()`` for stateless schedules.
        """
        return ()

    def value(self, state, step, steps_per_epoch: int | None):
        """The factor at the global step ``step``, inside the compiled step.

        Args:
            state: The schedule's state (``()`` for stateless ones).
            step: The global step, from 0 (an array inside the compiled step).
            steps_per_epoch: Steps per epoch, for schedules that count in epochs; None when unknown.

        Returns:
            The factor at ``step``.

        Raises:
            InputError: ``steps_per_epoch`` is None for a schedule that counts in epochs.
        """
        raise NotImplementedError

    def update(self, state, val_loss: float, base: float):
        """The state after an epoch, on the host; stateless schedules keep ``state``.

        Args:
            state: The state before the epoch.
            val_loss: The epoch's validation loss.
            base: The hyperparameter the schedule multiplies (the model's lr).

        Returns:
            The new state.
        """
        return state

    def finished(self, state, epochs_done: int, base: float) -> bool:
        """Whether the schedule ends the run after ``epochs_done`` epochs; never, by default.

        Args:
            state: The schedule's state.
            epochs_done: Epochs trained so far.
            base: The hyperparameter the schedule multiplies.

        Returns:
            True when the run should stop.
        """
        return False


def _steps(steps_per_epoch: int | None, who: str) -> int:
    """Schedules that count in epochs need the number of steps per epoch."""
    if steps_per_epoch is None:
        raise InputError(f"{who} counts in epochs: give the train step its steps_per_epoch")
    return steps_per_epoch


@dataclass(frozen=True)
class Constant(Schedule):
    """The same factor at every step (1: the hyperparameter as it is).

    Args:
        factor: The factor.
    """

    factor: float = 1.0

    def value(self, state, step, steps_per_epoch):
        """``factor``, whatever the step."""
        return self.factor


class PlateauState(NamedTuple):
    """The state of PyTorch's ``ReduceLROnPlateau`` (mode min, relative threshold, no cooldown):
    ``scale`` is the current lr over the configured one.

    Attributes:
        scale: The current lr over the model's lr.
        best: The best validation loss so far.
        num_bad_epochs: Epochs since the last improvement.
    """

    scale: float = 1.0
    best: float = math.inf
    num_bad_epochs: int = 0


@dataclass(frozen=True)
class Plateau(Schedule):
    """PyTorch's ``ReduceLROnPlateau``, exactly: the validation loss improves when below ``best * (1 -
    threshold)``; after more than ``patience`` epochs without improvement the lr is multiplied by
    ``factor`` (floored at ``min_lr``; changes under 1e-8 skipped). The run ends before an epoch whose
    lr is below ``stop_lr`` (the blog's rule). ``min_lr`` and ``stop_lr`` are learning rates, compared
    with ``base`` (the model's lr) times the state's scale.

    The defaults are the blog's settings, ``TrainConfig``'s.

    Args:
        factor: Multiplies the lr on a plateau.
        patience: Epochs without improvement before the lr falls.
        threshold: The relative improvement that counts.
        min_lr: The lowest lr.
        stop_lr: The run ends before an epoch whose lr is below this.
    """

    # The blog's settings, kept in one place: TrainConfig's defaults.
    factor: float = TrainConfig.plateau_factor
    patience: int = TrainConfig.plateau_patience
    threshold: float = TrainConfig.plateau_threshold
    min_lr: float = TrainConfig.min_lr
    stop_lr: float = TrainConfig.stop_lr

    def init(self) -> PlateauState:
        """A fresh state: scale 1, no best loss yet."""
        return PlateauState()

    def value(self, state: PlateauState, step, steps_per_epoch):
        """The state's scale."""
        return state.scale

    def update(self, state: PlateauState, val_loss: float, base: float) -> PlateauState:
        """The state after an epoch, as ``ReduceLROnPlateau.step(val_loss)`` leaves it."""
        best, bad, scale = state.best, state.num_bad_epochs + 1, state.scale
        if val_loss < best * (1.0 - self.threshold):
            best, bad = val_loss, 0
        if bad > self.patience:
            lr = base * scale
            new_lr = max(lr * self.factor, self.min_lr)
            if lr - new_lr > 1e-8:
                scale = new_lr / base
            bad = 0
        return PlateauState(scale=scale, best=best, num_bad_epochs=bad)

    def finished(self, state: PlateauState, epochs_done: int, base: float) -> bool:
        """Whether the lr (``base`` times the scale) is below ``stop_lr``."""
        return base * state.scale < self.stop_lr


@dataclass(frozen=True)
class Stages(Schedule):
    """Piecewise constant in epochs: ``stages`` is ((factor, epochs), ...); after the last stage the
    run is finished (the last factor holds if training goes on).

    Args:
        stages: ``(factor, epochs)`` pairs, in order.
    """

    stages: tuple[tuple[float, int], ...]

    @classmethod
    def burda(cls, n_stages: int = 8) -> "Stages":
        """Burda, Grosse & Salakhutdinov (2015): stage i runs 3**i epochs at 10**(-i/7) times the lr.

        Args:
            n_stages: The number of stages (8: 3280 epochs).

        Returns:
            The ``Stages``.
        """
        return cls(tuple((10 ** (-i / 7), 3**i) for i in range(n_stages)))

    @property
    def total_epochs(self) -> int:
        """The epochs of all the stages together."""
        return sum(epochs for _, epochs in self.stages)

    def value(self, state, step, steps_per_epoch):
        """The factor of the stage that the step's epoch falls in (the last one after the end)."""
        epoch = jnp.asarray(step) // _steps(steps_per_epoch, "Stages")  # integer: exact at stage ends
        ends = jnp.cumsum(jnp.asarray([epochs for _, epochs in self.stages]))
        index = jnp.minimum(jnp.searchsorted(ends, epoch, side="right"), len(self.stages) - 1)
        return jnp.asarray([factor for factor, _ in self.stages])[index]

    def finished(self, state, epochs_done: int, base: float) -> bool:
        """Whether the stages' epochs are done."""
        return epochs_done >= self.total_epochs


@dataclass(frozen=True)
class Cosine(Schedule):
    """Cosine decay from 1 to 0 over ``epochs`` (``optax.cosine_decay_schedule``, per step).

    Args:
        epochs: Epochs to decay over.
    """

    epochs: float

    def value(self, state, step, steps_per_epoch):
        """The cosine's factor at ``step``."""
        decay_steps = max(1, round(self.epochs * _steps(steps_per_epoch, "Cosine")))
        return optax.cosine_decay_schedule(1.0, decay_steps)(step)


@dataclass(frozen=True)
class LinearWarmup(Schedule):
    """``min(1, epochs_done / epochs)``, step by step: 0 at the first step (the KL warm-up of
    Sonderby et al.'s Ladder VAE and Bowman et al.).

    Args:
        epochs: Epochs to rise from 0 to 1 over.
    """

    epochs: float

    def value(self, state, step, steps_per_epoch):
        # In the default float type (float64 under x64): an int32 step over a Python float is float32 under jit.
        """``min(1, step / (steps_per_epoch * epochs))``."""
        progress = jnp.asarray(step, jnp.result_type(float)) / (_steps(steps_per_epoch, "LinearWarmup") * self.epochs)
        return jnp.minimum(1.0, progress)


@dataclass(frozen=True, eq=False)
class FromOptax(Schedule):
    """Any optax schedule of the step count as factors: ``optax.exponential_decay(1.0, ...)``. Two are
    equal when they compute the same function (``structure_key``), so a fresh one reuses the compiled epoch.

    Args:
        fn: The optax schedule, called as ``fn(step)``.
    """

    fn: Callable

    def value(self, state, step, steps_per_epoch):
        """``fn(step)``."""
        return self.fn(step)

    def _key(self):
        return structure_key(self.fn, jnp.zeros((), jnp.int32))

    def __eq__(self, other):
        return type(other) is FromOptax and (other.fn is self.fn or other._key() == self._key())

    def __hash__(self):
        return hash(self._key())


def as_schedule(value) -> Schedule:
    """A Schedule from a Schedule, a number (a Constant factor) or an optax schedule function (FromOptax).

    Args:
        value: A ``Schedule``, a number or a callable of the step.

    Returns:
        The ``Schedule``.

    Raises:
        InputTypeError: ``value`` is none of these.
    """
    if isinstance(value, Schedule):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Constant(float(value))
    if callable(value):
        return FromOptax(value)
    raise InputTypeError(f"expected a jaxvae schedule, a number or an optax schedule, got {type(value).__name__}")


def lr_from_config(train_config: TrainConfig) -> Schedule:
    """The learning-rate schedule ``train_config.lr_schedule`` names (factors of ``train_config.lr``).

    Args:
        train_config: Gives ``lr_schedule`` and the plateau's settings or ``max_epochs``.

    Returns:
        A ``Plateau``, ``Stages``, ``Cosine`` or ``Constant``.
    """
    tc = train_config
    if tc.lr_schedule == "plateau":
        return Plateau(tc.plateau_factor, tc.plateau_patience, tc.plateau_threshold, tc.min_lr, tc.stop_lr)
    if tc.lr_schedule == "burda":
        return Stages.burda()
    if tc.lr_schedule == "cosine":
        return Cosine(tc.max_epochs)
    return Constant()


def kl_from_config(train_config: TrainConfig) -> Schedule:
    """The KL weight's schedule (factors of ``train_config.kl_weight``): warmed up over
    ``kl_warmup_epochs``, else constant.

    Args:
        train_config: Gives ``kl_warmup_epochs``.

    Returns:
        A ``LinearWarmup`` or ``Constant``.
    """
    if train_config.kl_warmup_epochs > 0:
        return LinearWarmup(train_config.kl_warmup_epochs)
    return Constant()
