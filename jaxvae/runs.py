"""The run directory: where one training run keeps its config, metrics, checkpoint and figures.

Layout (names are the constants below)::

    RUN_DIR/
      config.json         both configs, the dataset actually used, its image shape, where it came from
                          and its fingerprints, jaxvae's version
      metrics.jsonl       one JSON record per finished epoch (fit's history records)
      checkpoint.msgpack  the last finished epoch's FitState (see jaxvae.checkpoint)
      evaluate.json       written by ``jaxvae evaluate``
      figures/*.png       written by ``jaxvae train`` and ``jaxvae plot``
      .lock               the writer's advisory lock and who holds it (see RunLock)

Every file here is written atomically (``jaxvae.fileio``): readers see the old file or the new
one, never a mix, even if the writer is killed. One process writes a run at a time (``RunLock``).

A run directory is never a dead end: ``check_new_run_dir`` lets a new run replace one that never
saved a trained epoch, ``resume_point`` continues any run that has a config (from its checkpoint, or
from scratch when it has none), and every refusal names the command that continues or restarts it.
"""
from __future__ import annotations

import errno
import json
import math
import os
import shlex
import socket
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from jaxvae.config import TrainConfig, VAEConfig, config_to_dict
from jaxvae.fileio import BackgroundWriter, atomic_write_text, json_safe, write_json

try:
    import fcntl
except ImportError:  # Windows: no advisory locks (see RunLock)
    fcntl = None

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.msgpack"
EVALUATE_FILE = "evaluate.json"
FIGURES_DIR = "figures"
LOCK_FILE = ".lock"
SPLITS = ("train", "test")


class RunError(ValueError):
    """A run directory or one of its files is missing or unreadable; the message names the path."""


class RunBusyError(RunError):
    """Another process holds the run directory's lock; the message names it."""


@dataclass(frozen=True)
class RunInfo:
    """What ``config.json`` holds: enough to rebuild the model and find its data again."""

    vae_config: VAEConfig
    train_config: TrainConfig
    dataset: str
    image_shape: tuple[int, int]
    data_dir: str | None = None
    version: str = ""
    # {"train": Fingerprint, "test": Fingerprint} of the arrays trained on; None for runs of jaxvae 0.1.0
    fingerprints: dict | None = None
    # for ``jaxvae import``: {"file": the torch file, "epoch": the epoch it was exported after, or None}
    imported_from: dict | None = None


def write_run_config(run_dir: str | os.PathLike, info: RunInfo) -> None:
    from jaxvae import __version__
    from jaxvae.parallel import is_writer

    if not is_writer():  # multi-process run: process 0 writes
        return
    record = {
        "jaxvae_version": __version__,
        "dataset": info.dataset,
        "data_dir": info.data_dir,
        "image_shape": list(info.image_shape),
        "model": config_to_dict(info.vae_config),
        "training": config_to_dict(info.train_config),
    }
    if info.fingerprints is not None:
        record["data_fingerprints"] = {split: fp.to_dict() for split, fp in info.fingerprints.items()}
    if info.imported_from is not None:
        record["imported_from"] = info.imported_from
    write_json(Path(run_dir) / CONFIG_FILE, record)


def require_run_dir(run_dir: str | os.PathLike) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory {run_dir} does not exist (or is not a directory)")
    return run_dir


