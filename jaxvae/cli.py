"""The ``jaxvae`` command: train, sweep, evaluate, plot, export and import. argparse -> configs -> modules.

The train flags are generated from the fields of VAEConfig and TrainConfig (one flag per field,
the dataclass default is the flag's default), so defaults live in one place: config.py.
Exit codes: 0 success, 1 training stopped on a non-finite loss, 2 bad input (one line on stderr,
no traceback), 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import importlib.util
import json
import os
import shlex
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from jaxvae.config import (
    ACTIVATIONS,
    ARCHITECTURES,
    BINARIZATIONS,
    COMPUTE_DTYPES,
    LIKELIHOODS,
    LR_SCHEDULES,
    OBJECTIVES,
    OUTPUT_ACTIVATIONS,
    TrainConfig,
    VAEConfig,
)
from jaxvae.fileio import BackgroundWriter, user_cache_dir, write_json
from jaxvae.runs import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    EVALUATE_FILE,
    FIGURES_DIR,
    EpochSaver,
    RunError,
    RunInfo,
    RunLock,
    check_new_run_dir,
    data_fingerprints,
    default_image_shape,
    fingerprints_from_dict,
    load_run,
    nothing_to_do,
    read_run_config,
    require_run_dir,
    resume_point,
    resumed_info,
    run_dataset,
    start_new_run,
    write_metrics,
    write_run_config,
)

PROG = "jaxvae"
EXIT_NONFINITE, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130

# Flag names that differ from the field name with "_" -> "-".
FLAG_NAMES = {"max_epochs": "epochs"}
# What each config flag does; --help adds the choices and the dataclass default.
FIELD_HELP = {
    "input_dim": "features per sample; must match the data",
    "hidden": "encoder hidden widths; the decoder mirrors them",
    "latent_dim": "latent dimensions",
    "activation": "hidden-layer activation",
    "negative_slope": "LeakyReLU negative slope",
    "output_activation": "decoder output activation (Gaussian likelihood only)",
    "recon_sigma": "sigma of the Gaussian reconstruction likelihood (the blog's gauss_sigma)",
    "kl_weight": "weight of the KL term (the blog's distrib_loss_rate; a beta-VAE's beta)",
    "decoder_hidden": "decoder hidden widths",
    "likelihood": "observation model p(x|z): the blog's Gaussian, or Bernoulli (pixels in [0, 1])",
    "objective": "training bound: the ELBO, or the importance-weighted bound (IWAE) with --iwae-k samples",
    "iwae_k": "importance samples per image for --objective iwae",
    "architecture": "encoder and decoder: MLPs, or VGG-style 3x3 conv stacks (square images)",
    "conv_channels": "channels of each conv block (each block halves the image side)",
    "compute_dtype": "dtype of matmuls and convolutions; parameters and loss stay float32",
    "batch_size": "minibatch size",
    "lr": "Adam learning rate (the start value of every --lr-schedule)",
    "max_epochs": "maximum number of epochs",
    "b1": "Adam beta1", "b2": "Adam beta2", "adam_eps": "Adam epsilon",
    "plateau_factor": "ReduceLROnPlateau factor",
    "plateau_patience": "ReduceLROnPlateau patience (epochs)",
    "plateau_threshold": "ReduceLROnPlateau relative threshold",
    "min_lr": "ReduceLROnPlateau minimum lr",
    "stop_lr": "stop before an epoch whose lr is below this",
    "drop_last": "drop the last partial batch of each epoch",
    "seed": "random seed (init, shuffling, noise)",
    "binarize": "binarise the images for a Bernoulli model: never, afresh for every batch, or once",
    "binarize_seed": "seed of --binarize fixed (and of the validation images' one binarisation)",
    "lr_schedule": "learning-rate schedule: plateau (the blog's ReduceLROnPlateau), constant, "
                   "burda (Burda et al.'s 3^i-epoch stages), cosine (to 0 over --epochs)",
    "kl_warmup_epochs": "raise the KL weight linearly from 0 over this many epochs (0: constant)",
}
# The allowed values of the enumerated fields (config.py validates the same tuples).
FIELD_CHOICES = {
    "activation": ACTIVATIONS,
    "output_activation": OUTPUT_ACTIVATIONS,
    "likelihood": LIKELIHOODS,
    "objective": OBJECTIVES,
    "architecture": ARCHITECTURES,
    "compute_dtype": COMPUTE_DTYPES,
    "binarize": BINARIZATIONS,
    "lr_schedule": LR_SCHEDULES,
}
# Defaults the command line does not take from the dataclass as is.
DEFAULT_TEXT = {
    "input_dim": "the dataset's: 784 for MNIST, 64 for digits",
    "decoder_hidden": "the encoder's, reversed",
}
# A resumed run keeps its config; only these may change (to train for longer, say).
RESUME_OVERRIDABLE = {"max_epochs"}
PROGRESS_KINDS = ("epochs", "steps", "none")  # --progress; see EpochProgress
SPLITS = ("test", "train")  # evaluate --split
TENSORBOARD_DIR = "tensorboard"  # train --tensorboard writes RUN_DIR/tensorboard
RUN_DIR_HELP = "a run directory written by 'jaxvae train' or 'jaxvae import'"


class UsageError(ValueError):
    """Bad command-line input; reported as one line with exit code 2."""


def did_you_mean(word: str, candidates) -> str:
    """``"; did you mean X?"`` for the closest candidate, or "" when none is close."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _choice(choices):
    """An argparse ``type`` that accepts one of ``choices`` and names the closest one on a typo."""

    def parse(value: str) -> str:
        if value in choices:
            return value
        raise argparse.ArgumentTypeError(
            f"invalid choice {value!r}{did_you_mean(value, choices)} (choose from {', '.join(choices)})")

    return parse


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's layout with a wider flag column; every default is written into the help text
    once, by whoever adds the flag (no ArgumentDefaultsHelpFormatter, which doubled them)."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=34)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``jaxvae train: error: ...``, exit code 2, no usage dump) and
    a suggestion for a mistyped command, flag or choice, for every subcommand."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        self._commands = None

    def error(self, message):
        message = " ".join(str(message).split())
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def add_subparsers(self, **kwargs):
        kwargs.setdefault("parser_class", _Parser)
        self._commands = super().add_subparsers(**kwargs)
        return self._commands

    def parse_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        self._check_command(args)
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:  # report them in the words of the subcommand they were given to
            command = getattr(parsed, self._commands.dest, None) if self._commands else None
            parser = self._commands.choices[command] if command else self
            parser.error(parser.unrecognized(extras))
        return parsed

    def _check_command(self, args) -> None:
        # argparse's own message for a mistyped command lists the choices but suggests none
        if self._commands is None:
            return
        command = next((a for a in args if not a.startswith("-")), None)
        names = list(self._commands.choices)
        if command is not None and command not in names:
            self.error(f"unknown command {command!r}{did_you_mean(command, names)} (choose from {', '.join(names)})")

    def unrecognized(self, extras) -> str:
        """The error for arguments this parser does not know, naming the flag it was probably meant as."""
        flags = [a.split("=", 1)[0] for a in extras if a.startswith("--")]
        if not flags:
            return f"unrecognized arguments: {' '.join(extras)}"
        known = [s for s in self._option_string_actions if s.startswith("--")]  # argparse's table of flags
        return f"unrecognized argument {flags[0]}{did_you_mean(flags[0], known)}"


