"""``jaxvae train`` and ``jaxvae sweep``: one command flow. A train is a sweep of one model whose run
directory is ``--out`` itself; a sweep's models each get ``SWEEP_DIR/<name>``, beside ``sweep.json``.

    plan (fresh or resumed; every directory locked)  ->  training.fit_models + runs.RunSaver
    ->  figures  ->  the closing lines (and a sweep's summary)
"""
from __future__ import annotations

import contextlib
import dataclasses
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import jax

from jaxvae import sweep as sw
from jaxvae.batching import steps_per_epoch
from jaxvae.checks import ResourceError, check_memory, out_of_memory
from jaxvae.cli.console import (
    EpochProgress,
    SigintFlag,
    StopAfterEpoch,
    model_shape,
    os_error_text,
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
    UsageError,
    configs_from_args,
    flag_of,
    given_fields,
)
from jaxvae.cli.inputs import load_data
from jaxvae.cli.rundir import check_out_dir, default_run_dir, lock_run, resume_command
from jaxvae.cli.sweep import epoch_line, settings_table
from jaxvae.config import TrainConfig, VAEConfig
from jaxvae.data import Dataset
from jaxvae.entry import EXIT_INTERRUPTED
from jaxvae.fileio import BackgroundWriter
from jaxvae.parallel import is_writer
from jaxvae.runs import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    FIGURES_DIR,
    LOCK_FILE,
    TENSORBOARD_DIR,
    RunError,
    RunInfo,
    RunSaver,
    check_run_data,
    data_fingerprints,
    nothing_to_do,
    refuse_foreign,
    require_run_dir,
    resume_point,
    resumed_info,
    run_dataset,
    start_new_run,
    write_run_config,
)
from jaxvae.runs.data import check_arrays
from jaxvae.tensorboard import TensorBoardLogger
from jaxvae.training import (
    COLLAPSE_KL,
    FitState,
    ModelsState,
    TrainStep,
    fit_models,
    init_fit_state,
    posterior_collapsed,
)


@dataclass
class Plan:
    """What a train or sweep command trains: where (``root``: the run or sweep directory; one run
    directory per model), which models, on what data, and from which states (None: fresh)."""

    command: str  # "train" or "sweep"
    root: Path
    run_dirs: list[Path]
    infos: list[RunInfo]  # each run directory's config.json, as written before training
    dataset: Dataset
    errors: list[str | None]  # per model: fit's message if it stopped on a non-finite loss, else None
    states: list[FitState | None] | None = None
    models: list[sw.SweepModel] = field(default_factory=list)  # a sweep's
    grid: dict | None = None  # a sweep's (sweep.json)

    @property
    def vae_config(self) -> VAEConfig:  # one architecture for all (checked when the plan is made)
        return self.infos[0].vae_config

    @property
    def train_configs(self) -> list[TrainConfig]:
        return [info.train_config for info in self.infos]

    @property
    def is_sweep(self) -> bool:
        return self.command == "sweep"

    @property
    def resume_command(self) -> str:
        return resume_command(self.command, self.root)


NOUN = {"train": "run", "sweep": "sweep"}  # what each command trains


# --------------------------------------------------------------------------- a fresh start


def _sweep_grid(args) -> dict:
    # Sweep flags default to SUPPRESS (help shows the dataclass default): absent means not given.
    return {"seeds": getattr(args, "seeds", None),
            **{name: getattr(args, f"sweep_{name}", None) for name in SWEEP_VALUE_FLAGS}}


def _check_memory(vae_config: VAEConfig, batch_size: int, dataset: Dataset, models: int) -> None:
    # the models and both splits of the data, which training keeps on the device
    check_memory(vae_config, batch_size, int(dataset.train_x.size + dataset.test_x.size), models)


