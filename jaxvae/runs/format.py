"""The run directory's files: their names, ``config.json`` (``RunInfo``) and ``metrics.jsonl``.

Every file here is written atomically (``jaxvae.fileio``): readers see the old file or the new
one, never a mix, even if the writer is killed. Each is written only over a file jaxvae wrote
(``fileio.write_owned``) and read only if it is a regular file (``fileio.read_regular``). In a
multi-process run only process 0 writes.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from jaxvae import __version__
from jaxvae.config import TrainConfig, VAEConfig, config_to_dict
from jaxvae.data import Fingerprint
from jaxvae.errors import InputError
from jaxvae.fileio import json_safe, read_regular_text, write_json, write_owned_text
from jaxvae.layout import (  # noqa: F401 (the names of the run directory's files, re-exported here)
    CHECKPOINT_FILE,
    CONFIG_FILE,
    EVALUATE_FILE,
    EXPORT_FILE,
    FIGURES_DIR,
    LOCK_FILE,
    METRICS_FILE,
    RUN_ENTRIES,
    SWEEP_FILE,
    TENSORBOARD_DIR,
)
from jaxvae.model import Model
from jaxvae.parallel import WRITER
from jaxvae.runs.ownership import claim_config
from jaxvae.training import check_hyperparameters
from jaxvae.vae import as_model, model_record, read_model_record

SPLITS = ("train", "test")
# What config.json fingerprints: each split's images, and its labels (which a model of labelled
# batches trains on); runs of jaxvae 0.3 and earlier recorded the images only.
FINGERPRINTED = (*SPLITS, "train_labels", "test_labels")


class RunError(InputError):
    """A run directory or one of its files is missing, unreadable or not what was asked for; the
    message names the path. ``remedy`` names what would fix it, for a front end that can spell it
    as a command (the command line does): "resume" (continue the run in ``run_dir``), "resume_sweep"
    (continue the sweep in ``run_dir``, or choose another directory), "start" (start
    a run there), "rebuild_config" (rebuild config.json from the checkpoint, naming the dataset),
    "rebuild_config_from_checkpoint" (rebuild config.json from the checkpoint's own record),
    "set_aside_checkpoint" (move the unreadable checkpoint away and start again), "set_aside_config"
    (move a config.json that is not a jaxvae run's away and start a run there), "data_dir" (name
    where the run's data are).

    Args:
        message: What is wrong; it names the path.
        run_dir: The run directory at fault, or None.
        remedy: One of the names above, or None when no command fixes it.

    Attributes:
        run_dir: ``run_dir`` as a ``Path``, or None.
        remedy: ``remedy``.
    """

    def __init__(self, message: str, *, run_dir: str | os.PathLike | None = None, remedy: str | None = None):
        super().__init__(message)
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.remedy = remedy


@dataclass(frozen=True)
class RunInfo:
    """What ``config.json`` holds: enough to rebuild the model and find its data again.

    Attributes:
        model: The model as recorded: a ``VAEConfig`` for the blog's family (also read as
            ``vae_config``), else the ``jaxvae.model.Model`` itself, rebuilt from its ``describe()``.
        train_config: The training config.
        dataset: The name of the dataset the run trained on.
        image_shape: The (height, width) of its images.
        data_dir: Where its data were found, or None for the default search.
        version: The jaxvae version that wrote the record ("" when it names none).
        fingerprints: ``{"train": Fingerprint, "test": Fingerprint}`` of the arrays trained on; None for
            runs of jaxvae 0.1.0.
        imported_from: For ``jaxvae import``: ``{"file": the torch file, "epoch": the epoch it was
            exported after, or None}``; None otherwise.
    """

    model: VAEConfig | Model
    train_config: TrainConfig
    dataset: str
    image_shape: tuple[int, int]
    data_dir: str | None = None
    version: str = ""
    # {"train": Fingerprint, "test": Fingerprint} of the arrays trained on; None for runs of jaxvae 0.1.0
    fingerprints: dict | None = None
    # for ``jaxvae import``: {"file": the torch file, "epoch": the epoch it was exported after, or None}
    imported_from: dict | None = None

    @property
    def vae_config(self) -> VAEConfig | Model:
        """``model``, by its older name (a ``VAEConfig`` in every run of the blog's family)."""
        return self.model


def run_record(info: RunInfo) -> dict:
    """``info`` as config.json holds it (JSON-ready).

    Args:
        info: The run's record.

    Returns:
        The JSON-ready dict, naming this jaxvae's version.
    """
    record = {
        "jaxvae_version": __version__,
        "dataset": info.dataset,
        "data_dir": info.data_dir,
        "image_shape": list(info.image_shape),
        "model": model_record(info.model),
        "training": config_to_dict(info.train_config),
    }
    if info.fingerprints is not None:
        record["data_fingerprints"] = {split: fp.to_dict() for split, fp in info.fingerprints.items()}
    if info.imported_from is not None:
        record["imported_from"] = info.imported_from
    return record


def checkpoint_record(info: RunInfo) -> dict:
    """What a checkpoint keeps of its run's config.json: all but the configs, which it holds itself.

    Args:
        info: The run's record.

    Returns:
        ``run_record(info)`` without its "model" and "training" entries.
    """
    return {k: v for k, v in run_record(info).items() if k not in ("model", "training")}


def info_from_record(raw: dict) -> RunInfo:
    """The RunInfo of a ``run_record`` dict, validated; ValueError, KeyError or TypeError naming the problem.

    Args:
        raw: The dict, as read from config.json.

    Returns:
        The ``RunInfo``.

    Raises:
        ValueError: A config, the image shape, ``data_dir``, the fingerprints or ``imported_from`` is
            invalid (an ``InputError`` where jaxvae checks the value).
        KeyError: A required key is missing.
        TypeError: An entry has the wrong type.
    """
    model, train = read_model_record(raw["model"], raw["training"])
    check_hyperparameters(as_model(model), train)
    shape = tuple(int(s) for s in raw["image_shape"])
    input_dim = getattr(model, "input_dim", None)
    if len(shape) != 2 or (input_dim is not None and shape[0] * shape[1] != input_dim):
        raise InputError(f"image_shape {shape} does not hold input_dim={input_dim} pixels")
    data_dir = raw.get("data_dir")
    if data_dir is not None and not isinstance(data_dir, str):
        raise InputError(f"data_dir must be a path or null, got {data_dir!r}")
    return RunInfo(model, train, str(raw["dataset"]), shape, data_dir, str(raw.get("jaxvae_version", "")),
                   fingerprints_from_dict(raw.get("data_fingerprints")), _read_imported_from(raw.get("imported_from")))


def write_run_config(run_dir: str | os.PathLike, info: RunInfo) -> None:
    """``config.json``, over nothing or a valid run config only (``ownership.claim_config``). In a
    multi-process run only process 0 writes.

    Args:
        run_dir: The run directory.
        info: What to record.

    Raises:
        NotOwnedError: ``config.json`` holds something that is not a valid run config.
        OSError: It is a symbolic link or no regular file, or the write failed; the message names the path.
    """
    WRITER(claim_config, run_dir)  # multi-process run: process 0 writes
    WRITER(write_json, Path(run_dir) / CONFIG_FILE, run_record(info))


def require_run_dir(run_dir: str | os.PathLike) -> Path:
    """``run_dir`` as a ``Path``, when it is a directory.

    Args:
        run_dir: The run directory.

    Returns:
        ``Path(run_dir)``.

    Raises:
        RunError: ``run_dir`` does not exist or is not a directory.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory {run_dir} does not exist (or is not a directory)", run_dir=run_dir)
    return run_dir


def read_run_config(run_dir: str | os.PathLike) -> RunInfo:
    """``config.json`` of a run, validated; RunError naming the file for anything wrong with it.

    Args:
        run_dir: The run directory.

    Returns:
        The run's ``RunInfo``.

    Raises:
        RunError: ``run_dir`` is not a directory, or is a sweep directory, or its config.json is missing,
            unreadable or invalid.
    """
    path = require_run_dir(run_dir) / CONFIG_FILE
    if not os.path.lexists(path):
        models = sorted(p for p in Path(run_dir).iterdir() if (p / CONFIG_FILE).is_file())
        if (Path(run_dir) / SWEEP_FILE).is_file() and models:
            shown = ", ".join(str(p) for p in models[:3]) + (", ..." if len(models) > 3 else "")
            raise RunError(f"{run_dir} is a sweep directory ({SWEEP_FILE}); each of its {len(models)} models is a run "
                           f"directory: {shown}", run_dir=run_dir)
        raise RunError(f"{path}: missing; is {run_dir} a jaxvae run directory?", run_dir=run_dir)
    try:
        text = read_regular_text(path)
    except OSError as e:
        raise RunError(f"{path}: cannot read ({e.strerror})", run_dir=run_dir) from None
    try:
        return info_from_record(json.loads(text))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as e:
        detail = f"missing key {e}" if isinstance(e, KeyError) else str(e)
        raise RunError(f"{path}: not a valid jaxvae run config ({detail})", run_dir=run_dir) from None


def fingerprints_from_dict(raw: dict | None) -> dict | None:
    """``{"train": Fingerprint, ...}`` (``FINGERPRINTED``) from their JSON form (None stays None); ValueError.

    Args:
        raw: The JSON form (a dict of split to fingerprint dict), or None.

    Returns:
        The split's ``Fingerprint``s by split name, or None.

    Raises:
        InputError: ``raw`` is not a dict of known splits, or a fingerprint is invalid.
    """
    if raw is None:
        return None
    if not isinstance(raw, dict) or not set(raw) <= set(FINGERPRINTED):
        raise InputError(f"data_fingerprints must map {', '.join(FINGERPRINTED)} to fingerprints, got {raw!r}")
    return {split: Fingerprint.from_dict(raw[split]) for split in FINGERPRINTED if split in raw}


def _read_imported_from(raw) -> dict | None:
    if raw is None:
        return None
    epoch = raw.get("epoch") if isinstance(raw, dict) else None
    if not isinstance(raw, dict) or not isinstance(raw.get("file"), str) or not (
            epoch is None or (isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0)):
        raise InputError(f"imported_from must be {{'file': path, 'epoch': integer >= 0 or null}}, got {raw!r}")
    return {"file": raw["file"], "epoch": epoch}


def write_metrics(run_dir: str | os.PathLike, history: list[dict]) -> None:
    """Rewrite ``metrics.jsonl`` with the whole history (small: one line per epoch), atomically. In a
    multi-process run only process 0 writes.

    Args:
        run_dir: The run directory.
        history: One record per finished epoch.

    Raises:
        NotOwnedError: ``metrics.jsonl`` holds a file that jaxvae did not write.
        OSError: It is a symbolic link or no regular file, or the write failed; the message names the path.
    """
    WRITER(write_owned_text, Path(run_dir) / METRICS_FILE,  # multi-process run: process 0 writes
           "".join(json.dumps(json_safe(record)) + "\n" for record in history))


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The records of ``metrics.jsonl`` (blank lines skipped).

    Args:
        run_dir: The run directory.

    Returns:
        One dict per line; an empty list when the file does not exist.

    Raises:
        RunError: The file cannot be read, is no regular file, or is not valid JSON lines.
    """
    path = Path(run_dir) / METRICS_FILE
    if not os.path.lexists(path):
        return []
    try:
        return [json.loads(line) for line in read_regular_text(path).splitlines() if line.strip()]
    except OSError as e:
        raise RunError(f"{path}: cannot read ({e.strerror})", run_dir=run_dir) from None
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise RunError(f"{path}: not valid JSON lines ({e})", run_dir=run_dir) from None


def evaluation_key(result: dict) -> tuple:
    """What an evaluation scored: the split, how many of its images, k and the noise seed.

    Args:
        result: One evaluation's result, as ``evaluate.json`` keeps it.

    Returns:
        ``(split, samples, k, seed)``; k is 0 and the others None where ``result`` lacks them.
    """
    return (result.get("split"), result.get("samples"), result.get("k", 0), result.get("seed"))


def write_evaluation(run_dir: str | os.PathLike, result: dict) -> Path:
    """Add ``result`` to ``evaluate.json``, which keeps one result per ``evaluation_key``: another
    split, a --limit or another k is kept beside the others, the same one is replaced. A file of
    jaxvae 0.2 (a single result) is read as a list of one; an unreadable one is started afresh, and one
    that jaxvae did not write is refused (``fileio.write_owned``), left as it is.

    Args:
        run_dir: The run directory.
        result: The evaluation's result (JSON-ready).

    Returns:
        The path of ``evaluate.json``.

    Raises:
        NotOwnedError: ``evaluate.json`` holds a file that jaxvae did not write.
        OSError: It is a symbolic link or no regular file, or the write failed; the message names the path.
    """
    path = Path(run_dir) / EVALUATE_FILE
    try:
        raw = json.loads(read_regular_text(path))
        kept = raw["evaluations"] if isinstance(raw, dict) and "evaluations" in raw else [raw]
        kept = [r for r in kept if isinstance(r, dict) and evaluation_key(r) != evaluation_key(result)]
    except (OSError, ValueError, TypeError, RecursionError):
        kept = []
    write_json(path, {"evaluations": [*kept, result]})
    return path


def default_image_shape(input_dim: int) -> tuple[int, int]:
    """A square image when ``input_dim`` is a square number (784 -> 28x28), else one row of pixels.

    Args:
        input_dim: The number of pixels.

    Returns:
        The (height, width).
    """
    side = math.isqrt(input_dim)
    return (side, side) if side * side == input_dim else (1, input_dim)
