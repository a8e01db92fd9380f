"""The ``jaxvae`` command: train, evaluate, plot, export and import. argparse -> configs -> modules.

The train flags are generated from the fields of VAEConfig and TrainConfig (one flag per field,
the dataclass default is the flag's default), so defaults live in one place: config.py.
Exit codes: 0 success, 1 training stopped on a non-finite loss, 2 bad input (one line on stderr,
no traceback), 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import time
from pathlib import Path

from jaxvae.config import ACTIVATIONS, OUTPUT_ACTIVATIONS, TrainConfig, VAEConfig
from jaxvae.fileio import BackgroundWriter, write_json
from jaxvae.runs import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    EVALUATE_FILE,
    FIGURES_DIR,
    RunInfo,
    default_image_shape,
    load_run,
    read_run_config,
    require_run_dir,
    run_dataset,
    write_metrics,
    write_run_config,
)

PROG = "jaxvae"
EXIT_NONFINITE, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130

# Flag names that differ from the field name with "_" -> "-".
FLAG_NAMES = {"max_epochs": "epochs"}
FIELD_HELP = {
    "input_dim": "features per sample (default: taken from the dataset; 784 for MNIST, 64 for digits)",
    "hidden": "encoder hidden widths; the decoder mirrors them",
    "latent_dim": "latent dimensions",
    "activation": f"hidden activation: {', '.join(ACTIVATIONS)}",
    "negative_slope": "LeakyReLU negative slope",
    "output_activation": f"decoder output: {', '.join(OUTPUT_ACTIVATIONS)}",
    "recon_sigma": "sigma of the Gaussian reconstruction likelihood (the blog's gauss_sigma)",
    "kl_weight": "weight of the KL term (the blog's distrib_loss_rate)",
    "decoder_hidden": "decoder hidden widths (default: the encoder's, reversed)",
    "batch_size": "minibatch size",
    "lr": "Adam learning rate",
    "max_epochs": "maximum number of epochs",
    "b1": "Adam beta1", "b2": "Adam beta2", "adam_eps": "Adam epsilon",
    "plateau_factor": "ReduceLROnPlateau factor",
    "plateau_patience": "ReduceLROnPlateau patience (epochs)",
    "plateau_threshold": "ReduceLROnPlateau relative threshold",
    "min_lr": "ReduceLROnPlateau minimum lr",
    "stop_lr": "stop before an epoch whose lr is below this",
    "drop_last": "drop the last partial batch",
    "seed": "random seed (init, shuffling, noise)",
    "lr_schedule": "learning-rate schedule: plateau (the blog's), constant, burda, cosine",
    "kl_warmup_epochs": "raise the KL weight linearly from 0 over this many epochs (0: constant)",
}
# A resumed run keeps its config; only these may change (to train for longer, say).
RESUME_OVERRIDABLE = {"max_epochs"}


class UsageError(ValueError):
    """Bad command-line input; reported as one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``jaxvae train: error: ...`` and exit code 2, no usage dump."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _config_fields():
    for cls in (VAEConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            yield cls, f


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field with that field's default (shown in --help).

    Defaults are SUPPRESSed in the namespace so that we can tell which flags were given
    (needed for input_dim, which otherwise follows the dataset, and for --resume).
    """
    model = parser.add_argument_group("model (VAEConfig)")
    training = parser.add_argument_group("training (TrainConfig)")
    for cls, f in _config_fields():
        group = model if cls is VAEConfig else training
        flag = "--" + FLAG_NAMES.get(f.name, f.name).replace("_", "-")
        default = f.default
        kwargs = {"dest": f.name, "default": argparse.SUPPRESS,
                  "help": f"{FIELD_HELP.get(f.name, f.name)} (default: "
                          f"{' '.join(map(str, default)) if isinstance(default, tuple) else default})"}
        if isinstance(default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif isinstance(default, tuple) or default is None:
            kwargs.update(nargs="+", type=int, metavar="N")
        else:
            kwargs["type"] = type(default)
        group.add_argument(flag, **kwargs)


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


def _say(message: str = "") -> None:
    print(message, flush=True)


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class EpochProgress:
    """A tqdm bar per epoch, fed by fit's ``progress(step, running_loss)`` host callback.

    One instance per run: fit passes it to a jitted function as a static argument, so a new
    object would mean a recompilation.
    """

    def __init__(self, steps_per_epoch: int, first_epoch: int, max_epochs: int):
        self.steps = steps_per_epoch
        self.epoch = first_epoch
        self.max_epochs = max_epochs
        self.bar = None

    def __call__(self, step, running_loss):
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=self.steps, desc=f"epoch {self.epoch}/{self.max_epochs}", leave=False,
                            unit="batch", dynamic_ncols=True)
        self.bar.update(max(0, int(step) - self.bar.n))
        self.bar.set_postfix(loss=f"{float(running_loss):.4f}", refresh=False)

    def end_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.epoch += 1


class _StopAfterEpoch(Exception):
    """Raised from fit's epoch callback after the checkpoint is saved, on the first Ctrl-C."""


class _SigintFlag:
    """First Ctrl-C: finish the current epoch, save, stop. Second Ctrl-C: stop at once
    (the previous epoch's checkpoint is already on disk)."""

    def __init__(self):
        self.requested = False
        self.previous = None

    def __enter__(self):
        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        _warn("\nCtrl-C: stopping after this epoch and saving a checkpoint (Ctrl-C again to stop now)")


# --------------------------------------------------------------------------- data


def _load_data(name: str, data_dir, download: bool, require: bool):
    from jaxvae.data import load_dataset

    return load_dataset(name, data_dir=data_dir, download=download, require=require, log=_warn)


def _check_arrays(dataset, vae_config: VAEConfig, batch_size: int | None = None) -> None:
    # fit's own checks, run before anything is written (fit repeats them: cheap)
    from jaxvae.checks import check_data

    check_data(f"{dataset.name} train split", dataset.train_x, vae_config, batch_size)
    check_data(f"{dataset.name} test split", dataset.test_x, vae_config)


def _run_data(info: RunInfo, args):
    return run_dataset(info, getattr(args, "data_dir", None), not getattr(args, "no_download", False), _warn)


# --------------------------------------------------------------------------- train


def _resume_configs(args, info: RunInfo) -> tuple[VAEConfig, TrainConfig]:
    given = _given_fields(args)
    current = {**dataclasses.asdict(info.vae_config), **dataclasses.asdict(info.train_config)}
    for name, value in given.items():
        value = tuple(value) if isinstance(value, list) else value
        if name not in RESUME_OVERRIDABLE and value != current[name]:
            flag = "--" + FLAG_NAMES.get(name, name).replace("_", "-")
            raise UsageError(f"{flag}: a resumed run keeps its config ({name}={current[name]!r} in "
                             f"{Path(args.resume) / CONFIG_FILE}); only --epochs may change")
    return configs_from_args(args, info.vae_config, info.train_config)


def _new_run_dir(args, dataset_name: str) -> Path:
    out = Path(args.out) if args.out else Path("runs") / f"{dataset_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    for name in (CHECKPOINT_FILE, CONFIG_FILE):
        if (out / name).exists():
            raise UsageError(f"--out {out}: already holds a run ({name}); continue it with "
                             f"'{PROG} train --resume {out}' or choose another --out")
    return out


def _epoch_line(record: dict, max_epochs: int) -> str:
    return (f"epoch {record['epoch']:>3}/{max_epochs}  train loss {record['train_loss']:.4f}  "
            f"val loss {record['val_loss']:.4f}  lr {record['lr']:.1e}  {record['seconds']:.1f}s")


def cmd_train(args) -> int:
    from jaxvae.batching import steps_per_epoch
    from jaxvae.checkpoint import load_checkpoint, save_checkpoint
    from jaxvae.training import NonFiniteError, fit

    download = not args.no_download
    if args.resume:
        run_dir = require_run_dir(args.resume)
        if args.out and Path(args.out).resolve() != run_dir.resolve():
            raise UsageError(f"--out {args.out} differs from --resume {run_dir}; a resumed run stays in its directory")
        info = read_run_config(run_dir)
        vae_config, train_config = _resume_configs(args, info)
        state, _, _ = load_checkpoint(run_dir / CHECKPOINT_FILE, vae_config, train_config)
        dataset = _run_data(info, args)
        _check_arrays(dataset, vae_config, train_config.batch_size)
        data_dir = args.data_dir or info.data_dir
    else:
        vae_config, train_config = configs_from_args(args)  # bad flags fail here, before any data
        dataset = _load_data(args.dataset, args.data_dir, download, args.require_mnist)
        if not hasattr(args, "input_dim"):  # the 784 default is MNIST's: follow the data
            vae_config = vae_config.replace(input_dim=int(dataset.train_x.shape[1]))
        _check_arrays(dataset, vae_config, train_config.batch_size)
        run_dir = _new_run_dir(args, dataset.name)
        state = None
        data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else None
        info = RunInfo(vae_config, train_config, dataset.name, tuple(dataset.image_shape), data_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_config(run_dir, RunInfo(vae_config, train_config, dataset.name, tuple(info.image_shape), data_dir))
    checkpoint_path = run_dir / CHECKPOINT_FILE
    first_epoch = (state.epoch if state else 0) + 1
    _say(f"run directory: {run_dir}")
    _say(f"data: {dataset.name}, {len(dataset.train_x)} train / {len(dataset.test_x)} test samples, "
         f"{vae_config.input_dim} features; model {vae_config.input_dim}-{'-'.join(map(str, vae_config.hidden))}-"
         f"{vae_config.latent_dim}" + (f"; resuming after epoch {state.epoch}" if state else ""))

    steps = steps_per_epoch(len(dataset.train_x), train_config.batch_size, train_config.drop_last)
    progress = None if args.quiet else EpochProgress(steps, first_epoch, train_config.max_epochs)
    last_saved = {"epoch": state.epoch if state else 0}
    writer = BackgroundWriter()  # checkpoint and metrics land while the next epoch trains

    def on_epoch(fit_state, record):
        writer.submit(save_checkpoint, checkpoint_path, fit_state, vae_config, train_config)
        writer.submit(write_metrics, run_dir, fit_state.history)
        last_saved["epoch"] = fit_state.epoch
        if progress is not None:
            progress.end_epoch()
        _say(_epoch_line(record, train_config.max_epochs))
        if stop.requested:
            raise _StopAfterEpoch

    resume_hint = f"{PROG} train --resume {run_dir}"
    try:
        with _SigintFlag() as stop, writer:  # leaving waits until every write is on disk
            result = fit(dataset.train_x, dataset.test_x, vae_config=vae_config, train_config=train_config,
                         state=state, callbacks=[on_epoch], progress=progress, progress_every=max(1, steps // 20))
    except (_StopAfterEpoch, KeyboardInterrupt):
        if progress is not None and progress.bar is not None:
            progress.bar.close()
        if last_saved["epoch"]:
            _warn(f"interrupted after epoch {last_saved['epoch']}; checkpoint saved to {checkpoint_path}; "
                  f"resume with: {resume_hint}")
        else:
            _warn("interrupted before the first epoch finished; nothing to resume")
        return EXIT_INTERRUPTED
    except NonFiniteError as e:
        if progress is not None and progress.bar is not None:
            progress.bar.close()
        write_metrics(run_dir, e.state.history)  # the history so far (the callback already wrote it)
        kept = (f"the last good checkpoint (epoch {e.state.epoch}) is unchanged at {checkpoint_path}"
                if e.state.epoch else "no epoch finished, so no checkpoint was written")
        _warn(f"{PROG}: error: {e}; {kept}; try a smaller --lr")
        return EXIT_NONFINITE

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


def cmd_evaluate(args) -> int:
    from jaxvae.evaluate import evaluate_run

    result = evaluate_run(args.run_dir, split=args.split, seed=args.seed, k=args.k, limit=args.limit, chunk=args.chunk,
                          data_dir=args.data_dir, download=not args.no_download, log=_warn)
    write_json(Path(args.run_dir) / EVALUATE_FILE, result)
    if args.json:
        _say(json.dumps(result, indent=2))
    else:
        _say(f"{result['dataset']} {result['split']} split, {result['samples']} samples, model after epoch "
             f"{result['epoch']}, noise seed {result['seed']}")
        _say(f"{'metric':<8}{'value':>12}")
        for name in ("loss", "recon", "kl"):
            _say(f"{name:<8}{result[name]:>12.4f}")
        if "log_likelihood" in result:
            _say(f"log p(x) ~ {result['log_likelihood']:.3f} +- {result['log_likelihood_stderr']:.3f} nats "
                 f"(k={result['k']} importance samples); -ELBO {result['neg_elbo']:.3f} +- {result['neg_elbo_stderr']:.3f}")
        _say(f"written: {Path(args.run_dir) / EVALUATE_FILE}")
    return 0


def cmd_plot(args) -> int:
    from jaxvae.plots import save_figures

    info, state = load_run(args.run_dir)
    dataset = _run_data(info, args)
    out = Path(args.figures or Path(args.run_dir) / FIGURES_DIR)
    paths = save_figures(out, state.params, info.vae_config, dataset.test_x, dataset.test_y, info.image_shape,
                         state.history, seed=info.train_config.seed)
    _say("figures: " + ", ".join(str(p) for p in paths))
    return 0


# --------------------------------------------------------------------------- torch export / import


def cmd_export(args) -> int:
    from jaxvae.interop import save_torch

    info, state = load_run(args.run_dir)
    target = save_torch(args.torch, state.params, info.vae_config, image_shape=list(info.image_shape),
                        dataset=info.dataset)
    vc = info.vae_config
    _say(f"wrote {target}: torchref blog encoder + decoder state dicts (epoch {state.epoch}); load with\n"
         f"  d = torch.load('{target}'); enc, sample, dec = torchref.build_blog_model("
         f"{vc.input_dim}, {vc.latent_dim}, {tuple(vc.hidden)})\n"
         f"  enc.load_state_dict(d['encoder']); dec.load_state_dict(d['decoder'])")
    return 0


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
    out = _new_run_dir(argparse.Namespace(out=args.out), dataset)
    out.mkdir(parents=True, exist_ok=True)
    write_run_config(out, RunInfo(config, train_config, dataset, shape, args.data_dir))
    state = init_fit_state(TrainStep.from_configs(config, train_config), train_config.seed, params=params)
    save_checkpoint(out / CHECKPOINT_FILE, state, config, train_config)
    _say(f"wrote run directory {out} from {args.torch_file} (model {config.input_dim}-"
         f"{'-'.join(map(str, config.hidden))}-{config.latent_dim}, dataset {dataset}); try: {PROG} evaluate {out}")
    return 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from jaxvae import __version__
    from jaxvae.data import DATASETS

    parser = _Parser(prog=PROG, description="Train, evaluate, plot and export the VAE of 'A Gentle "
                     "Introduction to Variational Autoencoders' (JAX/Flax).")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    def data_flags(p, with_dataset: bool):
        if with_dataset:
            p.add_argument("--dataset", choices=DATASETS, default="mnist",
                           help="mnist (falls back to the embedded 8x8 digits, with one logged line, when MNIST "
                                "can be neither found nor downloaded) or digits")
            p.add_argument("--require-mnist", action="store_true", help="fail instead of falling back to digits")
        p.add_argument("--data-dir", help="directory with the MNIST IDX files (.gz or not); default: "
                       "$JAXVAE_DATA_DIR, then ~/.cache/jaxvae/mnist, then download")
        p.add_argument("--no-download", action="store_true", help="never try to download MNIST")

    train = sub.add_parser("train", help="train a VAE (the blog's configuration by default)",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data_flags(train, True)
    train.add_argument("--out", help="run directory (default: runs/<dataset>-<YYYYmmdd-HHMMSS>)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint "
                       "(its config is kept; --epochs may raise the epoch limit)")
    train.add_argument("--no-plots", action="store_true", help="skip the figures at the end")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_config_flags(train)
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="loss, reconstruction and KL of a run on its test split")
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument("--split", choices=("test", "train"), default="test")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the evaluation noise and batch order")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of the table")
    evaluate.add_argument("--k", type=int, default=0, metavar="K",
                          help="also estimate log p(x) with K importance samples per image (e.g. 5000; 0: skip)")
    evaluate.add_argument("--chunk", type=int, default=None, metavar="N",
                          help="importance samples per image held in memory at once (default: a 64 MB budget)")
    evaluate.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images of the split")
    data_flags(evaluate, False)
    evaluate.set_defaults(func=cmd_evaluate)

    plot = sub.add_parser("plot", help="redraw a run's figures from its checkpoint")
    plot.add_argument("run_dir", metavar="RUN_DIR")
    plot.add_argument("--figures", metavar="DIR", help=f"where to write the PNGs (default: RUN_DIR/{FIGURES_DIR})")
    data_flags(plot, False)
    plot.set_defaults(func=cmd_plot)

    export = sub.add_parser("export", help="write PyTorch state dicts for torchref's blog modules")
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("--torch", required=True, metavar="FILE", help="output file (torch.save format)")
    export.set_defaults(func=cmd_export)

    imp = sub.add_parser("import", help="make a run directory from torchref state dicts")
    imp.add_argument("torch_file", metavar="FILE", help="a file written by 'jaxvae export' (or torch.save of "
                     "{'encoder': state_dict, 'decoder': state_dict})")
    imp.add_argument("--out", required=True, metavar="RUN_DIR")
    imp.add_argument("--dataset", choices=DATASETS, help="the data the model is for (default: from the file, "
                     "else by input size: 784 mnist, 64 digits)")
    imp.add_argument("--data-dir")
    for name in ("recon_sigma", "kl_weight", "batch_size", "seed"):
        field = {f.name: f for _, f in _config_fields()}[name]
        imp.add_argument("--" + name.replace("_", "-"), dest=name, type=type(field.default),
                         default=argparse.SUPPRESS, help=f"{FIELD_HELP[name]} (default: {field.default})")
    imp.set_defaults(func=cmd_import)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jaxvae`` console script and ``python -m jaxvae``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:  # configs, data, checkpoints, runs: all name the field / file at fault
        message = " ".join(str(e).split())
        print(f"{PROG} {args.command}: error: {message}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        _warn(f"{PROG}: interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
