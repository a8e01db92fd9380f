"""Many models in one compiled program: several seeds, and values of recon_sigma, kl_weight or the lr.

    result = jaxvae.sweep.fit_many(train_x, val_x, vae_config=vc, train_config=tc,
                                   seeds=3, recon_sigma=[0.3, 0.5, 1.0, 2.0])
    result.models[i].vae_config, result.histories[i], result.fit_result(i).params

The models are every combination of the values given (a *setting*) times every seed. Model i is
the run that ``fit(train_x, val_x, vae_config=models[i].vae_config,
train_config=models[i].train_config)`` makes, to float rounding (the batched matmuls of the
vmapped program may sum in another order than the single model's).

How: the one ``TrainStep`` is vmapped, with ``train_epoch`` and ``eval_epoch`` around it, over a
leading model axis of the train state. What differs between the models is data of that program,
never a constant of it, so one compile serves the whole sweep: the seeds give each model its initial
parameters and its keys; the lr and the KL weight are schedule states (the plateau's lr is its state
already; any other schedule becomes ``schedules.Scaled`` by the model's value); recon_sigma goes to
the loss as an array.

The host side of each model is fit's own: each model keeps the ``TrainStep`` its lone ``fit`` would
build, which gives the lr and KL weight of its records, updates its plateau and says when its
schedule has ended. A model that stops (its schedule ended, or it reached max_epochs after a resume)
keeps its state while the others train on: its slot is still computed, and discarded. A model whose
epoch goes non-finite stops in the same way at its last good state, with fit's message in
``errors``; the others are untouched (vmapped models share no arithmetic), and ``summarize`` leaves
it out of every mean and spread and names it.

A sweep directory (``jaxvae sweep``) holds one ordinary run directory per model (``jaxvae evaluate``,
``plot`` and ``train --resume`` take it as it is), ``sweep.json`` (what the sweep is, to resume it)
and ``summary/`` (``summary.json`` and the figures).
"""
from __future__ import annotations

import itertools
import json
import os
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae import schedules as sched
from jaxvae.batching import steps_per_epoch
from jaxvae.binarize import prepare_eval_data, prepare_train_data
from jaxvae.checks import check_data
from jaxvae.config import TrainConfig, VAEConfig
from jaxvae.fileio import write_json
from jaxvae.parallel import is_writer
from jaxvae.runs import RunError, RunInfo, read_run_config, require_run_dir
from jaxvae.training import (
    FitResult,
    FitState,
    ScheduleStates,
    TrainState,
    TrainStep,
    _epoch_record,
    _non_finite_message,
    eval_epoch,
    init_fit_state,
    train_epoch,
)

SWEPT = ("recon_sigma", "kl_weight", "lr")  # the values a sweep can vary, besides the seed
NAME_PREFIX = {"recon_sigma": "sigma", "kl_weight": "kl", "lr": "lr"}
SWEEP_FILE = "sweep.json"
SUMMARY_DIR = "summary"
SUMMARY_FILE = "summary.json"


# --------------------------------------------------------------------------- the models of a sweep


@dataclass(frozen=True)
class SweepModel:
    """One model of a sweep: its seed and values, the configs a lone ``fit`` of it takes, its name
    (``sigma0.5_seed2``: the values that vary in the sweep, then the seed; also its run directory)."""

    name: str
    seed: int
    recon_sigma: float
    kl_weight: float
    lr: float
    vae_config: VAEConfig
    train_config: TrainConfig

    @property
    def setting(self) -> tuple[float, float, float]:
        """(recon_sigma, kl_weight, lr): the models of one setting differ only in the seed."""
        return (self.recon_sigma, self.kl_weight, self.lr)


def _values(name: str, given, default: float) -> list[float]:
    if given is None:
        return [default]
    values = [given] if isinstance(given, (int, float)) else list(given)
    if not values:
        raise ValueError(f"{name}: give at least one value")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise ValueError(f"{name}: values must be numbers, got {values!r}")
    values = [float(v) for v in values]
    if len(set(values)) < len(values):
        raise ValueError(f"{name}: a value is given twice in {values}")
    return values


