"""Many models in one compiled program: several seeds, and values of the hyperparameters the model
declares (``Model.hyperparameters``: the blog's VAE has recon_sigma and kl_weight) and lr.

    result = jaxvae.sweep.fit_many(train_x, val_x, vae_config=vc, train_config=tc,
                                   seeds=3, recon_sigma=[0.3, 0.5, 1.0, 2.0])
    result.models[i].train_config, result.histories[i], result.fit_result(i).params

The models are every combination of the values given (a *setting*) times every seed. Model i is the
run ``fit(train_x, val_x, vae_config=vc, train_config=models[i].train_config)`` makes, to float
rounding (vmapped matmuls may sum in another order): the sweep is ``training.fit_models`` over the
models' configs, one compile for all. A model whose epoch goes non-finite stops at its last good state
with fit's message in ``errors``; ``summarize`` names it and leaves it out of every statistic.

A sweep directory (``jaxvae sweep``) holds one ordinary run directory per model, ``sweep.json`` (what
the sweep is, to resume it) and ``summary/`` (``summary.json`` and the figures).
"""
from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from jax.sharding import Mesh

from jaxvae import __version__
from jaxvae.config import TrainConfig, VAEConfig
from jaxvae.errors import InputError
from jaxvae.fileio import write_json
from jaxvae.model import Model
from jaxvae.parallel import WRITER, DeviceMesh
from jaxvae.runs.format import SWEEP_FILE, RunError, RunInfo, read_run_config, require_run_dir
from jaxvae.hyper import RECON_SIGMA, Hyper, Hyperparameter
from jaxvae.training import (DataParallel, ModelsResult, ModelsState, check_hyperparameters, fit_models, given_model,
                             hyper_of, model_hyperparameters)
from jaxvae.vae import as_model

SUMMARY_DIR = "summary"
SUMMARY_FILE = "summary.json"


# --------------------------------------------------------------------------- the models of a sweep


@dataclass(frozen=True)
class SweepModel:
    """One model of a sweep: its name (``sigma0.5_seed2``: the values that vary in the sweep, then the
    seed; also its run directory) and what a lone ``fit`` of it takes: the model as given (a
    ``VAEConfig`` for the blog's family, also read as ``vae_config``) and its train config.

    ``seed`` and ``hyper`` (the model's hyperparameters, lr last) read the train config; so does an
    attribute named for one of them (``m.recon_sigma``).

    Args:
        name: The model's name and run directory.
        model: The model as given, or a ``VAEConfig``.
        train_config: The model's train config: its seed and swept values.
    """

    name: str
    model: Model | VAEConfig
    train_config: TrainConfig

    vae_config = property(lambda self: self.model)

    seed = property(lambda self: self.train_config.seed)

    @property
    def declared(self) -> tuple[Hyperparameter, ...]:
        """The hyperparameters of the sweep's model, lr last: the grid's axes, in its product's order."""
        return model_hyperparameters(as_model(self.model))

    @cached_property  # read per model and epoch by the sweep's epoch line: checked once
    def hyper(self) -> Hyper:
        """The model's hyperparameters' values (Python floats)."""
        return hyper_of(as_model(self.model), self.train_config)

    @property
    def setting(self) -> tuple[float, ...]:
        """The hyperparameters' values: the models of one setting differ only in the seed."""
        return tuple(self.hyper.values())

    def __getattr__(self, name: str):
        if name.startswith("_") or name in ("name", "model", "train_config"):
            raise AttributeError(name)
        try:
            return self.hyper[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}") from None


def _values(name: str, given, default: float) -> list[float]:
    if given is None:
        return [default]
    values = [given] if isinstance(given, (int, float)) else list(given)
    if not values:
        raise InputError(f"{name}: give at least one value")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise InputError(f"{name}: values must be numbers, got {values!r}")
    values = [float(v) for v in values]
    if len(set(values)) < len(values):
        raise InputError(f"{name}: a value is given twice in {values}")
    return values


