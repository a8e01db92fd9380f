"""Training: the one train step, the compiled epoch, and the one host loop that trains N models.

``TrainStep`` (model config, optax direction, two schedules) is the static part of the compiled
program; the hyperparameters (``Hyper``) are data in the train state, so models that differ only in
them or their seed share the compiled code. An epoch is one compiled call: a ``lax.scan`` of the step
over batches of data kept on the device, then the last partial batch (kept, as the blog does).
``models_epoch`` runs it and the validation pass for a stack of models (vmapped); ``fit_models`` is
the host loop around it, and ``fit`` is ``fit_models`` with one model.
"""
from __future__ import annotations

import contextlib
import itertools
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxvae import schedules as sched
from jaxvae.batching import EpochIndices, batch_counts, epoch_indices, steps_per_epoch
from jaxvae.binarize import prepare_eval_data, prepare_train_data, sample_binary
from jaxvae.checks import check_data
from jaxvae.config import OWN_HYPERPARAMETERS, TrainConfig, VAEConfig, check_configs
from jaxvae.errors import InputError, NumericalError
from jaxvae.hyper import KL_WEIGHT, LR, Hyper, Hyperparameter
from jaxvae.model import Model, batch_size_of, draws_noise_ahead, inputs, take, with_inputs
from jaxvae.parallel import DataParallel, DeviceMesh, plan_mesh
from jaxvae.structure import structure_key
from jaxvae.vae import as_model

# The compiled epoch's loop: NOISE_CHUNK steps' noise drawn in one vmapped call, then a scan of them,
# SCAN_UNROLL steps per iteration. Chosen with benchmarks/step_breakdown.py --grid (results/step_grid.md,
# 2-core AMD EPYC): 32x1 was the fastest for Burda's step (0.84x the time of 32x3) and within the spread
# of the best for the blog's (0.93x); unrolling gains nothing once the noise is drawn ahead.
SCAN_UNROLL = 1
NOISE_CHUNK = 32
# Validation runs this many rows (whole batches) through each matmul: ~16% faster than one batch of
# 128 on CPU, and every batch's loss is the same, bit for bit (its own rows, noise and mean).
EVAL_GROUP_ROWS = 1024


class TrainState(NamedTuple):
    """Parameters, optimizer state, step count (the schedules' clock), ``Hyper`` (never changed by the
    step) and the model's own state (``Model.init``'s: an EMA codebook, say; ``()`` for most models).

    Attributes:
        params: The model's parameters (a pytree).
        opt_state: The optimizer's state.
        step: Steps taken, an int32 scalar.
        hyper: The hyperparameters, as arrays.
        model_state: The model's own state; ``()`` for most models.
    """

    params: Any
    opt_state: Any
    step: jax.Array
    hyper: Hyper
    model_state: Any = ()


class ScheduleStates(NamedTuple):
    """The host-side states of the lr and KL-weight schedules (``()`` for stateless ones).

    Attributes:
        lr: The lr schedule's state.
        kl_weight: The KL-weight schedule's state.
    """

    lr: Any = ()
    kl_weight: Any = ()


def adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
    """Adam's update direction, PyTorch's defaults; no learning rate: the step multiplies by the lr.

    The coefficients live in the optimizer state as float32 (``inject_hyperparams``) so that 1 - b2
    and the bias correction 1 - b2**t round alike, as in PyTorch: plain ``optax.scale_by_adam`` drifts
    6e-5 from PyTorch in 50 float32 steps (measured), this form stays within the 1e-5 bound.

    Args:
        b1: The first moment's decay.
        b2: The second moment's decay.
        eps: Added to the root of the second moment.

    Returns:
        The optax transformation.
    """
    return optax.inject_hyperparams(optax.scale_by_adam)(b1=b1, b2=b2, eps=eps)