def _config_fields():
    for cls in (VAEConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            yield cls, f


def flag_of(name: str) -> str:
    """The command-line flag of a config field: ``max_epochs`` -> ``--epochs``, ``latent_dim`` -> ``--latent-dim``."""
    return "--" + FLAG_NAMES.get(name, name).replace("_", "-")


def _default_text(field: dataclasses.Field) -> str:
    if field.name in DEFAULT_TEXT:
        return DEFAULT_TEXT[field.name]
    default = field.default
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, tuple):
        return " ".join(map(str, default))
    return str(default)


def field_help(field: dataclasses.Field) -> str:
    """A config flag's help: what it does and its default (the dataclass's, so config.py stays the one place)."""
    return f"{FIELD_HELP[field.name]} (default: {_default_text(field)})"


def add_field_flag(container, field: dataclasses.Field) -> None:
    """The flag of one config field on a parser or argument group: its help, choices and default text.

    Its default is SUPPRESSed in the namespace so that we can tell which flags were given (needed
    for input_dim, which otherwise follows the dataset, and for --resume).
    """
    kwargs = {"dest": field.name, "default": argparse.SUPPRESS, "help": field_help(field)}
    default = field.default
    if field.name in FIELD_CHOICES:
        kwargs.update(type=_choice(FIELD_CHOICES[field.name]), choices=FIELD_CHOICES[field.name])
    elif isinstance(default, bool):
        kwargs["action"] = argparse.BooleanOptionalAction
    elif isinstance(default, tuple) or default is None:
        kwargs.update(nargs="+", type=int, metavar="N")
    else:  # N for whole numbers, X for real ones: short, and free of the field names (--epochs MAX_EPOCHS)
        kwargs.update(type=type(default), metavar="N" if isinstance(default, int) else "X")
    container.add_argument(flag_of(field.name), **kwargs)


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field, grouped by config, with that field's default (shown in --help)."""
    model = parser.add_argument_group("model (VAEConfig)")
    training = parser.add_argument_group("training (TrainConfig)")
    for cls, f in _config_fields():
        add_field_flag(model if cls is VAEConfig else training, f)


def _given_fields(args) -> dict:
    return {f.name: getattr(args, f.name) for _, f in _config_fields() if hasattr(args, f.name)}


def configs_from_args(args, base_vae: VAEConfig = VAEConfig(),
                      base_train: TrainConfig = TrainConfig()) -> tuple[VAEConfig, TrainConfig]:
    """The configs: ``base_*`` with the flags that were given; ValueError naming a bad field."""
    given = _given_fields(args)
    vae_names = {f.name for f in dataclasses.fields(VAEConfig)}
    vae = dataclasses.replace(base_vae, **{k: v for k, v in given.items() if k in vae_names})
    train = dataclasses.replace(base_train, **{k: v for k, v in given.items() if k not in vae_names})
    return vae, train


# --------------------------------------------------------------------------- output helpers


def _write(stream, message: str) -> None:
    # Once a bar may be on screen (tqdm loaded), lines go through tqdm.write: it clears the bar, prints
    # the line and redraws the bar below it, so the two never tear each other. Otherwise a plain print.
    bars = sys.modules.get("tqdm")
    if bars is None:
        print(message, file=stream, flush=True)
    else:
        bars.tqdm.write(message, file=stream)
        stream.flush()


def _say(message: str = "") -> None:
    _write(sys.stdout, message)


def _warn(message: str) -> None:
    _write(sys.stderr, message)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class EpochProgress:
    """Progress bars on stderr, drawn only when stderr is a terminal: in a log file the one line per
    epoch on stdout says everything, and bar frames would only fill it.

    ``kind`` "epochs": one bar over the run's epochs (count, elapsed time, time left), advanced after
    each epoch; nothing runs inside the compiled epoch. "steps": a bar within each epoch as well, fed by
    fit's ``progress(step, running_loss)`` host callback (``step_hook``); JAX keeps programs with host
    callbacks out of its persistent compilation cache, so with it the epoch compiles on every start.
    "none", or stderr not a terminal: nothing. One instance per run: fit passes ``step_hook`` to a
    jitted function as a static argument, so a new object would mean a recompilation.
    """

    def __init__(self, kind: str, steps_per_epoch: int, first_epoch: int, max_epochs: int, stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.kind = kind if _is_terminal(self.stream) else "none"
        self.steps = steps_per_epoch
        self.epoch = first_epoch
        self.max_epochs = max_epochs
        self.bar = None  # the bar on screen: the epoch's ("steps") or the run's ("epochs")
        if self.kind == "epochs" and first_epoch <= max_epochs:
            self.bar = self._new_bar("training", max_epochs, "epoch", initial=first_epoch - 1)

    @property
    def step_hook(self):
        """What fit's ``progress`` argument gets: this object for "steps", else None (no host callback)."""
        return self if self.kind == "steps" else None

    def _new_bar(self, desc: str, total: int, unit: str, initial: int = 0):
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False, file=self.stream,
                    dynamic_ncols=True)

    def __call__(self, step, running_loss):
        if self.bar is None:
            self.bar = self._new_bar(f"epoch {self.epoch}/{self.max_epochs}", self.steps, "batch")
        self.bar.update(max(0, int(step) - self.bar.n))
        self.bar.set_postfix(loss=f"{float(running_loss):.4f}", refresh=False)

    def end_epoch(self) -> None:
        if self.kind == "epochs" and self.bar is not None:
            self.bar.update(1)
        elif self.bar is not None:
            self.bar.close()
            self.bar = None
        self.epoch += 1

    def close(self) -> None:
        """Take the bar off the screen (the epoch lines above it stay)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def make_progress(args, steps_per_epoch: int, first_epoch: int, max_epochs: int) -> EpochProgress:
    """The train command's progress display, from ``--progress`` and ``--quiet``."""
    kind = "none" if args.quiet else args.progress
    return EpochProgress(kind, steps_per_epoch, first_epoch, max_epochs)