def _seeds(seeds, base: int) -> list[int]:
    if seeds is None:
        return [base]
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise InputError(f"seeds: the number of seeds must be >= 1, got {seeds}")
        return list(range(base, base + seeds))
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise InputError(f"seeds: a count or a list of integer seeds, got {seeds!r}")
    if len(set(seeds)) < len(seeds):
        raise InputError(f"seeds: a seed is given twice in {seeds}")
    return seeds


def sweep_models(vae_config: Model | VAEConfig, train_config: TrainConfig, *, seeds: int | Sequence[int] | None = None,
                 **values: float | Sequence[float] | None) -> list[SweepModel]:
    """The models of a sweep: every combination of the values given, in product order over the
    model's hyperparameters (``Model.hyperparameters``, then lr; the blog's VAE: recon_sigma outermost),
    seeds innermost.

    Args:
        vae_config: The model, or a ``VAEConfig``.
        train_config: The base config: its seed and values where none are given.
        seeds: A count (``train_config.seed`` onwards) or a list of seeds; None for the config's seed.
        **values: For any hyperparameter of the model, by name: a value or a list; None or absent for
            the config's.

    Returns:
        One ``SweepModel`` per setting and seed.

    Raises:
        InputError: An empty or repeated list, a value that is not a number, a config field out of
            range (the message names it), or a value swept that the model does not read
            (``Model.hyperparameters``).
    """
    model = as_model(vae_config)
    declared = model_hyperparameters(model)
    check_hyperparameters(model, train_config)
    base = train_config.hyper_values(declared)
    axes = {h.name: _values(h.name, values.get(h.name), base[h.name]) for h in declared}
    varying = [h for h in declared if len(axes[h.name]) > 1]
    models = []
    for combination in itertools.product(*axes.values()):
        current = dict(zip(axes, combination))
        for seed in _seeds(seeds, train_config.seed):
            name = "_".join([*(f"{h.label}{current[h.name]!r}" for h in varying), f"seed{seed}"])
            tc = train_config.with_hyper(**current).replace(seed=seed)
            check_hyperparameters(model, tc)
            models.append(SweepModel(name, vae_config, tc))
    # a value the model does not read: a config's own rule speaks first (check_hyperparameters, above)
    for name in (n for n, v in values.items() if v is not None and n not in axes):
        raise InputError(f"{name}: {_model_words(model)} does not read it, so it cannot be swept (it reads "
                         f"{', '.join(axes)})")
    return models


def _model_words(model: Model) -> str:
    """How a message names a model: its likelihood (the blog's family), else its class."""
    likelihood = getattr(model, "likelihood", None)
    return f"a {likelihood.name} likelihood" if likelihood is not None else type(model).__name__


def _reads_sigma(model: SweepModel) -> bool:
    return RECON_SIGMA.name in model.hyper


def varying_values(models: Sequence[SweepModel]) -> list[str]:
    """The hyperparameters whose value differs between the models.

    Args:
        models: The sweep's models.

    Returns:
        Their names, in the grid's order.
    """
    return [h.name for h in models[0].declared if len({m.hyper[h.name] for m in models}) > 1]


# --------------------------------------------------------------------------- training


@dataclass
class SweepResult(ModelsResult):
    """``fit_models``'s result with the sweep's ``models``.

    Attributes:
        models: The ``SweepModel`` of each model, in the result's order.
    """

    models: list[SweepModel] = None


