"""Training: the one train step, the scanned epoch, and ``fit``, which composes them.

The step is the maths of the paper and nothing else: draw eps, take the gradient of the loss at the
KL weight of this step, move the parameters by the learning rate of this step along the
optimizer's direction (Adam's by default). It is built once (``TrainStep``) from the model config,
an optax transformation and two schedules; all of that is static, and nothing else is. An epoch is
one compiled call: a ``lax.scan`` of the step over batches gathered from a dataset that stays on the
device, then the last partial batch (kept, as the blog does).
"""
from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxvae import schedules as sched
from jaxvae.batching import epoch_indices, steps_per_epoch
from jaxvae.binarize import prepare_eval_data, prepare_train_data, sample_binary
from jaxvae.checks import check_data
from jaxvae.config import TrainConfig, VAEConfig
from jaxvae.losses import objective_loss, sample_eps
from jaxvae.models import init_params
from jaxvae.parallel import DataParallel, make_data_parallel

# Steps per loop iteration in the compiled epoch: amortises loop overhead on CPU (see benchmarks/).
SCAN_UNROLL = 3
# Validation runs this many rows (whole batches) through each matmul: ~16% faster than one batch of
# 128 on CPU, and every batch's loss is the same, bit for bit (its own rows, noise and mean).
EVAL_GROUP_ROWS = 1024


class TrainState(NamedTuple):
    """What the train step updates: the parameters, the optimizer's state and the step count (the
    clock of the schedules)."""

    params: Any
    opt_state: Any
    step: jax.Array


class ScheduleStates(NamedTuple):
    """The host-side states of the lr and KL-weight schedules (``()`` for stateless ones)."""

    lr: Any = ()
    kl_weight: Any = ()


def adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
    """Adam's update direction (no learning rate: the step multiplies by the lr schedule's value),
    PyTorch's defaults. Cached, so equal settings give the same object and share compiled code.

    The coefficients live in the optimizer state as float32 (``inject_hyperparams``), so 1 - b1 is
    rounded as jaxvae 0.1.0 rounded it and a seed reproduces its earlier runs bit for bit.
    """
    return _adam(float(b1), float(b2), float(eps))


