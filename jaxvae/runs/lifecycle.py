"""What a command may do with a run directory: start a new run there, continue the one it holds, or
nothing, and the state to continue from.

A run directory is never a dead end: ``check_new_run_dir`` lets a new run replace one that never
saved a trained epoch, ``resume_point`` continues any run that has a config (from its checkpoint, or
from scratch when it has none), and every refusal is a ``RunError`` whose ``remedy`` names the way on.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable

from jaxvae.checkpoint import CheckpointError, checkpoint_run_record, load_checkpoint
from jaxvae.config import TrainConfig, VAEConfig
from jaxvae.data import Dataset
from jaxvae.fileio import OWNERSHIP_FILE, file_kind, json_safe, remove_stale_temps_in, temp_of
from jaxvae.parallel import WRITER
from jaxvae.runs.data import data_fingerprints
from jaxvae.runs.format import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    FIGURES_DIR,
    METRICS_FILE,
    RUN_ENTRIES,
    RunError,
    RunInfo,
    checkpoint_record,
    default_image_shape,
    info_from_record,
    read_metrics,
    read_run_config,
    write_metrics,
    write_run_config,
)
from jaxvae.runs.ownership import adopt_legacy, unowned
from jaxvae.training import FitState, TrainStep, hyper_of


def read_checkpoint(path: Path, info: RunInfo | None = None) -> tuple[FitState, VAEConfig, TrainConfig]:
    """``(FitState, VAEConfig, TrainConfig)`` from ``path`` (checked against ``info``'s configs, else its
    own); a RunError whose remedy is to set the file aside and start again when it cannot be read.

    Args:
        path: The checkpoint file.
        info: The run's record, whose configs the checkpoint must match; with it, a checkpoint that
            records other data than ``info`` is refused too (another run's). None for the checkpoint's own.

    Returns:
        The state and the configs.

    Raises:
        RunError: The checkpoint is missing, unreadable, corrupt or another run's (remedy
            "set_aside_checkpoint").
    """
    try:
        if info is None:
            return load_checkpoint(path)
        return load_checkpoint(path, info.vae_config, info.train_config, data=checkpoint_record(info))
    except CheckpointError as e:
        raise RunError(str(e), run_dir=path.parent, remedy="set_aside_checkpoint") from None


def read_run_info(run_dir: str | os.PathLike) -> RunInfo:
    """``config.json`` of a run that commands read. When it is lost but the checkpoint is there, the
    RunError's remedy is "rebuild_config_from_checkpoint" (the checkpoint carries config.json's
    record), or "rebuild_config" for a checkpoint saved without one (the dataset must be named).

    Args:
        run_dir: The run directory.

    Returns:
        The run's ``RunInfo``.

    Raises:
        RunError: config.json is missing, unreadable or invalid (with one of the remedies above when a
            checkpoint is there), or the checkpoint cannot be read (remedy "set_aside_checkpoint").
    """
    checkpoint = Path(run_dir) / CHECKPOINT_FILE
    try:
        return read_run_config(run_dir)
    except RunError as e:
        if not checkpoint.exists():
            raise
        if _checkpoint_record(checkpoint) is not None:
            raise RunError(f"{e}; {checkpoint} still holds the run and its record, and config.json can be rebuilt "
                           "from it", run_dir=run_dir, remedy="rebuild_config_from_checkpoint") from None
        raise RunError(f"{e}; {checkpoint} still holds the run, and config.json can be rebuilt from it given the "
                       "name of its dataset", run_dir=run_dir, remedy="rebuild_config") from None


def _checkpoint_record(checkpoint: Path) -> dict | None:
    """The config.json record a checkpoint carries (None: saved without one); RunError naming the file."""
    try:
        return checkpoint_run_record(checkpoint)
    except CheckpointError as e:
        raise RunError(str(e), run_dir=checkpoint.parent, remedy="set_aside_checkpoint") from None


def _rebuilt_info(checkpoint: Path, dataset: str | None) -> RunInfo | None:
    """config.json's RunInfo from the checkpoint: its own record when it has one (``dataset``, if
    given, must agree), else its configs and ``dataset``; None when neither is there."""
    record = _checkpoint_record(checkpoint)
    if record is None:
        if dataset is None:
            return None
        _, vae_config, train_config = read_checkpoint(checkpoint)
        return RunInfo(vae_config, train_config, dataset, default_image_shape(vae_config.input_dim))
    try:
        info = info_from_record(record)
    except (ValueError, KeyError, TypeError) as e:
        raise RunError(f"{checkpoint}: invalid stored run record ({e})", run_dir=checkpoint.parent,
                       remedy="set_aside_checkpoint") from None
    if dataset is not None and dataset != info.dataset:
        raise RunError(f"{checkpoint}: was trained on {info.dataset}, not on --dataset {dataset}",
                       run_dir=checkpoint.parent, remedy="rebuild_config_from_checkpoint")
    return info


def load_run(run_dir: str | os.PathLike) -> tuple[RunInfo, FitState]:
    """``(RunInfo, FitState)`` of a run directory, for commands that read it; RunError naming the file.
    A run of jaxvae 0.3 or earlier has its own files recorded as jaxvae's first (``adopt_legacy``).

    Args:
        run_dir: The run directory.

    Returns:
        The run's record and its checkpoint's state.

    Raises:
        RunError: config.json or the checkpoint is missing, unreadable or invalid (see ``read_run_info``
            and ``read_checkpoint``).
    """
    adopt_legacy(run_dir)
    info = read_run_info(run_dir)
    return info, read_checkpoint(Path(run_dir) / CHECKPOINT_FILE, info)[0]


def foreign_entries(directory: str | os.PathLike, own: Iterable[str] = RUN_ENTRIES, notes: bool = False,
                    by_record: bool = True) -> list[Path]:
    """What in ``directory`` jaxvae did not write: entries whose names are not in ``own`` (temporary
    files of those names aside), symbolic links, whatever their names, and whatever sits at one of
    jaxvae's paths without being a file it wrote there (``ownership.unowned``).

    Args:
        directory: The directory.
        own: The names jaxvae writes there (its record's name is added).
        notes: Whether other names are allowed (the user's notes): then only links and, ``by_record``,
            what sits at jaxvae's paths are named.
        by_record: Whether to name what sits at jaxvae's paths without being a file it wrote there.

    Returns:
        The entries named by name or link (sorted), then the others at jaxvae's paths; empty when
        ``directory`` is not a directory.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    own = {*own, OWNERSHIP_FILE}  # the record of what jaxvae wrote there, in every directory it writes
    by_name = [entry for entry in sorted(directory.iterdir())
               if entry.is_symlink() or (not notes and (temp_of(entry.name) or entry.name) not in own)]
    return by_name + [path for path in (unowned(directory) if by_record else ()) if path not in by_name]


def refuse_foreign(directory: str | os.PathLike, own: Iterable[str] = RUN_ENTRIES, links_only: bool = False,
                   by_record: bool = True) -> None:
    """RunError naming what in ``directory`` jaxvae did not write, or saying that ``directory`` exists
    and is not a directory. The files of a run of jaxvae 0.3 or earlier are recorded as its own first
    (``ownership.adopt_legacy``).

    Args:
        directory: The directory.
        own: The names jaxvae writes there.
        links_only: Name only its symbolic links and what sits at jaxvae's own paths: a run being
            continued may hold the user's notes, never a link or another's file where its files go.
        by_record: False: by names and links only (for a caller that checks the run's own files first,
            for their more telling refusals).

    Raises:
        RunError: ``directory`` holds entries jaxvae did not write, or is not a directory.
        OSError: The record of what jaxvae wrote cannot be written while adopting an older run's files.
    """
    if Path(directory).exists() and not Path(directory).is_dir():
        raise RunError(f"{directory}: exists and is not a directory", run_dir=directory)
    adopt_legacy(directory)
    foreign = foreign_entries(directory, own, notes=links_only, by_record=by_record)
    if foreign:
        names = ", ".join(str(entry.relative_to(directory)) + (f" ({kind})" if (kind := file_kind(entry)) else "")
                          for entry in foreign[:5])
        more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        raise RunError(f"{directory} holds files that jaxvae did not write ({names}{more}); jaxvae writes only where "
                       "nothing else is, leaving them untouched: choose another directory", run_dir=directory)


def check_new_run_dir(run_dir: str | os.PathLike) -> bool:
    """Whether a new run may start in ``run_dir``, and how.

    False: it does not exist or holds no run. True: it holds a start that never saved a trained epoch
    (config.json without a checkpoint, or a checkpoint of epoch 0 that was not imported); the new run
    replaces it in place, losing nothing. RunError (remedy "resume") when it holds a trained or
    imported model, or when it is not a directory; RunError without remedy when it holds files jaxvae
    did not write (``refuse_foreign``), a config.json that is not a jaxvae run's among them.

    Args:
        run_dir: The directory.

    Returns:
        Whether it holds a start that the new run replaces.

    Raises:
        RunError: ``run_dir`` holds a trained or imported model, or is not a directory (remedy "resume"
            for the model; none otherwise); it holds files jaxvae did not write; its config.json is
            invalid and there is no checkpoint (remedy "set_aside_config"); its checkpoint cannot be
            read (remedy "set_aside_checkpoint").
    """
    run_dir = Path(run_dir)
    refuse_foreign(run_dir, by_record=False)  # foreign names first, then the run's own files, then the record
    restart = _restartable(run_dir)
    refuse_foreign(run_dir)
    return restart


def _restartable(run_dir: Path) -> bool:
    """``check_new_run_dir``'s answer from the run's config and checkpoint alone."""
    if not (run_dir / CHECKPOINT_FILE).exists():
        if not (run_dir / CONFIG_FILE).exists():
            return False
        try:
            read_run_config(run_dir)
        except RunError as e:
            raise RunError(f"{e}; it is left as it is", run_dir=run_dir, remedy="set_aside_config") from None
        return True
    epoch = read_checkpoint(run_dir / CHECKPOINT_FILE)[0].epoch
    try:
        imported = read_run_config(run_dir).imported_from
    except RunError:
        imported = None
    if epoch == 0 and imported is None:
        return True
    what = f"a model imported from {imported['file']}" if imported is not None else f"a run trained for {epoch} epoch{'s' * (epoch != 1)}"
    raise RunError(f"{run_dir} already holds {what} ({run_dir / CHECKPOINT_FILE})", run_dir=run_dir, remedy="resume")


def start_new_run(run_dir: str | os.PathLike, info: RunInfo) -> None:
    """Write a new run's config.json into ``run_dir`` (made and locked, and passed by
    ``check_new_run_dir``), clearing what an earlier start that never trained left: its epoch-0
    checkpoint and its metrics.

    Args:
        run_dir: The run directory.
        info: The new run's record.

    Raises:
        NotOwnedError: config.json or metrics.jsonl holds a file that jaxvae did not write.
        OSError: A file cannot be written or removed; the message names it.
    """
    run_dir = Path(run_dir)
    _remove_stale_temps(run_dir)
    write_run_config(run_dir, info)
    (run_dir / CHECKPOINT_FILE).unlink(missing_ok=True)
    write_metrics(run_dir, [])


def resume_point(run_dir: str | os.PathLike, dataset: str | None = None,
                 log: Callable[[str], None] | None = None) -> tuple[RunInfo, FitState | None]:
    """``(RunInfo, FitState or None)``: the run to continue and its checkpoint; None when no epoch was
    saved yet (the run then starts from scratch with its recorded config). RunError naming the file.

    A checkpoint whose config.json is missing or unreadable still holds the whole run: config.json is
    rebuilt from the checkpoint's own record (an unreadable one is kept as config.json.bad, and
    ``log`` is told). A checkpoint saved without a record (jaxvae 0.2 and earlier) lacks the name of
    its data: given ``dataset``, config.json is rebuilt from its configs and that name; without it,
    the RunError's remedy is "rebuild_config".

    Args:
        run_dir: The run directory (locked by the caller).
        dataset: The name of the run's dataset, for a checkpoint saved without a record; None if not known.
        log: Told when config.json is rebuilt or metrics.jsonl rewritten from the checkpoint; None for silence.

    Returns:
        The run's record and the state to continue from, or None for a run with no saved epoch.

    Raises:
        RunError: ``run_dir`` does not exist or holds no run (remedy "start"), is a file, holds links or
            files jaxvae did not write at its paths, has a config.json that cannot be read and no
            checkpoint (remedy "set_aside_config") or none that can be rebuilt (remedy "rebuild_config"
            or "rebuild_config_from_checkpoint"), or a checkpoint that cannot be read (remedy
            "set_aside_checkpoint"); or config.json.bad is in the way.
        OSError: A file cannot be written or renamed; the message names it.
    """
    run_dir = Path(run_dir)
    checkpoint, config = run_dir / CHECKPOINT_FILE, run_dir / CONFIG_FILE
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"{run_dir} is a file, not a run directory", run_dir=run_dir)
    if not run_dir.exists():
        raise RunError(f"run directory {run_dir} does not exist", run_dir=run_dir, remedy="start")
    if not config.exists() and not checkpoint.exists():
        raise RunError(f"{run_dir} holds no jaxvae run (no {CONFIG_FILE})", run_dir=run_dir, remedy="start")
    refuse_foreign(run_dir, links_only=True, by_record=False)  # the record after the run's own files: see below
    try:
        info = read_run_config(run_dir)
    except RunError as e:
        if kind := file_kind(config):  # not a garbled file of jaxvae's, to set aside: someone else's
            raise RunError(f"{config}: is {kind}, not a run config; jaxvae leaves it as it is: move it away",
                           run_dir=run_dir) from None
        if not checkpoint.exists():
            raise RunError(f"{e}; no epoch was saved", run_dir=run_dir, remedy="set_aside_config") from None
        info = _rebuilt_info(checkpoint, dataset)
        if info is None:
            raise RunError(f"{e}; {checkpoint} still holds the run, and config.json can be rebuilt from it given "
                           "the name of its dataset", run_dir=run_dir, remedy="rebuild_config") from None
        state = read_checkpoint(checkpoint, info)[0]
        _prepare_resume(run_dir)
        if config.exists():
            WRITER(_set_aside, config)
        write_run_config(run_dir, info)
        _repair_metrics(run_dir, state, log)
        if log:
            log(f"{e}; rebuilt {config} from {checkpoint}" + (" and the dataset name " + dataset
                                                                if dataset and info.fingerprints is None else ""))
        return info, state
    state = read_checkpoint(checkpoint, info)[0] if checkpoint.exists() else None
    _prepare_resume(run_dir)
    if state is not None:
        _repair_metrics(run_dir, state, log)
    return info, state


def _prepare_resume(run_dir: Path) -> None:
    """Under the lock, once the run's config and checkpoint are read (their refusals say more): refuse
    another's file at one of jaxvae's paths, and remove the temporaries a killed writer left."""
    refuse_foreign(run_dir, links_only=True)
    WRITER(_remove_stale_temps, run_dir)


def _remove_stale_temps(run_dir: Path) -> None:
    """Under the lock: remove the temporaries of jaxvae's naming that killed writers left in the run."""
    for directory in (run_dir, run_dir / FIGURES_DIR):
        remove_stale_temps_in(directory)


def _set_aside(path: Path) -> None:
    """Rename ``path`` to ``path.bad``, which must be free: an earlier one is the user's to keep."""
    bad = path.with_name(path.name + ".bad")
    if os.path.lexists(bad):
        raise RunError(f"{path}: cannot be set aside as {bad.name}, which exists; move that away, then try again",
                       run_dir=path.parent)
    os.replace(path, bad)


def _repair_metrics(run_dir: Path, state: FitState, log=None) -> None:
    """Rewrite metrics.jsonl from the checkpoint's history when they differ: a run killed between
    saving its checkpoint and its metrics left them one epoch short."""
    if read_metrics(run_dir) != json.loads(json.dumps(json_safe(state.history))):
        write_metrics(run_dir, state.history)
        if log:
            log(f"{run_dir / METRICS_FILE}: rewritten from {run_dir / CHECKPOINT_FILE}'s history "
                f"({len(state.history)} epochs): the two disagreed, as a run killed between its saves leaves them")


def nothing_to_do(vae_config: VAEConfig, train_config: TrainConfig, state: FitState | None) -> str | None:
    """Why continuing ``state`` (None: a fresh start) would train no epoch, or None: the host loop's
    own test (``TrainStep.finished`` and the epoch limit).

    Args:
        vae_config: The model's config.
        train_config: The training config, with the epoch limit.
        state: The state to continue, or None for a fresh start.

    Returns:
        The reason, one line, or None when there is an epoch to train.
    """
    epoch = state.epoch if state is not None else 0
    if epoch >= train_config.max_epochs:
        return f"the checkpoint is after epoch {epoch} and the epoch limit is {train_config.max_epochs}"
    if state is not None:
        step = TrainStep.from_configs(vae_config, train_config)
        if step.finished(state.schedules, epoch, hyper_of(step.model, train_config)):
            return f"its {train_config.lr_schedule} lr schedule ended after epoch {epoch}"
    return None


def resumed_info(info: RunInfo, train_config: TrainConfig, dataset: Dataset,
                 data_dir: str | os.PathLike | None) -> RunInfo:
    """``info`` as a resumed run records it: its (possibly longer) train config, the data location
    used now and, for runs that recorded none (jaxvae 0.1.0), the fingerprints of the data used from
    now on.

    Args:
        info: The run's record.
        train_config: The train config the run continues with.
        dataset: The data it continues on.
        data_dir: The data location used now, recorded resolved (``run_dataset`` has checked it holds
            the same data); None keeps the recorded one.

    Returns:
        The new ``RunInfo``.
    """
    changes = {"train_config": train_config}
    if data_dir is not None:
        changes["data_dir"] = str(Path(data_dir).resolve())
    if info.fingerprints is None:
        changes["fingerprints"] = data_fingerprints(dataset)
    return replace(info, **changes)
