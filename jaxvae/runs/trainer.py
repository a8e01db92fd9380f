"""Training a run directory from Python: ``train_run``, the one flow behind ``jaxvae train`` and
``jaxvae sweep``. A lone run is a sweep of one model whose run directory is the directory itself;
a sweep's models each get ``SWEEP_DIR/<name>``, beside ``sweep.json``::

    lock every directory  ->  a new run, a resumed one, or nothing to do
    ->  training.fit_models + RunSaver  ->  figures (and a sweep's summary)

It prints nothing: what it has to say goes to ``log``, each epoch to ``callbacks``, and the
``TrainRun`` it returns says what happened; the command line formats that.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from jax.sharding import Mesh

from jaxvae import sweep as sw
from jaxvae.batching import steps_per_epoch
from jaxvae.checks import check_memory
from jaxvae.config import TrainConfig, VAEConfig
from jaxvae.data import Dataset
from jaxvae.errors import InputError
from jaxvae.fileio import BackgroundWriter, os_error_text
from jaxvae.model import Model, model_from_record
from jaxvae.parallel import WRITER, DeviceMesh, plan_mesh
from jaxvae.runs.data import check_arrays, check_run_data, data_fingerprints, run_batches, run_dataset
from jaxvae.runs.format import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    FIGURES_DIR,
    LOCK_FILE,
    SWEEP_FILE,
    RunError,
    RunInfo,
    require_run_dir,
    write_run_config,
)
from jaxvae.runs.lifecycle import (
    check_new_run_dir,
    nothing_to_do,
    refuse_foreign,
    resume_point,
    resumed_info,
    start_new_run,
)
from jaxvae.runs.lock import hold_lock
from jaxvae.runs.saver import RunSaver
from jaxvae.training import (FitState, ModelsResult, ModelsState, TrainStep, check_hyperparameters, fit_models,
                             init_fit_state)
from jaxvae.vae import as_model, model_record

Log = Callable[[str], None]


@dataclass
class TrainRun:
    """A run or sweep as ``train_run`` trains it (``on_start`` gets it before the first epoch), then
    what came of it (``train_run`` returns it).

    ``root`` is the run or sweep directory, ``run_dirs[i]`` model i's run directory and ``infos[i]``
    its config.json. ``nothing_to_do`` says why no epoch was trained (nothing else is set then
    beyond the configs and ``states``); otherwise ``result`` is ``fit_models``' result, or None when
    ``interrupted`` stopped it (``should_stop``) before it returned.

    Attributes:
        root: The run or sweep directory.
        run_dirs: Model i's run directory at index i.
        infos: Model i's record (its config.json) at index i.
        dataset: The data trained on; None until loaded (and when there is nothing to do on resume).
        errors: Per model: why it stopped on a non-finite loss, or None.
        states: The checkpoints resumed from (None for a model without one); None for a new run.
        models: A sweep's models.
        grid: A sweep's grid (sweep.json); None for a lone run.
        nothing_to_do: Why no epoch was trained, or None.
        saver: The ``RunSaver`` that saved the epochs, once training started.
        result: ``fit_models``' result, or None.
        interrupted: Whether ``should_stop`` stopped the training.
        figures: Per model: the figures drawn.
        summary: A sweep's summary.
        summary_path: Where a sweep's summary was written.
        sweep_figures: A sweep's figures.
        placement: Where the models and batches go (``parallel.plan_mesh``); None for one device.
    """

    root: Path
    run_dirs: list[Path]
    infos: list[RunInfo]
    dataset: Dataset | None = None
    errors: list[str | None] = field(default_factory=list)  # per model: why it stopped on a non-finite loss
    states: list[FitState | None] | None = None  # the checkpoints resumed from (None: a new run)
    models: list[sw.SweepModel] = field(default_factory=list)  # a sweep's
    grid: dict | None = None  # a sweep's (sweep.json)
    nothing_to_do: str | None = None
    saver: RunSaver | None = None
    result: ModelsResult | None = None
    interrupted: bool = False
    figures: list[list[Path]] = field(default_factory=list)  # per model
    summary: dict | None = None  # a sweep's
    summary_path: Path | None = None
    sweep_figures: list[Path] = field(default_factory=list)
    placement: DeviceMesh | None = None

    @property
    def model(self) -> VAEConfig | Model:  # one architecture for all (checked when the run is planned)
        """The models' model as recorded (a ``VAEConfig`` for the blog's family), which they share."""
        return self.infos[0].model

    vae_config = model  # its older name

    @property
    def train_configs(self) -> list[TrainConfig]:
        """Model i's train config at index i."""
        return [info.train_config for info in self.infos]

    @property
    def is_sweep(self) -> bool:
        """Whether this is a sweep (it has a grid)."""
        return self.grid is not None

    @property
    def resumed_after(self) -> int | None:
        """The last epoch any model had saved when this call began; None for a new run."""
        if self.states is None:
            return None
        return max((s.epoch for s in self.states if s is not None), default=0)

    @property
    def first_epoch(self) -> int:
        """The first epoch this call trains (of the model furthest behind)."""
        return min((s.epoch if s is not None else 0) for s in self.states) + 1 if self.states else 1

    @property
    def steps_per_epoch(self) -> int:
        """The optimiser steps of one epoch over the train split (by the first model's batch size)."""
        tc = self.train_configs[0]
        return steps_per_epoch(len(self.dataset.train_x), tc.batch_size, tc.drop_last)

    @property
    def saved_epochs(self) -> list[int]:
        """The epoch each model's checkpoint on disk holds."""
        if self.saver is not None:
            return list(self.saver.saved_epochs)
        return [s.epoch if s is not None else 0 for s in self.states] if self.states else [0] * len(self.run_dirs)


