"""Schedules: the learning rate and the KL weight as values that change during training.

A schedule is a small frozen dataclass. ``value(state, step, steps_per_epoch)`` is its value at the
global optimisation step ``step`` (counted from 0 over the whole run); the train step evaluates it
inside the compiled code, so nothing recompiles when the value changes. A schedule that reacts to
the validation loss (``Plateau``) also keeps a small state between epochs: ``init()`` makes it,
``update(state, val_loss)`` advances it after each epoch on the host, the checkpoint saves it, and
it reaches compiled code as an array. ``finished(state, epochs_done)`` says when the schedule ends
the run (the plateau when the lr falls below ``stop_lr``, the stages after the last one).

    Constant(1e-3)                       the lr, or the KL weight (the blog: 1; a beta-VAE: beta)
    Plateau(1e-3)                        PyTorch's ReduceLROnPlateau on the validation loss (the blog)
    Stages.burda()                       Burda et al. 2015: 3**i epochs at 1e-3 * 10**(-i/7), i = 0..7
    Cosine(1e-3, epochs=100)             cosine decay to 0
    LinearWarmup(1.0, epochs=10)         0 -> 1 over 10 epochs, step by step (KL warm-up)
    FromOptax(optax.exponential_decay(...))   any optax schedule of the step count
    Scaled(Constant(1.0))                a number held in the state times a schedule: one compiled
                                         step for models with different lrs or KL weights (sweeps)

``from_config`` builds the lr and KL-weight schedules that a ``TrainConfig`` names.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax.numpy as jnp
import optax

from jaxvae.config import TrainConfig, VAEConfig


class Schedule:
    """The interface; stateless schedules only implement ``value``."""

    def init(self) -> Any:
        return ()

    def value(self, state, step, steps_per_epoch: int | None):
        raise NotImplementedError

    def update(self, state, val_loss: float):
        return state

    def finished(self, state, epochs_done: int) -> bool:
        return False


def _steps(steps_per_epoch: int | None, who: str) -> int:
    """Schedules that count in epochs need the number of steps per epoch."""
    if steps_per_epoch is None:
        raise ValueError(f"{who} counts in epochs: give the train step its steps_per_epoch")
    return steps_per_epoch


@dataclass(frozen=True)
class Constant(Schedule):
    """The same value at every step."""

    constant: float

    def value(self, state, step, steps_per_epoch):
        return self.constant


class PlateauState(NamedTuple):
    """The state of PyTorch's ``ReduceLROnPlateau`` (mode min, relative threshold, no cooldown)."""

    lr: float
    best: float = math.inf
    num_bad_epochs: int = 0


@dataclass(frozen=True)
class Plateau(Schedule):
    """PyTorch's ``ReduceLROnPlateau``, exactly: after each epoch the validation loss improves when
    it is below ``best * (1 - threshold)``; after more than ``patience`` epochs without improvement
    the lr is multiplied by ``factor`` (floored at ``min_lr``; changes smaller than 1e-8 are
    skipped). The run ends before an epoch whose lr is below ``stop_lr`` (the blog's rule)."""

    # The blog's settings, kept in one place: TrainConfig's defaults.
    lr: float = TrainConfig.lr
    factor: float = TrainConfig.plateau_factor
    patience: int = TrainConfig.plateau_patience
    threshold: float = TrainConfig.plateau_threshold
    min_lr: float = TrainConfig.min_lr
    stop_lr: float = TrainConfig.stop_lr

    def init(self) -> PlateauState:
        return PlateauState(lr=self.lr)

    def value(self, state: PlateauState, step, steps_per_epoch):
        return state.lr

    def update(self, state: PlateauState, val_loss: float) -> PlateauState:
        best, bad = state.best, state.num_bad_epochs
        if val_loss < best * (1.0 - self.threshold):
            best, bad = val_loss, 0
        else:
            bad += 1
        lr = state.lr
        if bad > self.patience:
            new_lr = max(lr * self.factor, self.min_lr)
            if lr - new_lr > 1e-8:
                lr = new_lr
            bad = 0
        return PlateauState(lr=lr, best=best, num_bad_epochs=bad)

    def finished(self, state: PlateauState, epochs_done: int) -> bool:
        return state.lr < self.stop_lr


