"""``jaxvae train``: a fresh run or a resumed one, composed from jaxvae.runs and jaxvae.training."""
from __future__ import annotations

import contextlib
import dataclasses
import shlex
import time
from pathlib import Path

from jaxvae.cli.console import SigintFlag, StopAfterEpoch, epoch_loggers, make_progress, say, warn
from jaxvae.cli.flags import (
    EXIT_INTERRUPTED,
    EXIT_NONFINITE,
    EXIT_USAGE,
    FLAG_NAMES,
    PROG,
    RESUME_OVERRIDABLE,
    UsageError,
    configs_from_args,
    given_fields,
)
from jaxvae.cli.inputs import check_arrays, load_data, os_error_text
from jaxvae.config import TrainConfig, VAEConfig
from jaxvae.fileio import BackgroundWriter
from jaxvae.runs import (
    CONFIG_FILE,
    FIGURES_DIR,
    EpochSaver,
    RunError,
    RunInfo,
    RunLock,
    check_new_run_dir,
    data_fingerprints,
    nothing_to_do,
    resume_point,
    resumed_info,
    run_dataset,
    start_new_run,
    write_metrics,
    write_run_config,
)


def _resume_configs(args, info: RunInfo, run_dir: Path) -> tuple[VAEConfig, TrainConfig]:
    given = given_fields(args)
    current = {**dataclasses.asdict(info.vae_config), **dataclasses.asdict(info.train_config)}
    for name, value in given.items():
        value = tuple(value) if isinstance(value, list) else value
        if name not in RESUME_OVERRIDABLE and value != current[name]:
            flag = "--" + FLAG_NAMES.get(name, name).replace("_", "-")
            raise UsageError(f"{flag}: a resumed run keeps its config ({name}={current[name]!r} in "
                             f"{run_dir / CONFIG_FILE}); only --epochs may change")
    return configs_from_args(args, info.vae_config, info.train_config)


def _check_resume_data_flags(args, info: RunInfo, run_dir: Path) -> None:
    """A resumed run keeps its data: --dataset must name it; --data-dir may only move it (run_dataset
    compares the fingerprints)."""
    dataset = getattr(args, "dataset", None)
    if dataset is not None and dataset != info.dataset:
        raise UsageError(f"--dataset {dataset}: the run in {run_dir} was trained on {info.dataset} "
                         f"({run_dir / CONFIG_FILE}); a resumed run keeps its data")
    if args.require_mnist and info.dataset != "mnist":
        raise UsageError(f"--require-mnist: the run in {run_dir} was trained on {info.dataset}, not MNIST "
                         f"({run_dir / CONFIG_FILE}); a resumed run keeps its data")


def default_run_dir(dataset_name: str) -> Path:
    """``runs/<dataset>-<YYYYmmdd-HHMMSS>`` named after the data actually used (the fallback's too), with
    ``-2``, ``-3``, ... when that directory exists (two runs started within one second)."""
    stem = Path("runs") / f"{dataset_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, n = stem, 1
    while out.exists():
        n += 1
        out = stem.with_name(f"{stem.name}-{n}")
    return out


def new_run_dir(args, dataset_name: str) -> Path:
    out = Path(args.out) if args.out else default_run_dir(dataset_name)
    check_out_dir(out)
    return out


def check_out_dir(out: Path) -> bool:
    """``runs.check_new_run_dir`` for ``--out``: whether a run that never trained is there to restart."""
    try:
        return check_new_run_dir(out)
    except RunError as e:
        raise UsageError(f"--out {e}") from None


def lock_run(run_dir: Path, args, stack: contextlib.ExitStack) -> None:
    """Hold the run directory's lock until ``stack`` closes (the end of the command)."""
    lock = stack.enter_context(RunLock(run_dir, getattr(args, "command_line", None)))
    if not lock.locked:
        warn(f"{PROG}: note: this platform has no advisory file locks; make sure no other jaxvae writes {run_dir}")


