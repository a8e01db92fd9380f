"""Training: the one train step, the scanned epoch, the blog's plateau schedule, and ``fit``.

The step is the maths of the paper and nothing else: draw eps, take the gradient of the loss,
apply Adam. An epoch is one compiled call: a ``lax.scan`` of that step over batches gathered from a
dataset that stays on the device, followed by the last partial batch (kept, as the blog does).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxvae.batching import batch_counts, epoch_indices
from jaxvae.binarize import prepare_eval_data, prepare_train_data, sample_binary
from jaxvae.config import TrainConfig, VAEConfig
from jaxvae.losses import objective_loss, sample_eps
from jaxvae.models import init_params
from jaxvae.parallel import DataParallel, make_data_parallel

# Steps per loop iteration in the compiled epoch: amortises loop overhead on CPU (see benchmarks/).
SCAN_UNROLL = 3


class TrainState(NamedTuple):
    params: Any
    opt_state: Any


class NonFiniteError(FloatingPointError):
    """Training produced a non-finite loss or parameter; ``state`` is the last good FitState."""

    def __init__(self, message: str, state: "FitState"):
        super().__init__(message)
        self.state = state


def make_optimizer(train_config: TrainConfig) -> optax.GradientTransformation:
    """Adam with PyTorch's defaults; the learning rate lives in the state so the schedule can change
    it between epochs without recompiling."""
    return optax.inject_hyperparams(optax.adam)(
        learning_rate=train_config.lr, b1=train_config.b1, b2=train_config.b2, eps=train_config.adam_eps
    )


def create_train_state(params: Any, train_config: TrainConfig) -> TrainState:
    return TrainState(params, make_optimizer(train_config).init(params))


def learning_rate(state: TrainState) -> float:
    return float(state.opt_state.hyperparams["learning_rate"])


def with_learning_rate(state: TrainState, lr: float) -> TrainState:
    hyper = state.opt_state.hyperparams
    new_hyper = {**hyper, "learning_rate": jnp.asarray(lr, dtype=jnp.asarray(hyper["learning_rate"]).dtype)}
    return state._replace(opt_state=state.opt_state._replace(hyperparams=new_hyper))


def apply_train_step(state: TrainState, x, eps, vae_config: VAEConfig, train_config: TrainConfig):
    """One Adam step on the loss of batch ``x`` with reparameterisation noise ``eps`` (pure).

    The loss is ``losses.objective_loss``: the blog's ``vae_loss`` unless the config asks for IWAE."""
    (loss, aux), grads = jax.value_and_grad(objective_loss, has_aux=True)(state.params, x, eps, vae_config)
    updates, opt_state = make_optimizer(train_config).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(params, opt_state), {"loss": loss, **aux}


def _step_from_key(state, x, key, vae_config, train_config):
    if train_config.binarize == "dynamic":  # a fresh binary draw of the batch, on the device
        key, binarize_key = jax.random.split(key)
        x = sample_binary(binarize_key, x)
    return apply_train_step(state, x, sample_eps(key, x.shape[0], vae_config, x.dtype), vae_config, train_config)


# TrainConfig fields that never reach compiled code (the lr lives in the optimizer state): they are
# reset before a config becomes a static argument, so changing them does not recompile.
_HOST_ONLY_FIELDS = ("lr", "max_epochs", "plateau_factor", "plateau_patience", "plateau_threshold",
                     "min_lr", "stop_lr", "seed", "binarize_seed")
_HOST_ONLY_DEFAULTS = {name: getattr(TrainConfig(), name) for name in _HOST_ONLY_FIELDS}


def compiled_view(train_config: TrainConfig) -> TrainConfig:
    """``train_config`` with its host-only fields at their defaults: the key for jit's cache."""
    return dataclasses.replace(train_config, **_HOST_ONLY_DEFAULTS)