@dataclass(frozen=True)
class Stages(Schedule):
    """Piecewise constant in epochs: ``stages`` is ((value, epochs), ...); after the last stage the
    run is finished (the last value holds if training goes on)."""

    stages: tuple[tuple[float, int], ...]

    @classmethod
    def burda(cls, lr: float = 1e-3, n_stages: int = 8) -> "Stages":
        """Burda, Grosse & Salakhutdinov (2015): stage i runs 3**i epochs at lr * 10**(-i/7)."""
        return cls(tuple((lr * 10 ** (-i / 7), 3**i) for i in range(n_stages)))

    @property
    def total_epochs(self) -> int:
        return sum(epochs for _, epochs in self.stages)

    def value(self, state, step, steps_per_epoch):
        epoch = jnp.asarray(step) // _steps(steps_per_epoch, "Stages")  # integer: exact at stage ends
        ends = jnp.cumsum(jnp.asarray([epochs for _, epochs in self.stages]))
        index = jnp.minimum(jnp.searchsorted(ends, epoch, side="right"), len(self.stages) - 1)
        return jnp.asarray([value for value, _ in self.stages])[index]

    def finished(self, state, epochs_done: int) -> bool:
        return epochs_done >= self.total_epochs


@dataclass(frozen=True)
class Cosine(Schedule):
    """Cosine decay from ``lr`` to 0 over ``epochs`` (``optax.cosine_decay_schedule``, per step)."""

    lr: float
    epochs: float

    def value(self, state, step, steps_per_epoch):
        decay_steps = max(1, round(self.epochs * _steps(steps_per_epoch, "Cosine")))
        return optax.cosine_decay_schedule(self.lr, decay_steps)(step)


@dataclass(frozen=True)
class LinearWarmup(Schedule):
    """``target * min(1, epochs_done / epochs)``, step by step: 0 at the first step (the KL warm-up
    of Sonderby et al.'s Ladder VAE and Bowman et al.)."""

    target: float
    epochs: float

    def value(self, state, step, steps_per_epoch):
        # In the default float type (float64 under x64): an int32 step over a Python float is float32 under jit.
        progress = jnp.asarray(step, jnp.result_type(float)) / (_steps(steps_per_epoch, "LinearWarmup") * self.epochs)
        return self.target * jnp.minimum(1.0, progress)


@dataclass(frozen=True)
class FromOptax(Schedule):
    """Any optax schedule (a function of the step count); ``fn`` is compared by identity."""

    fn: Callable

    def value(self, state, step, steps_per_epoch):
        return self.fn(step)


class ScaledState(NamedTuple):
    """``Scaled``'s state: the factor (an array with one entry per model in a sweep) and the state of
    the schedule it scales."""

    scale: Any
    base: Any = ()


@dataclass(frozen=True)
class Scaled(Schedule):
    """``scale * base``, the scale held in the state: data of the compiled step, not a constant of it.

    A sweep (``jaxvae.sweep``) stacks one scale per model, each model's lr or KL weight, so that one
    compiled step serves every value. With ``base`` at peak 1 (``Constant(1.0)``, ``Cosine(1.0, e)``,
    ``LinearWarmup(1.0, e)``) the product is the scaled schedule's value bit for bit; for
    ``Stages.burda(1.0)`` to float32 rounding. ``init(scale)`` makes the state.
    """

    base: Schedule

    def init(self, scale: float = 1.0) -> ScaledState:
        return ScaledState(scale, self.base.init())

    def value(self, state: ScaledState, step, steps_per_epoch):
        return state.scale * self.base.value(state.base, step, steps_per_epoch)

    def update(self, state: ScaledState, val_loss: float) -> ScaledState:
        return ScaledState(state.scale, self.base.update(state.base, val_loss))

    def finished(self, state: ScaledState, epochs_done: int) -> bool:
        return self.base.finished(state.base, epochs_done)


def as_schedule(value) -> Schedule:
    """A Schedule from a Schedule, a number (Constant) or an optax schedule function (FromOptax)."""
    if isinstance(value, Schedule):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Constant(float(value))
    if callable(value):
        return FromOptax(value)
    raise TypeError(f"expected a jaxvae schedule, a number or an optax schedule, got {type(value).__name__}")


def lr_from_config(train_config: TrainConfig) -> Schedule:
    """The learning-rate schedule ``train_config.lr_schedule`` names."""
    tc = train_config
    if tc.lr_schedule == "plateau":
        return Plateau(tc.lr, tc.plateau_factor, tc.plateau_patience, tc.plateau_threshold, tc.min_lr, tc.stop_lr)
    if tc.lr_schedule == "burda":
        return Stages.burda(tc.lr)
    if tc.lr_schedule == "cosine":
        return Cosine(tc.lr, tc.max_epochs)
    return Constant(tc.lr)


def kl_from_config(vae_config: VAEConfig, train_config: TrainConfig) -> Schedule:
    """The KL weight: ``vae_config.kl_weight``, warmed up over ``train_config.kl_warmup_epochs``."""
    if train_config.kl_warmup_epochs > 0:
        if vae_config.objective == "iwae":
            raise ValueError("kl_warmup_epochs applies to objective='elbo' only; the IWAE bound has no KL weight")
        return LinearWarmup(vae_config.kl_weight, train_config.kl_warmup_epochs)
    return Constant(vae_config.kl_weight)
