"""``jaxvae evaluate``, ``plot``, ``export`` and ``import``: commands on an existing run directory."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shlex
import warnings
from pathlib import Path

from jaxvae.checkpoint import save_checkpoint
from jaxvae.cli.console import model_shape, say, warn
from jaxvae.cli.flags import IMPORT_FIELDS, PROG, UsageError, given_fields
from jaxvae.cli.rundir import check_out_dir, default_run_dir, lock_run
from jaxvae.config import TrainConfig, VAEConfig
from jaxvae.errors import InputError
from jaxvae.evaluation import evaluate_run
from jaxvae.fileio import os_error_text
from jaxvae.interop import load_torch, save_torch
from jaxvae.runs import (
    CHECKPOINT_FILE,
    EXPORT_FILE,
    FIGURES_DIR,
    RunInfo,
    checkpoint_record,
    default_image_shape,
    fingerprints_from_dict,
    load_run,
    read_run_info,
    run_dataset,
    write_evaluation,
    write_run_config,
)
from jaxvae.training import TrainStep, init_fit_state
from jaxvae.vae import as_model


def _model_line(info: RunInfo, epoch: int) -> str:
    source = info.imported_from
    if source is not None and source["epoch"] is None and epoch == 0:
        return f"model imported from {source['file']} (its epoch is not recorded)"
    return f"model after epoch {epoch}"


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``jaxvae evaluate``: score a run on a split, print the table (or JSON) and add the result to its
    ``evaluate.json``.

    Raises:
        RunError: The run directory cannot be read, or its data differ from the run's.
        InputError: ``--split``, ``--seed``, ``--k``, ``--limit`` or ``--chunk`` out of range, or the data
            cannot be found or read.
        NumericalError: A non-finite estimate.
        OSError: ``evaluate.json`` cannot be written, or holds a file that jaxvae did not write.
    """
    info = read_run_info(args.run_dir)
    result = evaluate_run(args.run_dir, split=args.split, seed=args.seed, k=args.k, limit=args.limit, chunk=args.chunk,
                          data_dir=args.data_dir, download=not args.no_download, log=warn)
    if args.json:
        say(json.dumps(result, indent=2))
    else:
        say(f"{result['dataset']} {result['split']} split, {result['samples']} samples, "
             f"{_model_line(info, result['epoch'])}, noise seed {result['seed']}")
        width = max(8, *(len(name) + 2 for name in result["metrics"]))
        say(f"{'metric':<{width}}{'value':>12}")
        for name in result["metrics"]:
            say(f"{name:<{width}}{result[name]:>12.4f}")
        if "log_likelihood" in result:
            say(f"log p(x) ~ {result['log_likelihood']:.3f} +- {result['log_likelihood_stderr']:.3f} nats per image "
                f"(importance-sampled, k={result['k']}); -ELBO {result['neg_elbo']:.3f} +- "
                f"{result['neg_elbo_stderr']:.3f} from the same samples")
            if as_model(info.model).likelihood.loss_drops_constant:
                say("  (these include the Gaussian's normalising constant, D/2 log(2 pi sigma^2) per image; the loss "
                    "above leaves it out, as the blog's loss does, so the two are on different scales)")
    path = write_evaluation(args.run_dir, result)  # after the output: a read-only run still shows it
    if not args.json:
        say(f"written: {path} (one entry per split, number of images, k and seed)")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """``jaxvae plot``: redraw a run's figures from its checkpoint.

    Raises:
        RunError: The run directory cannot be read, or its data differ from the run's.
        InputError: The data cannot be found or read.
        OSError: A figure cannot be written, or its path holds a file that jaxvae did not write.
    """
    from jaxvae.plots import save_figures  # deferred: matplotlib is ~0.6 s of a start; only this command needs it

    info, state = load_run(args.run_dir)
    dataset = run_dataset(info, args.data_dir, not args.no_download, warn, run_dir=args.run_dir)
    out = Path(args.figures or Path(args.run_dir) / FIGURES_DIR)
    paths = save_figures(out, state.params, info.model, dataset.test_x, dataset.test_y, info.image_shape,
                         state.history, seed=info.train_config.seed, model_state=state.train_state.model_state)
    say("figures: " + ", ".join(str(p) for p in paths))
    return 0


