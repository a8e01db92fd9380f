"""The ``jaxvae`` entry point: the parser of every command, and ``main``, which maps failures to
one line and an exit code."""
from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import traceback
from typing import Callable

from jaxvae import __version__
from jaxvae.cli.cache import enable_compile_cache
from jaxvae.cli.console import warn
from jaxvae.cli.cores import apply_host_cores, cores_type
from jaxvae.cli.flags import (
    EXIT_RESOURCES,
    EXIT_USAGE,
    IMPORT_FIELDS,
    PROG,
    RUN_DIR_HELP,
    SPLITS,
    SWEPT_HYPERPARAMETERS,
    Parser,
    add_config_flags,
    add_field_flag,
    add_run_flags,
    choice_type,
    config_fields,
)
from jaxvae.data import DATASETS
from jaxvae.entry import EXIT_INTERRUPTED, raise_if_interrupted
from jaxvae.errors import JaxvaeError
from jaxvae.fileio import os_error_text, user_cache_dir
from jaxvae.layout import EXPORT_FILE

EXIT_BUG = 1  # an exception jaxvae did not raise on purpose (a bug), as Python's own exit code for one

# Each command's function, imported when the command runs: building the parser loads no JAX.
COMMANDS = {
    "train": "jaxvae.cli.train:run_command",
    "sweep": "jaxvae.cli.train:run_command",
    "evaluate": "jaxvae.cli.run_tools:cmd_evaluate",
    "plot": "jaxvae.cli.run_tools:cmd_plot",
    "export": "jaxvae.cli.run_tools:cmd_export",
    "import": "jaxvae.cli.run_tools:cmd_import",
}