@functools.lru_cache(maxsize=None)
def _adam(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
    return optax.inject_hyperparams(optax.scale_by_adam)(b1=b1, b2=b2, eps=eps)


@dataclass(frozen=True)
class TrainStep:
    """One optimisation step: params <- params - lr_t * optimizer(grad loss(params; kl_weight_t)).

    ``optimizer`` is an optax transformation without a learning rate (default: ``adam()``);
    ``lr`` and ``kl_weight`` are schedules (``jaxvae.schedules``; numbers and optax schedules are
    accepted too); ``kl_weight=None`` is the config's constant. ``steps_per_epoch`` lets schedules
    count in epochs; ``binarize`` draws a fresh binary image of each batch (dynamic binarisation).
    Hashable: it is the static argument of the compiled epoch, and equal steps share compiled code.
    """

    config: VAEConfig
    optimizer: optax.GradientTransformation = field(default_factory=adam)
    lr: Any = sched.Plateau()
    kl_weight: Any = None
    steps_per_epoch: int | None = None
    binarize: bool = False

    def __post_init__(self):
        object.__setattr__(self, "lr", sched.as_schedule(self.lr))
        kl = sched.Constant(self.config.kl_weight) if self.kl_weight is None else sched.as_schedule(self.kl_weight)
        if self.config.objective == "iwae" and kl != sched.Constant(1.0):
            raise ValueError("objective='iwae' has no KL weight: leave kl_weight unset (and VAEConfig.kl_weight at 1)")
        object.__setattr__(self, "kl_weight", kl)

    @classmethod
    def from_configs(cls, vae_config: VAEConfig, train_config: TrainConfig, steps_per_epoch: int | None = None, *,
                     optimizer=None, lr_schedule=None, kl_schedule=None) -> "TrainStep":
        """The step a TrainConfig describes; ``optimizer`` and the schedules replace its choices."""
        tc = train_config
        return cls(
            vae_config,
            optimizer if optimizer is not None else adam(tc.b1, tc.b2, tc.adam_eps),
            lr_schedule if lr_schedule is not None else sched.lr_from_config(tc),
            kl_schedule if kl_schedule is not None else sched.kl_from_config(vae_config, tc),
            steps_per_epoch,
            tc.binarize == "dynamic",
        )

    def init(self, params) -> TrainState:
        return TrainState(params, self.optimizer.init(params), jnp.zeros((), jnp.int32))

    def init_schedules(self) -> ScheduleStates:
        return ScheduleStates(self.lr.init(), self.kl_weight.init())

    def values(self, state: TrainState, schedules: ScheduleStates):
        """(lr, kl_weight) at the state's step."""
        return (self.lr.value(schedules.lr, state.step, self.steps_per_epoch),
                self.kl_weight.value(schedules.kl_weight, state.step, self.steps_per_epoch))

    def update_schedules(self, schedules: ScheduleStates, val_loss: float) -> ScheduleStates:
        """The schedule states after an epoch whose validation loss was ``val_loss`` (on the host)."""
        return ScheduleStates(self.lr.update(schedules.lr, val_loss), self.kl_weight.update(schedules.kl_weight, val_loss))

    def finished(self, schedules: ScheduleStates, epochs_done: int) -> bool:
        """Whether a schedule ends the run after ``epochs_done`` epochs (e.g. the plateau's lr fell below stop_lr)."""
        return self.lr.finished(schedules.lr, epochs_done) or self.kl_weight.finished(schedules.kl_weight, epochs_done)

    def __call__(self, state: TrainState, x, key, schedules: ScheduleStates | None = None, recon_sigma=None):
        """One step on batch ``x`` with the noise (and the binarisation) drawn from ``key``.
        Pure: jit it, or let ``train_epoch`` scan it. Returns ``(state, {"loss", "recon", "kl"})``.
        ``recon_sigma`` replaces the config's (a sweep passes each model's value as data)."""
        if self.binarize:
            key, binarize_key = jax.random.split(key)
            x = sample_binary(binarize_key, x)
        return self.with_noise(state, x, sample_eps(key, x.shape[0], self.config, x.dtype), schedules, recon_sigma)

    def with_noise(self, state: TrainState, x, eps, schedules: ScheduleStates | None = None, recon_sigma=None):
        """The step with the reparameterisation noise ``eps`` given (how parity tests share it)."""
        lr, kl_weight = self.values(state, self.init_schedules() if schedules is None else schedules)
        kl_weight = None if self.config.objective == "iwae" else kl_weight
        (loss, aux), grads = jax.value_and_grad(objective_loss, has_aux=True)(state.params, x, eps, self.config,
                                                                             kl_weight, recon_sigma)
        direction, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, jax.tree.map(lambda d: -lr * d, direction))
        return TrainState(params, opt_state, state.step + 1), {"loss": loss, **aux}


class NonFiniteError(FloatingPointError):
    """Training produced a non-finite loss or parameter; ``state`` is the last good FitState."""

    def __init__(self, message: str, state: "FitState"):
        super().__init__(message)
        self.state = state


def epoch_plan(key, n: int, batch_size: int, drop_last: bool = False):
    """The batches of one epoch and one noise key per step, both drawn from ``key``.

    Returns ``(EpochIndices, step_keys)``; step ``i`` draws its eps from ``step_keys[i]`` (the
    partial tail batch, when kept, is the last step). Training and evaluation share this plan, and
    the parity tests use it to replay an epoch step by step.
    """
    perm_key, noise_key = jax.random.split(key)
    batches = epoch_indices(perm_key, n, batch_size, drop_last)
    n_steps = batches.full.shape[0] + (1 if batches.tail.shape[0] else 0)
    return batches, jax.random.split(noise_key, max(n_steps, 1))


def _in_groups(xs, size: int):
    """Split the leading axis of every leaf of ``xs`` into whole groups of ``size``: returns
    ``(grouped, rest)``, grouped leaves ``[n // size, size, ...]``, rest the last ``n % size`` rows."""
    n = jax.tree.leaves(xs)[0].shape[0]
    whole = n - n % size
    grouped = jax.tree.map(lambda a: a[:whole].reshape(whole // size, size, *a.shape[1:]), xs)
    return grouped, jax.tree.map(lambda a: a[whole:], xs)


def _ungroup(grouped):
    """Undo the grouping of ``_in_groups`` on outputs: ``[groups, size, ...]`` -> ``[groups * size, ...]``."""
    return jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), grouped)