_STATIC = ("vae_config", "train_config")
_train_step = jax.jit(_step_from_key, static_argnames=_STATIC, donate_argnums=0)
_train_step_with_noise = jax.jit(apply_train_step, static_argnames=_STATIC, donate_argnums=0)


def train_step(state: TrainState, x, key, vae_config: VAEConfig, train_config: TrainConfig):
    """One jitted Adam step with eps drawn from ``key``; the state's buffers are donated."""
    return _train_step(state, x, key, vae_config, compiled_view(train_config))


def train_step_with_noise(state: TrainState, x, eps, vae_config: VAEConfig, train_config: TrainConfig):
    """One jitted Adam step with the noise ``eps`` given; the state's buffers are donated."""
    return _train_step_with_noise(state, x, eps, vae_config, compiled_view(train_config))


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


def _tree_all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def train_epoch(state: TrainState, data, key, vae_config: VAEConfig, train_config: TrainConfig,
                progress: Callable | None = None, progress_every: int = 20, batch_sharding=None):
    """One shuffled pass over ``data`` (on the device) as a single compiled call.

    Returns the new state, per-batch metrics (``loss``, ``recon``, ``kl``; the partial batch last)
    and whether every parameter is finite. ``progress(step, running_mean_loss)`` is called on the
    host every ``progress_every`` steps when given. The state is donated (its buffers become the
    result's; measured 3-4% faster per epoch on CPU than without): pass a copy to keep the old one.
    ``batch_sharding`` (see ``jaxvae.parallel``) splits each full batch over devices.
    """
    return _train_epoch(state, data, key, vae_config, compiled_view(train_config), progress, progress_every,
                        batch_sharding)


@partial(jax.jit, static_argnames=("vae_config", "train_config", "progress", "progress_every", "batch_sharding"),
         donate_argnums=0)
def _train_epoch(state, data, key, vae_config, train_config, progress, progress_every, batch_sharding):
    batches, step_keys = epoch_plan(key, data.shape[0], train_config.batch_size, train_config.drop_last)

    def report(step, loss_sum):
        if progress is not None:
            jax.lax.cond(
                (step + 1) % progress_every == 0,
                lambda: jax.debug.callback(progress, step + 1, loss_sum / (step + 1)),
                lambda: None,
            )

    def body(carry, xs):
        state, loss_sum, step = carry
        rows, step_key = xs
        x = data[rows]
        if batch_sharding is not None:
            x = jax.lax.with_sharding_constraint(x, batch_sharding)
        state, metrics = _step_from_key(state, x, step_key, vae_config, train_config)
        loss_sum = loss_sum + metrics["loss"]
        report(step, loss_sum)
        return (state, loss_sum, step + 1), metrics

    zero = jnp.zeros((), data.dtype)
    carry = (state, zero, jnp.zeros((), jnp.int32))
    (state, loss_sum, step), metrics = jax.lax.scan(
        body, carry, (batches.full, step_keys[: batches.full.shape[0]]), unroll=SCAN_UNROLL
    )
    if batches.tail.shape[0]:
        state, tail_metrics = _step_from_key(state, data[batches.tail], step_keys[-1], vae_config, train_config)
        metrics = jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), metrics, tail_metrics)
    return state, metrics, _tree_all_finite(state.params)


@partial(jax.jit, static_argnames=("vae_config", "batch_size", "drop_last"))
def eval_epoch(params, data, key, vae_config: VAEConfig, batch_size: int = 128, drop_last: bool = False):
    """Per-batch loss, recon and KL over ``data`` as one compiled call.

    Like the blog's validation loop it draws fresh noise and shuffles the batches (``key``);
    pass ``key`` to fix both. The batch means are unweighted, as the blog averages them.
    """
    batches, step_keys = epoch_plan(key, data.shape[0], batch_size, drop_last)

    def batch_metrics(rows, step_key):
        x = data[rows]
        loss, aux = objective_loss(params, x, sample_eps(step_key, x.shape[0], vae_config, x.dtype), vae_config)
        return {"loss": loss, **aux}

    metrics = jax.lax.map(lambda xs: batch_metrics(*xs), (batches.full, step_keys[: batches.full.shape[0]]))
    if batches.tail.shape[0]:
        tail = batch_metrics(batches.tail, step_keys[-1])
        metrics = jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), metrics, tail)
    return metrics