def _seeds(seeds, base: int) -> list[int]:
    if seeds is None:
        return [base]
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds: the number of seeds must be >= 1, got {seeds}")
        return list(range(base, base + seeds))
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise ValueError(f"seeds: a count or a list of integer seeds, got {seeds!r}")
    if len(set(seeds)) < len(seeds):
        raise ValueError(f"seeds: a seed is given twice in {seeds}")
    return seeds


def sweep_models(vae_config: VAEConfig, train_config: TrainConfig, *, seeds=None, recon_sigma=None,
                 kl_weight=None, lr=None) -> list[SweepModel]:
    """The models of a sweep, settings in product order (recon_sigma outermost), seeds innermost.

    ``seeds``: a count (``train_config.seed`` onwards) or a list; ``recon_sigma``, ``kl_weight``,
    ``lr``: a value or a list of values (None: the config's). Every model's configs are validated
    (a bad value raises ValueError naming its field), and so is what cannot be swept.
    """
    vc, tc = vae_config, train_config
    values = {"recon_sigma": _values("recon_sigma", recon_sigma, vc.recon_sigma),
              "kl_weight": _values("kl_weight", kl_weight, vc.kl_weight),
              "lr": _values("lr", lr, tc.lr)}
    varying = [name for name in SWEPT if len(values[name]) > 1]
    if recon_sigma is not None and vc.likelihood != "gaussian":
        raise ValueError(f"recon_sigma: a {vc.likelihood} likelihood has no sigma to sweep")
    if "recon_sigma" in varying and vc.objective != "elbo":
        raise ValueError("recon_sigma: only the ELBO objective can sweep it (objective='iwae' takes its sigma "
                         "from the config)")
    models = []
    for sigma, kl, rate in itertools.product(values["recon_sigma"], values["kl_weight"], values["lr"]):
        current = {"recon_sigma": sigma, "kl_weight": kl, "lr": rate}
        for seed in _seeds(seeds, tc.seed):
            name = "_".join([*(f"{NAME_PREFIX[q]}{current[q]!r}" for q in varying), f"seed{seed}"])
            models.append(SweepModel(name, seed, sigma, kl, rate, vc.replace(recon_sigma=sigma, kl_weight=kl),
                                     tc.replace(seed=seed, lr=rate)))
    return models


def varying_values(models: Sequence[SweepModel]) -> list[str]:
    """The names (of ``SWEPT``) whose value differs between the models."""
    return [q for q in SWEPT if len({getattr(m, q) for m in models}) > 1]


# --------------------------------------------------------------------------- the compiled program