def _concat(*trees):
    return jax.tree.map(lambda *a: jnp.concatenate(a), *trees)


def _scan_in_chunks(body, carry, xs, chunk: int, unroll: int = 1, after_chunk=None):
    """``lax.scan(body, carry, xs)``, run as a scan over chunks of ``chunk`` steps when
    ``after_chunk(carry)`` must run between them (progress reports: no per-step test in the loop)."""

    def run(carry, xs):
        carry, outputs = jax.lax.scan(body, carry, xs, unroll=unroll)
        if after_chunk is not None:
            after_chunk(carry)
        return carry, outputs

    n = jax.tree.leaves(xs)[0].shape[0]
    if n <= chunk:  # one chunk: no loop of chunks needed
        return run(carry, xs)
    grouped, rest = _in_groups(xs, chunk)
    carry, outputs = jax.lax.scan(run, carry, grouped)
    outputs = _ungroup(outputs)
    if n % chunk:
        carry, more = run(carry, rest)
        outputs = _concat(outputs, more)
    return carry, outputs


def _tree_all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


@partial(jax.jit, static_argnames=("train_step", "batch_size", "drop_last", "progress", "progress_every",
                                   "batch_sharding"), donate_argnames="state")
def train_epoch(train_step: TrainStep, state: TrainState, data, key, schedules: ScheduleStates, *,
                batch_size: int, drop_last: bool = False, progress: Callable | None = None,
                progress_every: int = 20, batch_sharding=None, recon_sigma=None):
    """One shuffled pass of ``train_step`` over ``data`` (on the device) as a single compiled call.

    Returns the new state, per-batch metrics (``loss``, ``recon``, ``kl``; the partial batch last)
    and whether every parameter is finite. ``progress(step, running_mean_loss)`` is called on the
    host every ``progress_every`` steps (and after the last full batch) when given. The state is
    donated (its buffers become the result's; measured 3-4% faster per epoch on CPU than without):
    pass a copy to keep the old one.
    ``batch_sharding`` (see ``jaxvae.parallel``) splits each full batch over devices.
    ``recon_sigma`` (an array, or None for the config's) is passed to every step (``jaxvae.sweep``).
    """
    expected = steps_per_epoch(data.shape[0], batch_size, drop_last)
    if train_step.steps_per_epoch not in (None, expected):
        raise ValueError(f"the train step was built for {train_step.steps_per_epoch} steps per epoch; "
                         f"{data.shape[0]} samples in batches of {batch_size} make {expected}")
    batches, step_keys = epoch_plan(key, data.shape[0], batch_size, drop_last)

    def report(carry):
        _, loss_sum, step = carry
        jax.debug.callback(progress, step, loss_sum / step)

    def body(carry, xs):
        state, loss_sum, step = carry
        rows, step_key = xs
        x = data[rows]
        if batch_sharding is not None:
            x = jax.lax.with_sharding_constraint(x, batch_sharding)
        state, metrics = train_step(state, x, step_key, schedules, recon_sigma)
        return (state, loss_sum + metrics["loss"], step + 1), metrics

    zero = jnp.zeros((), data.dtype)
    carry = (state, zero, jnp.zeros((), jnp.int32))
    n_full = batches.full.shape[0]
    # With progress, the steps run in chunks of progress_every and the report comes between chunks.
    chunk = max(1, n_full if progress is None else min(progress_every, n_full))
    (state, loss_sum, step), metrics = _scan_in_chunks(body, carry, (batches.full, step_keys[:n_full]), chunk,
                                                       SCAN_UNROLL, None if progress is None else report)
    if batches.tail.shape[0]:
        state, tail_metrics = train_step(state, data[batches.tail], step_keys[-1], schedules, recon_sigma)
        metrics = _concat(metrics, jax.tree.map(lambda a: a[None], tail_metrics))
    return state, metrics, _tree_all_finite(state.params)