@dataclass(frozen=True, eq=False)
class TrainStep:
    """One optimisation step: params <- params - lr_t * optimizer(grad loss(params; kl_weight_t)).

    Steps that compute the same thing compare equal (the optimizer by ``structure_key``), so a fresh but
    equal step does not compile the epoch again.

    Args:
        model: A ``jaxvae.model.Model``; a ``VAEConfig`` is taken as its ``VAEModel``.
        optimizer: An optax transformation without a learning rate (default ``adam()``).
        lr: A schedule of factors of the state's ``Hyper.lr`` (``jaxvae.schedules``; numbers and optax
            schedules too).
        kl_weight: A schedule of factors of the state's ``Hyper.kl_weight``, as ``lr``.
        steps_per_epoch: Steps in an epoch, so that schedules can count in epochs; None when unknown.
        binarize: Whether each step draws a fresh binary image of its batch.
    """

    model: Model
    optimizer: optax.GradientTransformation = field(default_factory=adam)
    lr: Any = sched.Plateau()
    kl_weight: Any = sched.Constant()
    steps_per_epoch: int | None = None
    binarize: bool = False

    def __post_init__(self):
        object.__setattr__(self, "model", as_model(self.model))
        object.__setattr__(self, "lr", sched.as_schedule(self.lr))
        object.__setattr__(self, "kl_weight", sched.as_schedule(self.kl_weight))

    @classmethod
    def from_configs(cls, model: Model | VAEConfig, train_config: TrainConfig, steps_per_epoch: int | None = None, *,
                     optimizer=None, lr_schedule=None, kl_schedule=None) -> "TrainStep":
        """The step a TrainConfig describes for ``model``; ``optimizer`` and the schedules replace its choices.

        Args:
            model: The model, or a ``VAEConfig``.
            train_config: Gives Adam's coefficients, the schedules and the binarisation.
            steps_per_epoch: Steps in an epoch, for schedules that count in epochs.
            optimizer: Replaces ``adam(b1, b2, adam_eps)`` when given.
            lr_schedule: Replaces the config's lr schedule when given.
            kl_schedule: Replaces the config's KL-weight schedule when given.

        Returns:
            The ``TrainStep``.

        Raises:
            InputError: ``train_config`` sets a hyperparameter the model does not read
                (``check_hyperparameters``).
        """
        tc = train_config
        model = as_model(model)
        check_hyperparameters(model, tc)
        return cls(
            model,
            optimizer if optimizer is not None else adam(tc.b1, tc.b2, tc.adam_eps),
            lr_schedule if lr_schedule is not None else sched.lr_from_config(tc),
            kl_schedule if kl_schedule is not None else sched.kl_from_config(tc),
            steps_per_epoch,
            tc.binarize == "dynamic",
        )

    @cached_property
    def _optimizer_key(self) -> str:
        params = self.model.param_shapes()
        opt_state = jax.eval_shape(self.optimizer.init, params)
        return (structure_key(self.optimizer.init, params)
                + structure_key(self.optimizer.update, params, opt_state, params))

    def _static(self):
        return (self.model, self.lr, self.kl_weight, self.steps_per_epoch, self.binarize)

    def __eq__(self, other):
        if not isinstance(other, TrainStep):
            return NotImplemented
        return self._static() == other._static() and (
            self.optimizer is other.optimizer or self._optimizer_key == other._optimizer_key)

    def __hash__(self):
        return hash((self._static(), self._optimizer_key))

    def init(self, params, hyper: Mapping[str, float] | None = None, model_state=()) -> TrainState:
        """A fresh run's state from ``params``, the hyperparameters and the model's state, in the
        parameters' float type.

        Args:
            params: The model's parameters.
            hyper: Values of the model's hyperparameters and lr by name; missing ones take their
                declared defaults.
            model_state: The model's own state (``Model.init``'s).

        Returns:
            The ``TrainState`` at step 0.

        Raises:
            InputError: A name the model does not declare, or a value out of its range.
        """
        dtype = jax.tree.leaves(params)[0].dtype
        return TrainState(params, self.optimizer.init(params), jnp.zeros((), jnp.int32),
                          hyper_of(self.model, hyper or {}).as_arrays(dtype), model_state)

    def init_schedules(self) -> ScheduleStates:
        """The schedules' initial states.

        Returns:
            ``ScheduleStates`` of the lr and KL-weight schedules.
        """
        return ScheduleStates(self.lr.init(), self.kl_weight.init())

    def values(self, state: TrainState, schedules: ScheduleStates) -> Hyper:
        """The hyperparameters at the state's step: lr and the KL weight (where the model reads one)
        each times its schedule's factor, the others as they are.

        Args:
            state: The train state (its ``step`` and ``hyper``).
            schedules: The schedules' states.

        Returns:
            The ``Hyper`` the loss reads at this step.
        """
        scheduled = {LR.name: state.hyper.lr * self.lr.value(schedules.lr, state.step, self.steps_per_epoch)}
        if KL_WEIGHT.name in state.hyper:
            scheduled[KL_WEIGHT.name] = state.hyper.kl_weight * self.kl_weight.value(
                schedules.kl_weight, state.step, self.steps_per_epoch)
        return state.hyper.replace(**scheduled)

    def update_schedules(self, schedules: ScheduleStates, val_loss: float, hyper: Hyper) -> ScheduleStates:
        """The schedule states after an epoch whose validation loss was ``val_loss`` (on the host).

        Args:
            schedules: The states before the epoch's update.
            val_loss: The epoch's validation loss.
            hyper: The run's hyperparameters.

        Returns:
            The new ``ScheduleStates``.
        """
        return ScheduleStates(self.lr.update(schedules.lr, val_loss, hyper[LR.name]),
                              self.kl_weight.update(schedules.kl_weight, val_loss, _kl_weight(hyper)))

    def finished(self, schedules: ScheduleStates, epochs_done: int, hyper: Hyper) -> bool:
        """Whether a schedule ends the run after ``epochs_done`` epochs (e.g. the plateau's lr fell below stop_lr).

        Args:
            schedules: The schedules' states.
            epochs_done: Epochs trained so far.
            hyper: The run's hyperparameters.

        Returns:
            True when either schedule is finished.
        """
        return (self.lr.finished(schedules.lr, epochs_done, hyper[LR.name])
                or self.kl_weight.finished(schedules.kl_weight, epochs_done, _kl_weight(hyper)))

    def __call__(self, state: TrainState, batch, key, schedules: ScheduleStates | None = None):
        """One step on ``batch`` (an array or a pytree of them) with the model's randomness (and the
        binarisation of its inputs) drawn from ``key``. Pure: jit it, or let ``train_epoch`` scan it.
        Returns ``(state, metrics)``: ``{"loss", ...}``, the rest what the model's loss reports."""
        return self.with_noise(state, *self.draw(key, batch), schedules)

    def draw(self, key, batch):
        """The step's randomness drawn from ``key`` ahead of it: ``(batch, noise)``, the batch with its
        inputs binarised (with ``binarize``) and the model's noise (``Model.draw_noise``; the key itself
        where ``model.draws_noise_ahead`` says no). ``with_noise`` takes them; ``train_epoch`` draws a
        chunk of steps' at once (one vmapped call).

        Args:
            key: The step's key.
            batch: The batch.

        Returns:
            ``(batch, noise)``.
        """
        if self.binarize:
            key, binarize_key = jax.random.split(key)
            batch = with_inputs(batch, sample_binary(binarize_key, inputs(batch)))
        return batch, (self.model.draw_noise(key, batch) if draws_noise_ahead(self.model) else key)

    def with_noise(self, state: TrainState, batch, eps,
                   schedules: ScheduleStates | None = None) -> tuple[TrainState, dict]:
        """The step with the model's noise ``eps`` given (``Model.loss_with_noise``), the batch used as
        it is: what ``draw`` drew (the epoch), or noise shared with another implementation (the parity tests).

        Args:
            state: The train state.
            batch: The batch (an array or a pytree of them), already binarised where that applies.
            eps: The noise, as the model's ``draw_noise`` draws it.
            schedules: The schedules' states; None for their initial states.

        Returns:
            ``(state, metrics)``, as ``__call__``.
        """
        loss = self.model.loss_with_noise if draws_noise_ahead(self.model) else self.model.loss  # eps is the key
        return self._update(state, schedules, lambda params, hyper: loss(params, state.model_state, batch, eps, hyper))

    def _update(self, state: TrainState, schedules, loss_fn):
        """params <- params - lr_t * optimizer(grad loss_fn(params, hyper_t)); the model's state as the loss
        returns it."""
        hyper = self.values(state, self.init_schedules() if schedules is None else schedules)
        lr = hyper.lr

        def objective(params):
            loss, metrics, model_state = loss_fn(params, hyper)
            return loss, (_in_order(loss, metrics), model_state)  # ordered before grad's pytree pass sorts a dict

        (_, (metrics, model_state)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        direction, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, jax.tree.map(lambda d: -lr * d, direction))
        state = state._replace(params=params, opt_state=opt_state, step=state.step + 1, model_state=model_state)
        return state, metrics


def _in_order(loss, metrics: dict) -> OrderedDict:
    """``{"loss": loss, **metrics}`` in the order the model wrote them: an OrderedDict keeps its keys'
    order through jit, scan and vmap (a dict's are sorted), so records and epoch lines read as the model
    reports (the VAE's: loss, recon, kl)."""
    return OrderedDict([("loss", loss), *metrics.items()])


