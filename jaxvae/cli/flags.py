"""Flags: one per VAEConfig / TrainConfig field (the dataclass default is the flag's), help text,
choices, typo hints, and the configs a parsed command line describes."""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import sys
from typing import Callable, Iterable, Iterator, NoReturn, Sequence

from jaxvae.config import (
    ACTIVATIONS,
    ARCHITECTURES,
    BINARIZATIONS,
    COMPUTE_DTYPES,
    INITS,
    LIKELIHOODS,
    LR,
    LR_SCHEDULES,
    OBJECTIVES,
    OUTPUT_ACTIVATIONS,
    DEFAULT_FAMILY,
    FAMILIES,
    TrainConfig,
    VAEConfig,
)
from jaxvae.errors import EXIT_NONFINITE, EXIT_RESOURCES, EXIT_USAGE, InputError  # noqa: F401 (re-exported)
from jaxvae.layout import TENSORBOARD_DIR
from jaxvae.tensorboard import missing

PROG = "jaxvae"

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
    "decoder_hidden": "decoder hidden widths",
    "likelihood": "observation model p(x|z): the blog's Gaussian, or Bernoulli (pixels in [0, 1])",
    "objective": "training bound: the ELBO, or the importance-weighted bound (IWAE) with --iwae-k samples",
    "iwae_k": "importance samples per image for --objective iwae",
    "architecture": "encoder and decoder: MLPs, or VGG-style 3x3 conv stacks (square images)",
    "conv_channels": "channels of each conv block (each block halves the image side)",
    "compute_dtype": "dtype of matmuls and convolutions; parameters and loss stay float32",
    "init": "initialisation of every layer: PyTorch's default (uniform in +-1/sqrt(fan_in), the blog's) "
            "or Flax's (lecun-normal kernels, zero biases)",
    "batch_size": "minibatch size",
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
    "init": INITS,
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
# The hyperparameters of the command line's models (every --model's declaration, once each), lr last:
# each a flag of `jaxvae train` (a TrainConfig field's, or an entry of TrainConfig.hyper) that
# `jaxvae sweep` takes several values of.
SWEPT_HYPERPARAMETERS = (*{h.name: h for f in FAMILIES.values() for h in f.hyperparameters}.values(), LR)
SWEEP_VALUE_FLAGS = {h.name: h.flag for h in SWEPT_HYPERPARAMETERS}
FIELD_HELP.update({h.name: h.help for h in SWEPT_HYPERPARAMETERS})
# The models' own hyperparameters (no TrainConfig field): their flags fill TrainConfig.hyper.
MODEL_HYPERPARAMETERS = tuple(h for h in SWEPT_HYPERPARAMETERS if h.name not in {f.name for f in
                                                                                  dataclasses.fields(TrainConfig)})
# The TrainConfig fields `jaxvae import` may set: what evaluating the imported model depends on.
IMPORT_FIELDS = ("recon_sigma", "kl_weight", "batch_size", "seed")
PROGRESS_KINDS = ("epochs", "steps", "none")  # --progress; see EpochProgress
SPLITS = ("test", "train")  # evaluate --split
RUN_DIR_HELP = "a run directory written by 'jaxvae train' or 'jaxvae import'"