@dataclass(frozen=True)
class SweepProgram:
    """The one compiled step (``shared``) and, per model, the step its lone ``fit`` builds (``steps``:
    the host logic). ``scale_lr`` / ``scale_kl``: the shared step's schedule is ``Scaled`` and each
    model's schedule state carries its value (``shared_schedules``). ``loss_values``: the per-model
    KL weight and recon_sigma for the loss, or None when every model has the same one (then the
    config's constant is used, as in ``fit``)."""

    models: tuple[SweepModel, ...]
    steps: tuple[TrainStep, ...]
    shared: TrainStep
    scale_lr: bool
    scale_kl: bool

    @classmethod
    def build(cls, models: Sequence[SweepModel], n_steps: int) -> "SweepProgram":
        steps = tuple(TrainStep.from_configs(m.vae_config, m.train_config, n_steps) for m in models)
        varying = varying_values(models)
        # The shared step holds 1 for every value that varies (each model's value is data), so that any
        # sweep over the same quantities has the same step, and reuses its compiled code.
        units = {q: 1.0 for q in varying}
        vae_config = models[0].vae_config.replace(**{q: v for q, v in units.items() if q != "lr"})
        train_config = models[0].train_config.replace(**{q: v for q, v in units.items() if q == "lr"})
        lr, kl = sched.lr_from_config(train_config), sched.kl_from_config(vae_config, train_config)
        # A plateau's lr is its state, so models with different lrs share its compiled value as it is.
        scale_lr = "lr" in varying and not isinstance(lr, sched.Plateau)
        scale_kl = "kl_weight" in varying
        shared = TrainStep.from_configs(vae_config, train_config, n_steps, lr_schedule=sched.Scaled(lr) if scale_lr else lr,
                                        kl_schedule=sched.Scaled(kl) if scale_kl else kl)
        return cls(tuple(models), steps, shared, scale_lr, scale_kl)

    def shared_schedules(self, schedules: Sequence[ScheduleStates]):
        """Every model's schedule states in the shared step's form, stacked along the model axis."""
        def shared(model: SweepModel, s: ScheduleStates) -> ScheduleStates:
            return ScheduleStates(sched.ScaledState(model.lr, s.lr) if self.scale_lr else s.lr,
                                  sched.ScaledState(model.kl_weight, s.kl_weight) if self.scale_kl else s.kl_weight)
        return _stack([shared(m, s) for m, s in zip(self.models, schedules)])

    def loss_values(self, dtype):
        """(kl_weight, recon_sigma) for ``eval_epoch`` and the loss: arrays over the models, or None."""
        varying = varying_values(self.models)
        kl = jnp.asarray([m.kl_weight for m in self.models], dtype) if "kl_weight" in varying else None
        sigma = jnp.asarray([m.recon_sigma for m in self.models], dtype) if "recon_sigma" in varying else None
        return kl, sigma


def _stack(trees):
    """Pytrees of the same structure as one, every leaf with a leading axis over them."""
    return jax.tree.map(lambda *leaves: jnp.asarray(np.stack([np.asarray(leaf) for leaf in leaves])), *trees)


@partial(jax.jit, static_argnames=("train_step", "batch_size", "drop_last", "progress", "progress_every"),
         donate_argnames=("train_states", "keys"))
def sweep_epoch(train_step: TrainStep, train_states: TrainState, keys, active, data, val_data, schedules,
                kl_weight=None, recon_sigma=None, *, batch_size: int, drop_last: bool = False,
                progress: Callable | None = None, progress_every: int = 20):
    """One epoch of every model as one compiled call: ``train_epoch`` then ``eval_epoch``, vmapped.

    Every argument but the data has a leading model axis (``kl_weight`` and ``recon_sigma`` may be
    None). Model i draws its epoch's keys from ``keys[i]`` as ``fit`` does. A model that is not
    ``active``, or whose epoch went non-finite, keeps its state and key. Returns ``(train_states,
    keys, metrics, val_metrics, params_finite)``, per-batch metrics ``[models, batches]``. The
    states and keys are donated. ``progress`` is called once per model at each report.
    """
    def one(state, key, active, schedules, kl_weight, recon_sigma):
        next_key, train_key, val_key = jax.random.split(key, 3)
        new, metrics, finite = train_epoch(train_step, state, data, train_key, schedules, batch_size=batch_size,
                                           drop_last=drop_last, progress=progress, progress_every=progress_every,
                                           recon_sigma=recon_sigma)
        val = eval_epoch(new.params, val_data, val_key, train_step.config, batch_size, drop_last,
                         kl_weight=kl_weight, recon_sigma=recon_sigma)
        keep_new = active & finite & jnp.all(jnp.isfinite(metrics["loss"]))
        state = jax.tree.map(lambda a, b: jnp.where(keep_new, a, b), new, state)
        return state, jnp.where(keep_new, next_key, key), metrics, val, finite

    return jax.vmap(one)(train_states, keys, active, schedules, kl_weight, recon_sigma)


# --------------------------------------------------------------------------- state and result