def epoch_loggers(args, run_dir: Path) -> list:
    """fit callbacks that record each epoch beyond the run directory: TensorBoard with ``--tensorboard``."""
    if not args.tensorboard:
        return []
    from jaxvae.tensorboard import TensorBoardLogger

    return [TensorBoardLogger(run_dir / TENSORBOARD_DIR)]


class _StopAfterEpoch(Exception):
    """Raised from fit's epoch callback after the checkpoint is saved, on the first Ctrl-C."""


class _SigintFlag:
    """First Ctrl-C: finish the current epoch, save its checkpoint, stop. Second Ctrl-C: print
    ``second_line()`` and exit with 130 at once (the previous epoch's checkpoint is already on disk).

    Python runs signal handlers only between bytecodes of the main thread, which sits inside XLA
    for a whole epoch. So the Python handler does nothing; instead the interpreter's C-level handler
    writes each signal's number to a socket (``signal.set_wakeup_fd``) the moment it arrives, and a
    watcher thread reading that socket acts on it, whatever the main thread is doing.
    """

    def __init__(self, second_line=lambda: "second Ctrl-C: stopping now"):
        self.second_line = second_line
        self.requested = False
        self._active = False

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self  # signals reach the main thread only; nothing to install
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)  # set_wakeup_fd's requirement
        self._previous_handler = signal.signal(signal.SIGINT, lambda signum, frame: None)
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._watcher = threading.Thread(target=self._watch, name="jaxvae-sigint", daemon=True)
        self._watcher.start()
        self._active = True
        return self

    def __exit__(self, *exc):
        if not self._active:
            return
        signal.set_wakeup_fd(self._previous_fd)
        signal.signal(signal.SIGINT, self._previous_handler)
        self._writer.close()  # the watcher's recv returns b"" and it ends
        self._watcher.join()
        self._reader.close()
        self._active = False

    def _watch(self):
        while True:
            try:
                received = self._reader.recv(64)
            except OSError:
                return
            if not received:
                return
            for signum in received:
                if signum == signal.SIGINT:
                    self._sigint()

    def _sigint(self):
        if not self.requested:
            self.requested = True
            _warn("\nCtrl-C: stopping after this epoch and saving a checkpoint (Ctrl-C again to stop now)")
            return
        _warn("\n" + self.second_line())
        sys.stdout.flush()
        os._exit(EXIT_INTERRUPTED)  # the OS closes our files and releases the run's lock


# --------------------------------------------------------------------------- data


def _load_data(name: str, data_dir, download: bool, require: bool):
    from jaxvae.data import load_dataset

    return load_dataset(name, data_dir=data_dir, download=download, require=require, log=_warn)


def _check_arrays(dataset, vae_config: VAEConfig, batch_size: int | None = None) -> None:
    # fit's own checks, run before anything is written (fit repeats them: cheap)
    from jaxvae.checks import check_data

    check_data(f"{dataset.name} train split", dataset.train_x, vae_config, batch_size)
    check_data(f"{dataset.name} test split", dataset.test_x, vae_config)


def _run_data(info: RunInfo, args, run_dir):
    return run_dataset(info, getattr(args, "data_dir", None), not getattr(args, "no_download", False), _warn,
                       run_dir=run_dir)


def _os_error_text(e: OSError) -> str:
    """``FILE: reason`` for an OSError (a full disk, a read-only or missing directory, no permission)."""
    if e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    return str(e)


# --------------------------------------------------------------------------- train


def _resume_configs(args, info: RunInfo, run_dir: Path) -> tuple[VAEConfig, TrainConfig]:
    given = _given_fields(args)
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


def _new_run_dir(args, dataset_name: str) -> Path:
    out = Path(args.out) if args.out else default_run_dir(dataset_name)
    _check_new_run_dir(out)
    return out


def _check_new_run_dir(out: Path) -> bool:
    try:
        return check_new_run_dir(out)
    except RunError as e:
        raise UsageError(f"--out {e}") from None


def _lock(run_dir: Path, args, stack: contextlib.ExitStack) -> None:
    """Hold the run directory's lock until ``stack`` closes (the end of the command)."""
    lock = stack.enter_context(RunLock(run_dir, getattr(args, "command_line", None)))
    if not lock.locked:
        _warn(f"{PROG}: note: this platform has no advisory file locks; make sure no other jaxvae writes {run_dir}")


def _prepare_resume(args, stack):
    """``(run_dir, info, state, vae_config, train_config, dataset)`` of the run to continue, locked;
    None when there is nothing to do (config.json is then left as it is)."""
    run_dir = Path(args.resume)
    if args.out and Path(args.out).resolve() != run_dir.resolve():
        raise UsageError(f"--out {args.out} differs from --resume {run_dir}; a resumed run stays in its directory")
    if run_dir.is_dir():
        _lock(run_dir, args, stack)  # before reading anything: a second writer is refused at once
    info, state = resume_point(run_dir, getattr(args, "dataset", None), _warn)
    _check_resume_data_flags(args, info, run_dir)
    vae_config, train_config = _resume_configs(args, info, run_dir)
    idle = nothing_to_do(vae_config, train_config, state)
    if idle:
        hint = (f"; to train longer, pass --epochs above {state.epoch if state else 0}"
                if train_config.max_epochs <= (state.epoch if state else 0) else "")
        _say(f"{run_dir}: nothing to do: {idle}{hint} (the run is left as it is; "
             f"see it with: {PROG} evaluate {shlex.quote(str(run_dir))})")
        return None
    dataset = run_dataset(info, args.data_dir, not args.no_download, _warn, run_dir=run_dir)
    _check_arrays(dataset, vae_config, train_config.batch_size)
    updated = resumed_info(info, train_config, dataset, args.data_dir)
    if updated != info:
        if info.fingerprints is None:
            _warn(f"{run_dir / CONFIG_FILE} records no data fingerprint (written by jaxvae {info.version or '0.1.0'}): "
                  "recording those of the data used from now on")
        write_run_config(run_dir, updated)
    return run_dir, updated, state, vae_config, train_config, dataset