def _kl_weight(hyper: Mapping[str, float]):
    """The KL weight a KL schedule scales: the model's, or its default where the model has none."""
    return hyper.get(KL_WEIGHT.name, KL_WEIGHT.default)


def model_hyperparameters(model: Model) -> tuple[Hyperparameter, ...]:
    """Everything ``model``'s train state carries as data: its declared hyperparameters, then lr.

    Args:
        model: The model.

    Returns:
        The hyperparameters, lr last.
    """
    return (*(h for h in model.hyperparameters if h.name != LR.name), LR)


def hyper_of(model: Model, values: Mapping[str, float] | TrainConfig) -> Hyper:
    """The values of ``model``'s hyperparameters and lr (Python floats), from a ``TrainConfig`` or a
    mapping by name; missing ones take their declared defaults.

    Args:
        model: The model whose declaration names them.
        values: A ``TrainConfig`` (``TrainConfig.hyper_values``), or values by name.

    Returns:
        A ``Hyper`` in ``model_hyperparameters`` order.

    Raises:
        InputError: A name the model does not declare, or a value out of its range.
    """
    declared = model_hyperparameters(model)
    if isinstance(values, TrainConfig):
        return Hyper(values.hyper_values(declared))
    unknown = [name for name in values if name not in {h.name for h in declared}]
    if unknown:
        raise InputError(f"{unknown[0]}: {type(model).__name__} declares no such hyperparameter "
                         f"(it has {', '.join(h.name for h in declared)})")
    return Hyper({h.name: h.check(values.get(h.name, h.default)) for h in declared})


def check_hyperparameters(model: Model, train_config: TrainConfig) -> None:
    """ValueError naming the field when ``train_config`` sets a hyperparameter ``model`` does not read
    (``Model.hyperparameters``): a value that would silently do nothing. A ``VAEConfig``'s model
    keeps its config's own wording (``config.check_configs``).

    Args:
        model: The model.
        train_config: The config to check against it.

    Raises:
        InputError: A value for a hyperparameter the model does not declare (a field away from its
            default, or a ``hyper`` entry), a value out of its declared range, or ``kl_warmup_epochs``
            for a model without a KL weight.
    """
    declared = model_hyperparameters(model)
    reads = ", ".join(h.name for h in declared)
    names = {h.name for h in declared}
    from_config = getattr(model, "config", None) is not None
    if from_config:  # a VAEConfig's own rules and wording (config files of every version hold all three fields)
        check_configs(model.config, train_config)
    # the fields a VAEConfig's model leaves to check_configs: its family's (a beta-TCVAE's has no kl_weight)
    worded = {h.name for h in getattr(model, "family_hyperparameters", ())} if from_config else set()
    for own in (h for h in OWN_HYPERPARAMETERS if h.name not in names and h.name not in worded):
        if getattr(train_config, own.name) != own.default:
            raise InputError(f"{own.name}={getattr(train_config, own.name)!r}: {type(model).__name__}'s loss does not "
                             f"read it (it reads {reads}); leave it at its default")
    for name in (n for n in train_config.hyper if n not in names):
        raise InputError(f"hyper[{name!r}]: {type(model).__name__} declares no such hyperparameter (it has {reads})")
    train_config.hyper_values(declared)
    if train_config.kl_warmup_epochs > 0 and KL_WEIGHT.name not in names:
        raise InputError(f"kl_warmup_epochs: {type(model).__name__}'s loss has no KL weight to warm up")


class NonFiniteError(NumericalError):
    """Training produced a non-finite loss or parameter; ``state`` is the last good FitState.

    Args:
        message: What went non-finite, and where.
        state: The last good ``FitState``.
    """

    def __init__(self, message: str, state: "FitState"):
        super().__init__(message)
        self.state = state


def epoch_plan(key: jax.Array, n: int, batch_size: int, drop_last: bool = False) -> tuple[EpochIndices, jax.Array]:
    """The batches of one epoch and one noise key per step, both drawn from ``key``: ``(EpochIndices,
    step_keys)``, the partial tail batch (when kept) last. Training, evaluation and the parity tests share it.

    Args:
        key: The epoch's PRNG key.
        n: Rows in the data.
        batch_size: Rows per batch.
        drop_last: Whether the partial tail batch is dropped.

    Returns:
        ``(EpochIndices, step_keys)``: the rows of the full batches and of the tail, and one key per
        step (at least one).
    """
    perm_key, noise_key = jax.random.split(key)
    n_steps = steps_per_epoch(n, batch_size, drop_last)
    return epoch_indices(perm_key, n, batch_size, drop_last), jax.random.split(noise_key, max(n_steps, 1))


def _concat(*trees):
    return jax.tree.map(lambda *a: jnp.concatenate(a), *trees)


def _in_chunks(run, carry, xs, chunk: int):
    """``run(carry, xs)`` over ``xs`` (every leaf's leading axis) in chunks of ``chunk`` rows: a ``lax.scan``
    over the whole chunks, then one call on the rest; the outputs concatenated. One call, no loop, when
    ``xs`` fits in one chunk."""
    n = jax.tree.leaves(xs)[0].shape[0]
    if n <= chunk:
        return run(carry, xs)
    whole = n - n % chunk
    grouped = jax.tree.map(lambda a: a[:whole].reshape(whole // chunk, chunk, *a.shape[1:]), xs)
    carry, outputs = jax.lax.scan(run, carry, grouped)
    outputs = jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), outputs)
    if n % chunk:
        carry, more = run(carry, jax.tree.map(lambda a: a[whole:], xs))
        outputs = _concat(outputs, more)
    return carry, outputs


def _tree_all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


# Where compiled epochs report progress: each call that trains registers its ``progress`` under a number
# of its own (``_progress_to``), which the program takes as data and hands back with every report; so a new
# hook never makes a new program (a static callable would), and two fits never share one.
_progress_hooks: dict[int, Callable] = {}
_progress_numbers = itertools.count(1)


def _report_progress(number, model, step, running_loss) -> None:
    progress = _progress_hooks.get(int(number))
    if progress is not None:
        progress(int(step), float(running_loss), int(model))


@contextlib.contextmanager
def _progress_to(progress: Callable | None):
    """``progress`` registered for the compiled epochs' reports while the block runs; yields its number
    (an int32 array, the program's argument), or None for no progress."""
    if progress is None:
        yield None
        return
    number = next(_progress_numbers)
    _progress_hooks[number] = progress
    try:
        yield jnp.asarray(number, jnp.int32)
    finally:
        del _progress_hooks[number]