# --------------------------------------------------------------------------- torch export / import


def cmd_export(args: argparse.Namespace) -> int:
    """``jaxvae export``: write a run's model as torchref's encoder and decoder state dicts.

    Raises:
        RunError: The run directory cannot be read.
        InputError: The model does not fit torchref's modules, or the output's directory does not exist.
        OSError: The file cannot be written, or holds a file that jaxvae did not write.
    """
    info, state = load_run(args.run_dir)
    if not isinstance(info.model, VAEConfig):
        raise InputError(f"{args.run_dir}: its model ({model_shape(info.model)}) was not made by a VAEConfig; export "
                         "writes torchref's blog modules, which hold the blog's family only")
    # what an import needs to report the model truthfully and to find and check its data again
    fingerprints = checkpoint_record(info).get("data_fingerprints") or None
    target = save_torch(args.torch or Path(args.run_dir) / EXPORT_FILE, state.params, info.vae_config,
                        image_shape=list(info.image_shape), dataset=info.dataset, epoch=state.epoch, data_dir=info.data_dir,
                        data_fingerprints=fingerprints)
    vc = info.vae_config
    say(f"wrote {target}: torchref blog encoder + decoder state dicts (epoch {state.epoch}); load with\n"
         f"  d = torch.load('{target}'); enc, sample, dec = torchref.build_blog_model("
         f"{vc.input_dim}, {vc.latent_dim}, {tuple(vc.hidden)})\n"
         f"  enc.load_state_dict(d['encoder']); dec.load_state_dict(d['decoder'])")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """``jaxvae import``: make a run directory (config.json and a checkpoint) from torchref state dicts,
    under the directory's lock.

    Raises:
        InputError: The file is not one ``interop.load_torch`` reads, or a --flag value is invalid.
        UsageError: ``--data-dir`` is not a directory, the file's data fingerprints are invalid, ``--out``
            cannot take a new run, or the run directory cannot be written.
        RunError: Another process holds ``--out``'s lock, or it was moved while being locked.
    """
    with warnings.catch_warnings(record=True) as casts:
        warnings.simplefilter("always")
        params, config, blob = load_torch(args.torch_file)
    for cast in casts:
        warn(f"{PROG} import: warning: {args.torch_file}: {cast.message}")
    train_config = TrainConfig(**{k: v for k, v in given_fields(args).items() if k in IMPORT_FIELDS})
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
    epoch = blob.get("epoch")  # checked by load_torch: a whole number or absent
    source = {"file": str(Path(args.torch_file).resolve()), "epoch": epoch}
    info = RunInfo(config, train_config, dataset, shape, data_dir if isinstance(data_dir, str) else None,
                   fingerprints=fingerprints, imported_from=source)
    state = init_fit_state(TrainStep.from_configs(config, train_config), train_config, params=params)
    state = dataclasses.replace(state, epoch=epoch or 0)
    out = Path(args.out) if args.out else default_run_dir(dataset)
    check_out_dir(out)  # before the lock too: a refused --out makes no directory
    with contextlib.ExitStack() as stack:
        try:
            out.mkdir(parents=True, exist_ok=True)
            lock_run(out, getattr(args, "command_line", None), stack)
            check_out_dir(out)
            write_run_config(out, info)  # config first: a directory with a config alone can be redone in place
            save_checkpoint(out / CHECKPOINT_FILE, state, config, train_config, run=checkpoint_record(info))
        except OSError as e:
            raise UsageError(f"--out {out}: cannot write the run directory ({os_error_text(e)})") from None
    after = f"after epoch {epoch}" if epoch is not None else "epoch not recorded in the file"
    hint = f"{PROG} evaluate {shlex.quote(str(out))}"
    if dataset == "mnist" and info.data_dir is None:
        hint += " --data-dir DIR (the file records no MNIST location)"
    say(f"wrote run directory {out} from {args.torch_file} (model {model_shape(config)}, {after}, "
         f"dataset {dataset}); try: {hint}")
    return 0
