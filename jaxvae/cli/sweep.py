"""``jaxvae sweep``: many models in one compiled program (jaxvae.sweep), one run directory each."""
from __future__ import annotations

import argparse
import contextlib
import shlex
import time
from pathlib import Path

from jaxvae.cli.console import EpochProgress, SigintFlag, StopAfterEpoch, say, warn
from jaxvae.cli.flags import (
    EXIT_INTERRUPTED,
    EXIT_NONFINITE,
    FIELD_HELP,
    FLAG_NAMES,
    PROG,
    RESUME_OVERRIDABLE,
    UsageError,
    add_config_flags,
    add_run_flags,
    config_fields,
    configs_from_args,
    given_fields,
)
from jaxvae.cli.inputs import check_arrays, load_data, run_data
from jaxvae.runs import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    FIGURES_DIR,
    RunInfo,
    RunLock,
    data_fingerprints,
    require_run_dir,
)

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
        changed = [FLAG_NAMES.get(n, n) for n in given_fields(args) if n not in RESUME_OVERRIDABLE]
        changed += [SWEEP_VALUE_FLAGS[n][2:] for n in SWEEP_VALUE_FLAGS if grid[n] is not None]
        changed += ["seeds"] if grid["seeds"] is not None else []
        if changed:
            raise UsageError(f"--{changed[0].replace('_', '-')}: a resumed sweep keeps its configs and values "
                             f"({sweep_dir / sw.SWEEP_FILE}); only --epochs may change")
        vae_config, train_config = configs_from_args(args, base.vae_config, base.train_config)
        grid = saved.grid
        models = sw.sweep_models(vae_config, train_config, **grid)
        dataset = run_data(base, args, sweep_dir)
        check_arrays(dataset, vae_config, train_config.batch_size)
        state = sw.load_sweep_state(models, sw.model_dirs(sweep_dir, models), saved.errors)
        data_dir = args.data_dir or base.data_dir
    else:
        vae_config, train_config = configs_from_args(args)  # bad flags and values fail here, before any data
        grid["seeds"] = 1 if grid["seeds"] is None else grid["seeds"]
        sw.sweep_models(vae_config, train_config, **grid)
        dataset = load_data(getattr(args, "dataset", "mnist"), args.data_dir, download, args.require_mnist)
        if not hasattr(args, "input_dim"):  # the 784 default is MNIST's: follow the data
            vae_config = vae_config.replace(input_dim=int(dataset.train_x.shape[1]))
        models = sw.sweep_models(vae_config, train_config, **grid)
        grid["seeds"] = list(dict.fromkeys(m.seed for m in models))
        check_arrays(dataset, vae_config, train_config.batch_size)
        sweep_dir = _new_sweep_dir(args, dataset.name, [m.name for m in models])
        state = None
        data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else None
    shape = tuple(dataset.image_shape)
    if is_writer():
        sweep_dir.mkdir(parents=True, exist_ok=True)
        stack.enter_context(RunLock(sweep_dir))  # one writer per sweep, as per run
    data_info = RunInfo(vae_config, train_config, dataset.name, shape, data_dir, fingerprints=data_fingerprints(dataset))
    saver = sw.SweepSaver(sweep_dir, models, grid, data_info, state.errors if state else None)
    saver.start()
    varying = sw.varying_values(models)
    say(f"sweep directory: {sweep_dir}")
    say(f"data: {dataset.name}, {len(dataset.train_x)} train / {len(dataset.test_x)} test samples; {len(models)} models "
         f"({', '.join(SWEEP_VALUE_FLAGS[q] for q in varying) or 'seeds only'}; {len(grid['seeds'])} seeds each) "
         "in one compiled program" + (f"; resuming after epoch {max(state.epochs)}" if state else ""))

    steps = steps_per_epoch(len(dataset.train_x), train_config.batch_size, train_config.drop_last)
    first_epoch = (min(state.epochs) if state else 0) + 1
    progress = _SweepProgress(len(models), "none" if args.quiet else args.progress, steps, first_epoch,
                              train_config.max_epochs)

    def on_epoch(sweep_state, records):
        stopped = saver(sweep_state, records)
        progress.end_epoch()
        for i in stopped:
            warn(f"{PROG} sweep: model {models[i].name}: {sweep_state.errors[i]}; its run directory keeps its last "
                  f"good epoch ({sweep_state.epochs[i]}); the other models go on")
        say(_sweep_epoch_line(records, train_config.max_epochs))
        if stop.requested:
            raise StopAfterEpoch

    resume_hint = f"{PROG} sweep --resume {shlex.quote(str(sweep_dir))}"
    try:
        with SigintFlag(lambda: f"second Ctrl-C: stopped at once; every model's last finished epoch is saved in its "
                                 f"run directory; resume with: {resume_hint}") as stop:
            result = sw.fit_many(dataset.train_x, dataset.test_x, vae_config=vae_config, train_config=train_config,
                                 **grid, state=state, callbacks=[on_epoch], progress=progress.step_hook,
                                 progress_every=max(1, steps // 20))
    except (StopAfterEpoch, KeyboardInterrupt):
        progress.close()
        warn(f"interrupted; every model's last finished epoch is saved in its run directory; resume with: "
              f"{resume_hint}")
        return EXIT_INTERRUPTED

    progress.close()
    params = [jax.tree.map(lambda leaf, i=i: np.asarray(leaf[i]), result.params) for i in range(len(models))]
    if not args.no_plots:
        for i, (m, run_dir) in enumerate(zip(models, saver.dirs)):
            if result.histories[i]:
                save_figures(run_dir / FIGURES_DIR, params[i], m.vae_config, dataset.test_x, dataset.test_y, shape,
                             result.histories[i], seed=m.seed)
    summary = sw.summarize(models, result.histories, result.errors, result.stop_reasons)
    summary_path = sw.write_summary(sweep_dir, summary)
    say(f"{'setting':<24}{'val loss':>20}{'recon':>20}{'KL':>20}   (mean +- sd over seeds, last epoch)")
    for entry in summary["settings"]:
        say(_setting_line(entry))
    say(f"summary: {summary_path}")
    if not args.no_plots:
        paths = save_sweep_figures(summary_path.parent, summary, result.histories, params, vae_config,
                                   dataset.test_x, dataset.test_y)
        say(f"figures: {', '.join(str(p) for p in paths)}")
    failed = [m.name for m, error in zip(models, result.errors) if error is not None]
    if failed:
        warn(f"{PROG} sweep: {len(failed)} of {len(models)} models stopped on a non-finite loss ({', '.join(failed)}); "
              "the summary leaves them out")
        return EXIT_NONFINITE
    return 0


def add_sweep_parser(sub, data_flags) -> None:
    """``jaxvae sweep``: train's flags, except that --recon-sigma, --kl-weight and --lr take several values."""
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
    for name, flag in SWEEP_VALUE_FLAGS.items():
        field = {f.name: f for _, f in config_fields()}[name]
        group.add_argument(flag, dest=f"sweep_{name}", type=float, nargs="+", default=argparse.SUPPRESS, metavar="V",
                           help=f"{FIELD_HELP[name]}: one value, or several to sweep (default: {field.default})")
    sweep.set_defaults(func=cmd_sweep)