@partial(jax.jit, static_argnames=("vae_config", "batch_size", "drop_last"))
def eval_epoch(params, data, key, vae_config: VAEConfig, batch_size: int = 128, drop_last: bool = False, *,
               kl_weight=None, recon_sigma=None):
    """Per-batch loss, recon and KL over ``data`` as one compiled call.

    Like the blog's validation loop it draws fresh noise and shuffles the batches (``key``);
    pass ``key`` to fix both. The batch means are unweighted, as the blog averages them.
    ``kl_weight`` and ``recon_sigma`` replace the config's (arrays: a sweep's per-model values).
    """
    batches, step_keys = epoch_plan(key, data.shape[0], batch_size, drop_last)

    def batch_metrics(rows, eps):
        loss, aux = objective_loss(params, data[rows], eps, vae_config, kl_weight, recon_sigma)
        return {"loss": loss, **aux}

    def group_metrics(rows, keys):
        """Metrics of several batches at once: their noise in one call, their matmuls as one."""
        eps = jax.vmap(lambda k: sample_eps(k, batch_size, vae_config, data.dtype))(keys)
        return jax.vmap(batch_metrics)(rows, eps)

    n_full = batches.full.shape[0]
    group = max(1, min(n_full, EVAL_GROUP_ROWS // batch_size))
    grouped, rest = _in_groups((batches.full, step_keys[:n_full]), group)
    parts = [_ungroup(jax.lax.map(lambda xs: group_metrics(*xs), grouped))]
    if n_full % group:
        parts.append(group_metrics(*rest))
    if batches.tail.shape[0]:
        tail_eps = sample_eps(step_keys[-1], batches.tail.shape[0], vae_config, data.dtype)
        parts.append(jax.tree.map(lambda a: a[None], batch_metrics(batches.tail, tail_eps)))
    return _concat(*parts)


@dataclass
class FitState:
    """Everything needed to continue a run exactly: checkpoints save and restore this."""

    train_state: TrainState
    schedules: ScheduleStates
    key: jax.Array
    epoch: int = 0
    history: list[dict] = field(default_factory=list)

    @property
    def params(self):
        return self.train_state.params


def init_fit_state(train_step: TrainStep, seed: int, *, params=None, dtype=jnp.float32) -> FitState:
    """A fresh run from ``seed`` (or from the given ``params``)."""
    init_key, loop_key = jax.random.split(jax.random.PRNGKey(seed))
    if params is None:
        params = init_params(init_key, train_step.config, dtype)
    return FitState(train_step.init(params), train_step.init_schedules(), loop_key)


@dataclass
class FitResult:
    """``params`` and ``history`` of the run, the ``state`` to resume from, and why it stopped
    ("max_epochs" or "schedule": the lr schedule's end, e.g. the lr fell below ``stop_lr``)."""

    params: Any
    history: list[dict]
    state: FitState
    stop_reason: str


def _non_finite_message(losses: np.ndarray, params_finite, epoch: int, lr: float) -> str | None:
    """What went non-finite in ``epoch`` (counted from 1): the first bad step, or a parameter; None if nothing."""
    if bool(params_finite) and np.all(np.isfinite(losses)):
        return None
    bad = np.flatnonzero(~np.isfinite(losses))
    where = f"step {int(bad[0]) + 1} of {losses.size}" if bad.size else f"the last of {losses.size} steps (a parameter)"
    return (f"non-finite loss or parameter in epoch {epoch}, {where} (lr {lr:g}); "
            "training stopped, the last good state is kept")


def _check_finite(losses: np.ndarray, params_finite, state: FitState, lr: float) -> None:
    """NonFiniteError naming the epoch and the first bad step, holding the last good state."""
    message = _non_finite_message(losses, params_finite, state.epoch + 1, lr)
    if message is not None:
        raise NonFiniteError(message, state)


def _mean(metrics, name: str) -> float:
    return float(np.mean(np.asarray(metrics[name])))


def _epoch_record(epoch: int, metrics, val, lr: float, kl_weight: float, seconds: float) -> dict:
    """One line of the history: the means of an epoch's per-batch training and validation metrics."""
    return {
        "epoch": epoch,
        "train_loss": _mean(metrics, "loss"),
        "train_recon": _mean(metrics, "recon"),
        "train_kl": _mean(metrics, "kl"),
        "val_loss": _mean(val, "loss"),
        "val_recon": _mean(val, "recon"),
        "val_kl": _mean(val, "kl"),
        "lr": lr,
        "kl_weight": kl_weight,
        "seconds": seconds,
    }


# One dispatch for the whole state instead of one per array.
_copy_tree = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree))