class UsageError(InputError):
    """Bad command-line input; reported as one line with exit code 2."""


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``"; did you mean X?"`` for the closest candidate, or "" when none is close.

    Args:
        word: What was typed.
        candidates: The valid words.

    Returns:
        The hint, to append to an error message.
    """
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def choice_type(choices: Sequence[str]) -> Callable[[str], str]:
    """An argparse ``type`` that accepts one of ``choices`` and names the closest one on a typo.

    Args:
        choices: The valid values.

    Returns:
        The ``type`` function; it raises ``argparse.ArgumentTypeError`` for any other value.
    """

    def parse(value: str) -> str:
        if value in choices:
            return value
        raise argparse.ArgumentTypeError(
            f"invalid choice {value!r}{did_you_mean(value, choices)} (choose from {', '.join(choices)})")

    return parse


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``jaxvae train: error: ...``, exit code 2, no usage dump) and
    a suggestion for a mistyped command, flag or choice, for every subcommand.

    Args:
        *args: As for ``argparse.ArgumentParser``.
        **kwargs: As for ``argparse.ArgumentParser``; ``formatter_class`` defaults to one with a wider
            flag column.
    """

    def __init__(self, *args, **kwargs):
        # A wider flag column. Each flag writes its default into its help (ArgumentDefaultsHelpFormatter doubled them).
        kwargs.setdefault("formatter_class", functools.partial(argparse.HelpFormatter, max_help_position=34))
        super().__init__(*args, **kwargs)
        self._commands = None

    def error(self, message: str) -> NoReturn:
        """Print ``message`` as one line (``PROG: error: ... (see PROG --help)``) and exit with code 2.

        Args:
            message: The error.

        Raises:
            SystemExit: Always, with code 2.
        """
        message = " ".join(str(message).split())
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def add_subparsers(self, **kwargs):  # argparse makes each subcommand's parser a Parser too
        """``argparse.ArgumentParser.add_subparsers``, kept for the typo hint on a command's name."""
        self._commands = super().add_subparsers(**kwargs)
        return self._commands

    def parse_args(self, args: Sequence[str] | None = None,
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        """``argparse``'s, with a hint for a mistyped command and unknown arguments reported in the words
        of the subcommand they were given to.

        Args:
            args: The arguments; None for ``sys.argv[1:]``.
            namespace: Where to put the values; None for a new one.

        Returns:
            The parsed arguments.

        Raises:
            SystemExit: An unknown command or argument, a bad value, --help or --version.
        """
        args = sys.argv[1:] if args is None else list(args)
        command = None
        if self._commands is not None:  # argparse's message for a mistyped command suggests none
            command = next((a for a in args if not a.startswith("-")), None)
            names = list(self._commands.choices)
            if command is not None and command not in names:
                self.error(f"unknown command {command!r}{did_you_mean(command, names)} "
                           f"(choose from {', '.join(names)})")
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:  # report them in the words of the subcommand they were given to
            parser = self._commands.choices[command] if command else self
            parser.error(parser.unrecognized(extras))
        return parsed

    def unrecognized(self, extras: Sequence[str]) -> str:
        """The error for arguments this parser does not know, naming the flag it was probably meant as.

        Args:
            extras: The arguments it did not know.

        Returns:
            The message: the first unknown flag with a hint, or every argument when none is a flag.
        """
        flags = [a.split("=", 1)[0] for a in extras if a.startswith("--")]
        if not flags:
            return f"unrecognized arguments: {' '.join(extras)}"
        known = [s for s in self._option_string_actions if s.startswith("--")]  # argparse's table of flags
        return f"unrecognized argument {flags[0]}{did_you_mean(flags[0], known)}"


def config_fields() -> Iterator[tuple[type, dataclasses.Field]]:
    """Every field of VAEConfig, then of TrainConfig.

    Yields:
        ``(config class, field)`` pairs.
    """
    for cls in (VAEConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            if f.metadata.get("flag", True):  # TrainConfig.hyper: the model's own hyperparameters, by name
                yield cls, f


def flag_of(name: str) -> str:
    """The command-line flag of a config field: ``max_epochs`` -> ``--epochs``, ``latent_dim`` -> ``--latent-dim``.

    Args:
        name: The field's name.

    Returns:
        The flag.
    """
    return "--" + FLAG_NAMES.get(name, name).replace("_", "-")


def field_help(field: dataclasses.Field) -> str:
    """A config flag's help: what it does and its default (the dataclass's, so config.py stays the one place).

    Args:
        field: The config field.

    Returns:
        The help text.
    """
    default = field.default
    if field.name in DEFAULT_TEXT:
        default = DEFAULT_TEXT[field.name]
    elif isinstance(default, bool):
        default = "on" if default else "off"
    elif isinstance(default, tuple):
        default = " ".join(map(str, default))
    return f"{FIELD_HELP[field.name]} (default: {default})"


def add_field_flag(container: argparse.ArgumentParser | argparse._ArgumentGroup, field: dataclasses.Field) -> None:
    """The flag of one config field on a parser or argument group. Its default is SUPPRESSed in the
    namespace, which tells the flags given apart (input_dim otherwise follows the dataset; --resume).

    Args:
        container: The parser or argument group.
        field: The config field.
    """
    kwargs = {"dest": field.name, "default": argparse.SUPPRESS, "help": field_help(field)}
    default = field.default
    if field.name in FIELD_CHOICES:
        kwargs.update(type=choice_type(FIELD_CHOICES[field.name]), choices=FIELD_CHOICES[field.name])
    elif isinstance(default, bool):
        kwargs["action"] = argparse.BooleanOptionalAction
    elif isinstance(default, tuple) or default is None:
        kwargs.update(nargs="+", type=int, metavar="N")
    else:  # N for whole numbers, X for real ones: short, and free of the field names (--epochs MAX_EPOCHS)
        kwargs.update(type=type(default), metavar="N" if isinstance(default, int) else "X")
    container.add_argument(flag_of(field.name), **kwargs)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field, grouped by config, with that field's default (shown in --help).

    Args:
        parser: The parser to add them to.
    """
    model = parser.add_argument_group("model (VAEConfig)")
    model.add_argument("--model", dest="family", type=choice_type(tuple(FAMILIES)), choices=tuple(FAMILIES),
                       default=argparse.SUPPRESS, metavar="NAME",
                       help="; ".join(f"{f.name}: {f.help}" for f in FAMILIES.values()) + f" (default: {DEFAULT_FAMILY})")
    training = parser.add_argument_group("training (TrainConfig)")
    for cls, f in config_fields():
        add_field_flag(model if cls is VAEConfig else training, f)
    own = parser.add_argument_group("the models' own hyperparameters (TrainConfig.hyper)")
    for h in MODEL_HYPERPARAMETERS:
        models = ", ".join(f.name for f in FAMILIES.values() if h in f.hyperparameters)
        own.add_argument(h.flag, dest=f"hyper_{h.name}", type=float, default=argparse.SUPPRESS, metavar="X",
                         help=f"{h.help}; --model {models} (default: {h.default:g})")


def given_fields(args: argparse.Namespace) -> dict:
    """The config fields whose flags were given.

    Args:
        args: The parsed command line.

    Returns:
        Their values by field name.
    """
    return {f.name: getattr(args, f.name) for _, f in config_fields() if hasattr(args, f.name)}


def configs_from_args(args: argparse.Namespace, base_vae: VAEConfig = VAEConfig(),
                      base_train: TrainConfig = TrainConfig()) -> tuple[VAEConfig, TrainConfig]:
    """The configs: ``base_*`` with the flags that were given; ValueError naming a bad field.

    Args:
        args: The parsed command line.
        base_vae: The model config the flags change.
        base_train: The training config the flags change.

    Returns:
        The model config and the training config.

    Raises:
        InputError: A value a config does not accept; the message names the field.
    """
    given = given_fields(args)
    vae_names = {f.name for f in dataclasses.fields(VAEConfig)}
    vae = dataclasses.replace(base_vae, **{k: v for k, v in given.items() if k in vae_names})
    train = dataclasses.replace(base_train, **{k: v for k, v in given.items() if k not in vae_names})
    own = {h.name: getattr(args, f"hyper_{h.name}") for h in MODEL_HYPERPARAMETERS if hasattr(args, f"hyper_{h.name}")}
    return vae, train.with_hyper(**own) if own else train


class TensorBoardFlag(argparse.Action):
    """``--tensorboard``: refused at parse time, before anything is written, when tensorboardX is missing.

    Args:
        option_strings: As for ``argparse.Action``.
        dest: As for ``argparse.Action``.
        **kwargs: As for ``argparse.Action`` (it takes no value and defaults to False).
    """

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if problem := missing():
            parser.error(f"{option_string}: {problem}")
        setattr(namespace, self.dest, True)


def add_run_flags(parser: argparse.ArgumentParser, metavar: str, out_help: str, resume_what: str,
                  plots_what: str) -> argparse._ArgumentGroup:
    """The flags train and sweep share: where to write, resuming, figures, progress.

    Args:
        parser: The command's parser.
        metavar: The name of --out's and --resume's value (RUN_DIR, SWEEP_DIR).
        out_help: --out's help.
        resume_what: What --resume continues, in its help ("the run in RUN_DIR from its checkpoint", say).
        plots_what: What --no-plots skips, in its help.

    Returns:
        The "run" argument group holding them.
    """
    run = parser.add_argument_group("run")
    run.add_argument("--out", metavar=metavar, help=out_help)
    run.add_argument("--resume", metavar=metavar, help=f"continue {resume_what} (its config is kept; --epochs may "
                     "raise the epoch limit)")
    run.add_argument("--no-plots", action="store_true", help=f"skip {plots_what}")
    run.add_argument("--progress", type=choice_type(PROGRESS_KINDS), choices=PROGRESS_KINDS, default="epochs",
                     help="progress bar on a terminal (never in a log file): one over the run's epochs, one "
                          "within each epoch as well (its host callback keeps the epoch out of the "
                          "compilation cache), or none (default: epochs)")
    run.add_argument("--quiet", action="store_true",
                     help="print only errors, warnings and the closing line (no progress bar, no epoch lines)")
    run.add_argument("--tensorboard", action=TensorBoardFlag,
                     help=f"also write the per-epoch metrics as TensorBoard event files to RUN_DIR/{TENSORBOARD_DIR} "
                          "(each model's own; needs tensorboardX: pip install 'jaxvae[tensorboard]')")
    return run