@dataclass
class SweepState:
    """Everything needed to continue a sweep exactly: the models' train states stacked along a
    leading axis, and per model what its ``FitState`` holds."""

    train_state: TrainState  # every leaf [n_models, ...]
    keys: jax.Array  # [n_models, 2]: each model's loop key
    schedules: list[ScheduleStates]  # each model's, as its lone fit holds them
    epochs: list[int]
    histories: list[list[dict]]
    errors: list[str | None] = field(default_factory=list)  # fit's message for a model stopped non-finite

    def __post_init__(self):
        if not self.errors:
            self.errors = [None] * len(self.epochs)

    @property
    def num_models(self) -> int:
        return len(self.epochs)

    def fit_state(self, i: int) -> FitState:
        """Model ``i``'s ``FitState``: what ``fit(..., state=...)`` and ``save_checkpoint`` take."""
        return FitState(jax.tree.map(lambda leaf: leaf[i], self.train_state), self.schedules[i], self.keys[i],
                        self.epochs[i], list(self.histories[i]))

    @classmethod
    def stack(cls, states: Sequence[FitState], errors: Sequence[str | None] | None = None) -> "SweepState":
        """The sweep state of the models whose ``FitState``s are given (from checkpoints, say)."""
        return cls(_stack([s.train_state for s in states]), _stack([s.key for s in states]),
                   [s.schedules for s in states], [s.epoch for s in states], [list(s.history) for s in states],
                   list(errors) if errors is not None else [])


def init_sweep_state(program: SweepProgram, dtype=jnp.float32) -> SweepState:
    """Each model as ``init_fit_state`` starts it from its seed, stacked."""
    return SweepState.stack([init_fit_state(step, m.seed, dtype=dtype) for m, step in zip(program.models, program.steps)])


@dataclass
class SweepResult:
    """The models, the ``state`` to resume from, and per model why it stopped: "max_epochs",
    "schedule" (its lr schedule ended) or "non_finite" (``errors[i]`` says where)."""

    models: list[SweepModel]
    state: SweepState
    stop_reasons: list[str]

    @property
    def histories(self) -> list[list[dict]]:
        return self.state.histories

    @property
    def params(self):
        """Every model's parameters, stacked: each leaf ``[n_models, ...]``."""
        return self.state.train_state.params

    @property
    def errors(self) -> list[str | None]:
        return self.state.errors

    def fit_result(self, i: int) -> FitResult:
        """Model ``i`` as the ``FitResult`` of its lone ``fit``."""
        state = self.state.fit_state(i)
        return FitResult(state.params, state.history, state, self.stop_reasons[i])


# --------------------------------------------------------------------------- training