def _prepare_resume(args, stack):
    """``(run_dir, info, state, vae_config, train_config, dataset)`` of the run to continue, locked;
    None when there is nothing to do (config.json is then left as it is)."""
    run_dir = Path(args.resume)
    if args.out and Path(args.out).resolve() != run_dir.resolve():
        raise UsageError(f"--out {args.out} differs from --resume {run_dir}; a resumed run stays in its directory")
    if run_dir.is_dir():
        lock_run(run_dir, args, stack)  # before reading anything: a second writer is refused at once
    info, state = resume_point(run_dir, getattr(args, "dataset", None), warn)
    _check_resume_data_flags(args, info, run_dir)
    vae_config, train_config = _resume_configs(args, info, run_dir)
    idle = nothing_to_do(vae_config, train_config, state)
    if idle:
        hint = (f"; to train longer, pass --epochs above {state.epoch if state else 0}"
                if train_config.max_epochs <= (state.epoch if state else 0) else "")
        say(f"{run_dir}: nothing to do: {idle}{hint} (the run is left as it is; "
             f"see it with: {PROG} evaluate {shlex.quote(str(run_dir))})")
        return None
    dataset = run_dataset(info, args.data_dir, not args.no_download, warn, run_dir=run_dir)
    check_arrays(dataset, vae_config, train_config.batch_size)
    updated = resumed_info(info, train_config, dataset, args.data_dir)
    if updated != info:
        if info.fingerprints is None:
            warn(f"{run_dir / CONFIG_FILE} records no data fingerprint (written by jaxvae {info.version or '0.1.0'}): "
                  "recording those of the data used from now on")
        write_run_config(run_dir, updated)
    return run_dir, updated, state, vae_config, train_config, dataset


def _prepare_fresh(args, stack):
    """``(run_dir, info, None, vae_config, train_config, dataset)`` of a new run, its directory made and
    locked only once configs and data are valid; None for --epochs 0 (a check that writes nothing)."""
    vae_config, train_config = configs_from_args(args)  # bad flags fail here, before any data
    if args.out:
        check_out_dir(Path(args.out))  # a run that would be refused is refused before loading data
    dataset = load_data(getattr(args, "dataset", "mnist"), args.data_dir, not args.no_download, args.require_mnist)
    if not hasattr(args, "input_dim"):  # the 784 default is MNIST's: follow the data
        vae_config = vae_config.replace(input_dim=int(dataset.train_x.shape[1]))
    check_arrays(dataset, vae_config, train_config.batch_size)
    if train_config.max_epochs == 0:
        say("--epochs 0: the configs and the data are valid; nothing to train, nothing written")
        return None
    run_dir = new_run_dir(args, dataset.name)
    data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else None
    info = RunInfo(vae_config, train_config, dataset.name, tuple(dataset.image_shape), data_dir,
                   fingerprints=data_fingerprints(dataset))
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock_run(run_dir, args, stack)
        if check_out_dir(run_dir):  # again, under the lock: nobody trained here meanwhile
            warn(f"{run_dir} holds a run that never saved a trained epoch: starting afresh in its place")
        start_new_run(run_dir, info)
    except OSError as e:
        raise UsageError(f"--out {run_dir}: cannot write the run directory ({os_error_text(e)})") from None
    return run_dir, info, None, vae_config, train_config, dataset


def model_shape(vc: VAEConfig) -> str:
    """784-400-2 for an MLP; conv 32-64, latent 2 for the conv architecture (whose ``hidden`` is unused)."""
    if vc.architecture == "conv":
        return f"conv {'-'.join(map(str, vc.conv_channels))}, latent {vc.latent_dim}"
    return f"{vc.input_dim}-{'-'.join(map(str, vc.hidden))}-{vc.latent_dim}"


def _epoch_line(record: dict, max_epochs: int) -> str:
    return (f"epoch {record['epoch']:>3}/{max_epochs}  train loss {record['train_loss']:.4f}  "
            f"val loss {record['val_loss']:.4f}  lr {record['lr']:.1e}  {record['seconds']:.1f}s")


def cmd_train(args) -> int:
    with contextlib.ExitStack() as stack:  # holds the run's lock to the end, figures included
        prepared = _prepare_resume(args, stack) if args.resume else _prepare_fresh(args, stack)
        if prepared is None:
            return 0
        return _train(args, *prepared)


