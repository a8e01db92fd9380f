"""The run directory: where one training run keeps its config, metrics, checkpoint and figures.

Layout (names are the constants below)::

    RUN_DIR/
      config.json         both configs, the dataset actually used, its image shape, jaxvae's version
      metrics.jsonl       one JSON record per finished epoch (fit's history records)
      checkpoint.msgpack  the last finished epoch's FitState (see jaxvae.checkpoint)
      evaluate.json       written by ``jaxvae evaluate``
      figures/*.png       written by ``jaxvae train`` and ``jaxvae plot``

Every file here is written atomically (``jaxvae.fileio``): readers see the old file or the new
one, never a mix, even if the writer is killed.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from jaxvae.config import TrainConfig, VAEConfig, config_to_dict
from jaxvae.fileio import atomic_write_text, json_safe, write_json

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.msgpack"
EVALUATE_FILE = "evaluate.json"
FIGURES_DIR = "figures"

class RunError(ValueError):
    """A run directory or one of its files is missing or unreadable; the message names the path."""


@dataclass(frozen=True)
class RunInfo:
    """What ``config.json`` holds: enough to rebuild the model and find its data again."""

    vae_config: VAEConfig
    train_config: TrainConfig
    dataset: str
    image_shape: tuple[int, int]
    data_dir: str | None = None
    version: str = ""


def write_run_config(run_dir: str | os.PathLike, info: RunInfo) -> None:
    from jaxvae import __version__
    from jaxvae.parallel import is_writer

    if not is_writer():  # multi-process run: process 0 writes
        return
    write_json(Path(run_dir) / CONFIG_FILE, {
        "jaxvae_version": __version__,
        "dataset": info.dataset,
        "data_dir": info.data_dir,
        "image_shape": list(info.image_shape),
        "model": config_to_dict(info.vae_config),
        "training": config_to_dict(info.train_config),
    })


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
        return RunInfo(vae, train, str(raw["dataset"]), shape, raw.get("data_dir"), str(raw.get("jaxvae_version", "")))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        detail = f"missing key {e}" if isinstance(e, KeyError) else str(e)
        raise RunError(f"{path}: not a valid jaxvae run config ({detail})") from None


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

    info = read_run_config(run_dir)
    state, _, _ = load_checkpoint(Path(run_dir) / CHECKPOINT_FILE, info.vae_config, info.train_config)
    return info, state


def run_dataset(info: RunInfo, data_dir: str | os.PathLike | None = None, download: bool = True, log=None):
    """The dataset a run was trained on, checked against its model (MNIST is required for an MNIST
    run: no silent swap to other data). ``data_dir`` overrides the run's recorded one."""
    from jaxvae.checks import check_data
    from jaxvae.data import load_dataset

    dataset = load_dataset(info.dataset, data_dir=data_dir or info.data_dir, download=download, require=True, log=log)
    check_data(f"{dataset.name} train split", dataset.train_x, info.vae_config)
    check_data(f"{dataset.name} test split", dataset.test_x, info.vae_config)
    return dataset