def fit(
    train_x,
    val_x=None,
    *,
    vae_config: VAEConfig = VAEConfig(),
    train_config: TrainConfig = TrainConfig(),
    optimizer: optax.GradientTransformation | None = None,
    lr_schedule=None,
    kl_schedule=None,
    state: FitState | None = None,
    callbacks: Sequence[Callable[[FitState, dict], None]] = (),
    progress: Callable | None = None,
    progress_every: int = 20,
    data_parallel: DataParallel | None | str = "auto",
) -> FitResult:
    """Train the VAE on ``train_x`` (float, [N, input_dim]); the blog's schedule by default.

    Each epoch: one compiled training pass, one compiled validation pass on ``val_x`` (on the
    training data when ``val_x`` is None), then the schedules see the validation loss. Training stops
    after ``max_epochs`` or when the lr schedule is finished (the plateau: before an epoch whose lr
    is below ``stop_lr``). ``optimizer``, ``lr_schedule`` and ``kl_schedule`` replace what
    ``train_config`` names (see ``TrainStep``). Pass ``state`` to resume; each of ``callbacks`` runs
    as ``callback(state, record)`` after every epoch (checkpointing, logging). Reproducible from
    ``train_config.seed``. Raises ``NonFiniteError`` (holding the last good state) when a step makes
    the loss or a parameter non-finite.

    ``data_parallel="auto"`` splits each batch over all devices when there are several
    (``jaxvae.parallel``); pass None to stay on one device, or a ``DataParallel`` to choose the mesh.
    """
    tc = train_config
    check_data("train_x", train_x, vae_config, tc.batch_size)
    if val_x is not None:
        check_data("val_x", val_x, vae_config)
    n_steps = steps_per_epoch(len(train_x), tc.batch_size, tc.drop_last)
    step = TrainStep.from_configs(vae_config, tc, n_steps, optimizer=optimizer, lr_schedule=lr_schedule,
                                  kl_schedule=kl_schedule)
    dtype = jnp.asarray(train_x[:1]).dtype
    state = state if state is not None else init_fit_state(step, tc.seed, dtype=dtype)

    train_x = prepare_train_data(jax.device_put(jnp.asarray(train_x)), tc)
    val_x = train_x if val_x is None else prepare_eval_data(jax.device_put(jnp.asarray(val_x, dtype)), tc)
    if data_parallel == "auto":
        data_parallel = make_data_parallel(tc.batch_size)
    batch_sharding = None
    if data_parallel is not None:
        batch_sharding = data_parallel.batch_sharding
        train_x, val_x = data_parallel.replicate((train_x, val_x))
        state = dataclasses.replace(state, train_state=data_parallel.replicate(state.train_state))

    while state.epoch < tc.max_epochs and not step.finished(state.schedules, state.epoch):
        start = time.perf_counter()
        key, train_key, val_key = jax.random.split(state.key, 3)
        lr, kl_weight = (float(v) for v in step.values(state.train_state, state.schedules))
        # The epoch donates its input; a copy (a few MB) keeps the last good state for NonFiniteError.
        train_state, metrics, finite = train_epoch(
            step, _copy_tree(state.train_state), train_x, train_key, state.schedules,
            batch_size=tc.batch_size, drop_last=tc.drop_last, progress=progress, progress_every=progress_every,
            batch_sharding=batch_sharding)
        # Validation is queued behind the training pass at once: no host round trip between the two.
        val = eval_epoch(train_state.params, val_x, val_key, vae_config, tc.batch_size, tc.drop_last)
        losses = np.asarray(metrics["loss"])
        _check_finite(losses, finite, state, lr)
        record = _epoch_record(state.epoch + 1, metrics, val, lr, kl_weight, time.perf_counter() - start)
        schedules = step.update_schedules(state.schedules, record["val_loss"])
        state = FitState(train_state, schedules, key, state.epoch + 1, [*state.history, record])
        for callback in callbacks:
            callback(state, record)
    return FitResult(state.params, state.history, state, "schedule" if step.finished(state.schedules, state.epoch) else "max_epochs")