def read_run_config(run_dir: str | os.PathLike) -> RunInfo:
    """``config.json`` of a run, validated; RunError naming the file for anything wrong with it."""
    path = require_run_dir(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise RunError(f"{path}: missing; is {run_dir} a jaxvae run directory?")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        vae = VAEConfig(**raw["model"])
        train = TrainConfig(**raw["training"])
        shape = tuple(int(s) for s in raw["image_shape"])
        if len(shape) != 2 or shape[0] * shape[1] != vae.input_dim:
            raise ValueError(f"image_shape {shape} does not hold input_dim={vae.input_dim} pixels")
        return RunInfo(vae, train, str(raw["dataset"]), shape, raw.get("data_dir"), str(raw.get("jaxvae_version", "")),
                       fingerprints_from_dict(raw.get("data_fingerprints")), _read_imported_from(raw.get("imported_from")))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        detail = f"missing key {e}" if isinstance(e, KeyError) else str(e)
        raise RunError(f"{path}: not a valid jaxvae run config ({detail})") from None


def fingerprints_from_dict(raw) -> dict | None:
    """``{"train": Fingerprint, "test": Fingerprint}`` from their JSON form (None stays None); ValueError."""
    from jaxvae.data import Fingerprint

    if raw is None:
        return None
    if not isinstance(raw, dict) or not set(raw) <= set(SPLITS):
        raise ValueError(f"data_fingerprints must map {' and '.join(SPLITS)} to fingerprints, got {raw!r}")
    return {split: Fingerprint.from_dict(raw[split]) for split in SPLITS if split in raw}


def _read_imported_from(raw) -> dict | None:
    if raw is None:
        return None
    epoch = raw.get("epoch") if isinstance(raw, dict) else None
    if not isinstance(raw, dict) or not isinstance(raw.get("file"), str) or not (
            epoch is None or (isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0)):
        raise ValueError(f"imported_from must be {{'file': path, 'epoch': integer >= 0 or null}}, got {raw!r}")
    return {"file": raw["file"], "epoch": epoch}


def write_metrics(run_dir: str | os.PathLike, history: list[dict]) -> None:
    """Rewrite ``metrics.jsonl`` with the whole history (small: one line per epoch), atomically."""
    from jaxvae.parallel import is_writer

    if not is_writer():  # multi-process run: process 0 writes
        return
    lines = "".join(json.dumps(json_safe(record)) + "\n" for record in history)
    atomic_write_text(Path(run_dir) / METRICS_FILE, lines)


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (ValueError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: not valid JSON lines ({e})") from None


def default_image_shape(input_dim: int) -> tuple[int, int]:
    """A square image when ``input_dim`` is a square number (784 -> 28x28), else one row of pixels."""
    side = math.isqrt(input_dim)
    return (side, side) if side * side == input_dim else (1, input_dim)


def load_run(run_dir: str | os.PathLike):
    """``(RunInfo, FitState)`` of a run directory; RunError/CheckpointError naming the file."""
    from jaxvae.checkpoint import load_checkpoint

    checkpoint = Path(run_dir) / CHECKPOINT_FILE
    try:
        info = read_run_config(run_dir)
    except RunError as e:
        if not checkpoint.exists():
            raise
        raise RunError(f"{e}; {checkpoint} still holds the run: rebuild {CONFIG_FILE} from it with: jaxvae train "
                       f"--resume {shlex.quote(str(run_dir))} --dataset NAME (the data it was trained on)") from None
    state, _, _ = load_checkpoint(checkpoint, info.vae_config, info.train_config)
    return info, state


def run_dataset(info: RunInfo, data_dir: str | os.PathLike | None = None, download: bool = True, log=None, *,
                run_dir: str | os.PathLike | None = None):
    """The dataset a run was trained on, checked against its model (MNIST is required for an MNIST
    run: no silent swap to other data) and against the fingerprints the run recorded (runs of jaxvae
    0.1.0 recorded none: nothing to compare). ``data_dir`` overrides the run's recorded one: another
    location of the same data is fine, other data is a RunError naming both fingerprints."""
    from jaxvae.checks import check_data
    from jaxvae.data import load_dataset

    dataset = load_dataset(info.dataset, data_dir=data_dir or info.data_dir, download=download, require=True, log=log)
    check_data(f"{dataset.name} train split", dataset.train_x, info.vae_config)
    check_data(f"{dataset.name} test split", dataset.test_x, info.vae_config)
    check_run_data(info, dataset, data_dir or info.data_dir, run_dir)
    return dataset


def data_fingerprints(dataset) -> dict:
    """``{"train": Fingerprint, "test": Fingerprint}`` of a ``jaxvae.data.Dataset``'s arrays."""
    from jaxvae.data import fingerprint

    return {"train": fingerprint(dataset.train_x), "test": fingerprint(dataset.test_x)}


def check_run_data(info: RunInfo, dataset, data_dir=None, run_dir=None) -> None:
    """RunError unless ``dataset`` has the fingerprints ``info`` recorded (none recorded: accepted)."""
    if not info.fingerprints:
        return
    found = data_fingerprints(dataset)
    for split, recorded in info.fingerprints.items():
        problem = recorded.mismatch(found[split])
        if problem:
            where = f"the run in {run_dir}" if run_dir is not None else "the run"
            source = f"from {data_dir}" if data_dir else "found by the default search"
            raise RunError(f"the {dataset.name} data {source} are not the data {where} was trained on: {split} split "
                           f"{problem} (recorded vs found); pass --data-dir with the run's data")


# --------------------------------------------------------------------------- one writer per run


def _holder_text(path: Path) -> str:
    """Who holds the lock at ``path``, from what it wrote there (it may be writing it this instant)."""
    for _ in range(20):
        try:
            holder = json.loads(path.read_text(encoding="utf-8"))
            return (f"pid {holder['pid']} on {holder['host']}, since {holder['started']}: "
                    f"{holder['command']}")
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.05)
    return "a process that has not said who it is"


class RunLock:
    """One writer per run directory: an exclusive advisory lock (``fcntl.flock``) on ``RUN_DIR/.lock``,
    held from ``acquire`` to ``release``. The OS drops it when the process ends in any way (SIGKILL
    too), so a lock file left by a dead process blocks nobody; the file also records its holder (pid,
    host, start time, command) for the refusal, ``RunBusyError``. The file is never deleted: a process
    could otherwise lock a deleted file while another locks its replacement.

    Where ``fcntl`` does not exist (Windows) nothing is locked: ``locked`` stays False, and callers
    should say so. Readers (evaluate, plot, export) take no lock; atomic writes keep their view whole.
    """

    def __init__(self, run_dir: str | os.PathLike, command: str | None = None):
        self.run_dir = Path(run_dir)
        self.command = command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
        self.locked = False
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        if fcntl is None or self._fd is not None:
            return self
        path = self.run_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunBusyError(f"{self.run_dir} is being written by another jaxvae ({_holder_text(path)}); wait "
                                   "for it to finish or stop it (Ctrl-C saves its checkpoint), then run this command "
                                   "again") from None
            raise
        try:
            holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                      "started": time.strftime("%Y-%m-%d %H:%M:%S")}
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(holder) + "\n").encode("utf-8"))
        except BaseException:
            os.close(fd)  # closing releases the lock
            raise
        self._fd, self.locked = fd, True
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # nobody holds it now
        except OSError:
            pass
        os.close(self._fd)  # closing releases the lock
        self._fd, self.locked = None, False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# --------------------------------------------------------------------------- never a dead end


