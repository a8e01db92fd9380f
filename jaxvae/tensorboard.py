"""TensorBoard event files of the per-epoch metrics, for watching runs in TensorBoard.

``TensorBoardLogger(log_dir)`` is a ``fit`` callback: after every epoch it writes the epoch's record
as scalars (step = epoch number) and flushes, so the file on disk is always complete up to the
last finished epoch. The writer is tensorboardX (no TensorFlow needed), an optional extra:
``pip install 'jaxvae[tensorboard]'``. ``jaxvae train --tensorboard`` writes to RUN_DIR/tensorboard.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

INSTALL_HINT = "pip install 'jaxvae[tensorboard]'"


def missing() -> str | None:
    """Why event files cannot be written here (tensorboardX is not installed), or None.

    Returns:
        The reason with the install hint, or None.
    """
    if importlib.util.find_spec("tensorboardX") is None:
        return f"writing TensorBoard event files needs tensorboardX: {INSTALL_HINT}"
    return None


def scalar_tag(name: str) -> str:
    """The TensorBoard tag of a record field: ``train_loss`` -> ``loss/train``, ``val_kl`` -> ``kl/val``
    (TensorBoard groups tags by their first part, so train and validation sit side by side);
    other fields keep their name (``lr``, ``kl_weight``, ``seconds``).

    Args:
        name: The record's field.

    Returns:
        The tag.
    """
    split, underscore, field = name.partition("_")
    return f"{field}/{split}" if split in ("train", "val") and underscore else name


class TensorBoardLogger:
    """A ``fit`` callback writing each epoch's numeric metrics to TensorBoard event files in ``log_dir``.

    The writer (and its import, which also loads torch when torch is installed) starts at the first
    epoch's end, so it never delays training's start. ``close()`` ends the event file.

    Args:
        log_dir: The directory of the event files.
    """

    def __init__(self, log_dir: str | os.PathLike):
        self.log_dir = Path(log_dir)
        self._writer = None

    def __call__(self, state, record: dict) -> None:
        step = int(record["epoch"])
        if self._writer is None:
            from tensorboardX import SummaryWriter

            # tensorboardX names the file by the second it opens it; the first epoch in the name keeps a
            # resumed run (which adds a file to the same directory) from overwriting the previous file
            self._writer = SummaryWriter(str(self.log_dir), filename_suffix=f".from-epoch-{step}")
        for name, value in record.items():
            if name != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(scalar_tag(name), float(value), step)
        self._writer.flush()

    def close(self) -> None:
        """End the event file; the next epoch would start a new one."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