def train_run(
    directory: str | os.PathLike,
    model: Model | VAEConfig | None = None,
    dataset: Dataset | str | None = None,
    train_config: TrainConfig | None = None,
    *,
    sweep: dict | bool | None = None,
    resume: bool | None = None,
    max_epochs: int | None = None,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    figures: bool = True,
    callbacks: Sequence[Callable[[ModelsState, list], None]] = (),
    on_start: Callable[[TrainRun], Callable | None] | None = None,
    check_resumed: Callable[[RunInfo], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    log: Log | None = None,
    holder: str | None = None,
    mesh: Mesh | DeviceMesh | tuple[int, int] | str | None = "auto",
) -> TrainRun:
    """Train the run (or sweep) in ``directory``: a new one, the one it holds continued exactly, or
    nothing when it is done. Every directory is locked for the whole call (a second writer gets
    ``RunBusyError``); each finished epoch is saved by ``RunSaver``, so a killed run resumes where
    its last epoch ended.

    A new run with ``max_epochs`` 0 checks the configs and data and writes nothing. A disk that fills
    up raises its ``OSError`` with every directory at its last saved epoch.

    Args:
        directory: The run directory, or the sweep directory.
        model: A ``VAEConfig`` or any ``jaxvae.model.Model`` (recorded by its ``describe()``, which
            must build it again: a resumed run rebuilds it); a new run needs one. A model of labelled
            batches gets each split's images and labels (``Model.batch_of``).
        dataset: The data (a new run records its fingerprints; a resumed one checks them), or on
            resume the name of the data for a checkpoint of jaxvae 0.2 that lacks it (its data are then
            loaded from ``data_dir``, or where the run recorded); None on resume for the recorded data.
        train_config: As for ``fit``; None for the defaults (a new run) or the recorded one (on resume).
        sweep: A new sweep's grid (``seeds`` and value lists, as for ``sweep.sweep_models``); True to
            continue the sweep in ``directory``; None for a lone run.
        resume: True continues the run in ``directory``, False starts a new one there, None continues
            it when there is one. A continued run keeps its config: ``model`` and ``train_config``, when
            given, must be the recorded ones except for ``max_epochs``, its new epoch limit.
        max_epochs: A continued run's new epoch limit; None for ``train_config``'s, else the recorded
            one. A new run takes ``train_config``'s.
        data_dir: Where the data are: recorded by a new run; on resume, where to load them from (another
            location of the same data) or where the given ``Dataset`` was found, recorded too.
        download: Whether MNIST may be downloaded when a resumed run's data are loaded.
        figures: Whether to draw each model's figures (and a sweep's) after training.
        callbacks: Run after each epoch's save, as ``fit_models``' are.
        on_start: Called with the ``TrainRun`` once before the first epoch; what it returns, if not
            None, is fit's per-step ``progress`` hook.
        check_resumed: Called with the recorded run's ``RunInfo``; it may refuse it (by raising) before
            the data are loaded.
        should_stop: Called after each epoch: True stops there (``interrupted``).
        log: Gets every note (a repaired file, data that were found elsewhere); None for silence.
        holder: What a second writer's refusal names (a command line, say); None for this process's.
        mesh: The devices' (model, data) mesh, as ``training.fit_models`` takes it (``"4x2"``, say);
            ``"auto"`` for its default, None for one device. Checked before anything is written.

    Returns:
        The ``TrainRun``: what was trained, saved and drawn, or why nothing was.

    Raises:
        InputError: A new run without a model whose record builds it again or a ``Dataset``, a
            hyperparameter the model does not declare, a ``sweep`` that is not a
            grid, a resumed run given another config, data the model cannot train on, or a mesh
            the models or the batch size do not split over.
        RunBusyError: Another process holds a directory's lock.
        RunError: A directory cannot take a new run (it holds one, or files jaxvae did not write), holds
            no run to resume, has files that cannot be read, or its data are not the recorded ones.
        MemoryLimitError: The models and data would not fit the device's memory.
        OSError: A write failed (a full disk, say); every directory holds its last saved epoch.
    """
    root = Path(directory)
    with contextlib.ExitStack() as locks:  # every directory stays locked to the end, figures included
        if _resuming(root, resume, sweep):
            run = _resume(root, bool(sweep), model, dataset, train_config, max_epochs,
                          data_dir, download, check_resumed, log, holder, locks, mesh)
        else:
            run = _new(root, _recorded(model), dataset, train_config or TrainConfig(), sweep, data_dir, log,
                       holder, locks, mesh)
        if run.nothing_to_do is None:
            _train(run, callbacks, on_start, should_stop)
            if figures and run.result is not None:
                _draw(run)
    return run


def _resuming(root: Path, resume: bool | None, sweep) -> bool:
    if resume is not None:
        return resume
    return any((root / name).exists() for name in ((SWEEP_FILE,) if sweep else (CONFIG_FILE, CHECKPOINT_FILE)))


def _recorded(model: Model | VAEConfig | None) -> VAEConfig | Model:
    """What a run directory records for ``model``: the ``VAEConfig`` it is made by alone, else the
    model itself, once its ``describe()`` record is seen to build it again (a resumed run needs that)."""
    if model is None:
        raise InputError("model: a new run needs a model (a VAEConfig, or any jaxvae.model.Model)")
    config = model if isinstance(model, VAEConfig) else getattr(model, "config", None)
    # a model that only carries a config (a conditional VAE's) is more than its config: recorded whole
    if isinstance(config, VAEConfig) and as_model(config) == as_model(model):
        return config
    if not isinstance(model, Model):
        as_model(model)  # InputTypeError naming what was given
    record = model_record(model)
    try:
        again = model_from_record(json.loads(json.dumps(record)))
    except (InputError, TypeError, KeyError, ValueError) as e:
        raise InputError(f"model: {type(model).__name__}'s record {record} does not build it again ({e}); a run "
                         "directory must rebuild its model to resume: give the class describe() and from_record()") from None
    if again != model:
        raise InputError(f"model: {type(model).__name__}'s record {record} builds another model ({again!r}); a run "
                         "directory must rebuild its model to resume: give the class describe() and from_record()")
    return model


def plan_placement(model: VAEConfig | Model, batch_size: int, dataset: Dataset, models: int,
                   mesh="auto") -> DeviceMesh | None:
    """The mesh ``models`` models train on (``parallel.plan_mesh``), once each device is seen to have
    the memory for its share of them (a model axis of M devices: models / M each) and for both splits
    of the data, which training keeps on every device.

    Args:
        model: The model, or its ``VAEConfig``.
        batch_size: Rows per batch.
        dataset: The data.
        models: How many models train together.
        mesh: As ``plan_mesh`` takes it.

    Returns:
        The ``DeviceMesh``, or None for one device.

    Raises:
        InputError: A mesh the models or the batch size do not split over.
        MemoryLimitError: A device would not hold its models and the data.
    """
    placement = plan_mesh(mesh, n_models=models, batch_size=batch_size)
    per_device = models // (placement.shape[0] if placement is not None else 1)
    check_memory(model, batch_size, int(dataset.train_x.size + dataset.test_x.size), per_device)
    return placement


# --------------------------------------------------------------------------- a new run or sweep


def check_new_sweep_dir(root: Path, names: Sequence[str]) -> None:
    """RunError unless a new sweep of models ``names`` may start in ``root``.

    Args:
        root: The sweep directory.
        names: The names of its models' run directories.

    Raises:
        RunError: ``root`` holds a run or a sweep already (remedy "resume_sweep"), holds files jaxvae did
            not write, or is not a directory.
    """
    refuse_foreign(root, {SWEEP_FILE, sw.SUMMARY_DIR, LOCK_FILE, *names})
    for path in (root / SWEEP_FILE, root / CONFIG_FILE, *(root / name / CHECKPOINT_FILE for name in names)):
        if path.exists():
            raise RunError(f"{root}: already holds a run or a sweep ({path})", run_dir=root, remedy="resume_sweep")


def _new(root: Path, model: VAEConfig | Model, dataset, train_config: TrainConfig, grid: dict | None, data_dir,
         log: Log | None, holder: str | None, locks: contextlib.ExitStack, mesh) -> TrainRun:
    """A new run or sweep: the data checked first, then the directories made, locked and started."""
    if not isinstance(dataset, Dataset):
        raise InputError("dataset: a new run needs its data as a jaxvae.data.Dataset")
    if grid is not None and not isinstance(grid, dict):
        raise InputError(f"sweep={grid!r}: a new sweep needs its grid (a dict of seeds and values); True continues one")
    check_arrays(dataset, model, train_config.batch_size)
    check_hyperparameters(as_model(model), train_config)
    models, run_dirs, configs = [], [root], [train_config]
    if grid:
        grid = {"seeds": None, **grid}
        grid["seeds"] = 1 if grid["seeds"] is None else grid["seeds"]
        models = sw.sweep_models(model, train_config, **grid)
        grid["seeds"] = list(dict.fromkeys(m.seed for m in models))
        check_new_sweep_dir(root, [m.name for m in models])
        run_dirs, configs = [root / m.name for m in models], [m.train_config for m in models]
    placement = plan_placement(model, train_config.batch_size, dataset, len(configs), mesh)
    data_dir = str(Path(data_dir).resolve()) if data_dir else None
    info = RunInfo(model, train_config, dataset.name, tuple(dataset.image_shape), data_dir,
                   fingerprints=data_fingerprints(dataset))
    run = TrainRun(root, run_dirs, [dataclasses.replace(info, train_config=tc) for tc in configs], dataset,
                   [None] * len(run_dirs), None, models, grid or None, placement=placement)
    if train_config.max_epochs == 0:
        run.nothing_to_do = "the epoch limit is 0: the configs and the data are valid; nothing written"
        return run
    try:
        for directory in dict.fromkeys([root, *run_dirs]):
            WRITER(directory.mkdir, parents=True, exist_ok=True)
            WRITER(hold_lock, locks, directory, holder, log)  # the writer alone locks
        for run_dir, run_info in zip(run_dirs, run.infos):
            if WRITER(check_new_run_dir, run_dir) and log:  # again, under the lock: nobody trained here meanwhile
                log(f"{run_dir} holds a run that never saved a trained epoch: starting afresh in its place")
            WRITER(start_new_run, run_dir, run_info)
    except OSError as e:
        raise RunError(f"{root}: cannot write the run directory ({os_error_text(e)})", run_dir=root) from None
    if run.is_sweep:
        _write_sweep_file(run)
    return run


# --------------------------------------------------------------------------- a resumed run or sweep


def _read_sweep_file(root: Path) -> sw.SweepInfo:
    """``sweep.json`` of the sweep in ``root``. When that file is at fault (truncated, say), the way on:
    its models' run directories still hold their runs, each to be evaluated or continued alone."""
    try:
        return sw.read_sweep_info(root)[0]
    except RunError as e:
        models = sorted(d for d in root.iterdir() if (d / CONFIG_FILE).is_file())
        if not str(e).startswith(str(root / SWEEP_FILE)) or not models:
            raise
        shown = ", ".join(d.name for d in models[:3]) + (", ..." if len(models) > 3 else "")
        raise RunError(f"{e}; the sweep cannot be resumed without it, but each of its {len(models)} models is a run "
                       f"directory ({shown}) that keeps its checkpoint: evaluate one, or continue it alone with: "
                       f"jaxvae train --resume {shlex.quote(str(models[0]))}") from None


def _check_same_run(info: RunInfo, model, train_config: TrainConfig | None, lone: bool) -> None:
    """A resumed run keeps its config: InputError naming the first field given otherwise."""
    recorded = {"model": info.model}
    given = {"model": _recorded(model)} if model is not None else {}
    if lone and train_config is not None:
        recorded["train_config"] = info.train_config
        given["train_config"] = dataclasses.replace(train_config, max_epochs=info.train_config.max_epochs)
    for name, value in given.items():
        if value != recorded[name]:
            raise InputError(f"{name}: a resumed run keeps its config ({recorded[name]} was recorded); only the epoch "
                             "limit may change")


def _resume(root: Path, sweep: bool, model, dataset, train_config, max_epochs, data_dir, download, check_resumed,
            log: Log | None, holder: str | None, locks: contextlib.ExitStack, mesh) -> TrainRun:
    """The run or sweep in ``root``, every directory locked before anything is read."""
    grid, errors, run_dirs = None, [None], [root]
    if sweep:
        require_run_dir(root)
        WRITER(hold_lock, locks, root, holder, log)
        saved = _read_sweep_file(root)
        grid, errors = saved.grid, list(saved.errors)
        run_dirs = [root / name for name in saved.names]
    for run_dir in run_dirs:
        if run_dir.is_dir():
            WRITER(hold_lock, locks, run_dir, holder, log)  # before reading anything: a second writer is refused at once
    name = dataset.name if isinstance(dataset, Dataset) else dataset
    points = [resume_point(d, None if sweep else name, log) for d in run_dirs]
    infos, states = [info for info, _ in points], [state for _, state in points]
    if check_resumed is not None:
        check_resumed(infos[0])
    _check_same_run(infos[0], model, train_config, not sweep)
    model = infos[0].model
    for run_dir, info in zip(run_dirs, infos):
        if info.model != model:
            raise RunError(f"{run_dir / CONFIG_FILE}: its model differs from {run_dirs[0] / CONFIG_FILE}'s; the models "
                           "of a sweep share one architecture", run_dir=run_dir)
    limit = max_epochs if max_epochs is not None else train_config.max_epochs if train_config is not None else None
    if limit is not None:
        infos = [dataclasses.replace(info, train_config=dataclasses.replace(info.train_config, max_epochs=limit))
                 for info in infos]
    run = TrainRun(root, run_dirs, infos, None, errors, states, [], grid)
    idle = [nothing_to_do(model, info.train_config, state) if error is None else "stopped on a non-finite loss"
            for info, state, error in zip(infos, states, errors)]
    if all(idle):
        run.nothing_to_do = idle[0] if len(idle) == 1 else f"every model is done ({idle[0]})"
        return run
    run.dataset = _resumed_data(dataset, infos, run_dirs, data_dir, download, log)
    check_arrays(run.dataset, model, infos[0].train_config.batch_size)
    run.placement = plan_placement(model, infos[0].train_config.batch_size, run.dataset, len(infos), mesh)
    for i, (run_dir, info) in enumerate(zip(run_dirs, infos)):
        run.infos[i] = resumed_info(info, info.train_config, run.dataset, data_dir)
        if run.infos[i] != points[i][0]:
            if info.fingerprints is None and log:
                log(f"{run_dir / CONFIG_FILE} records no data fingerprint (written by jaxvae "
                    f"{info.version or '0.1.0'}): recording those of the data used from now on")
            write_run_config(run_dir, run.infos[i])
    if sweep:
        run.models = [sw.SweepModel(d.name, model, info.train_config) for d, info in zip(run_dirs, run.infos)]
    return run


def _resumed_data(dataset, infos: list[RunInfo], run_dirs: list[Path], data_dir, download: bool,
                  log: Log | None) -> Dataset:
    """The data of a resumed run (the given ``Dataset``, else found where recorded or in ``data_dir``),
    checked against every model's recorded fingerprints."""
    if isinstance(dataset, Dataset):
        check_run_data(infos[0], dataset, data_dir, run_dirs[0])
    else:
        dataset = run_dataset(infos[0], data_dir, download, log, run_dir=run_dirs[0])
    for run_dir, info in zip(run_dirs[1:], infos[1:]):
        check_run_data(info, dataset, data_dir or info.data_dir, run_dir)
    return dataset


# --------------------------------------------------------------------------- training


def _write_sweep_file(run: TrainRun) -> None:
    sw.write_sweep_info(run.root, sw.SweepInfo(run.grid, tuple(d.name for d in run.run_dirs), tuple(run.errors)))


def _start_state(run: TrainRun) -> ModelsState | None:
    """The models' state to resume from, or None for a fresh start. A model that has no checkpoint yet
    starts from its seed (in a resumed sweep, one that stopped non-finite before saving stays stopped)."""
    if run.states is None:
        return None
    states = [state if state is not None else init_fit_state(TrainStep.from_configs(run.model, tc), tc)
              for state, tc in zip(run.states, run.train_configs)]
    return ModelsState.stack(states, run.errors)


class _Stop(Exception):
    """Raised from the epoch callback, after the epoch is saved, when ``should_stop()`` says so."""


def _train(run: TrainRun, callbacks, on_start, should_stop) -> None:
    """``fit_models`` with a ``RunSaver``: every finished epoch saved in each model's run directory."""
    state = _start_state(run)
    writer = BackgroundWriter()  # the checkpoints and metrics of an epoch land while the next one trains
    saved = [s.epoch if s is not None else 0 for s in run.states] if run.states else None
    run.saver = RunSaver(run.run_dirs, run.infos, saved, writer=writer)

    def on_epoch(models_state: ModelsState, records) -> None:
        run.saver(models_state, records)
        if run.is_sweep and list(models_state.errors) != run.errors:  # a model went non-finite: the others go on
            run.errors[:] = models_state.errors
            _write_sweep_file(run)
        for callback in callbacks:
            callback(models_state, records)
        if should_stop is not None and should_stop():
            raise _Stop

    progress = on_start(run) if on_start is not None else None
    try:
        with writer:  # leaving waits until every queued write is on disk (or raises its OSError)
            train, test = run_batches(run.dataset, run.model)
            run.result = fit_models(train, test, model=run.model,
                                    train_configs=run.train_configs, state=state, callbacks=[on_epoch],
                                    progress=progress, progress_every=max(1, run.steps_per_epoch // 20),
                                    data_parallel=run.placement)
    except _Stop:
        run.interrupted = True
        return
    run.errors[:] = run.result.errors
    if run.is_sweep:
        run.summary = sw.summarize(run.models, run.result.histories, run.errors, run.result.stop_reasons)
        run.summary_path = sw.write_summary(run.root, run.summary)


def _draw(run: TrainRun) -> None:
    """Figures of every model that trained, and a sweep's summary with its figures."""
    # deferred: importing matplotlib is ~0.6 s of every command's start, and only figures need it
    import jax

    from jaxvae.plots import save_figures, save_sweep_figures

    result, n = run.result, len(run.run_dirs)
    params = [jax.tree.map(lambda leaf, i=i: leaf[i], result.params) for i in range(n)]
    states = [jax.tree.map(lambda leaf, i=i: leaf[i], result.state.train_state.model_state) for i in range(n)]
    test_x, test_y = run.dataset.test_x, run.dataset.test_y
    run.figures = [[] for _ in range(n)]
    for i, run_dir in enumerate(run.run_dirs):
        if result.histories[i] and result.errors[i] is None:
            run.figures[i] = save_figures(run_dir / FIGURES_DIR, params[i], run.model, test_x, test_y,
                                          run.infos[i].image_shape, result.histories[i], seed=run.train_configs[i].seed,
                                          model_state=states[i])
    if run.is_sweep:
        run.sweep_figures = save_sweep_figures(run.summary_path.parent, run.summary, result.histories, params,
                                               run.model, test_x, test_y)