def _train_epoch(train_step: TrainStep, state: TrainState, data, key, schedules: ScheduleStates, batch_size: int,
                 drop_last: bool, report_every: int | None, batch_sharding, reporter=None):
    """``train_epoch``'s computation, for tracing inside other programs (``models_epoch``). ``reporter``:
    ``(progress number, model index)`` that each report every ``report_every`` steps names."""
    batches, step_keys = epoch_plan(key, batch_size_of(data), batch_size, drop_last)

    def body(carry, xs):
        state, loss_sum, step = carry
        batch, noise = xs
        if batch_sharding is not None:
            batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
        state, metrics = train_step.with_noise(state, batch, noise, schedules)
        return (state, loss_sum + metrics["loss"], step + 1), metrics

    def drawn_chunk(carry, xs):
        rows, step_keys = xs
        # every step's noise in one vmapped draw: XLA's CPU threefry is a loop of ~17 kernels per round,
        # paid once per chunk instead of once per step, and the numbers are the same as step by step
        drawn = jax.vmap(train_step.draw)(step_keys, take(data, rows))
        return jax.lax.scan(body, carry, drawn, unroll=SCAN_UNROLL)

    def chunk_of_steps(carry, xs):
        carry, metrics = _in_chunks(drawn_chunk, carry, xs, NOISE_CHUNK)
        if report_every is not None and reporter is not None:
            _, loss_sum, step = carry
            jax.debug.callback(_report_progress, *reporter, step, loss_sum / step)
        return carry, metrics

    carry = (state, jnp.zeros((), inputs(data).dtype), jnp.zeros((), jnp.int32))
    n_full = batches.full.shape[0]
    # With progress, the steps run in chunks of report_every rounded up to whole noise chunks, and the
    # report comes between chunks (no per-step test in the loop): the noise is drawn in the same chunks
    # with or without reports, so the numbers are the same, bit for bit.
    chunk = max(1, n_full if report_every is None else min(NOISE_CHUNK * -(-report_every // NOISE_CHUNK), n_full))
    (state, _, _), metrics = _in_chunks(chunk_of_steps, carry, (batches.full, step_keys[:n_full]), chunk)
    if batches.tail.shape[0]:
        state, tail_metrics = train_step(state, take(data, batches.tail), step_keys[-1], schedules)
        metrics = _concat(metrics, jax.tree.map(lambda a: a[None], tail_metrics))
    return state, metrics, _tree_all_finite(state.params)


_train_epoch_jit = jax.jit(_train_epoch, static_argnames=("train_step", "batch_size", "drop_last", "report_every",
                                                          "batch_sharding"), donate_argnames="state")


def train_epoch(train_step: TrainStep, state: TrainState, data, key: jax.Array, schedules: ScheduleStates | None = None,
                *, batch_size: int, drop_last: bool = False, progress: Callable | None = None,
                progress_every: int = 20, batch_sharding=None) -> tuple[TrainState, dict, jax.Array]:
    """One shuffled pass of ``train_step`` over ``data`` (an array or a pytree of arrays, on the device)
    as a single compiled call.

    The state is donated (3-4% faster per epoch on CPU): pass a copy to keep it.

    Args:
        train_step: The step to run.
        state: The train state before the epoch (donated).
        data: An array or a pytree of arrays with one row per example, on the device.
        key: Draws the batches' order and each step's noise.
        schedules: The schedules' states; None for their initial states.
        batch_size: Rows per batch.
        drop_last: Whether the partial tail batch is dropped.
        progress: Called on the host as ``progress(step, running_mean_loss, 0)`` (0: the model's index)
            every ``progress_every`` steps (and after the last full batch); None for no reports. With
            ``progress``, the call returns once the epoch is done (every report made).
        progress_every: Steps between reports, rounded up to a multiple of ``NOISE_CHUNK`` (32).
        batch_sharding: Splits each full batch over devices (``jaxvae.parallel``); None for one device.

    Returns:
        ``(state, metrics, finite)``: the new state, per-batch metrics (``loss`` and the model's; the
        partial batch last) and whether every parameter is finite.

    Raises:
        InputError: ``train_step.steps_per_epoch`` is not the number of steps ``data`` makes.
    """
    n = batch_size_of(data)
    expected = steps_per_epoch(n, batch_size, drop_last)
    if train_step.steps_per_epoch not in (None, expected):
        raise InputError(f"the train step was built for {train_step.steps_per_epoch} steps per epoch; "
                         f"{n} samples in batches of {batch_size} make {expected}")
    schedules = train_step.init_schedules() if schedules is None else schedules
    with _progress_to(progress) as number:
        result = _train_epoch_jit(train_step, state, data, key, schedules, batch_size=batch_size,
                                  drop_last=drop_last, report_every=progress_every if progress is not None else None,
                                  batch_sharding=batch_sharding,
                                  reporter=None if number is None else (number, jnp.zeros((), jnp.int32)))
        return result if number is None else jax.block_until_ready(result)  # every report made while registered


def _eval_epoch(model: Model, params, model_state, data, key, batch_size: int, hyper: Hyper):
    """``eval_epoch``'s computation, for tracing inside other programs (``models_epoch``). The model's
    state is read, never updated."""
    batches, step_keys = epoch_plan(key, batch_size_of(data), batch_size)

    def batch_metrics(rows, step_key):
        loss, metrics, _ = model.loss(params, model_state, take(data, rows), step_key, hyper)
        return _in_order(loss, metrics)

    n_full = batches.full.shape[0]
    # The full batches in groups (lax.map's batch_size vmaps them): their noise in one call, their matmuls as one.
    group = max(1, min(n_full, EVAL_GROUP_ROWS // batch_size))
    metrics = jax.lax.map(lambda xs: batch_metrics(*xs), (batches.full, step_keys[:n_full]), batch_size=group)
    if batches.tail.shape[0]:
        metrics = _concat(metrics, jax.tree.map(lambda a: a[None], batch_metrics(batches.tail, step_keys[-1])))
    return metrics


def eval_epoch(params, data, key: jax.Array, model: Model | VAEConfig, batch_size: int = 128, *,
               hyper: Mapping[str, float] | TrainConfig | None = None, model_state=()) -> dict:
    """Per-batch loss and the model's metrics (the VAE's recon and KL) over every row of ``data`` as one
    compiled call (the last batch may be partial: ``per_image_mean`` weighs batches by rows). As the
    blog's validation loop, the noise and the batches' order are drawn from ``key``.

    Args:
        params: The model's parameters.
        data: An array or a pytree of arrays with one row per example.
        key: Draws the batches' order and the noise.
        model: The model, or a ``VAEConfig``.
        batch_size: Rows per batch (at most the number of rows).
        hyper: The model's hyperparameters (the KL weight, the Gaussian's sigma): a ``TrainConfig``,
            or values by name; None, or a missing name, for the declared defaults.
        model_state: The model's own state (read, never updated).

    Returns:
        A dict of per-batch metrics: ``loss`` and the model's.

    Raises:
        InputError: A hyperparameter the model does not declare, or one out of range.
    """
    model = as_model(model)
    return _eval_epoch_jit(model, params, model_state, data, key, min(batch_size, batch_size_of(data)),
                           hyper_of(model, {} if hyper is None else hyper))


_eval_epoch_jit = jax.jit(_eval_epoch, static_argnames=("model", "batch_size"))


def per_image_mean(per_batch, n: int, batch_size: int) -> float:
    """The mean over ``n`` rows of per-batch means from ``eval_epoch`` (full batches, then the rest).

    Args:
        per_batch: One mean per batch.
        n: Rows in the data.
        batch_size: Rows per batch.

    Returns:
        The mean per row.
    """
    n_full, tail = batch_counts(n, min(batch_size, n), drop_last=False)
    weights = np.asarray([min(batch_size, n)] * n_full + ([tail] if tail else []), np.float64)
    return float(np.dot(np.asarray(per_batch, np.float64), weights) / n)


def _over_models(fn, n_models: int, model_axis: str | None = None):
    """``jax.vmap(fn)`` over a leading model axis, split over the mesh axis ``model_axis`` when given; for
    one model, ``fn`` on the squeezed arguments (a plain program)."""
    if n_models > 1:
        return jax.vmap(fn, spmd_axis_name=model_axis)

    def one(*args):
        return jax.tree.map(lambda a: a[None], fn(*jax.tree.map(lambda a: a[0], args)))

    return one


@partial(jax.jit, static_argnames=("train_step", "batch_size", "drop_last", "report_every", "batch_sharding",
                                   "model_axis"), donate_argnames=("states", "keys"))
def models_epoch(train_step: TrainStep, states: TrainState, keys, active, schedules: ScheduleStates, data, val_data, *,
                 batch_size: int, drop_last: bool = False, report_every: int | None = None, batch_sharding=None,
                 model_axis: str | None = None, progress_to=None):
    """One epoch of every model as one compiled call: training then validation, each as a lone fit runs it.

    Model i splits ``keys[i]`` into its next loop key and its training and validation keys; one not
    ``active``, or whose epoch went non-finite, keeps its state and key. ``states`` and ``keys`` are
    donated.

    Args:
        train_step: The step every model runs.
        states: The models' train states, every leaf with a leading model axis.
        keys: Each model's loop key, ``[models, 2]``.
        active: Which models train this epoch, ``[models]`` booleans.
        schedules: The schedules' states, stacked along the model axis.
        data: The training data, on the device.
        val_data: The validation data, on the device.
        batch_size: Rows per batch.
        drop_last: Whether the partial tail batch of training is dropped.
        report_every: Steps between progress reports; None for none.
        batch_sharding: Splits each full batch over devices; None for one device.
        model_axis: The mesh axis of ``batch_sharding`` that the models are split over
            (``DeviceMesh.model_axis``); None when every device holds every model. The metrics come
            back whole on every device.
        progress_to: The number a ``progress`` hook is registered under (``_progress_to``): every
            ``report_every`` steps each model reports to it with its index; None for no reports.

    Returns:
        ``(states, keys, metrics, val_metrics, finite, values)``: per-batch metrics ``[models, batches]``,
        whether each model's parameters are finite, and its starting (lr, kl_weight).
    """
    def one(state, key, active, schedules, index):
        next_key, train_key, val_key = jax.random.split(key, 3)
        values = train_step.values(state, schedules)
        new, metrics, finite = _train_epoch(train_step, state, data, train_key, schedules, batch_size, drop_last,
                                            report_every, batch_sharding,
                                            None if progress_to is None else (progress_to, index))
        val = _eval_epoch(train_step.model, new.params, new.model_state, val_data, val_key, batch_size, state.hyper)
        keep_new = active & finite & jnp.all(jnp.isfinite(metrics["loss"]))
        state = jax.tree.map(lambda a, b: jnp.where(keep_new, a, b), new, state)
        return state, jnp.where(keep_new, next_key, key), metrics, val, finite, values

    states, keys, *reported = _over_models(one, keys.shape[0], model_axis)(states, keys, active, schedules,
                                                                          jnp.arange(keys.shape[0]))
    if model_axis is not None:  # small: every process reads every model's numbers
        reported = jax.lax.with_sharding_constraint(reported, NamedSharding(batch_sharding.mesh, PartitionSpec()))
    return (states, keys, *reported)


# --------------------------------------------------------------------------- the state of N models


@dataclass
class FitState:
    """Everything needed to continue one model's run exactly: checkpoints save and restore this.

    Attributes:
        train_state: Parameters, optimizer state, step and hyperparameters.
        schedules: The schedules' host-side states.
        key: The loop key the next epoch splits.
        epoch: Epochs done.
        history: One record per epoch done.
    """

    train_state: TrainState
    schedules: ScheduleStates
    key: jax.Array
    epoch: int = 0
    history: list[dict] = field(default_factory=list)

    @property
    def params(self):
        """The model's parameters (``train_state.params``)."""
        return self.train_state.params


def init_fit_state(train_step: TrainStep, train_config: TrainConfig, *, params=None, dtype=jnp.float32) -> FitState:
    """A fresh run of ``train_config`` (its seed and hyperparameters), or from the given ``params``.

    Args:
        train_step: Gives the model, the optimizer and the schedules.
        train_config: Gives the seed and the hyperparameters.
        params: Starting parameters; None for the model's initialisation from the seed.
        dtype: The float type of freshly initialised parameters.

    Returns:
        The ``FitState`` at epoch 0.
    """
    init_key, loop_key = jax.random.split(jax.random.PRNGKey(train_config.seed))
    fresh_params, model_state = train_step.model.init(init_key, dtype)
    params = fresh_params if params is None else params
    return FitState(train_step.init(params, hyper_of(train_step.model, train_config), model_state),
                    train_step.init_schedules(),
                    loop_key)


def _stack(trees):
    """Pytrees of the same structure as one, every leaf with a leading axis over them (on the device)."""
    return jax.tree.map(lambda *leaves: jnp.stack([jnp.asarray(leaf) for leaf in leaves]), *trees)


@dataclass
class ModelsState:
    """The state of N models trained together: their train states stacked along a leading axis, and
    per model what its ``FitState`` holds besides, and the message of a model stopped non-finite.

    Attributes:
        train_state: Every leaf ``[n_models, ...]``.
        keys: Each model's loop key, ``[n_models, 2]``.
        schedules: Each model's schedule states.
        epochs: Each model's epochs done.
        histories: Each model's records.
        errors: Each model's non-finite message, or None.
    """

    train_state: TrainState  # every leaf [n_models, ...]
    keys: jax.Array  # [n_models, 2]: each model's loop key
    schedules: list[ScheduleStates]
    epochs: list[int]
    histories: list[list[dict]]
    errors: list[str | None] = field(default_factory=list)

    def __post_init__(self):
        if not self.errors:
            self.errors = [None] * len(self.epochs)

    @property
    def num_models(self) -> int:
        """How many models are trained together."""
        return len(self.epochs)

    def schedule_arrays(self) -> ScheduleStates:
        """Every model's schedule states stacked along the model axis, as ``models_epoch`` takes them
        (host values: one transfer per leaf).

        Returns:
            ``ScheduleStates`` whose leaves have a leading model axis.
        """
        return jax.tree.map(lambda *leaves: jnp.asarray(np.stack([np.asarray(v) for v in leaves])), *self.schedules)

    def fit_state(self, i: int) -> FitState:
        """Model ``i``'s ``FitState`` (new arrays: what ``fit(state=...)`` and checkpoints take).

        Args:
            i: The model's index.

        Returns:
            The model's ``FitState``.
        """
        return FitState(jax.tree.map(lambda leaf: leaf[i], self.train_state), self.schedules[i], self.keys[i],
                        self.epochs[i], list(self.histories[i]))

    @classmethod
    def stack(cls, states: Sequence[FitState], errors: Sequence[str | None] | None = None) -> "ModelsState":
        """The state of the models whose ``FitState``s are given (from checkpoints, say).

        Args:
            states: One ``FitState`` per model, of one architecture.
            errors: Each model's non-finite message, or None; None for no errors.

        Returns:
            The ``ModelsState``.
        """
        return cls(_stack([s.train_state for s in states]), _stack([s.key for s in states]),
                   [s.schedules for s in states], [s.epoch for s in states], [list(s.history) for s in states],
                   list(errors) if errors is not None else [])


@dataclass
class FitResult:
    """``params`` and ``history`` of the run, the ``state`` to resume from, and why it stopped
    ("max_epochs" or "schedule": the lr schedule's end, e.g. the lr fell below ``stop_lr``).

    Attributes:
        params: The trained parameters.
        history: One record (a dict) per epoch.
        state: The ``FitState`` to resume from.
        stop_reason: ``"max_epochs"`` or ``"schedule"``.
    """

    params: Any
    history: list[dict]
    state: FitState
    stop_reason: str


@dataclass
class ModelsResult:
    """The ``state`` of the N models and per model why it stopped: "max_epochs", "schedule" (its lr
    schedule ended) or "non_finite" (``state.errors[i]`` says where).

    Attributes:
        state: The models' ``ModelsState``.
        stop_reasons: Per model, ``"max_epochs"``, ``"schedule"`` or ``"non_finite"``.
    """

    state: ModelsState
    stop_reasons: list[str]

    @property
    def histories(self) -> list[list[dict]]:
        """Each model's records (``state.histories``)."""
        return self.state.histories

    @property
    def params(self):
        """Every model's parameters, stacked: each leaf ``[n_models, ...]``."""
        return self.state.train_state.params

    @property
    def errors(self) -> list[str | None]:
        """Each model's non-finite message, or None (``state.errors``)."""
        return self.state.errors

    def fit_result(self, i: int) -> FitResult:
        """Model ``i`` as the ``FitResult`` of its lone ``fit``.

        Args:
            i: The model's index.

        Returns:
            The model's ``FitResult``.
        """
        state = self.state.fit_state(i)
        return FitResult(state.params, state.history, state, self.stop_reasons[i])


# --------------------------------------------------------------------------- the host loop


def _non_finite_message(losses: np.ndarray, params_finite, epoch: int, lr: float) -> str | None:
    """What went non-finite in ``epoch`` (counted from 1): the first bad step, or a parameter; None if nothing."""
    if bool(params_finite) and np.all(np.isfinite(losses)):
        return None
    bad = np.flatnonzero(~np.isfinite(losses))
    where = f"step {int(bad[0]) + 1} of {losses.size}" if bad.size else f"the last of {losses.size} steps (a parameter)"
    return (f"non-finite loss or parameter in epoch {epoch}, {where} (lr {lr:g}); "
            "training stopped, the last good state is kept")


def _epoch_record(epoch: int, metrics, val, n_val: int, batch_size: int, scheduled: dict, seconds: float) -> dict:
    """One line of the history: the training metrics as the blog reports them (the mean of the
    per-batch means) and the validation metrics as the mean over every validation image; the
    metrics are whatever the model's loss returns (the VAE's: loss, recon, kl); then the scheduled
    hyperparameters' values (lr, and the KL weight where the model has one)."""
    return {"epoch": epoch, **{f"train_{k}": float(np.mean(np.asarray(v, np.float64))) for k, v in metrics.items()},
            **{f"val_{k}": per_image_mean(v, n_val, batch_size) for k, v in val.items()},
            **scheduled, "seconds": seconds}


def given_model(model: Model | VAEConfig | None, vae_config: VAEConfig | None) -> Model | VAEConfig:
    """``fit``'s model as given: ``model`` or ``vae_config`` (at most one), or else the blog's ``VAEConfig()``.

    Args:
        model: The model, or None.
        vae_config: A ``VAEConfig``, or None.

    Returns:
        The model or config to train.

    Raises:
        InputError: Both are given.
    """
    if model is not None and vae_config is not None:
        raise InputError("give model or vae_config, not both")
    return model if model is not None else vae_config if vae_config is not None else VAEConfig()


def check_batchable(train_configs: Sequence[TrainConfig]) -> None:
    """ValueError unless the configs differ only in what is data of the compiled step: the
    hyperparameters and the seed (one program trains them together).

    Args:
        train_configs: The configs, at least one.

    Raises:
        InputError: Two configs differ in a field other than the hyperparameters and the seed; the
            message names it.
    """
    first = train_configs[0]
    free = {*(h.name for h in OWN_HYPERPARAMETERS), "hyper", "seed"}
    for tc in train_configs[1:]:
        for name in (f for f in first.__dataclass_fields__ if f not in free):
            if getattr(tc, name) != getattr(first, name):
                raise InputError(f"models trained together must share {name} (got {getattr(first, name)!r} and "
                                 f"{getattr(tc, name)!r}); only {', '.join(sorted(free))} may differ")


def _placement_asked(mesh, data_parallel):
    """The one placement asked for, of ``fit_models``' ``mesh`` and ``data_parallel``; InputError for both."""
    if mesh is None:
        return data_parallel
    if not (isinstance(data_parallel, str) and data_parallel == "auto"):
        raise InputError(f"mesh={mesh!r} and data_parallel={data_parallel!r}: give one of them")
    return mesh


def fit_models(
    train_x,
    val_x=None,
    *,
    model: Model | VAEConfig | None = None,
    train_configs: Sequence[TrainConfig] = (TrainConfig(),),
    optimizer: optax.GradientTransformation | None = None,
    lr_schedule=None,
    kl_schedule=None,
    state: ModelsState | None = None,
    callbacks: Sequence[Callable[[ModelsState, list], None]] = (),
    progress: Callable | None = None,
    progress_every: int = 20,
    data_parallel: DataParallel | None | str = "auto",
    vae_config: VAEConfig | None = None,
    mesh: Mesh | DeviceMesh | tuple[int, int] | str | None = None,
) -> ModelsResult:
    """Train N models of one architecture together, model i as ``fit`` with ``train_configs[i]``
    would: per epoch one compiled call for all, then each model's record and schedules.

    A model whose epoch goes non-finite stops at its last good state (message in ``state.errors[i]``)
    while the others go on; nothing is raised.

    Args:
        train_x: The training data, as for ``fit``.
        val_x: The validation data, as for ``fit``; None for the training data.
        model: As for ``fit``.
        train_configs: One config per model; they may differ in the hyperparameters and the seed only
            (``check_batchable``).
        optimizer: As for ``fit``.
        lr_schedule: As for ``fit``.
        kl_schedule: As for ``fit``.
        state: A ``ModelsResult.state``, or ``ModelsState.stack`` of checkpoints, to resume exactly; it
            is copied, never changed.
        callbacks: Each runs as ``callback(state, records)`` after every epoch, ``records[i]`` being
            model i's new record or None when it did not train; ``state`` is the live one, whose arrays
            the next epoch reuses (keep ``state.fit_state(i)``, a copy).
        progress: As for ``fit``: every model reports, ``progress(step, running_mean_loss, i)`` for model i.
        progress_every: As for ``fit``.
        data_parallel: As for ``fit``; give this or ``mesh``.
        vae_config: As for ``fit``.
        mesh: Where the models and batches go (``jaxvae.parallel.plan_mesh``): a
            ``jax.sharding.Mesh`` with axes ``("model", "data")``, a shape ``(model, data)`` such as
            ``(4, 2)`` or ``"4x2"``, or a ``DeviceMesh``; the models are split over the model axis
            (its size must divide their number), each batch over the data axis. None for
            ``data_parallel``, whose ``"auto"`` puts every device on the model axis when the number
            of models divides by the device count, else splits each batch over the devices.

    Returns:
        The ``ModelsResult``: the models' state and why each stopped.

    Raises:
        InputError: No config, configs that differ in more than the hyperparameters and the seed, a
            hyperparameter the model does not read, data the model cannot take, both ``model`` and
            ``vae_config``, a ``state`` holding another number of models, both ``mesh`` and
            ``data_parallel``, or a mesh the models or the batch size do not split over.
    """
    configs = list(train_configs)
    if not configs:
        raise InputError("train_configs: give at least one TrainConfig")
    check_batchable(configs)
    tc = configs[0]
    model = as_model(given_model(model, vae_config))
    check_data("train_x", train_x, model, tc.batch_size)
    if val_x is not None:
        check_data("val_x", val_x, model)
    step = TrainStep.from_configs(model, tc, steps_per_epoch(batch_size_of(train_x), tc.batch_size, tc.drop_last),
                                  optimizer=optimizer, lr_schedule=lr_schedule, kl_schedule=kl_schedule)
    for other in configs[1:]:
        check_hyperparameters(step.model, other)
    hypers = [hyper_of(step.model, c) for c in configs]
    dtype = jnp.asarray(inputs(train_x)[:1]).dtype
    if state is None:
        state = ModelsState.stack([init_fit_state(step, c, dtype=dtype) for c in configs])
    elif state.num_models != len(configs):
        raise InputError(f"state: holds {state.num_models} models, train_configs {len(configs)}")
    else:
        # The given hyperparameters are the configs' (a resumed state may come from a config edited since).
        train_state = state.train_state._replace(hyper=_stack([h.as_arrays(dtype) for h in hypers]))
        state = ModelsState(train_state, state.keys, list(state.schedules), list(state.epochs),
                            [list(h) for h in state.histories], list(state.errors))

    train_x = jax.tree.map(jnp.asarray, train_x)
    train_x = with_inputs(train_x, prepare_train_data(inputs(train_x), tc))
    if val_x is None:
        val_x = train_x
    else:
        val_x = jax.tree.map(jnp.asarray, val_x)
        val_x = with_inputs(val_x, prepare_eval_data(jnp.asarray(inputs(val_x), dtype), tc))
    placement = plan_mesh(_placement_asked(mesh, data_parallel), n_models=len(configs), batch_size=tc.batch_size)
    batch_sharding = model_axis = None
    arrays = (state.train_state, state.keys)
    if placement is not None:
        batch_sharding, model_axis = placement.batch_sharding, placement.model_axis
        train_x, val_x = placement.replicate((train_x, val_x))
        arrays = placement.split_models(arrays)
    else:
        device = jax.local_devices()[0]  # this process's first device
        # Our own copy: each epoch donates the stacked state, and the caller's must stay usable.
        train_x, val_x, arrays = jax.device_put((train_x, val_x, jax.tree.map(jnp.copy, arrays)), device)
    state.train_state, state.keys = arrays
    report_every = progress_every if progress is not None else None

    def running(i: int) -> bool:
        return (state.errors[i] is None and state.epochs[i] < tc.max_epochs
                and not step.finished(state.schedules[i], state.epochs[i], hypers[i]))

    with _progress_to(progress) as progress_number:  # the hook is this call's alone, until it returns
        while any(active := [running(i) for i in range(len(configs))]):
            start = time.perf_counter()
            per_model = (jnp.asarray(active), state.schedule_arrays())
            if placement is not None:  # split over the model axis as the states are
                per_model = placement.split_models(per_model)
            state.train_state, state.keys, metrics, val, finite, values = models_epoch(
                step, state.train_state, state.keys, *per_model, train_x, val_x,
                batch_size=tc.batch_size, drop_last=tc.drop_last, report_every=report_every, batch_sharding=batch_sharding,
                model_axis=model_axis, progress_to=progress_number)
            metrics, val, finite, values = jax.device_get((metrics, val, finite, values))
            seconds = time.perf_counter() - start
            records: list[dict | None] = [None] * len(configs)
            for i in (i for i in range(len(configs)) if active[i]):
                scheduled = {name: float(values[name][i]) for name in (LR.name, KL_WEIGHT.name) if name in values}
                message = _non_finite_message(metrics["loss"][i], finite[i], state.epochs[i] + 1, scheduled[LR.name])
                if message is not None:
                    state.errors[i] = message
                    continue
                record = _epoch_record(state.epochs[i] + 1, {k: v[i] for k, v in metrics.items()},
                                       {k: v[i] for k, v in val.items()}, batch_size_of(val_x), tc.batch_size,
                                       scheduled, seconds)
                state.schedules[i] = step.update_schedules(state.schedules[i], record["val_loss"], hypers[i])
                state.epochs[i] += 1
                state.histories[i] = [*state.histories[i], record]
                records[i] = record
            for callback in callbacks:
                callback(state, records)
    reasons = ["non_finite" if state.errors[i] else
               "schedule" if step.finished(state.schedules[i], state.epochs[i], hypers[i]) else "max_epochs"
               for i in range(len(configs))]
    return ModelsResult(state, reasons)


def fit(
    train_x,
    val_x=None,
    *,
    model: Model | VAEConfig | None = None,
    train_config: TrainConfig = TrainConfig(),
    optimizer: optax.GradientTransformation | None = None,
    lr_schedule=None,
    kl_schedule=None,
    state: FitState | None = None,
    callbacks: Sequence[Callable[[FitState, dict], None]] = (),
    progress: Callable | None = None,
    progress_every: int = 20,
    data_parallel: DataParallel | None | str = "auto",
    vae_config: VAEConfig | None = None,
    mesh: Mesh | DeviceMesh | tuple[int, int] | str | None = None,
) -> FitResult:
    """Train ``model`` on ``train_x``; the blog's VAE and schedule by default.

    Each epoch: one compiled training pass, one validation pass on ``val_x``, then the schedules see
    the validation loss (the mean over every image). Training stops after ``max_epochs`` or when the lr
    schedule is finished (the plateau: before an epoch whose lr is below ``stop_lr``). This is
    ``fit_models`` with one model.

    Args:
        train_x: Float arrays in [0, 1] ([N, input_dim] for a ``VAEConfig``), or pytrees of arrays
            with one row per example (``(x, y)``, ``{"x": x, "y": y}``): the batches the model's loss
            receives; binarisation and the checks of [0, 1] read ``x``.
        val_x: The validation data, as ``train_x``; None for the training data.
        model: Any ``jaxvae.model.Model`` (``jaxvae.vae.VAEModel.from_modules`` trains your own NNX
            encoder and decoder) or a ``VAEConfig``; None for ``vae_config``, or the blog's VAE.
        train_config: The hyperparameters, seed, batch size, epochs and schedules.
        optimizer: Replaces the Adam that ``train_config`` names (see ``TrainStep``).
        lr_schedule: Replaces the lr schedule that ``train_config`` names.
        kl_schedule: Replaces the KL-weight schedule that ``train_config`` names.
        state: A ``FitState`` (``FitResult.state``, or a checkpoint's) to resume from.
        callbacks: Each runs as ``callback(state, record)`` after every epoch (``print_epoch`` prints
            the record).
        progress: Called from inside the compiled epoch as ``progress(step, running_mean_loss, model)``,
            ``model`` being the model's index (0 here; each of ``fit_models``' models reports with its own).
            It is this call's alone: two fits never report to each other's.
        progress_every: Steps between ``progress`` calls.
        data_parallel: ``"auto"`` splits each batch over all devices when there are several
            (``jaxvae.parallel``); a ``DataParallel`` names them; None stays on one device.
        vae_config: The model as a ``VAEConfig``; give this or ``model``, not both.
        mesh: A mesh to split each batch over, as for ``fit_models`` (its model axis of one device);
            None for ``data_parallel``.

    Returns:
        The ``FitResult``: parameters, history, the state to resume from and why training stopped.

    Raises:
        NonFiniteError: The loss or a parameter went non-finite; it holds the last good state.
        InputError: Both ``model`` and ``vae_config``, a hyperparameter the model does not read, or
            data the model cannot take (``jaxvae.checks``).
    """
    def each_epoch(states: ModelsState, records: list) -> None:
        if records[0] is not None and callbacks:
            fit_state = states.fit_state(0)
            for callback in callbacks:
                callback(fit_state, records[0])

    result = fit_models(train_x, val_x, model=given_model(model, vae_config), train_configs=[train_config],
                        optimizer=optimizer,
                        lr_schedule=lr_schedule, kl_schedule=kl_schedule,
                        state=None if state is None else ModelsState.stack([state]), callbacks=[each_epoch],
                        progress=progress, progress_every=progress_every, data_parallel=data_parallel, mesh=mesh)
    if result.errors[0] is not None:
        raise NonFiniteError(result.errors[0], result.state.fit_state(0))
    return result.fit_result(0)


#: Below this validation KL (nats per image, the whole latent) the posterior has collapsed onto the
#: prior: z carries almost no information about x (the blog's model keeps several nats).
COLLAPSE_KL = 0.1


def posterior_collapsed(record: dict) -> bool:
    """Whether an epoch's record shows posterior collapse (validation KL below ``COLLAPSE_KL``); False
    for a model that reports no KL.

    Args:
        record: One epoch's record.

    Returns:
        True when the record's ``val_kl`` is below ``COLLAPSE_KL``.
    """
    return record.get("val_kl", COLLAPSE_KL) < COLLAPSE_KL


def _metric_words(record: dict) -> str:
    """The validation metrics besides the loss, as the epoch line shows them: ``recon 21.4, KL 2.9``."""
    return ", ".join(f"{'KL' if name == 'kl' else name} {record['val_' + name]:.4f}"
                     for name in (key[4:] for key in record if key.startswith("val_") and key != "val_loss"))


def print_epoch(state: FitState, record: dict) -> None:
    """A ``fit`` callback that prints one line per epoch: the losses, the model's other metrics (the
    VAE's reconstruction and KL terms) and the lr.

    Args:
        state: The run's state (unused: the record holds what is printed).
        record: The epoch's record.
    """
    collapse = "  posterior collapse: KL near 0" if posterior_collapsed(record) else ""
    metrics = f"  ({words})" if (words := _metric_words(record)) else ""
    print(f"epoch {record['epoch']:>3}  train {record['train_loss']:.4f}  val {record['val_loss']:.4f}{metrics}  "
          f"lr {record['lr']:.1e}{collapse}", flush=True)