def _read_checkpoint(path: Path, info: RunInfo | None = None):
    """``(FitState, VAEConfig, TrainConfig)`` from ``path`` (checked against ``info``'s configs, else its
    own); RunError naming the file and how to start the run again when it cannot be read."""
    from jaxvae.checkpoint import CheckpointError, load_checkpoint

    try:
        return load_checkpoint(path, *((info.vae_config, info.train_config) if info else ()))
    except CheckpointError as e:
        moved = shlex.quote(str(path) + ".bad")
        raise RunError(f"{e}; to start this run again from scratch (keeping that file): mv {shlex.quote(str(path))} "
                       f"{moved} && jaxvae train --resume {shlex.quote(str(path.parent))}") from None


def _config_or_none(run_dir: Path) -> RunInfo | None:
    try:
        return read_run_config(run_dir)
    except RunError:
        return None


def check_new_run_dir(run_dir: str | os.PathLike) -> bool:
    """Whether a new run may start in ``run_dir``, and how.

    False: it does not exist or holds no run. True: it holds a start that never saved a trained epoch
    (config.json without a checkpoint, or a checkpoint of epoch 0 that was not imported); the new run
    replaces it in place, losing nothing. RunError when it holds a trained or imported model (naming
    the command that continues it), or when it is not a directory.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"{run_dir}: exists and is not a directory")
    if not (run_dir / CHECKPOINT_FILE).exists():
        return (run_dir / CONFIG_FILE).exists()
    epoch = _read_checkpoint(run_dir / CHECKPOINT_FILE)[0].epoch
    info = _config_or_none(run_dir)
    imported = info is not None and info.imported_from is not None
    if epoch == 0 and not imported:
        return True
    what = (f"a model imported from {info.imported_from['file']}" if imported else f"a run trained for {epoch} epochs")
    raise RunError(f"{run_dir} already holds {what} ({run_dir / CHECKPOINT_FILE}); continue it with "
                   f"'jaxvae train --resume {shlex.quote(str(run_dir))}' or choose another directory")


def start_new_run(run_dir: str | os.PathLike, info: RunInfo) -> None:
    """Write a new run's config.json into ``run_dir`` (made and locked, and passed by
    ``check_new_run_dir``), clearing what an earlier start that never trained left: its epoch-0
    checkpoint and its metrics."""
    run_dir = Path(run_dir)
    write_run_config(run_dir, info)
    (run_dir / CHECKPOINT_FILE).unlink(missing_ok=True)
    write_metrics(run_dir, [])


def resume_point(run_dir: str | os.PathLike, dataset: str | None = None, log=None):
    """``(RunInfo, FitState or None)``: the run to continue and its checkpoint; None when no epoch was
    saved yet (the run then starts from scratch with its recorded config). RunError naming the file
    and the command that continues or restarts the directory.

    A checkpoint whose config.json is missing or unreadable still holds the whole run but the name of
    its data: given ``dataset``, config.json is rebuilt from the checkpoint (an unreadable one is kept
    as config.json.bad, and ``log`` is told); without it, the RunError says how to give it.
    """
    run_dir = Path(run_dir)
    quoted = shlex.quote(str(run_dir))
    checkpoint, config = run_dir / CHECKPOINT_FILE, run_dir / CONFIG_FILE
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"{run_dir} is a file, not a run directory")
    if not run_dir.exists():
        raise RunError(f"run directory {run_dir} does not exist; start a run there with: jaxvae train --out {quoted}")
    if not config.exists() and not checkpoint.exists():
        raise RunError(f"{run_dir} holds no jaxvae run (no {CONFIG_FILE}); start a run there with: "
                       f"jaxvae train --out {quoted}")
    try:
        info = read_run_config(run_dir)
    except RunError as e:
        if not checkpoint.exists():
            raise RunError(f"{e}; no epoch was saved, so start it again with: jaxvae train --out {quoted}") from None
        state, vae_config, train_config = _read_checkpoint(checkpoint)
        if dataset is None:
            raise RunError(f"{e}; {checkpoint} still holds the run (epoch {state.epoch}): rebuild {CONFIG_FILE} from "
                           f"it with: jaxvae train --resume {quoted} --dataset NAME (the data it was trained on)") from None
        info = RunInfo(vae_config, train_config, dataset, default_image_shape(vae_config.input_dim))
        if config.exists():
            os.replace(config, config.with_name(CONFIG_FILE + ".bad"))
        write_run_config(run_dir, info)
        if log:
            log(f"{e}; rebuilt {config} from {checkpoint} and --dataset {dataset}")
        return info, state
    if not checkpoint.exists():
        return info, None
    return info, _read_checkpoint(checkpoint, info)[0]


def nothing_to_do(vae_config: VAEConfig, train_config: TrainConfig, state) -> str | None:
    """Why continuing ``state`` (a FitState, or None for a fresh start) would train no epoch, or None."""
    from jaxvae.training import TrainStep

    epoch = state.epoch if state is not None else 0
    if epoch >= train_config.max_epochs:
        return f"the checkpoint is after epoch {epoch} and the epoch limit is {train_config.max_epochs}"
    if state is not None:
        step = TrainStep.from_configs(vae_config, train_config)
        if step.lr.finished(state.schedules.lr, epoch) or step.kl_weight.finished(state.schedules.kl_weight, epoch):
            return f"its {train_config.lr_schedule} lr schedule ended after epoch {epoch}"
    return None


def resumed_info(info: RunInfo, train_config: TrainConfig, dataset, data_dir: str | None) -> RunInfo:
    """``info`` as a resumed run records it: its (possibly longer) train config, the data location
    used now (``data_dir``, resolved, when given: ``run_dataset`` has checked it holds the same data)
    and, for runs that recorded none (jaxvae 0.1.0), the fingerprints of the data used from now on."""
    changes = {"train_config": train_config}
    if data_dir is not None:
        changes["data_dir"] = str(Path(data_dir).resolve())
    if info.fingerprints is None:
        changes["fingerprints"] = data_fingerprints(dataset)
    return replace(info, **changes)


class EpochSaver:
    """fit's per-epoch callback for a run directory: the checkpoint, then metrics.jsonl.

    ``saved_epoch`` is the epoch the checkpoint on disk holds (updated once the atomic write is
    done). A failed write (a full disk, say) raises OSError naming the file and leaves the previous
    checkpoint as it was. With a ``writer`` (``fileio.BackgroundWriter``) the writes run on its
    thread while training goes on; a failure surfaces from the next epoch's call (which first waits
    for the previous save), or from the writer's ``wait()``/``close()`` after the last epoch.
    """

    def __init__(self, run_dir: str | os.PathLike, vae_config: VAEConfig, train_config: TrainConfig,
                 saved_epoch: int = 0, writer: BackgroundWriter | None = None):
        self.run_dir = Path(run_dir)
        self.vae_config, self.train_config = vae_config, train_config
        self.saved_epoch = saved_epoch
        self.writer = writer

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_FILE

    def __call__(self, state, record=None) -> None:
        if self.writer is None:
            self._save(state)
        else:
            # The previous epoch's save had a whole epoch to finish: waiting for it costs nothing, and
            # makes its failure (if any) stop the run here, at the end of the next epoch.
            self.writer.wait()
            self.writer.submit(self._save, state)  # fit never donates the state it hands callbacks

    def _save(self, state) -> None:
        from jaxvae.checkpoint import save_checkpoint

        save_checkpoint(self.checkpoint_path, state, self.vae_config, self.train_config)
        self.saved_epoch = state.epoch
        write_metrics(self.run_dir, state.history)