def _prepare_fresh(args, stack):
    """``(run_dir, info, None, vae_config, train_config, dataset)`` of a new run, its directory made and
    locked only once configs and data are valid; None for --epochs 0 (a check that writes nothing)."""
    vae_config, train_config = configs_from_args(args)  # bad flags fail here, before any data
    if args.out:
        _check_new_run_dir(Path(args.out))  # a run that would be refused is refused before loading data
    dataset = _load_data(getattr(args, "dataset", "mnist"), args.data_dir, not args.no_download, args.require_mnist)
    if not hasattr(args, "input_dim"):  # the 784 default is MNIST's: follow the data
        vae_config = vae_config.replace(input_dim=int(dataset.train_x.shape[1]))
    _check_arrays(dataset, vae_config, train_config.batch_size)
    if train_config.max_epochs == 0:
        _say("--epochs 0: the configs and the data are valid; nothing to train, nothing written")
        return None
    run_dir = _new_run_dir(args, dataset.name)
    data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else None
    info = RunInfo(vae_config, train_config, dataset.name, tuple(dataset.image_shape), data_dir,
                   fingerprints=data_fingerprints(dataset))
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        _lock(run_dir, args, stack)
        if _check_new_run_dir(run_dir):  # again, under the lock: nobody trained here meanwhile
            _warn(f"{run_dir} holds a run that never saved a trained epoch: starting afresh in its place")
        start_new_run(run_dir, info)
    except OSError as e:
        raise UsageError(f"--out {run_dir}: cannot write the run directory ({_os_error_text(e)})") from None
    return run_dir, info, None, vae_config, train_config, dataset