@dataclass
class PlateauState:
    """The state of PyTorch's ``ReduceLROnPlateau`` (mode min, relative threshold, no cooldown)."""

    lr: float
    best: float = math.inf
    num_bad_epochs: int = 0


def plateau_step(state: PlateauState, metric: float, train_config: TrainConfig) -> PlateauState:
    """One epoch of ReduceLROnPlateau, exactly PyTorch's rule: the metric improves when it is below
    ``best * (1 - threshold)``; after more than ``patience`` epochs without improvement the lr is
    multiplied by ``factor`` (floored at ``min_lr``; changes smaller than 1e-8 are skipped)."""
    best, bad = state.best, state.num_bad_epochs
    if metric < best * (1.0 - train_config.plateau_threshold):
        best, bad = metric, 0
    else:
        bad += 1
    lr = state.lr
    if bad > train_config.plateau_patience:
        new_lr = max(lr * train_config.plateau_factor, train_config.min_lr)
        if lr - new_lr > 1e-8:
            lr = new_lr
        bad = 0
    return PlateauState(lr=lr, best=best, num_bad_epochs=bad)


@dataclass
class FitState:
    """Everything needed to continue a run exactly: checkpoints save and restore this."""

    train_state: TrainState
    plateau: PlateauState
    key: jax.Array
    epoch: int = 0
    history: list[dict] = field(default_factory=list)

    @property
    def params(self):
        return self.train_state.params


def init_fit_state(vae_config: VAEConfig, train_config: TrainConfig, params=None, dtype=jnp.float32) -> FitState:
    """A fresh run from ``train_config.seed`` (or from the given ``params``)."""
    init_key, loop_key = jax.random.split(jax.random.PRNGKey(train_config.seed))
    if params is None:
        params = init_params(init_key, vae_config, dtype)
    return FitState(create_train_state(params, train_config), PlateauState(lr=train_config.lr), loop_key)


@dataclass
class FitResult:
    params: Any
    history: list[dict]
    state: FitState


def check_data(name: str, x, vae_config: VAEConfig, batch_size: int | None = None) -> None:
    """Raise ValueError naming ``name`` unless ``x`` is a finite float [N, input_dim] array (N >= batch_size)."""
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != 2:
        raise ValueError(f"{name} must be a 2-D array (samples, features), got shape {shape}")
    if shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {shape})")
    if shape[1] != vae_config.input_dim:
        raise ValueError(f"{name} has {shape[1]} features but the model expects input_dim={vae_config.input_dim}")
    if batch_size is not None and batch_size > shape[0]:
        raise ValueError(f"batch_size={batch_size} is larger than {name} ({shape[0]} samples)")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{name} must be floating point in [0, 1] (got dtype {x.dtype}); see jaxvae.data.to_unit_float")
    if not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError(f"{name} contains NaN or inf values")
    if vae_config.likelihood == "bernoulli":  # pixel probabilities: the Bernoulli likelihood needs [0, 1]
        lo, hi = float(jnp.min(x)), float(jnp.max(x))
        if lo < 0 or hi > 1:
            raise ValueError(f"{name} has values in [{lo:g}, {hi:g}]; likelihood='bernoulli' needs them in [0, 1]")