def fit_many(
    train_x,
    val_x=None,
    *,
    vae_config: VAEConfig = VAEConfig(),
    train_config: TrainConfig = TrainConfig(),
    seeds=None,
    recon_sigma=None,
    kl_weight=None,
    lr=None,
    state: SweepState | None = None,
    callbacks: Sequence[Callable[[SweepState, list], None]] = (),
    progress: Callable | None = None,
    progress_every: int = 20,
) -> SweepResult:
    """Train every model of the sweep (``sweep_models``) at once, on one device, as ``fit`` would
    train each: per epoch one compiled call for all of them, then each model's records and schedules.

    Pass ``state`` (a ``SweepResult.state``, or ``SweepState.stack`` of checkpoints) to resume
    exactly (it is copied, never changed). Each of ``callbacks`` runs as ``callback(state, records)``
    after every epoch, with ``records[i]`` model i's new history record, or None when it did not
    train (stopped, or its epoch went non-finite: then ``state.errors[i]`` holds the message);
    ``state`` is the live one, whose arrays the next epoch reuses: keep ``state.fit_state(i)``, a
    copy. Never raises ``NonFiniteError``: see ``SweepResult.stop_reasons``.
    """
    models = sweep_models(vae_config, train_config, seeds=seeds, recon_sigma=recon_sigma, kl_weight=kl_weight, lr=lr)
    tc = train_config
    check_data("train_x", train_x, vae_config, tc.batch_size)
    if val_x is not None:
        check_data("val_x", val_x, vae_config)
    program = SweepProgram.build(models, steps_per_epoch(len(train_x), tc.batch_size, tc.drop_last))
    dtype = jnp.asarray(train_x[:1]).dtype
    state = state if state is not None else init_sweep_state(program, dtype)
    if state.num_models != len(models):
        raise ValueError(f"state: holds {state.num_models} models, the sweep has {len(models)}")
    device = jax.local_devices()[0]  # the whole sweep on one device, this process's first
    train_x = prepare_train_data(jax.device_put(jnp.asarray(train_x), device), tc)
    val_x = train_x if val_x is None else prepare_eval_data(jax.device_put(jnp.asarray(val_x, dtype), device), tc)
    # Our own copy: each epoch donates the stacked state, and the caller's must stay usable.
    arrays = jax.device_put(jax.tree.map(jnp.copy, (state.train_state, state.keys)), device)
    state = SweepState(*arrays, list(state.schedules), list(state.epochs), list(state.histories), list(state.errors))
    loss_kl, loss_sigma = program.loss_values(dtype)

    def running(i: int) -> bool:
        return (state.errors[i] is None and state.epochs[i] < tc.max_epochs
                and not program.steps[i].finished(state.schedules[i], state.epochs[i]))

    while any(active := [running(i) for i in range(len(models))]):
        start = time.perf_counter()
        counts = state.train_state.step
        values = [tuple(float(v) for v in step.values(TrainState(None, None, counts[i]), state.schedules[i]))
                  for i, step in enumerate(program.steps)]
        state.train_state, state.keys, metrics, val, finite = sweep_epoch(
            program.shared, state.train_state, state.keys, jnp.asarray(active), train_x, val_x,
            program.shared_schedules(state.schedules), loss_kl, loss_sigma, batch_size=tc.batch_size,
            drop_last=tc.drop_last, progress=progress, progress_every=progress_every)
        metrics, val, finite = jax.device_get((metrics, val, finite))
        seconds = time.perf_counter() - start
        records: list[dict | None] = [None] * len(models)
        for i in (i for i in range(len(models)) if active[i]):
            lr_i, kl_i = values[i]
            message = _non_finite_message(metrics["loss"][i], finite[i], state.epochs[i] + 1, lr_i)
            if message is not None:
                state.errors[i] = message
                continue
            pick = {name: metric[i] for name, metric in metrics.items()}
            record = _epoch_record(state.epochs[i] + 1, pick, {name: v[i] for name, v in val.items()}, lr_i, kl_i, seconds)
            state.schedules[i] = program.steps[i].update_schedules(state.schedules[i], record["val_loss"])
            state.epochs[i] += 1
            state.histories[i] = [*state.histories[i], record]
            records[i] = record
        for callback in callbacks:
            callback(state, records)
    reasons = ["non_finite" if state.errors[i] else
               "schedule" if program.steps[i].finished(state.schedules[i], state.epochs[i]) else "max_epochs"
               for i in range(len(models))]
    return SweepResult(models, state, reasons)


# --------------------------------------------------------------------------- summary


def _spread(values: list[float]) -> dict:
    """mean, sd (n - 1; None for one value), min, max and n of the values."""
    arr = np.asarray(values, np.float64)
    if arr.size == 0:
        return {"n": 0, "mean": None, "sd": None, "min": None, "max": None}
    return {"n": int(arr.size), "mean": float(arr.mean()), "sd": float(arr.std(ddof=1)) if arr.size > 1 else None,
            "min": float(arr.min()), "max": float(arr.max())}


def squared_error(record: dict, model: SweepModel) -> float | None:
    """The validation reconstruction error as the sum of squared errors per image, 2 sigma^2 * val_recon:
    one scale for every sigma (the recon term itself is divided by 2 sigma^2). None for Bernoulli models."""
    if model.vae_config.likelihood != "gaussian":
        return None
    return 2.0 * model.recon_sigma**2 * record["val_recon"]


SUMMARY_METRICS = ("train_loss", "val_loss", "val_recon", "val_kl")