def _check_sweep_memory(vae_config: VAEConfig, batch_size: int, dataset: Dataset, grid: dict) -> None:
    """``_check_memory`` for the models the grid makes, counted before any is built (a huge --seeds
    would fill the memory with their configs alone); the ResourceError names the flags that count."""
    count, flags = grid["seeds"], [f"--seeds {grid['seeds']}"]
    for name, flag in SWEEP_VALUE_FLAGS.items():
        if grid[name]:
            count *= len(grid[name])
            flags.append(f"{flag} ({len(grid[name])} values)")
    try:
        _check_memory(vae_config, batch_size, dataset, count)
    except ResourceError as e:
        raise ResourceError(f"{' x '.join(flags)}: {count:,} models; {e}") from None


def _check_new_sweep_dir(out: Path, names) -> None:
    try:
        refuse_foreign(out, {sw.SWEEP_FILE, sw.SUMMARY_DIR, LOCK_FILE, *names})
    except RunError as e:
        raise UsageError(f"--out {e}") from None
    for path in (out / sw.SWEEP_FILE, out / CONFIG_FILE, *(out / name / CHECKPOINT_FILE for name in names)):
        if path.exists():
            raise UsageError(f"--out {out}: already holds a run or a sweep ({path}); continue a sweep with "
                             f"'{resume_command('sweep', out)}' or choose another --out")


def _fresh(args, command: str, stack: contextlib.ExitStack) -> Plan | None:
    """A new run or sweep: configs and data checked first, then the directories made, locked and started.
    None for --epochs 0 (a check that writes nothing)."""
    sweep = command == "sweep"
    vae_config, train_config = configs_from_args(args)  # bad flags fail here, before any data
    grid = None
    if sweep:
        grid = _sweep_grid(args)
        grid["seeds"] = 1 if grid["seeds"] is None else grid["seeds"]
        # bad values fail here too; one seed stands for all (--seeds is counted against memory below)
        sw.sweep_models(vae_config, train_config, **{**grid, "seeds": min(grid["seeds"], 1)})
    elif args.out:
        check_out_dir(Path(args.out))  # a run that would be refused is refused before loading data
    dataset = load_data(getattr(args, "dataset", "mnist"), args.data_dir, not args.no_download, args.require_mnist)
    if not hasattr(args, "input_dim"):  # the 784 default is MNIST's: follow the data
        vae_config = vae_config.replace(input_dim=int(dataset.train_x.shape[1]))
    check_arrays(dataset, vae_config, train_config.batch_size)
    root = Path(args.out) if args.out else default_run_dir(dataset.name, "sweep-" if sweep else "")
    models, run_dirs, configs = [], [root], [train_config]
    if sweep:
        _check_sweep_memory(vae_config, train_config.batch_size, dataset, grid)
        models = sw.sweep_models(vae_config, train_config, **grid)
        grid["seeds"] = list(dict.fromkeys(m.seed for m in models))
        _check_new_sweep_dir(root, [m.name for m in models])
        run_dirs, configs = [root / m.name for m in models], [m.train_config for m in models]
    else:
        _check_memory(vae_config, train_config.batch_size, dataset, 1)
    if train_config.max_epochs == 0:
        say("--epochs 0: the configs and the data are valid; nothing to train, nothing written", closing=True)
        return None
    data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else None
    info = RunInfo(vae_config, train_config, dataset.name, tuple(dataset.image_shape), data_dir,
                   fingerprints=data_fingerprints(dataset))
    infos = [dataclasses.replace(info, train_config=tc) for tc in configs]
    try:
        for directory in dict.fromkeys([root, *run_dirs]):
            if is_writer():
                directory.mkdir(parents=True, exist_ok=True)
            lock_run(directory, getattr(args, "command_line", None), stack)
        for run_dir, run_info in zip(run_dirs, infos):
            if check_out_dir(run_dir):  # again, under the lock: nobody trained here meanwhile
                warn(f"{run_dir} holds a run that never saved a trained epoch: starting afresh in its place")
            start_new_run(run_dir, run_info)
    except OSError as e:
        raise UsageError(f"--out {root}: cannot write the run directory ({os_error_text(e)})") from None
    plan = Plan(command, root, run_dirs, infos, dataset, [None] * len(run_dirs), None, models, grid)
    if sweep:
        _write_sweep_file(plan)
    return plan


