"""The run directory: where one training run keeps its config, metrics, checkpoint and figures.

Layout (names are the constants below)::

    RUN_DIR/
      config.json         both configs, the dataset actually used, its image shape, jaxvae's version
      metrics.jsonl       one JSON record per finished epoch (fit's history records)
      checkpoint.msgpack  the last finished epoch's FitState (see jaxvae.checkpoint)
      evaluate.json       written by ``jaxvae evaluate``
      figures/*.png       written by ``jaxvae train`` and ``jaxvae plot``

Every file here is written atomically (``atomic_write_bytes``): readers see the old file or the
new one, never a mix, even if the writer is killed. This module imports only the standard library
(plus the config dataclasses when asked for them), so it stays cheap to import.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.msgpack"
EVALUATE_FILE = "evaluate.json"
FIGURES_DIR = "figures"

# Temporary files are ".<final name>.tmp-<random>": hidden, and never equal to a final name, so a
# temp left by a killed writer can't be mistaken for the file itself.
_TMP_MARK = ".tmp-"


def _file_mode() -> int:
    """0o666 less the process umask: what open() would have given (mkstemp's files are 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}{_TMP_MARK}"


def remove_stale_temps(path: str | os.PathLike) -> None:
    """Delete temporary files that a killed writer of ``path`` left behind (one writer per run dir)."""
    path = Path(path)
    prefix = _tmp_prefix(path)
    for entry in path.parent.glob(prefix + "*"):
        try:
            entry.unlink()
        except OSError:
            pass


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms can't open a directory; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is always either the old file or the new one.

    Writes a temporary file in the same directory, flushes and fsyncs it, renames it over ``path``
    (atomic on POSIX and Windows) and fsyncs the directory so the rename itself survives a crash.
    """
    path = Path(path)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            if hasattr(os, "fchmod"):  # not on Windows
                os.fchmod(fh.fileno(), _file_mode())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_safe(value):
    """JSON has no inf/nan: write them as strings so every file stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(_json_safe(obj), indent=2) + "\n")


class RunError(ValueError):
    """A run directory or one of its files is missing or unreadable; the message names the path."""


@dataclass(frozen=True)
class RunInfo:
    """What ``config.json`` holds: enough to rebuild the model and find its data again."""

    vae_config: object
    train_config: object
    dataset: str
    image_shape: tuple[int, int]
    data_dir: str | None = None
    version: str = ""


def config_to_dict(config) -> dict:
    return {f.name: (list(v) if isinstance(v := getattr(config, f.name), tuple) else v)
            for f in dataclasses.fields(config)}


def write_run_config(run_dir: str | os.PathLike, info: RunInfo) -> None:
    from jaxvae import __version__

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
    from jaxvae.config import TrainConfig, VAEConfig

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
    lines = "".join(json.dumps(_json_safe(record)) + "\n" for record in history)
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