def add_sweep_parser(sub: argparse._SubParsersAction,
                     data_flags: Callable[[argparse.ArgumentParser, bool], None]) -> None:
    """``jaxvae sweep``: train's flags, except that --recon-sigma, --kl-weight and --lr take several values.

    Args:
        sub: The subcommands to add it to.
        data_flags: Adds the data flags to a parser (True: those of a command that trains).
    """
    sweep = sub.add_parser("sweep", help="train many models at once: --seeds N and several values of --recon-sigma, "
                           "--kl-weight or --lr (one compiled program)", conflict_handler="resolve")
    data_flags(sweep, True)
    add_run_flags(sweep, "SWEEP_DIR", "sweep directory (default: runs/sweep-<dataset>-<YYYYmmdd-HHMMSS>)",
                  "the sweep in SWEEP_DIR from its models' checkpoints", "every figure (the models' and the summary's)")
    add_config_flags(sweep)
    # Declared again after the config flags: conflict_handler="resolve" replaces the single-value flags.
    group = sweep.add_argument_group("sweep (one model per combination of the values, times each seed)")
    group.add_argument("--seeds", type=int, default=argparse.SUPPRESS, metavar="N",
                       help="seeds per setting: --seed, --seed + 1, ..., --seed + N - 1 (default: 1)")
    for h in SWEPT_HYPERPARAMETERS:
        group.add_argument(h.flag, dest=f"sweep_{h.name}", type=float, nargs="+", default=argparse.SUPPRESS, metavar="V",
                           help=f"{h.help}: one value, or several to sweep (default: {h.default:g})")
    devices = sweep.add_argument_group("devices")
    devices.add_argument("--mesh", metavar="MxD", default="auto",
                         help="the devices as a mesh of M on the model axis (each holds 1/M of the models; M must "
                              "divide their number) by D on the data axis (each batch split over D), as 4x2 "
                              "(default: auto: every device on the model axis when the models divide by the "
                              "device count, else each batch split over the devices)")
    devices.add_argument("--cores", type=cores_type, default=1, metavar="N",
                         help="train on N single-threaded CPU devices, one per core, instead of one device "
                              "using every core; auto: on a machine without GPU or TPU, with --mesh auto and no "
                              "device count in XLA_FLAGS, one per core, at most one per model, as many as divide "
                              "the models (default: 1: one device, as jaxvae train)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every ``jaxvae`` command; building it imports no JAX.

    Returns:
        The parser (a ``flags.Parser``: one-line errors with exit code 2).
    """
    parser = Parser(prog=PROG, description="Train, evaluate, plot and export the VAE of 'A Gentle "
                     "Introduction to Variational Autoencoders' (JAX/Flax).")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def data_flags(p, for_training: bool):
        group = p.add_argument_group("data")
        if for_training:
            # SUPPRESS: --resume tells a given --dataset from the default (the default is applied in cli.train)
            group.add_argument("--dataset", type=choice_type(DATASETS), choices=DATASETS, default=argparse.SUPPRESS,
                               help="mnist: the 60000 + 10000 images, found locally or downloaded, else (with "
                                    "one line saying how to get them) the bundled mnist-subset; mnist-subset: "
                                    "10000 + 2000 real MNIST images shipped with jaxvae; digits: the UCI "
                                    "8x8 digits, also shipped (default: mnist)")
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
    add_run_flags(train, "RUN_DIR", "run directory (default: runs/<dataset>-<YYYYmmdd-HHMMSS>, named after "
                  "the data used)", "the run in RUN_DIR from its checkpoint", "the figures at the end")
    add_config_flags(train)
    add_sweep_parser(sub, data_flags)

    evaluate = sub.add_parser("evaluate", help="loss, reconstruction and KL of a run on its test split")
    evaluate.add_argument("run_dir", metavar="RUN_DIR", help=RUN_DIR_HELP)
    evaluate.add_argument("--split", type=choice_type(SPLITS), choices=SPLITS, default="test",
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

    plot = sub.add_parser("plot", help="redraw a run's figures from its checkpoint")
    plot.add_argument("run_dir", metavar="RUN_DIR", help=RUN_DIR_HELP)
    plot.add_argument("--figures", metavar="DIR", help="where to write the PNGs (default: RUN_DIR/figures)")
    data_flags(plot, False)

    export = sub.add_parser("export", help="write PyTorch state dicts for torchref's blog modules")
    export.add_argument("run_dir", metavar="RUN_DIR", help=RUN_DIR_HELP)
    export.add_argument("--torch", metavar="FILE", help=f"output file (torch.save format; default: RUN_DIR/{EXPORT_FILE})")

    imp = sub.add_parser("import", help="make a run directory from torchref state dicts")
    imp.add_argument("torch_file", metavar="FILE", help="a file written by 'jaxvae export' (or torch.save of "
                     "{'encoder': state_dict, 'decoder': state_dict})")
    imp.add_argument("--out", required=True, metavar="RUN_DIR", help="the run directory to write (required)")
    imp.add_argument("--dataset", type=choice_type(DATASETS), choices=DATASETS,
                     help="the data the model is for (default: the file's, else by input size: 784 mnist, 64 digits)")
    imp.add_argument("--data-dir", metavar="DIR", help="where that dataset's MNIST files are (default: searched "
                     "as for train)")
    for _, f in config_fields():
        if f.name in IMPORT_FIELDS:
            add_field_flag(imp, f)
    return parser


def _error(command: str, message: str, code: int = EXIT_USAGE) -> int:
    """The one line of a failed command on stderr; its exit code (default 2)."""
    message = " ".join(str(message).split())
    print(f"{PROG} {command}: error: {message}", file=sys.stderr, flush=True)
    return code


def _resource_error(error: BaseException) -> str | None:
    """The one line of an allocation that failed (Python's MemoryError, XLA's RESOURCE_EXHAUSTED),
    else None. Only a command that has loaded JAX and jaxvae.checks meets one."""
    checks = sys.modules.get("jaxvae.checks")
    if checks is not None and (what := checks.out_of_memory(error)) is not None:
        return (f"out of memory ({what}); use a smaller --hidden, --latent-dim or --batch-size (or fewer "
                "models); a run's last saved epoch is kept")
    return None


def _report_bug(command: str, error: BaseException) -> int:
    """An exception jaxvae did not raise on purpose: its traceback, then a line asking to report it; exit 1."""
    traceback.print_exception(error)
    first = next(iter(str(error).splitlines()), "")[:200]
    print(f"{PROG} {command}: internal error: {type(error).__name__}: {first}", file=sys.stderr)
    print(f"{PROG} {command}: this is a bug in {PROG} or in a library it uses; please report it to the {PROG} "
          f"developers with the command line, '{PROG} --version' and the traceback above", file=sys.stderr, flush=True)
    return EXIT_BUG


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jaxvae`` console script and ``python -m jaxvae``; returns the exit code.

    0 success; 1 training stopped on a non-finite loss; 2 bad input or environment; 3 not enough
    memory (refused before allocating, or an allocation failed); 130 interrupted. Each failure is one
    line on stderr naming the flag or file, no traceback (``jaxvae.errors``). Any other exception is a
    bug: its traceback, a line asking to report it, and exit code 1.

    Args:
        argv: The arguments after the program's name; None for ``sys.argv[1:]``.

    Returns:
        The exit code.
    """
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or argparse's one-line error (already printed)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_USAGE)
    args.command_line = shlex.join([PROG, *argv])  # who holds a run's lock, for a second writer's message
    try:
        args.host_devices = apply_host_cores(args)  # XLA_FLAGS, read when JAX's backend starts: before JAX loads
    except JaxvaeError as e:
        return _error(args.command, str(e), e.exit_code)
    enable_compile_cache()  # before the command compiles anything
    module, function = COMMANDS[args.command].split(":")
    try:
        command = getattr(importlib.import_module(module), function)  # imports the command's modules, JAX among them
        raise_if_interrupted()  # a Ctrl-C those imports swallowed
        return command(args)
    except BrokenPipeError:  # the reader went away (jaxvae evaluate RUN | head -1): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's flush at exit would fail on the closed pipe again
        return 0
    except KeyboardInterrupt:
        warn(f"{PROG}: interrupted")
        return EXIT_INTERRUPTED
    except OSError as e:  # a read-only or full disk, a missing directory, no permission: named by file
        return _error(args.command, os_error_text(e))
    except JaxvaeError as e:  # configs, data, checkpoints, runs, memory: each names the field or file at fault
        message = str(e)
        if getattr(e, "remedy", None):  # a runs.RunError: add the command that fixes it
            from jaxvae.cli.rundir import remedy_text, resume_command  # JAX is loaded by now

            resume = getattr(args, "resume", None)  # a run or sweep given to --resume is continued the same way
            message += remedy_text(e, resume and resume_command(args.command, resume))
        return _error(args.command, message, e.exit_code)
    except Exception as e:
        if (message := _resource_error(e)) is not None:  # not enough memory is one line, whatever raised it
            return _error(args.command, message, EXIT_RESOURCES)
        return _report_bug(args.command, e)