# --------------------------------------------------------------------------- a resumed run or sweep


def _check_resume_flags(args, command: str, info: RunInfo, root: Path) -> None:
    """A resumed run keeps its config and data: only --epochs may change; --dataset must name its
    data; --data-dir may only move it (run_dataset compares the fingerprints)."""
    config_file = root / (sw.SWEEP_FILE if command == "sweep" else CONFIG_FILE)
    current = {**dataclasses.asdict(info.vae_config), **dataclasses.asdict(info.train_config)}
    for name, value in given_fields(args).items():
        value = tuple(value) if isinstance(value, list) else value
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


def _read_sweep_file(root: Path) -> sw.SweepInfo:
    """``sweep.json`` of the sweep in ``root``. When that file is at fault (truncated, say), the way on:
    its models' run directories still hold their runs, each to be evaluated or continued alone."""
    try:
        return sw.read_sweep_info(root)[0]
    except RunError as e:
        models = sorted(d for d in root.iterdir() if (d / CONFIG_FILE).is_file())
        if not str(e).startswith(str(root / sw.SWEEP_FILE)) or not models:
            raise
        shown = ", ".join(d.name for d in models[:3]) + (", ..." if len(models) > 3 else "")
        raise RunError(f"{e}; the sweep cannot be resumed without it, but each of its {len(models)} models is a run "
                       f"directory ({shown}) that keeps its checkpoint: evaluate one, or continue it alone with: "
                       f"{resume_command('train', models[0])}") from None


def _resume(args, command: str, stack: contextlib.ExitStack) -> Plan | None:
    """The run or sweep in --resume, every directory locked before anything is read; None when
    there is nothing to do."""
    root = Path(args.resume)
    if args.out and Path(args.out).resolve() != root.resolve():
        raise UsageError(f"--out {args.out} differs from --resume {root}; a resumed {NOUN[command]} stays in its "
                         "directory")
    command_line = getattr(args, "command_line", None)
    grid, errors, run_dirs = None, [None], [root]
    if command == "sweep":
        require_run_dir(root)
        lock_run(root, command_line, stack)
        saved = _read_sweep_file(root)
        grid, errors = saved.grid, list(saved.errors)
        run_dirs = [root / name for name in saved.names]
    for run_dir in run_dirs:
        if run_dir.is_dir():
            lock_run(run_dir, command_line, stack)  # before reading anything: a second writer is refused at once
    dataset_flag = getattr(args, "dataset", None) if command == "train" else None
    points = [resume_point(d, dataset_flag, warn) for d in run_dirs]
    infos, states = [info for info, _ in points], [state for _, state in points]
    _check_resume_flags(args, command, infos[0], root)
    vae_config = infos[0].vae_config
    for run_dir, info in zip(run_dirs, infos):
        if info.vae_config != vae_config:
            raise RunError(f"{run_dir / CONFIG_FILE}: its model differs from {run_dirs[0] / CONFIG_FILE}'s; the models "
                           "of a sweep share one architecture", run_dir=run_dir)
    configs = [configs_from_args(args, info.vae_config, info.train_config)[1] for info in infos]
    idle = [nothing_to_do(vae_config, tc, state) if error is None else "stopped on a non-finite loss"
            for tc, state, error in zip(configs, states, errors)]
    if all(idle):
        epoch = max(state.epoch if state else 0 for state in states)
        hint = f"; to train longer, pass --epochs above {epoch}" if configs[0].max_epochs <= epoch else ""
        what = idle[0] if len(idle) == 1 else f"every model is done ({idle[0]})"
        say(f"{root}: nothing to do: {what}{hint} (the {NOUN[command]} is left as it is; "
            f"see it with: {PROG} evaluate {shlex.quote(str(run_dirs[0]))})", closing=True)
        return None
    dataset = run_dataset(infos[0], args.data_dir, not args.no_download, warn, run_dir=run_dirs[0])
    for run_dir, info in zip(run_dirs[1:], infos[1:]):
        check_run_data(info, dataset, args.data_dir or info.data_dir, run_dir)
    check_arrays(dataset, vae_config, configs[0].batch_size)
    _check_memory(vae_config, configs[0].batch_size, dataset, len(configs))
    updated_infos = []
    for run_dir, info, tc in zip(run_dirs, infos, configs):
        updated = resumed_info(info, tc, dataset, args.data_dir)
        if updated != info:
            if info.fingerprints is None:
                warn(f"{run_dir / CONFIG_FILE} records no data fingerprint (written by jaxvae "
                     f"{info.version or '0.1.0'}): recording those of the data used from now on")
            write_run_config(run_dir, updated)
        updated_infos.append(updated)
    models = [sw.SweepModel(d.name, vae_config, tc) for d, tc in zip(run_dirs, configs)] if command == "sweep" else []
    return Plan(command, root, run_dirs, updated_infos, dataset, errors, states, models, grid)


