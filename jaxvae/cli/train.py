"""``jaxvae train`` and ``jaxvae sweep``: flags -> configs and data -> ``runs.train_run`` -> the lines
that say what it did. A train is a sweep of one model whose run directory is ``--out`` itself; a
sweep's models each get ``SWEEP_DIR/<name>``, beside ``sweep.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import shlex
from pathlib import Path

import jax

from jaxvae import sweep as sw
from jaxvae.checks import ResourceError, out_of_memory
from jaxvae.cli.console import (
    EpochProgress,
    SigintFlag,
    model_shape,
    quiet,
    say,
    warn,
)
from jaxvae.cli.flags import (
    EXIT_NONFINITE,
    EXIT_RESOURCES,
    EXIT_USAGE,
    PROG,
    RESUME_OVERRIDABLE,
    SWEEP_VALUE_FLAGS,
    SWEPT_HYPERPARAMETERS,
    UsageError,
    configs_from_args,
    flag_of,
    given_fields,
)
from jaxvae.cli.inputs import load_data
from jaxvae.cli.rundir import check_out_dir, default_run_dir, remedy_text, resume_command
from jaxvae.cli.sweep import epoch_line, settings_table, val_metrics
from jaxvae.config import DEFAULT_FAMILY, FAMILIES, LR, TRAIN_FIELDS, Family, VAEConfig
from jaxvae.data import Dataset
from jaxvae.entry import EXIT_INTERRUPTED
from jaxvae.fileio import os_error_text
from jaxvae.model import Model, class_path, import_path
from jaxvae.runs import CONFIG_FILE, TENSORBOARD_DIR, RunBusyError, RunError, RunInfo, TrainRun, train_run
from jaxvae.runs.trainer import plan_placement
from jaxvae.tensorboard import TensorBoardLogger
from jaxvae.training import COLLAPSE_KL, ModelsState, posterior_collapsed
from jaxvae.vae import as_model

NOUN = {"train": "run", "sweep": "sweep"}  # what each command trains


def _sweep_grid(args) -> dict:
    # Sweep flags default to SUPPRESS (help shows the dataclass default): absent means not given.
    return {"seeds": getattr(args, "seeds", None),
            **{name: getattr(args, f"sweep_{name}", None) for name in SWEEP_VALUE_FLAGS}}


def _check_sweep_memory(model: VAEConfig | Model, batch_size: int, dataset: Dataset, grid: dict, mesh) -> None:
    """The memory the models of the grid need on each device of --mesh, counted before any is built (a
    huge --seeds would fill the memory with their configs alone); the ResourceError names the flags that count."""
    count, flags = grid["seeds"], [f"--seeds {grid['seeds']}"]
    for name, flag in SWEEP_VALUE_FLAGS.items():
        if grid[name]:
            count *= len(grid[name])
            flags.append(f"{flag} ({len(grid[name])} values)")
    try:
        plan_placement(model, batch_size, dataset, count, mesh)
    except ResourceError as e:
        raise ResourceError(f"{' x '.join(flags)}: {count:,} models; {e}") from None


def _check_family_flags(args, family: Family, sweep: bool) -> None:
    """UsageError for a hyperparameter flag the chosen --model does not read; each value given checked
    against its declaration (InputError naming it). Before any data: a bad command fails at once."""
    offered = [h.name for h in (*family.hyperparameters, LR)]
    for h in SWEPT_HYPERPARAMETERS:
        dest = f"sweep_{h.name}" if sweep else (h.name if h.name in TRAIN_FIELDS else f"hyper_{h.name}")
        if not hasattr(args, dest):
            continue
        if h.name not in offered:
            raise UsageError(f"{h.flag}: --model {family.name} has no such hyperparameter (it has "
                             f"{', '.join(SWEEP_VALUE_FLAGS[n] for n in offered)})")
        for value in getattr(args, dest) if sweep else [getattr(args, dest)]:
            h.check(value)


def family_model(family: Family, vae_config: VAEConfig, dataset: Dataset) -> VAEConfig | Model:
    """The model ``--model`` names, for ``dataset``: the class's ``for_dataset`` (the blog's VAE is
    recorded by its ``VAEConfig``, as ever).

    Args:
        family: The ``--model`` entry.
        vae_config: The architecture the flags give.
        dataset: The training data.

    Returns:
        The model, or the ``VAEConfig``.
    """
    return import_path(family.model_class).for_dataset(vae_config, dataset)


def _new_run(args, command: str) -> dict:
    """``train_run``'s arguments for a new run or sweep: configs and flags checked first, then the data
    loaded (and the model's input size following them)."""
    sweep = command == "sweep"
    family = FAMILIES[getattr(args, "family", DEFAULT_FAMILY)]
    _check_family_flags(args, family, sweep)
    vae_config, train_config = configs_from_args(args)  # bad flags fail here, before any data
    grid = None
    if sweep:
        grid = _sweep_grid(args)
        grid["seeds"] = 1 if grid["seeds"] is None else grid["seeds"]
        # the values are checked against the model, built from the data, by train_run
    elif args.out:
        check_out_dir(Path(args.out))  # a run that would be refused is refused before loading data
    dataset = load_data(getattr(args, "dataset", "mnist"), args.data_dir, not args.no_download, args.require_mnist)
    if not hasattr(args, "input_dim"):  # the 784 default is MNIST's: follow the data
        vae_config = vae_config.replace(input_dim=int(dataset.train_x.shape[1]))
    model = family_model(family, vae_config, dataset)
    if sweep:
        _check_sweep_memory(model, train_config.batch_size, dataset, grid, args.mesh)
    root = Path(args.out) if args.out else default_run_dir(dataset.name, "sweep-" if sweep else "")
    return dict(directory=root, model=model, dataset=dataset, train_config=train_config, sweep=grid,
                resume=False, data_dir=args.data_dir, mesh=getattr(args, "mesh", "auto"))


def _family_of(model) -> str | None:
    """The ``--model`` name of a recorded model; None for a model made in Python."""
    path = class_path(type(as_model(model)))
    return next((f.name for f in FAMILIES.values() if f.model_class == path), None)


def _check_resume_flags(args, command: str, info: RunInfo, root: Path) -> None:
    """A resumed run keeps its config and data: only --epochs may change; --dataset must name its
    data; --data-dir may only move it (train_run compares the fingerprints)."""
    config_file = root / (sw.SWEEP_FILE if command == "sweep" else CONFIG_FILE)
    recorded = _family_of(info.model)
    if hasattr(args, "family") and args.family != recorded:
        raise UsageError(f"--model {args.family}: a resumed {NOUN[command]} keeps its model "
                         f"({recorded or model_shape(info.model)}, recorded in {config_file}); only --epochs may change")
    own_model = not isinstance(info.model, VAEConfig)  # not the blog's VAE: its record is no VAEConfig's fields
    current = {**({} if own_model else dataclasses.asdict(info.model)), **dataclasses.asdict(info.train_config)}
    for name, value in given_fields(args).items():
        value = tuple(value) if isinstance(value, list) else value
        if name not in current:
            raise UsageError(f"{flag_of(name)}: a resumed {NOUN[command]} keeps its model ({model_shape(info.model)}, "
                             f"recorded in {config_file}); only --epochs may change")
        if name not in RESUME_OVERRIDABLE and value != current[name]:
            raise UsageError(f"{flag_of(name)}: a resumed {NOUN[command]} keeps its config "
                             f"({name}={current[name]!r} in {config_file}); only --epochs may change")
    if command == "sweep":
        grid = _sweep_grid(args)
        changed = [flag for name, flag in {**SWEEP_VALUE_FLAGS, "seeds": "--seeds"}.items() if grid[name] is not None]
        if changed:
            raise UsageError(f"{changed[0]}: a resumed sweep keeps its configs and values ({config_file}); "
                             "only --epochs may change")
    dataset = getattr(args, "dataset", None)
    if dataset is not None and dataset != info.dataset:
        raise UsageError(f"--dataset {dataset}: the run in {root} was trained on {info.dataset} "
                         f"({config_file}); a resumed run keeps its data")
    if args.require_mnist and info.dataset != "mnist":
        raise UsageError(f"--require-mnist: the run in {root} was trained on {info.dataset}, not MNIST "
                         f"({config_file}); a resumed run keeps its data")


def _resumed_run(args, command: str) -> dict:
    """``train_run``'s arguments to continue the run or sweep in --resume (only --epochs may change)."""
    root = Path(args.resume)
    if args.out and Path(args.out).resolve() != root.resolve():
        raise UsageError(f"--out {args.out} differs from --resume {root}; a resumed {NOUN[command]} stays in its "
                         "directory")
    return dict(directory=root, dataset=getattr(args, "dataset", None) if command == "train" else None,
                sweep=command == "sweep" or None, resume=True, max_epochs=getattr(args, "max_epochs", None),
                data_dir=args.data_dir, download=not args.no_download, mesh=getattr(args, "mesh", "auto"),
                check_resumed=lambda info: _check_resume_flags(args, command, info, root))


def _nothing_to_do_line(command: str, run: TrainRun) -> str:
    """The closing line of a call that trained nothing: --epochs 0, or a run or sweep that is done."""
    if run.states is None:  # a new run with --epochs 0
        return "--epochs 0: the configs and the data are valid; nothing to train, nothing written"
    epoch = run.resumed_after
    hint = f"; to train longer, pass --epochs above {epoch}" if run.train_configs[0].max_epochs <= epoch else ""
    return (f"{run.root}: nothing to do: {run.nothing_to_do}{hint} (the {NOUN[command]} is left as it is; "
            f"see it with: {PROG} evaluate {shlex.quote(str(run.run_dirs[0]))})")


def _header(command: str, run: TrainRun) -> None:
    say(f"{NOUN[command]} directory: {run.root}")
    if run.resumed_after:
        resuming = f"; resuming after epoch {run.resumed_after}"
    else:
        resuming = "; no checkpoint yet: starting at epoch 1" if run.states is not None else ""
    models = ""
    if run.is_sweep:
        varying = sw.varying_values(run.models)
        seeds = len({m.seed for m in run.models})
        models = (f"; {len(run.run_dirs)} models ({', '.join(SWEEP_VALUE_FLAGS[q] for q in varying) or 'seeds only'}; "
                  f"{seeds} seed{'s' * (seeds > 1)} each) in one compiled program")
    say(f"data: {run.dataset.name}, {len(run.dataset.train_x)} train / {len(run.dataset.test_x)} test samples, "
        f"{run.dataset.train_x.shape[1]} features; model {model_shape(run.model)}{models}{resuming}")
    device = jax.devices()[0]
    say(f"device: {device.platform} ({device.device_kind}, {jax.device_count()} device"
        f"{'s' * (jax.device_count() > 1)}); compiling the first epoch")


def _non_finite_line(command: str, run: TrainRun, error: str) -> str:
    """A lone run that stopped on a non-finite loss: what is kept, and how to train on."""
    quoted = shlex.quote(str(run.root))
    if run.saved_epochs[0]:
        kept = (f"the last good checkpoint (epoch {run.saved_epochs[0]}) is unchanged at "
                f"{run.saver.checkpoint_path(0)} and usable ({PROG} evaluate {quoted}); resuming would repeat the "
                f"same steps, so to train on, start a new run with a smaller --lr: "
                f"{PROG} {command} --out NEW_DIR --lr ...")
    else:
        kept = (f"no epoch finished, so no checkpoint was written; start it again with a smaller --lr: "
                f"{PROG} {command} --out {quoted} --lr ... (and your other flags)")
    return f"{PROG} {command}: error: {error}; {kept}"


def _interrupted_line(run: TrainRun, resume: str) -> str:
    if len(run.run_dirs) > 1:
        return f"interrupted; every model's last finished epoch is saved in its run directory; resume with: {resume}"
    if run.saved_epochs[0]:
        return (f"interrupted after epoch {run.saved_epochs[0]}; checkpoint saved to {run.saver.checkpoint_path(0)}; "
                f"resume with: {resume}")
    return f"interrupted before the first epoch finished; nothing saved; start it again with: {resume}"


def _failure(command: str, run: TrainRun, error: Exception, resume: str) -> tuple[str, int] | None:
    """The line and exit code of a run that a full disk or a failed allocation stopped mid-training
    (None: neither)."""
    if isinstance(error, OSError):  # a full disk or a vanished directory while saving an epoch
        if len(run.run_dirs) > 1:
            kept = "every model's run directory keeps its last saved epoch"
        elif run.saved_epochs[0]:
            kept = (f"the last good checkpoint (epoch {run.saved_epochs[0]}) is unchanged at "
                    f"{run.saver.checkpoint_path(0)}")
        else:
            kept = "no epoch was saved"
        line = f"{PROG} {command}: error: {os_error_text(error)}; {kept}; fix that, then continue with: {resume}"
        return line, EXIT_USAGE
    if (what := out_of_memory(error)) is not None:
        return (f"{PROG} {command}: error: out of memory after epoch {min(run.saved_epochs)} ({what}); every run "
                f"directory keeps its last saved epoch; free memory, then continue with: {resume}"), EXIT_RESOURCES
    return None


class _Display:
    """What the command shows while ``train_run`` trains: the header, the Ctrl-C handling, the epoch
    lines and warnings, progress bars and TensorBoard; ``started`` once the run is planned."""

    def __init__(self, args, command: str, stack: contextlib.ExitStack, displays: contextlib.ExitStack):
        self.args, self.command, self.stack, self.displays = args, command, stack, displays
        self.run: TrainRun | None = None
        self.stop: SigintFlag | None = None

    @property
    def resume(self) -> str:
        return resume_command(self.command, self.run.root)

    def second_ctrl_c(self) -> str:
        n = len(self.run.run_dirs)
        if any(self.run.saved_epochs):
            where = (f"the checkpoint of epoch {self.run.saved_epochs[0]} is at {self.run.saver.checkpoint_path(0)}"
                     if n == 1 else "every model's last finished epoch is saved in its run directory")
            return f"second Ctrl-C: stopped at once; {where}; resume with: {self.resume}"
        return f"second Ctrl-C: stopped at once; no epoch had finished; start it again with: {self.resume}"

    def start(self, run: TrainRun):
        """``train_run``'s ``on_start``: returns fit's per-step hook (the progress bar's, or None)."""
        self.run = run
        # installed before the first line: a Ctrl-C from now on is ours
        self.stop = self.stack.enter_context(SigintFlag(self.second_ctrl_c))
        args, n = self.args, len(run.run_dirs)
        self.progress = EpochProgress("none" if args.quiet else args.progress, run.steps_per_epoch, run.first_epoch,
                                      run.train_configs[0].max_epochs, models=n)
        self.loggers = [[TensorBoardLogger(d / TENSORBOARD_DIR)] if args.tensorboard else [] for d in run.run_dirs]
        for display in [self.progress, *(logger for per_model in self.loggers for logger in per_model)]:
            self.displays.callback(display.close)
        self.errors = list(run.errors)
        self.collapse_warned = [False] * n
        _header(self.command, run)
        return self.progress.step_hook

    def should_stop(self) -> bool:
        return self.stop is not None and self.stop.requested

    def on_epoch(self, models_state: ModelsState, records) -> None:
        run = self.run
        self.progress.end_epoch()
        for i, record in enumerate(records):
            for logger in self.loggers[i] if record is not None else ():
                logger(None, record)
        newly = [i for i, e in enumerate(models_state.errors) if e is not None and self.errors[i] is None]
        self.errors = list(models_state.errors)
        if run.is_sweep:  # a lone run's error ends the run: its lines come at the end
            for i in newly:
                warn(f"{PROG} sweep: model {run.run_dirs[i].name}: {models_state.errors[i]}; its run directory "
                     f"keeps its last good epoch ({models_state.epochs[i]}); the other models go on")
        line = epoch_line(records, run.models, run.train_configs[0].max_epochs)
        if line:
            say(line)
        for i, record in enumerate(records):
            # after the first epoch: a model may start near the prior and leave it
            if (record is not None and record["epoch"] >= 2 and not self.collapse_warned[i]
                    and posterior_collapsed(record)):
                self.collapse_warned[i] = True
                who = f"model {run.run_dirs[i].name}: " if run.is_sweep else ""
                warn(f"{PROG} {self.command}: warning: {who}posterior collapse: the KL term is "
                     f"{record['val_kl']:.4f} nats per image after epoch {record['epoch']} (below {COLLAPSE_KL}), "
                     "so z carries almost no information about x; try "
                     f"{'a smaller --kl-weight, --kl-warmup-epochs N, or ' if 'kl_weight' in record else ''}"
                     "a larger --latent-dim")


def _closing(args, command: str, run: TrainRun) -> int:
    """The closing lines of a run that trained: its figures and last epoch, or a sweep's table."""
    result, n = run.result, len(run.run_dirs)
    if not run.is_sweep and result.errors[0] is not None:
        warn(_non_finite_line(command, run, result.errors[0]))
        return EXIT_NONFINITE
    if run.is_sweep:
        for line in settings_table(run.summary):
            say(line)
        say(f"summary: {run.summary_path}", closing=True)
        if run.sweep_figures:
            say(f"figures: {', '.join(str(p) for p in run.sweep_figures)}")
    else:
        if run.figures and run.figures[0]:
            say(f"figures: {', '.join(str(p) for p in run.figures[0])}")
        history = result.histories[0]
        if history:
            last, tc = history[-1], run.train_configs[0]
            why = {"schedule": f"the {tc.lr_schedule} schedule ended", "max_epochs": "max epochs"}
            say(f"done after epoch {last['epoch']} ({why[result.stop_reasons[0]]}): train loss "
                f"{last['train_loss']:.4f}, val loss {last['val_loss']:.4f}{val_metrics(last)}", closing=True)
    failed = [d.name for d, e in zip(run.run_dirs, result.errors) if e is not None]
    if failed:
        warn(f"{PROG} sweep: {len(failed)} of {n} models stopped on a non-finite loss "
             f"({', '.join(failed)}); the summary leaves them out")
        return EXIT_NONFINITE
    return 0


def run_command(args: argparse.Namespace) -> int:
    """``jaxvae train`` or ``jaxvae sweep``, as ``args.command`` says: a new run or sweep, or the one
    --resume names, trained by ``runs.train_run`` with the command's lines, progress bars, TensorBoard
    and Ctrl-C handling. A full disk or a failed allocation during training, a Ctrl-C and a
    non-finite loss end it with one line saying what is kept and how to go on.

    Args:
        args: The parsed command line.

    Returns:
        The exit code: 0, 1 (a non-finite loss), 2 (a write failed during training), 3 (out of memory
        during training) or 130 (interrupted).

    Raises:
        UsageError: A flag the run cannot take (a resumed run's config or data changed, --out and
            --resume differ, --data-dir for other data), or a new run's --out is refused.
        InputError: A config value or data that the model cannot train on.
        RunError: The run or sweep to resume cannot be read or continued, or its data differ.
        RunBusyError: Another process holds a directory's lock.
        MemoryLimitError: The models and data would not fit the device's memory.
        KeyboardInterrupt: Ctrl-C before training started.
        OSError: A write failed before training started.
    """
    command = args.command
    with contextlib.ExitStack() as stack:  # the Ctrl-C handling, to the end
        stack.enter_context(quiet(args.quiet))  # --quiet: stdout gets the closing line only
        kwargs = _resumed_run(args, command) if args.resume else _new_run(args, command)
        displays = contextlib.ExitStack()  # closed as training ends, before any closing line
        display = _Display(args, command, stack, displays)
        try:
            with displays:
                run = train_run(**kwargs, figures=not args.no_plots, callbacks=[display.on_epoch],
                                on_start=display.start, should_stop=display.should_stop,
                                log=warn,
                                holder=getattr(args, "command_line", None))
        except RunError as e:
            if display.run is not None or args.resume or isinstance(e, RunBusyError):
                raise
            raise UsageError(f"--out {e}{remedy_text(e)}") from None  # the new run's directory is refused
        except KeyboardInterrupt:
            if display.run is None or display.run.result is not None:
                raise
            warn(_interrupted_line(display.run, display.resume))
            return EXIT_INTERRUPTED
        except Exception as e:  # a full disk or a failed allocation mid-training: one line, what is kept, the way on
            if display.run is None or display.run.result is not None or (
                    failure := _failure(command, display.run, e, display.resume)) is None:
                raise
            warn(failure[0])
            return failure[1]
        if run.nothing_to_do is not None:
            say(_nothing_to_do_line(command, run), closing=True)
            return 0
        if run.interrupted:
            warn(_interrupted_line(run, display.resume))
            return EXIT_INTERRUPTED
        return _closing(args, command, run)