def fit(
    train_x,
    val_x=None,
    vae_config: VAEConfig = VAEConfig(),
    train_config: TrainConfig = TrainConfig(),
    *,
    state: FitState | None = None,
    callback: Callable[[FitState, dict], None] | None = None,
    progress: Callable | None = None,
    progress_every: int = 20,
    data_parallel: DataParallel | None | str = "auto",
) -> FitResult:
    """Train the VAE on ``train_x`` (float, [N, input_dim]) with the blog's schedule.

    Each epoch: one compiled training pass, one compiled validation pass on ``val_x`` (on the
    training data when ``val_x`` is None), one plateau step on the validation loss. Training stops
    after ``max_epochs`` or before an epoch whose lr is below ``stop_lr``. Pass ``state`` to resume;
    ``callback(state, record)`` runs after every epoch (checkpointing, logging). Reproducible from
    ``train_config.seed``. Raises ``NonFiniteError`` (holding the last good state) when a step
    makes the loss or a parameter non-finite.

    ``train_config.binarize`` binarises the data (``jaxvae.binarize``). ``data_parallel="auto"``
    splits each batch over all devices when there are several (``jaxvae.parallel``); pass None
    to stay on one device, or a ``DataParallel`` to choose the mesh.
    """
    check_data("train_x", train_x, vae_config, train_config.batch_size)
    if val_x is not None:
        check_data("val_x", val_x, vae_config)
    dtype = jnp.asarray(train_x[:1]).dtype
    state = state if state is not None else init_fit_state(vae_config, train_config, dtype=dtype)
    train_x = jax.device_put(jnp.asarray(train_x))
    val_x = train_x if val_x is None else jax.device_put(jnp.asarray(val_x, dtype))
    if train_config.binarize != "none":
        train_x, val_x = prepare_train_data(train_x, train_config), prepare_eval_data(val_x, train_config)
    if data_parallel == "auto":
        data_parallel = make_data_parallel(train_config.batch_size)
    batch_sharding = None
    if data_parallel is not None:
        batch_sharding = data_parallel.batch_sharding
        train_x, val_x = data_parallel.replicate((train_x, val_x))
        state = dataclasses.replace(state, train_state=data_parallel.replicate(state.train_state))

    while state.epoch < train_config.max_epochs and state.plateau.lr >= train_config.stop_lr:
        start = time.perf_counter()
        key, train_key, val_key = jax.random.split(state.key, 3)
        # The epoch donates its input; a copy (a few MB) keeps the last good state for NonFiniteError.
        train_state = jax.tree.map(jnp.copy, with_learning_rate(state.train_state, state.plateau.lr))
        train_state, metrics, finite = train_epoch(
            train_state, train_x, train_key, vae_config, train_config, progress, progress_every, batch_sharding
        )
        losses = np.asarray(metrics["loss"])
        if not bool(finite) or not np.all(np.isfinite(losses)):
            bad = np.flatnonzero(~np.isfinite(losses))
            where = f"step {int(bad[0]) + 1} of {losses.size}" if bad.size else f"the last of {losses.size} steps (a parameter)"
            raise NonFiniteError(
                f"non-finite loss or parameter in epoch {state.epoch + 1}, {where} "
                f"(lr {state.plateau.lr:g}); training stopped, the last good state is kept",
                state,
            )
        val = eval_epoch(train_state.params, val_x, val_key, vae_config, train_config.batch_size, train_config.drop_last)
        val_loss = float(np.mean(np.asarray(val["loss"])))
        record = {
            "epoch": state.epoch + 1,
            "train_loss": float(losses.mean()),
            "train_recon": float(np.mean(np.asarray(metrics["recon"]))),
            "train_kl": float(np.mean(np.asarray(metrics["kl"]))),
            "val_loss": val_loss,
            "val_recon": float(np.mean(np.asarray(val["recon"]))),
            "val_kl": float(np.mean(np.asarray(val["kl"]))),
            "lr": state.plateau.lr,
            "seconds": time.perf_counter() - start,
        }
        state = FitState(
            train_state=train_state,
            plateau=plateau_step(state.plateau, val_loss, train_config),
            key=key,
            epoch=state.epoch + 1,
            history=[*state.history, record],
        )
        if callback is not None:
            callback(state, record)
    return FitResult(state.params, state.history, state)