def summarize(models: Sequence[SweepModel], histories: Sequence[list[dict]], errors: Sequence[str | None],
              stop_reasons: Sequence[str] | None = None) -> dict:
    """The sweep as JSON-ready data: per model its values and final record; per setting the mean,
    sd, min and max over its seeds of the final ``SUMMARY_METRICS`` and the squared error. Models
    stopped by a non-finite epoch are listed (``failed``) and left out of every statistic."""
    varying = varying_values(models)
    rows = []
    for i, (m, history) in enumerate(zip(models, histories)):
        final = history[-1] if history else None
        rows.append({"name": m.name, "seed": m.seed, "recon_sigma": m.recon_sigma, "kl_weight": m.kl_weight,
                     "lr": m.lr, "epochs": len(history),
                     "stop_reason": stop_reasons[i] if stop_reasons else ("non_finite" if errors[i] else None),
                     "error": errors[i], "final": final,
                     "val_squared_error": squared_error(final, m) if final else None})
    settings = []
    for setting in dict.fromkeys(m.setting for m in models):
        members = [(m, row) for m, row in zip(models, rows) if m.setting == setting]
        good = [row for m, row in members if row["error"] is None and row["final"] is not None]
        entry = dict(zip(SWEPT, setting))
        entry.update(label=setting_label(entry, varying), models=[row["name"] for _, row in members],
                     failed=[row["name"] for _, row in members if row["error"] is not None])
        for metric in SUMMARY_METRICS:
            entry[metric] = _spread([row["final"][metric] for row in good])
        if models[0].vae_config.likelihood == "gaussian":
            entry["val_squared_error"] = _spread([row["val_squared_error"] for row in good])
        settings.append(entry)
    return {"varying": varying, "likelihood": models[0].vae_config.likelihood, "models": rows, "settings": settings}


def setting_label(entry: dict, varying: Sequence[str]) -> str:
    """``sigma=0.5``, ``kl=4, lr=0.001``, or ``all`` for a sweep over seeds only."""
    return ", ".join(f"{NAME_PREFIX[q]}={entry[q]:g}" for q in varying) or "all"


# --------------------------------------------------------------------------- the sweep directory


@dataclass(frozen=True)
class SweepInfo:
    """What ``sweep.json`` holds: the arguments of ``sweep_models`` that made the sweep, and per model
    its name and fit's message if it stopped on a non-finite epoch. The configs and the data live in
    the models' run directories; the first model's serve as the base the grid varies."""

    grid: dict
    names: tuple[str, ...]
    errors: tuple[str | None, ...]


def model_dirs(sweep_dir: str | os.PathLike, models: Sequence[SweepModel]) -> list[Path]:
    """Each model's run directory: ``SWEEP_DIR/<model name>``."""
    return [Path(sweep_dir) / m.name for m in models]


def load_sweep_state(models: Sequence[SweepModel], run_dirs: Sequence[Path], errors: Sequence[str | None]) -> SweepState:
    """The sweep state from its models' checkpoints (exact: each holds its model's whole FitState).
    A model stopped by a non-finite first epoch has none: it starts from its seed, and stays stopped."""
    from jaxvae.checkpoint import load_checkpoint
    from jaxvae.runs import CHECKPOINT_FILE

    states = []
    for m, run_dir, error in zip(models, run_dirs, errors):
        path = Path(run_dir) / CHECKPOINT_FILE
        if path.exists() or error is None:  # a missing checkpoint of a running model: load_checkpoint names it
            states.append(load_checkpoint(path, m.vae_config, m.train_config)[0])
        else:
            states.append(init_fit_state(TrainStep.from_configs(m.vae_config, m.train_config), m.seed))
    return SweepState.stack(states, errors)


def write_summary(sweep_dir: str | os.PathLike, summary: dict) -> Path:
    """``SWEEP_DIR/summary/summary.json`` (process 0 only in a multi-process run); returns its path."""
    path = Path(sweep_dir) / SUMMARY_DIR / SUMMARY_FILE
    if is_writer():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, summary)
    return path