def _train(args, run_dir: Path, info: RunInfo, state, vae_config: VAEConfig, train_config: TrainConfig,
           dataset) -> int:
    from jaxvae.batching import steps_per_epoch
    from jaxvae.training import NonFiniteError, fit

    writer = BackgroundWriter()  # the checkpoint and metrics of an epoch land while the next one trains
    saver = EpochSaver(run_dir, vae_config, train_config, state.epoch if state else 0, writer=writer)
    resume_hint = f"{PROG} train --resume {shlex.quote(str(run_dir))}"

    def second_ctrl_c() -> str:
        if saver.saved_epoch:
            return (f"second Ctrl-C: stopped at once; the checkpoint of epoch {saver.saved_epoch} is at "
                    f"{saver.checkpoint_path}; resume with: {resume_hint}")
        return f"second Ctrl-C: stopped at once; no epoch had finished; start it again with: {resume_hint}"

    steps = steps_per_epoch(len(dataset.train_x), train_config.batch_size, train_config.drop_last)
    progress = make_progress(args, steps, saver.saved_epoch + 1, train_config.max_epochs)
    loggers = epoch_loggers(args, run_dir)

    def close_bar():
        for display in (progress, *loggers):
            display.close()

    with SigintFlag(second_ctrl_c) as stop:  # installed before the first line: a Ctrl-C from now on is ours
        say(f"run directory: {run_dir}")
        if state is not None:
            resuming = f"; resuming after epoch {state.epoch}"
        else:
            resuming = "; no checkpoint yet: starting at epoch 1" if args.resume else ""
        say(f"data: {dataset.name}, {len(dataset.train_x)} train / {len(dataset.test_x)} test samples, "
             f"{vae_config.input_dim} features; model {model_shape(vae_config)}" + resuming)

        def on_epoch(fit_state, record):
            saver(fit_state, record)
            progress.end_epoch()
            say(_epoch_line(record, train_config.max_epochs))
            if stop.requested:
                raise StopAfterEpoch

        try:
            with writer:  # leaving waits until every queued write is on disk (or raises its OSError)
                result = fit(dataset.train_x, dataset.test_x, vae_config=vae_config, train_config=train_config,
                             state=state, callbacks=[on_epoch, *loggers], progress=progress.step_hook,
                             progress_every=max(1, steps // 20))
        except (StopAfterEpoch, KeyboardInterrupt):
            close_bar()
            if saver.saved_epoch:
                warn(f"interrupted after epoch {saver.saved_epoch}; checkpoint saved to {saver.checkpoint_path}; "
                      f"resume with: {resume_hint}")
            else:
                warn(f"interrupted before the first epoch finished; nothing saved; start it again with: {resume_hint}")
            return EXIT_INTERRUPTED
        except NonFiniteError as e:
            close_bar()
            write_metrics(run_dir, e.state.history)  # the history so far (the callback already wrote it)
            if e.state.epoch:
                kept = (f"the last good checkpoint (epoch {e.state.epoch}) is unchanged at {saver.checkpoint_path} "
                        f"and usable ({PROG} evaluate {shlex.quote(str(run_dir))}); resuming would repeat the same "
                        f"steps, so to train on, start a new run with a smaller --lr: {PROG} train --out NEW_DIR --lr ...")
            else:
                kept = (f"no epoch finished, so no checkpoint was written; start it again with a smaller --lr: "
                        f"{PROG} train --out {shlex.quote(str(run_dir))} --lr ... (and your other flags)")
            warn(f"{PROG} train: error: {e}; {kept}")
            return EXIT_NONFINITE
        except OSError as e:  # a full disk or a vanished directory while saving an epoch
            close_bar()
            kept = (f"the last good checkpoint (epoch {saver.saved_epoch}) is unchanged at {saver.checkpoint_path}"
                    if saver.saved_epoch else "no epoch was saved")
            warn(f"{PROG} train: error: {os_error_text(e)}; {kept}; fix that, then continue with: {resume_hint}")
            return EXIT_USAGE

        close_bar()
        history = result.history
        if not args.no_plots:
            from jaxvae.plots import save_figures

            paths = save_figures(run_dir / FIGURES_DIR, result.params, vae_config, dataset.test_x, dataset.test_y,
                                 info.image_shape, history, seed=train_config.seed)
            say(f"figures: {', '.join(str(p) for p in paths)}")
    if history:
        last = history[-1]
        why = {"schedule": f"the {train_config.lr_schedule} schedule ended", "max_epochs": "max epochs"}[result.stop_reason]
        say(f"done after epoch {last['epoch']} ({why}): train loss {last['train_loss']:.4f}, "
             f"val loss {last['val_loss']:.4f} (recon {last['val_recon']:.4f}, KL {last['val_kl']:.4f})")
    return 0