# --------------------------------------------------------------------------- training


def _write_sweep_file(plan: Plan) -> None:
    sw.write_sweep_info(plan.root, sw.SweepInfo(plan.grid, tuple(d.name for d in plan.run_dirs), tuple(plan.errors)))


def _start_state(plan: Plan) -> ModelsState | None:
    """The models' state to resume from, or None for a fresh start. A model that has no checkpoint yet
    starts from its seed (in a resumed sweep, one that stopped non-finite before saving stays stopped)."""
    if plan.states is None:
        return None
    states = [state if state is not None else init_fit_state(TrainStep.from_configs(plan.vae_config, tc), tc)
              for state, tc in zip(plan.states, plan.train_configs)]
    return ModelsState.stack(states, plan.errors)


def _header(plan: Plan) -> None:
    say(f"{NOUN[plan.command]} directory: {plan.root}")
    started = [s.epoch for s in plan.states if s is not None] if plan.states else []
    if started:
        resuming = f"; resuming after epoch {max(started)}"
    else:
        resuming = "; no checkpoint yet: starting at epoch 1" if plan.states is not None else ""
    models = ""
    if plan.is_sweep:
        varying = sw.varying_values(plan.models)
        seeds = len({m.seed for m in plan.models})
        models = (f"; {len(plan.run_dirs)} models ({', '.join(SWEEP_VALUE_FLAGS[q] for q in varying) or 'seeds only'}; "
                  f"{seeds} seed{'s' * (seeds > 1)} each) in one compiled program")
    say(f"data: {plan.dataset.name}, {len(plan.dataset.train_x)} train / {len(plan.dataset.test_x)} test samples, "
        f"{plan.vae_config.input_dim} features; model {model_shape(plan.vae_config)}{models}{resuming}")
    device = jax.devices()[0]
    say(f"device: {device.platform} ({device.device_kind}, {jax.device_count()} device"
        f"{'s' * (jax.device_count() > 1)}); compiling the first epoch")


def _non_finite_line(plan: Plan, error: str, saver: RunSaver) -> str:
    """A lone run that stopped on a non-finite loss: what is kept, and how to train on."""
    quoted = shlex.quote(str(plan.root))
    if saver.saved_epochs[0]:
        kept = (f"the last good checkpoint (epoch {saver.saved_epochs[0]}) is unchanged at {saver.checkpoint_path(0)} "
                f"and usable ({PROG} evaluate {quoted}); resuming would repeat the same steps, so to train on, start a "
                f"new run with a smaller --lr: {PROG} {plan.command} --out NEW_DIR --lr ...")
    else:
        kept = (f"no epoch finished, so no checkpoint was written; start it again with a smaller --lr: "
                f"{PROG} {plan.command} --out {quoted} --lr ... (and your other flags)")
    return f"{PROG} {plan.command}: error: {error}; {kept}"