def fit_many(
    train_x,
    val_x=None,
    *,
    model: Model | VAEConfig | None = None,
    train_config: TrainConfig = TrainConfig(),
    seeds: int | Sequence[int] | None = None,
    state: ModelsState | None = None,
    callbacks: Sequence[Callable[[ModelsState, list], None]] = (),
    progress: Callable | None = None,
    progress_every: int = 20,
    data_parallel: DataParallel | None | str = "auto",
    vae_config: VAEConfig | None = None,
    mesh: Mesh | DeviceMesh | tuple[int, int] | str | None = None,
    **values: float | Sequence[float] | None,
) -> SweepResult:
    """Train every model of the sweep (``sweep_models``) at once, as ``fit`` would train each:
    ``training.fit_models`` over their train configs. Never raises ``NonFiniteError``: see
    ``SweepResult.stop_reasons``.

    Args:
        train_x: The training data, as for ``fit``.
        val_x: The validation data, as for ``fit``.
        model: The model, as for ``fit``.
        train_config: The base config of ``sweep_models``.
        seeds: As for ``sweep_models``.
        state: A ``ModelsState`` to resume, as for ``fit_models``.
        callbacks: As for ``fit_models``.
        progress: As for ``fit``.
        progress_every: As for ``fit``.
        data_parallel: As for ``fit``.
        vae_config: As for ``fit``.
        mesh: The devices' (model, data) mesh, as for ``fit_models``; None for ``data_parallel``.
        **values: The hyperparameters' values, as for ``sweep_models`` (``recon_sigma=[0.5, 1.0]``,
            ``lr=[1e-3, 3e-3]``).

    Returns:
        The ``SweepResult``.

    Raises:
        InputError: As ``sweep_models`` and ``fit_models`` raise it.
    """
    model = given_model(model, vae_config)
    models = sweep_models(model, train_config, seeds=seeds, **values)
    result = fit_models(train_x, val_x, model=model, train_configs=[m.train_config for m in models],
                        state=state, callbacks=callbacks, progress=progress, progress_every=progress_every,
                        data_parallel=data_parallel, mesh=mesh)
    return SweepResult(result.state, result.stop_reasons, models)


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
    one scale for every sigma (the recon term itself is divided by 2 sigma^2). None for Bernoulli models.

    Args:
        record: A record with ``val_recon``.
        model: The record's model (its sigma).

    Returns:
        The squared error, or None.
    """
    if not _reads_sigma(model):
        return None
    return 2.0 * model.recon_sigma**2 * record["val_recon"]


def summary_metrics(record: dict) -> list[str]:
    """The fields of a final record that the summary gives statistics of: the training loss and
    every validation metric (the VAE's: ``val_loss``, ``val_recon``, ``val_kl``).

    Args:
        record: A final record.

    Returns:
        The field names.
    """
    return ["train_loss", *(key for key in record if key.startswith("val_"))]


def summarize(models: Sequence[SweepModel], histories: Sequence[list[dict]], errors: Sequence[str | None],
              stop_reasons: Sequence[str] | None = None) -> dict:
    """The sweep as JSON-ready data: per model its values and final record; per setting the mean,
    sd, min and max over its seeds of the final ``summary_metrics`` and the squared error. Models
    stopped by a non-finite epoch are listed (``failed``) and left out of every statistic.

    Args:
        models: The sweep's models.
        histories: Each model's records.
        errors: Each model's non-finite message, or None.
        stop_reasons: Each model's stop reason; None to read ``"non_finite"`` from ``errors``.

    Returns:
        A dict: ``varying``, ``likelihood``, ``models`` (one row each) and ``settings``.
    """
    varying = varying_values(models)
    rows = []
    for i, (m, history) in enumerate(zip(models, histories)):
        final = history[-1] if history else None
        rows.append({"name": m.name, "seed": m.seed, **m.hyper, "epochs": len(history),
                     "stop_reason": stop_reasons[i] if stop_reasons else ("non_finite" if errors[i] else None),
                     "error": errors[i], "final": final,
                     "val_squared_error": squared_error(final, m) if final else None})
    metrics = summary_metrics(next((history[-1] for history in histories if history), {}))
    settings = []
    for setting in dict.fromkeys(m.setting for m in models):
        members = [(m, row) for m, row in zip(models, rows) if m.setting == setting]
        good = [row for m, row in members if row["error"] is None and row["final"] is not None]
        entry = dict(members[0][0].hyper)
        entry.update(label=setting_label(entry, varying, models[0].declared), models=[row["name"] for _, row in members],
                     failed=[row["name"] for _, row in members if row["error"] is not None])
        for metric in metrics:
            entry[metric] = _spread([row["final"][metric] for row in good])
        if _reads_sigma(models[0]):
            entry["val_squared_error"] = _spread([row["val_squared_error"] for row in good])
        settings.append(entry)
    likelihood = getattr(as_model(models[0].model), "likelihood", None)
    return {"varying": varying, "likelihood": likelihood and likelihood.name, "models": rows, "settings": settings}


def setting_label(entry: dict, varying: Sequence[str], declared: Sequence[Hyperparameter]) -> str:
    """``sigma=0.5``, ``kl=4, lr=0.001``, or ``all`` for a sweep over seeds only.

    Args:
        entry: The setting's values by name.
        varying: The names that vary in the sweep.
        declared: The model's hyperparameters (their labels).

    Returns:
        The label.
    """
    labels = {h.name: h.label for h in declared}
    return ", ".join(f"{labels[q]}={entry[q]:g}" for q in varying) or "all"


# --------------------------------------------------------------------------- the sweep directory


@dataclass(frozen=True)
class SweepInfo:
    """What ``sweep.json`` holds: the arguments of ``sweep_models`` that made the sweep, and per model
    its name (its run directory) and fit's message if it stopped on a non-finite epoch. Each model's
    configs and data live in its own run directory.

    Attributes:
        grid: ``seeds`` and the swept values, as ``sweep_models`` takes them.
        names: Each model's name.
        errors: Each model's non-finite message, or None.
    """

    grid: dict
    names: tuple[str, ...]
    errors: tuple[str | None, ...]


def write_summary(sweep_dir: str | os.PathLike, summary: dict) -> Path:
    """``SWEEP_DIR/summary/summary.json`` (process 0 only in a multi-process run); returns its path.

    Args:
        sweep_dir: The sweep directory.
        summary: ``summarize``'s data.

    Returns:
        The file's path.
    """
    path = Path(sweep_dir) / SUMMARY_DIR / SUMMARY_FILE
    WRITER(path.parent.mkdir, parents=True, exist_ok=True)
    WRITER(write_json, path, summary)
    return path


def write_sweep_info(sweep_dir: str | os.PathLike, info: SweepInfo) -> None:
    """``sweep.json``, atomically (process 0 only in a multi-process run).

    Args:
        sweep_dir: The sweep directory.
        info: What the file holds.
    """
    WRITER(write_json, Path(sweep_dir) / SWEEP_FILE, {
        "jaxvae_version": __version__, "grid": info.grid,
        "models": [{"name": name, "error": error} for name, error in zip(info.names, info.errors)]})


def read_sweep_info(sweep_dir: str | os.PathLike) -> tuple[SweepInfo, RunInfo]:
    """``sweep.json`` of a sweep directory and the run info of its first model (the base configs of
    ``sweep_models`` and the data); RunError naming the file for anything wrong.

    Args:
        sweep_dir: The sweep directory.

    Returns:
        ``(SweepInfo, RunInfo)``.

    Raises:
        RunError: The directory or ``sweep.json`` is missing or invalid, or its models are not those its
            grid makes.
    """
    path = require_run_dir(sweep_dir) / SWEEP_FILE
    if not path.is_file():
        raise RunError(f"{path}: missing; is {sweep_dir} a jaxvae sweep directory?")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw["grid"], dict) or "seeds" not in raw["grid"]:
            raise KeyError("grid.seeds")
        info = SweepInfo(dict(raw["grid"]), tuple(str(m["name"]) for m in raw["models"]),
                         tuple(m["error"] for m in raw["models"]))
        if not info.names:
            raise InputError("no models")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as e:
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