def write_sweep_info(sweep_dir: str | os.PathLike, info: SweepInfo) -> None:
    """``sweep.json``, atomically (process 0 only in a multi-process run)."""
    from jaxvae import __version__

    if is_writer():
        write_json(Path(sweep_dir) / SWEEP_FILE, {
            "jaxvae_version": __version__, "grid": info.grid,
            "models": [{"name": name, "error": error} for name, error in zip(info.names, info.errors)]})


def read_sweep_info(sweep_dir: str | os.PathLike) -> tuple[SweepInfo, RunInfo]:
    """``sweep.json`` of a sweep directory and the run info of its first model (the base configs of
    ``sweep_models`` and the data); RunError naming the file for anything wrong."""
    path = require_run_dir(sweep_dir) / SWEEP_FILE
    if not path.is_file():
        raise RunError(f"{path}: missing; is {sweep_dir} a jaxvae sweep directory?")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        info = SweepInfo({k: raw["grid"][k] for k in ("seeds", *SWEPT)}, tuple(str(m["name"]) for m in raw["models"]),
                         tuple(m["error"] for m in raw["models"]))
        if not info.names:
            raise ValueError("no models")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        detail = f"missing key {e}" if isinstance(e, KeyError) else str(e)
        raise RunError(f"{path}: not a valid jaxvae sweep file ({detail})") from None
    base = read_run_config(Path(sweep_dir) / info.names[0])
    try:
        names = [m.name for m in sweep_models(base.vae_config, base.train_config, **info.grid)]
    except (ValueError, TypeError) as e:
        raise RunError(f"{path}: not a valid jaxvae sweep file ({e})") from None
    if names != list(info.names):
        raise RunError(f"{path}: its models {list(info.names)} are not those its grid makes ({names})")
    return info, base


class SweepSaver:
    """``fit_many``'s per-epoch callback for a sweep directory, as ``runs.EpochSaver`` is ``fit``'s.

    ``start()`` writes each model's run config (with the data's fingerprints) and ``sweep.json``.
    Each call then saves the checkpoint and metrics of every model that finished the epoch into its
    own run directory, records models newly stopped by a non-finite epoch in ``sweep.json``, and
    returns their indices. Every model's run directory therefore always holds its last good epoch.
    """

    def __init__(self, sweep_dir: str | os.PathLike, models: Sequence[SweepModel], grid: dict, data: RunInfo,
                 errors: Sequence[str | None] | None = None):
        self.sweep_dir = Path(sweep_dir)
        self.models = list(models)
        self.grid = grid
        self.data = data  # dataset name, image shape, data dir and fingerprints: shared by every model
        self.dirs = model_dirs(sweep_dir, models)
        self.errors = list(errors) if errors is not None else [None] * len(models)

    def start(self) -> None:
        from dataclasses import replace

        from jaxvae.runs import write_run_config

        for m, run_dir in zip(self.models, self.dirs):
            if is_writer():
                run_dir.mkdir(parents=True, exist_ok=True)
            write_run_config(run_dir, replace(self.data, vae_config=m.vae_config, train_config=m.train_config))
        self._write_info()

    def __call__(self, state: SweepState, records) -> list[int]:
        from jaxvae.checkpoint import save_checkpoint
        from jaxvae.runs import CHECKPOINT_FILE, write_metrics

        for i, record in enumerate(records):
            if record is not None:
                m = self.models[i]
                save_checkpoint(self.dirs[i] / CHECKPOINT_FILE, state.fit_state(i), m.vae_config, m.train_config)
                write_metrics(self.dirs[i], state.histories[i])
        stopped = [i for i, error in enumerate(state.errors) if error is not None and self.errors[i] is None]
        if stopped:
            self.errors = list(state.errors)
            self._write_info()
        return stopped

    def _write_info(self) -> None:
        write_sweep_info(self.sweep_dir, SweepInfo(self.grid, tuple(m.name for m in self.models), tuple(self.errors)))