def _model_shape(vc: VAEConfig) -> str:
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

    with _SigintFlag(second_ctrl_c) as stop:  # installed before the first line: a Ctrl-C from now on is ours
        _say(f"run directory: {run_dir}")
        if state is not None:
            resuming = f"; resuming after epoch {state.epoch}"
        else:
            resuming = "; no checkpoint yet: starting at epoch 1" if args.resume else ""
        _say(f"data: {dataset.name}, {len(dataset.train_x)} train / {len(dataset.test_x)} test samples, "
             f"{vae_config.input_dim} features; model {_model_shape(vae_config)}" + resuming)

        def on_epoch(fit_state, record):
            saver(fit_state, record)
            progress.end_epoch()
            _say(_epoch_line(record, train_config.max_epochs))
            if stop.requested:
                raise _StopAfterEpoch

        try:
            with writer:  # leaving waits until every queued write is on disk (or raises its OSError)
                result = fit(dataset.train_x, dataset.test_x, vae_config=vae_config, train_config=train_config,
                             state=state, callbacks=[on_epoch, *loggers], progress=progress.step_hook,
                             progress_every=max(1, steps // 20))
        except (_StopAfterEpoch, KeyboardInterrupt):
            close_bar()
            if saver.saved_epoch:
                _warn(f"interrupted after epoch {saver.saved_epoch}; checkpoint saved to {saver.checkpoint_path}; "
                      f"resume with: {resume_hint}")
            else:
                _warn(f"interrupted before the first epoch finished; nothing saved; start it again with: {resume_hint}")
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
            _warn(f"{PROG} train: error: {e}; {kept}")
            return EXIT_NONFINITE
        except OSError as e:  # a full disk or a vanished directory while saving an epoch
            close_bar()
            kept = (f"the last good checkpoint (epoch {saver.saved_epoch}) is unchanged at {saver.checkpoint_path}"
                    if saver.saved_epoch else "no epoch was saved")
            _warn(f"{PROG} train: error: {_os_error_text(e)}; {kept}; fix that, then continue with: {resume_hint}")
            return EXIT_USAGE

        close_bar()
        history = result.history
        if not args.no_plots:
            from jaxvae.plots import save_figures

            paths = save_figures(run_dir / FIGURES_DIR, result.params, vae_config, dataset.test_x, dataset.test_y,
                                 info.image_shape, history, seed=train_config.seed)
            _say(f"figures: {', '.join(str(p) for p in paths)}")
    if history:
        last = history[-1]
        why = {"schedule": f"the {train_config.lr_schedule} schedule ended", "max_epochs": "max epochs"}[result.stop_reason]
        _say(f"done after epoch {last['epoch']} ({why}): train loss {last['train_loss']:.4f}, "
             f"val loss {last['val_loss']:.4f} (recon {last['val_recon']:.4f}, KL {last['val_kl']:.4f})")
    return 0


# --------------------------------------------------------------------------- evaluate / plot


def _model_line(info: RunInfo, epoch: int) -> str:
    source = info.imported_from
    if source is not None and source["epoch"] is None and epoch == 0:
        return f"model imported from {source['file']} (its epoch is not recorded)"
    return f"model after epoch {epoch}"


def cmd_evaluate(args) -> int:
    from jaxvae.evaluate import evaluate_run

    result = evaluate_run(args.run_dir, split=args.split, seed=args.seed, k=args.k, limit=args.limit, chunk=args.chunk,
                          data_dir=args.data_dir, download=not args.no_download, log=_warn)
    if args.json:
        _say(json.dumps(result, indent=2))
    else:
        info = read_run_config(args.run_dir)
        _say(f"{result['dataset']} {result['split']} split, {result['samples']} samples, "
             f"{_model_line(info, result['epoch'])}, noise seed {result['seed']}")
        _say(f"{'metric':<8}{'value':>12}")
        for name in ("loss", "recon", "kl"):
            _say(f"{name:<8}{result[name]:>12.4f}")
        if "log_likelihood" in result:
            _say(f"log p(x) ~ {result['log_likelihood']:.3f} +- {result['log_likelihood_stderr']:.3f} nats "
                 f"(k={result['k']} importance samples); -ELBO {result['neg_elbo']:.3f} +- {result['neg_elbo_stderr']:.3f}")
    write_json(Path(args.run_dir) / EVALUATE_FILE, result)  # after the output: a read-only run still shows it
    if not args.json:
        _say(f"written: {Path(args.run_dir) / EVALUATE_FILE}")
    return 0


def cmd_plot(args) -> int:
    from jaxvae.plots import save_figures

    info, state = load_run(args.run_dir)
    dataset = _run_data(info, args, args.run_dir)
    out = Path(args.figures or Path(args.run_dir) / FIGURES_DIR)
    paths = save_figures(out, state.params, info.vae_config, dataset.test_x, dataset.test_y, info.image_shape,
                         state.history, seed=info.train_config.seed)
    _say("figures: " + ", ".join(str(p) for p in paths))
    return 0


# --------------------------------------------------------------------------- torch export / import


def cmd_export(args) -> int:
    from jaxvae.interop import save_torch

    info, state = load_run(args.run_dir)
    # what an import needs to report the model truthfully and to find and check its data again
    fingerprints = {split: fp.to_dict() for split, fp in info.fingerprints.items()} if info.fingerprints else None
    target = save_torch(args.torch, state.params, info.vae_config, image_shape=list(info.image_shape),
                        dataset=info.dataset, epoch=state.epoch, data_dir=info.data_dir,
                        data_fingerprints=fingerprints)
    vc = info.vae_config
    _say(f"wrote {target}: torchref blog encoder + decoder state dicts (epoch {state.epoch}); load with\n"
         f"  d = torch.load('{target}'); enc, sample, dec = torchref.build_blog_model("
         f"{vc.input_dim}, {vc.latent_dim}, {tuple(vc.hidden)})\n"
         f"  enc.load_state_dict(d['encoder']); dec.load_state_dict(d['decoder'])")
    return 0


def _imported_epoch(blob: dict) -> int | None:
    epoch = blob.get("epoch")
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0 else None


def cmd_import(args) -> int:
    from jaxvae.checkpoint import save_checkpoint
    from jaxvae.interop import load_torch
    from jaxvae.training import TrainStep, init_fit_state

    params, config, blob = load_torch(args.torch_file)
    overrides = _given_fields(args)
    config = config.replace(**{k: v for k, v in overrides.items() if k in ("recon_sigma", "kl_weight")})
    train_config = TrainConfig(**{k: v for k, v in overrides.items() if k in ("batch_size", "seed")})
    dataset = args.dataset or blob.get("dataset") or {784: "mnist", 64: "digits"}.get(config.input_dim, "mnist")
    shape = tuple(blob.get("image_shape") or default_image_shape(config.input_dim))
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise UsageError(f"--data-dir {args.data_dir}: does not exist or is not a directory")
    same_data = dataset == blob.get("dataset")  # the file's data dir and fingerprints describe its dataset
    data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else (blob.get("data_dir") if same_data else None)
    try:
        fingerprints = fingerprints_from_dict(blob.get("data_fingerprints")) if same_data else None
    except ValueError as e:
        raise UsageError(f"{args.torch_file}: {e}") from None
    epoch = _imported_epoch(blob)
    source = {"file": str(Path(args.torch_file).resolve()), "epoch": epoch}
    info = RunInfo(config, train_config, dataset, shape, data_dir if isinstance(data_dir, str) else None,
                   fingerprints=fingerprints, imported_from=source)
    state = init_fit_state(TrainStep.from_configs(config, train_config), train_config.seed, params=params)
    state = dataclasses.replace(state, epoch=epoch or 0)
    out = _new_run_dir(argparse.Namespace(out=args.out), dataset)
    with contextlib.ExitStack() as stack:
        try:
            out.mkdir(parents=True, exist_ok=True)
            _lock(out, args, stack)
            _check_new_run_dir(out)
            write_run_config(out, info)  # config first: a directory with a config alone can be redone in place
            save_checkpoint(out / CHECKPOINT_FILE, state, config, train_config)
        except OSError as e:
            raise UsageError(f"--out {out}: cannot write the run directory ({_os_error_text(e)})") from None
    after = f"after epoch {epoch}" if epoch is not None else "epoch not recorded in the file"
    hint = f"{PROG} evaluate {shlex.quote(str(out))}"
    if dataset == "mnist" and info.data_dir is None:
        hint += " --data-dir DIR (the file records no MNIST location)"
    _say(f"wrote run directory {out} from {args.torch_file} (model {_model_shape(config)}, {after}, "
         f"dataset {dataset}); try: {hint}")
    return 0


# --------------------------------------------------------------------------- sweep (jaxvae.sweep)

SWEEP_VALUE_FLAGS = {"recon_sigma": "--recon-sigma", "kl_weight": "--kl-weight", "lr": "--lr"}


class _SweepProgress(EpochProgress):
    """The epoch's bar for a sweep: every model reports the same step, so the bar counts steps and
    shows the number of models, not whichever model's running loss came last."""

    def __init__(self, models: int, *args):
        super().__init__(*args)
        self.models = models

    def __call__(self, step, running_loss):
        super().__call__(step, running_loss)
        self.bar.set_postfix(models=self.models, refresh=False)


def _sweep_epoch_line(records: list, max_epochs: int) -> str:
    done = [r for r in records if r is not None]
    if not done:
        return "no model finished this epoch"
    val = sorted(r["val_loss"] for r in done)
    return (f"epoch {max(r['epoch'] for r in done):>3}/{max_epochs}  {len(done)} model{'s' * (len(done) > 1)}  "
            f"val loss {val[0]:.4f} .. {val[-1]:.4f} (median {val[len(val) // 2]:.4f})  {done[0]['seconds']:.1f}s")


def _new_sweep_dir(args, dataset_name: str, model_names) -> Path:
    from jaxvae.sweep import SWEEP_FILE

    out = Path(args.out) if args.out else Path("runs") / f"sweep-{dataset_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    for path in (out / SWEEP_FILE, out / CONFIG_FILE, *(out / name / CHECKPOINT_FILE for name in model_names)):
        if path.exists():
            raise UsageError(f"--out {out}: already holds a run or a sweep ({path}); continue a sweep with "
                             f"'{PROG} sweep --resume {out}' or choose another --out")
    return out


def _setting_line(entry: dict) -> str:
    def cell(name):
        stats = entry[name]
        if not stats["n"]:
            return f"{'-':>20}"
        sd = f" +- {stats['sd']:.4f}" if stats["sd"] is not None else ""
        return f"{stats['mean']:>10.4f}{sd:<10}"
    failed = f"  ({len(entry['failed'])} failed: {', '.join(entry['failed'])})" if entry["failed"] else ""
    return f"{entry['label']:<24}{cell('val_loss')}{cell('val_recon')}{cell('val_kl')}{failed}"


def cmd_sweep(args) -> int:
    with contextlib.ExitStack() as stack:  # holds the sweep directory's lock to the end, figures included
        return _sweep(args, stack)


def _sweep(args, stack: contextlib.ExitStack) -> int:
    import jax
    import numpy as np

    from jaxvae import sweep as sw
    from jaxvae.batching import steps_per_epoch
    from jaxvae.checkpoint import save_checkpoint
    from jaxvae.parallel import is_writer
    from jaxvae.plots import save_figures, save_sweep_figures

    download = not args.no_download
    # Sweep flags default to SUPPRESS (help shows the dataclass default): absent means not given.
    grid = {"seeds": getattr(args, "seeds", None),
            **{name: getattr(args, f"sweep_{name}", None) for name in SWEEP_VALUE_FLAGS}}
    if args.resume:
        sweep_dir = require_run_dir(args.resume)
        if args.out and Path(args.out).resolve() != sweep_dir.resolve():
            raise UsageError(f"--out {args.out} differs from --resume {sweep_dir}; a resumed sweep stays in its directory")
        saved, base = sw.read_sweep_info(sweep_dir)
        changed = [FLAG_NAMES.get(n, n) for n in _given_fields(args) if n not in RESUME_OVERRIDABLE]
        changed += [SWEEP_VALUE_FLAGS[n][2:] for n in SWEEP_VALUE_FLAGS if grid[n] is not None]
        changed += ["seeds"] if grid["seeds"] is not None else []
        if changed:
            raise UsageError(f"--{changed[0].replace('_', '-')}: a resumed sweep keeps its configs and values "
                             f"({sweep_dir / sw.SWEEP_FILE}); only --epochs may change")
        vae_config, train_config = configs_from_args(args, base.vae_config, base.train_config)
        grid = saved.grid
        models = sw.sweep_models(vae_config, train_config, **grid)
        dataset = _run_data(base, args, sweep_dir)
        _check_arrays(dataset, vae_config, train_config.batch_size)
        dirs = sw.model_dirs(sweep_dir, models)
        state = sw.load_sweep_state(models, dirs, saved.errors)
        data_dir = args.data_dir or base.data_dir
    else:
        vae_config, train_config = configs_from_args(args)  # bad flags and values fail here, before any data
        grid["seeds"] = 1 if grid["seeds"] is None else grid["seeds"]
        sw.sweep_models(vae_config, train_config, **grid)
        dataset = _load_data(getattr(args, "dataset", "mnist"), args.data_dir, download, args.require_mnist)
        if not hasattr(args, "input_dim"):  # the 784 default is MNIST's: follow the data
            vae_config = vae_config.replace(input_dim=int(dataset.train_x.shape[1]))
        models = sw.sweep_models(vae_config, train_config, **grid)
        grid["seeds"] = list(dict.fromkeys(m.seed for m in models))
        _check_arrays(dataset, vae_config, train_config.batch_size)
        sweep_dir = _new_sweep_dir(args, dataset.name, [m.name for m in models])
        dirs = sw.model_dirs(sweep_dir, models)
        state = None
        data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else None
    shape = tuple(dataset.image_shape)
    if is_writer():
        sweep_dir.mkdir(parents=True, exist_ok=True)
        stack.enter_context(RunLock(sweep_dir))  # one writer per sweep, as per run
        for run_dir in dirs:
            run_dir.mkdir(parents=True, exist_ok=True)
    fingerprints = data_fingerprints(dataset)
    for m, run_dir in zip(models, dirs):
        write_run_config(run_dir, RunInfo(m.vae_config, m.train_config, dataset.name, shape, data_dir,
                                          fingerprints=fingerprints))
    known_errors = list(state.errors) if state else [None] * len(models)
    names = tuple(m.name for m in models)

    def write_info(errors):
        sw.write_sweep_info(sweep_dir, sw.SweepInfo(grid, names, tuple(errors)))

    write_info(known_errors)
    varying = sw.varying_values(models)
    _say(f"sweep directory: {sweep_dir}")
    _say(f"data: {dataset.name}, {len(dataset.train_x)} train / {len(dataset.test_x)} test samples; {len(models)} models "
         f"({', '.join(SWEEP_VALUE_FLAGS[q] for q in varying) or 'seeds only'}; {len(grid['seeds'])} seeds each) "
         "in one compiled program" + (f"; resuming after epoch {max(state.epochs)}" if state else ""))

    steps = steps_per_epoch(len(dataset.train_x), train_config.batch_size, train_config.drop_last)
    first_epoch = (min(state.epochs) if state else 0) + 1
    progress = _SweepProgress(len(models), "none" if args.quiet else args.progress, steps, first_epoch,
                              train_config.max_epochs)

    def on_epoch(sweep_state, records):
        for i, record in enumerate(records):
            if record is not None:
                save_checkpoint(dirs[i] / CHECKPOINT_FILE, sweep_state.fit_state(i), models[i].vae_config,
                                models[i].train_config)
                write_metrics(dirs[i], sweep_state.histories[i])
        progress.end_epoch()
        for i, error in enumerate(sweep_state.errors):
            if error is not None and known_errors[i] is None:
                _warn(f"{PROG} sweep: model {models[i].name}: {error}; its run directory keeps its last good epoch "
                      f"({sweep_state.epochs[i]}); the other models go on")
        if sweep_state.errors != known_errors:
            known_errors[:] = sweep_state.errors
            write_info(known_errors)
        _say(_sweep_epoch_line(records, train_config.max_epochs))
        if stop.requested:
            raise _StopAfterEpoch

    resume_hint = f"{PROG} sweep --resume {shlex.quote(str(sweep_dir))}"
    try:
        with _SigintFlag(lambda: f"second Ctrl-C: stopped at once; every model's last finished epoch is saved in its "
                                 f"run directory; resume with: {resume_hint}") as stop:
            result = sw.fit_many(dataset.train_x, dataset.test_x, vae_config=vae_config, train_config=train_config,
                                 **grid, state=state, callbacks=[on_epoch], progress=progress.step_hook,
                                 progress_every=max(1, steps // 20))
    except (_StopAfterEpoch, KeyboardInterrupt):
        progress.close()
        _warn(f"interrupted; every model's last finished epoch is saved in its run directory; resume with: "
              f"{resume_hint}")
        return EXIT_INTERRUPTED

    progress.close()
    params = [jax.tree.map(lambda leaf, i=i: np.asarray(leaf[i]), result.params) for i in range(len(models))]
    if not args.no_plots:
        for i, (m, run_dir) in enumerate(zip(models, dirs)):
            if result.histories[i]:
                save_figures(run_dir / FIGURES_DIR, params[i], m.vae_config, dataset.test_x, dataset.test_y, shape,
                             result.histories[i], seed=m.seed)
    summary = sw.summarize(models, result.histories, result.errors, result.stop_reasons)
    summary_path = sw.write_summary(sweep_dir, summary)
    _say(f"{'setting':<24}{'val loss':>20}{'recon':>20}{'KL':>20}   (mean +- sd over seeds, last epoch)")
    for entry in summary["settings"]:
        _say(_setting_line(entry))
    _say(f"summary: {summary_path}")
    if not args.no_plots:
        paths = save_sweep_figures(summary_path.parent, summary, result.histories, params, vae_config,
                                   dataset.test_x, dataset.test_y)
        _say(f"figures: {', '.join(str(p) for p in paths)}")
    failed = [m.name for m, error in zip(models, result.errors) if error is not None]
    if failed:
        _warn(f"{PROG} sweep: {len(failed)} of {len(models)} models stopped on a non-finite loss ({', '.join(failed)}); "
              "the summary leaves them out")
        return EXIT_NONFINITE
    return 0


def _add_sweep_parser(sub, data_flags) -> None:
    """``jaxvae sweep``: train's flags, except that --recon-sigma, --kl-weight and --lr take several values."""
    sweep = sub.add_parser("sweep", help="train many models at once: --seeds N and several values of --recon-sigma, "
                           "--kl-weight or --lr (one compiled program)", conflict_handler="resolve")
    data_flags(sweep, True)
    _add_run_flags(sweep, "SWEEP_DIR", "sweep directory (default: runs/sweep-<dataset>-<YYYYmmdd-HHMMSS>)",
                   "the sweep in SWEEP_DIR from its models' checkpoints", "every figure (the models' and the summary's)")
    _add_config_flags(sweep)
    # Declared again after the config flags: conflict_handler="resolve" replaces the single-value flags.
    group = sweep.add_argument_group("sweep (one model per combination of the values, times each seed)")
    group.add_argument("--seeds", type=int, default=argparse.SUPPRESS, metavar="N",
                       help="seeds per setting: --seed, --seed + 1, ..., --seed + N - 1 (default: 1)")
    for name, flag in SWEEP_VALUE_FLAGS.items():
        field = {f.name: f for _, f in _config_fields()}[name]
        group.add_argument(flag, dest=f"sweep_{name}", type=float, nargs="+", default=argparse.SUPPRESS, metavar="V",
                           help=f"{FIELD_HELP[name]}: one value, or several to sweep (default: {field.default})")
    sweep.set_defaults(func=cmd_sweep)


# --------------------------------------------------------------------------- compilation cache

NO_COMPILE_CACHE_ENV = "JAXVAE_NO_COMPILE_CACHE"
COMPILE_CACHE_MAX_BYTES = 256 << 20  # least recently used entries go first; one model's programs take ~1 MB


def compile_cache_dir() -> Path | None:
    """Where jaxvae keeps JAX's persistent compilation cache: ``user_cache_dir()/jax-cache``, or None
    when ``$JAXVAE_NO_COMPILE_CACHE`` is set (to anything but "" or "0")."""
    if os.environ.get(NO_COMPILE_CACHE_ENV, "") not in ("", "0"):
        return None
    return user_cache_dir() / "jax-cache"


def enable_compile_cache() -> Path | None:
    """Turn on JAX's persistent compilation cache (before anything is compiled), so that a second start
    of the same configuration loads its compiled epoch instead of compiling it again. A cache directory
    the user gave JAX (``JAX_COMPILATION_CACHE_DIR``) is kept. Returns the directory in use, or None
    when it is turned off or cannot be created (then everything compiles as without it)."""
    import jax

    if jax.config.jax_compilation_cache_dir:
        return Path(jax.config.jax_compilation_cache_dir)
    directory = compile_cache_dir()
    if directory is None:
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(directory))
    # Every program, however small or quick to compile: JAX's defaults (1 s of compile time) would
    # leave out the validation epoch and the dozens of small programs that building the state runs.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    if importlib.util.find_spec("filelock") is not None:  # a dependency; JAX refuses a size limit without it
        jax.config.update("jax_compilation_cache_max_size", COMPILE_CACHE_MAX_BYTES)
    return directory


# --------------------------------------------------------------------------- parser


class _TensorBoardFlag(argparse.Action):
    """``--tensorboard``: refused at parse time, before anything is written, when tensorboardX is missing."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from jaxvae.tensorboard import missing

        problem = missing()
        if problem:
            parser.error(f"{option_string}: {problem}")
        setattr(namespace, self.dest, True)


def _add_run_flags(parser, metavar: str, out_help: str, resume_what: str, plots_what: str):
    """The flags train and sweep share: where to write, resuming, figures, progress. Returns the group."""
    run = parser.add_argument_group("run")
    run.add_argument("--out", metavar=metavar, help=out_help)
    run.add_argument("--resume", metavar=metavar, help=f"continue {resume_what} (its config is kept; --epochs may "
                     "raise the epoch limit)")
    run.add_argument("--no-plots", action="store_true", help=f"skip {plots_what}")
    run.add_argument("--progress", type=_choice(PROGRESS_KINDS), choices=PROGRESS_KINDS, default="epochs",
                     help="progress bar on a terminal (never in a log file): one over the run's epochs, one "
                          "within each epoch as well (its host callback keeps the epoch out of the "
                          "compilation cache), or none (default: epochs)")
    run.add_argument("--quiet", action="store_true", help="no progress bar (the same as --progress none)")
    return run


def build_parser() -> argparse.ArgumentParser:
    from jaxvae import __version__
    from jaxvae.data import DATASETS

    parser = _Parser(prog=PROG, description="Train, evaluate, plot and export the VAE of 'A Gentle "
                     "Introduction to Variational Autoencoders' (JAX/Flax).")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def data_flags(p, for_training: bool):
        group = p.add_argument_group("data")
        if for_training:
            # SUPPRESS: --resume tells a given --dataset from the default (the default is applied in cmd_train)
            group.add_argument("--dataset", type=_choice(DATASETS), choices=DATASETS, default=argparse.SUPPRESS,
                               help="mnist: the 60000 + 10000 images, found locally or downloaded, else (with "
                                    "one line saying how to get them) the bundled mnist-subset; mnist-subset: "
                                    "10000 + 2000 real MNIST images shipped with jaxvae; digits: scikit-learn's "
                                    "8x8 digits (default: mnist)")
            group.add_argument("--require-mnist", action="store_true",
                               help="fail instead of falling back to mnist-subset when MNIST is missing")
            where = "directory with the MNIST IDX files (.gz or not, or torchvision's DIR/MNIST/raw)"
            default = f"$JAXVAE_DATA_DIR, then {user_cache_dir() / 'mnist'}, then download"
        else:
            where = "where the run's MNIST files are now"
            default = "the directory the run recorded, else as for train"
        group.add_argument("--data-dir", metavar="DIR", help=f"{where} (default: {default})")
        group.add_argument("--no-download", action="store_true", help="never try to download MNIST")

    train = sub.add_parser("train", help="train a VAE (the blog's configuration by default)",
                           description="Train a VAE and write a run directory (config, metrics, checkpoint, "
                                       "figures). Every field of VAEConfig and TrainConfig is a flag below.",
                           usage="%(prog)s [--dataset NAME] [--epochs N] [--out RUN_DIR] [options]")
    data_flags(train, True)
    run = _add_run_flags(train, "RUN_DIR", "run directory (default: runs/<dataset>-<YYYYmmdd-HHMMSS>, named after "
                         "the data used)", "the run in RUN_DIR from its checkpoint", "the figures at the end")
    run.add_argument("--tensorboard", action=_TensorBoardFlag,
                     help="also write the per-epoch metrics as TensorBoard event files to RUN_DIR/tensorboard "
                          "(needs tensorboardX: pip install 'jaxvae[tensorboard]')")
    _add_config_flags(train)
    train.set_defaults(func=cmd_train)
    _add_sweep_parser(sub, data_flags)

    evaluate = sub.add_parser("evaluate", help="loss, reconstruction and KL of a run on its test split")
    evaluate.add_argument("run_dir", metavar="RUN_DIR", help=RUN_DIR_HELP)
    evaluate.add_argument("--split", type=_choice(SPLITS), choices=SPLITS, default="test",
                          help="the split to score (default: test)")
    evaluate.add_argument("--seed", type=int, default=0, metavar="N",
                          help="seed of the evaluation noise and batch order (default: 0)")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of the table")
    evaluate.add_argument("--k", type=int, default=0, metavar="K",
                          help="also estimate log p(x) with K importance samples per image, e.g. 5000 "
                               "(default: 0, skip)")
    evaluate.add_argument("--chunk", type=int, default=None, metavar="N",
                          help="importance samples per image held in memory at once (default: a 64 MB budget)")
    evaluate.add_argument("--limit", type=int, default=None, metavar="N",
                          help="only the first N images of the split (default: all)")
    data_flags(evaluate, False)
    evaluate.set_defaults(func=cmd_evaluate)

    plot = sub.add_parser("plot", help="redraw a run's figures from its checkpoint")
    plot.add_argument("run_dir", metavar="RUN_DIR", help=RUN_DIR_HELP)
    plot.add_argument("--figures", metavar="DIR", help=f"where to write the PNGs (default: RUN_DIR/{FIGURES_DIR})")
    data_flags(plot, False)
    plot.set_defaults(func=cmd_plot)

    export = sub.add_parser("export", help="write PyTorch state dicts for torchref's blog modules")
    export.add_argument("run_dir", metavar="RUN_DIR", help=RUN_DIR_HELP)
    export.add_argument("--torch", required=True, metavar="FILE", help="output file (torch.save format; required)")
    export.set_defaults(func=cmd_export)

    imp = sub.add_parser("import", help="make a run directory from torchref state dicts")
    imp.add_argument("torch_file", metavar="FILE", help="a file written by 'jaxvae export' (or torch.save of "
                     "{'encoder': state_dict, 'decoder': state_dict})")
    imp.add_argument("--out", required=True, metavar="RUN_DIR", help="the run directory to write (required)")
    imp.add_argument("--dataset", type=_choice(DATASETS), choices=DATASETS,
                     help="the data the model is for (default: the file's, else by input size: 784 mnist, 64 digits)")
    imp.add_argument("--data-dir", metavar="DIR", help="where that dataset's MNIST files are (default: searched "
                     "as for train)")
    for _, f in _config_fields():
        if f.name in ("recon_sigma", "kl_weight", "batch_size", "seed"):
            add_field_flag(imp, f)
    imp.set_defaults(func=cmd_import)
    return parser


def _error(command: str | None, message: str) -> int:
    """The one line of a failed command on stderr; exit code 2."""
    message = " ".join(str(message).split())
    print(f"{PROG}{' ' + command if command else ''}: error: {message}", file=sys.stderr, flush=True)
    return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jaxvae`` console script and ``python -m jaxvae``; returns the exit code.

    0 success, 1 training stopped on a non-finite loss, 2 bad input or environment (one line on
    stderr naming the flag or file, no traceback), 130 interrupted.
    """
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or argparse's one-line error (already printed)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_USAGE)
    args.command_line = shlex.join([PROG, *argv])  # who holds a run's lock, for a second writer's message
    enable_compile_cache()  # before the command compiles anything
    try:
        return args.func(args)
    except (ValueError, OverflowError) as e:  # configs, data, checkpoints, runs: all name the field / file at fault
        return _error(args.command, str(e))
    except OSError as e:  # a read-only or full disk, a missing directory, no permission: named by file
        return _error(args.command, _os_error_text(e))
    except KeyboardInterrupt:
        _warn(f"{PROG}: interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