def _train(args, plan: Plan) -> int:
    configs, n = plan.train_configs, len(plan.run_dirs)
    tc = configs[0]
    state = _start_state(plan)
    writer = BackgroundWriter()  # the checkpoints and metrics of an epoch land while the next one trains
    saved = [s.epoch if s is not None else 0 for s in plan.states] if plan.states else None
    saver = RunSaver(plan.run_dirs, plan.infos, saved, writer=writer)
    steps = steps_per_epoch(len(plan.dataset.train_x), tc.batch_size, tc.drop_last)
    first_epoch = min(state.epochs) + 1 if state is not None else 1
    progress = EpochProgress("none" if args.quiet else args.progress, steps, first_epoch, tc.max_epochs, models=n)
    loggers = [[TensorBoardLogger(run_dir / TENSORBOARD_DIR)] if args.tensorboard else [] for run_dir in plan.run_dirs]
    displays = contextlib.ExitStack()  # closed as training ends, before any closing line
    for display in [progress, *(logger for per_model in loggers for logger in per_model)]:
        displays.callback(display.close)
    collapse_warned = [False] * n

    def second_ctrl_c() -> str:
        if any(saver.saved_epochs):
            where = (f"the checkpoint of epoch {saver.saved_epochs[0]} is at {saver.checkpoint_path(0)}"
                     if n == 1 else "every model's last finished epoch is saved in its run directory")
            return f"second Ctrl-C: stopped at once; {where}; resume with: {plan.resume_command}"
        return f"second Ctrl-C: stopped at once; no epoch had finished; start it again with: {plan.resume_command}"

    with SigintFlag(second_ctrl_c) as stop:  # installed before the first line: a Ctrl-C from now on is ours
        _header(plan)

        def on_epoch(models_state: ModelsState, records) -> None:
            saver(models_state, records)
            progress.end_epoch()
            for i, record in enumerate(records):
                for logger in loggers[i] if record is not None else ():
                    logger(None, record)
            newly = [i for i, e in enumerate(models_state.errors) if e is not None and plan.errors[i] is None]
            if newly and plan.is_sweep:  # a lone run's error ends the run: its lines come at the end
                plan.errors[:] = models_state.errors
                _write_sweep_file(plan)
                for i in newly:
                    warn(f"{PROG} sweep: model {plan.run_dirs[i].name}: {models_state.errors[i]}; its run directory "
                         f"keeps its last good epoch ({models_state.epochs[i]}); the other models go on")
            line = epoch_line(records, plan.models, tc.max_epochs)
            if line:
                say(line)
            for i, record in enumerate(records):
                # after the first epoch: a model may start near the prior and leave it
                if record is not None and record["epoch"] >= 2 and not collapse_warned[i] and posterior_collapsed(record):
                    collapse_warned[i] = True
                    who = f"model {plan.run_dirs[i].name}: " if plan.is_sweep else ""
                    warn(f"{PROG} {plan.command}: warning: {who}posterior collapse: the KL term is "
                         f"{record['val_kl']:.4f} nats per image after epoch {record['epoch']} (below {COLLAPSE_KL}), "
                         "so z carries almost no information about x; try a smaller --kl-weight, "
                         "--kl-warmup-epochs N, or a larger --latent-dim")
            if stop.requested:
                raise StopAfterEpoch

        try:
            # leaving waits until every queued write is on disk (or raises its OSError), then closes the displays
            with displays, writer:
                result = fit_models(plan.dataset.train_x, plan.dataset.test_x, vae_config=plan.vae_config,
                                    train_configs=configs, state=state, callbacks=[on_epoch],
                                    progress=progress.step_hook, progress_every=max(1, steps // 20))
        except (StopAfterEpoch, KeyboardInterrupt):
            if n > 1:
                warn(f"interrupted; every model's last finished epoch is saved in its run directory; resume with: "
                     f"{plan.resume_command}")
            elif saver.saved_epochs[0]:
                warn(f"interrupted after epoch {saver.saved_epochs[0]}; checkpoint saved to {saver.checkpoint_path(0)}; "
                     f"resume with: {plan.resume_command}")
            else:
                warn(f"interrupted before the first epoch finished; nothing saved; start it again with: "
                     f"{plan.resume_command}")
            return EXIT_INTERRUPTED
        except OSError as e:  # a full disk or a vanished directory while saving an epoch
            if n > 1:
                kept = "every model's run directory keeps its last saved epoch"
            elif saver.saved_epochs[0]:
                kept = (f"the last good checkpoint (epoch {saver.saved_epochs[0]}) is unchanged at "
                        f"{saver.checkpoint_path(0)}")
            else:
                kept = "no epoch was saved"
            warn(f"{PROG} {plan.command}: error: {os_error_text(e)}; {kept}; fix that, then continue with: "
                 f"{plan.resume_command}")
            return EXIT_USAGE
        except Exception as e:  # an allocation that failed mid-run: one line, what is kept, and the way on
            if (what := out_of_memory(e)) is None:
                raise
            warn(f"{PROG} {plan.command}: error: out of memory after epoch {min(saver.saved_epochs)} "
                 f"({what}); every run directory keeps its last saved epoch; "
                 f"free memory, then continue with: {plan.resume_command}")
            return EXIT_RESOURCES
        if not plan.is_sweep and result.errors[0] is not None:
            warn(_non_finite_line(plan, result.errors[0], saver))
            return EXIT_NONFINITE
        _finish(args, plan, result)
    failed = [d.name for d, e in zip(plan.run_dirs, result.errors) if e is not None]
    if failed:
        warn(f"{PROG} sweep: {len(failed)} of {n} models stopped on a non-finite loss "
             f"({', '.join(failed)}); the summary leaves them out")
        return EXIT_NONFINITE
    return 0


def _finish(args, plan: Plan, result) -> None:
    """Figures of every model that trained, then the closing lines (a sweep's summary table)."""
    params = [jax.tree.map(lambda leaf, i=i: leaf[i], result.params) for i in range(len(plan.run_dirs))]
    test_x, test_y = plan.dataset.test_x, plan.dataset.test_y
    if not args.no_plots:
        # deferred: importing matplotlib is ~0.6 s of every command's start, and only figures need it
        from jaxvae.plots import save_figures, save_sweep_figures

        for i, run_dir in enumerate(plan.run_dirs):
            if result.histories[i] and result.errors[i] is None:
                paths = save_figures(run_dir / FIGURES_DIR, params[i], plan.vae_config, test_x, test_y,
                                     plan.infos[i].image_shape, result.histories[i], seed=plan.train_configs[i].seed)
                if not plan.is_sweep:
                    say(f"figures: {', '.join(str(p) for p in paths)}")
    if plan.is_sweep:
        summary = sw.summarize(plan.models, result.histories, result.errors, result.stop_reasons)
        summary_path = sw.write_summary(plan.root, summary)
        for line in settings_table(summary):
            say(line)
        say(f"summary: {summary_path}", closing=True)
        if not args.no_plots:
            paths = save_sweep_figures(summary_path.parent, summary, result.histories, params, plan.vae_config,
                                       test_x, test_y)
            say(f"figures: {', '.join(str(p) for p in paths)}")
        return
    history = result.histories[0]
    if history:
        last = history[-1]
        tc = plan.train_configs[0]
        why = {"schedule": f"the {tc.lr_schedule} schedule ended", "max_epochs": "max epochs"}[result.stop_reasons[0]]
        say(f"done after epoch {last['epoch']} ({why}): train loss {last['train_loss']:.4f}, "
            f"val loss {last['val_loss']:.4f} (recon {last['val_recon']:.4f}, KL {last['val_kl']:.4f})", closing=True)


def run_command(args) -> int:
    """``jaxvae train`` or ``jaxvae sweep``, as ``args.command`` says."""
    command = args.command
    with contextlib.ExitStack() as stack:  # holds the directories' locks to the end, figures included
        stack.enter_context(quiet(args.quiet))  # --quiet: stdout gets the closing line only
        plan = _resume(args, command, stack) if args.resume else _fresh(args, command, stack)
        if plan is None:
            return 0
        return _train(args, plan)
