"""Saving as training goes: ``RunSaver``, the per-epoch callback of ``training.fit_models`` that
writes each model's checkpoint and metrics into its own run directory."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from jaxvae.checkpoint import save_checkpoint
from jaxvae.fileio import BackgroundWriter
from jaxvae.runs.format import (
    CHECKPOINT_FILE,
    RunInfo,
    checkpoint_record,
    write_metrics,
)
from jaxvae.training import FitState, ModelsState


class RunSaver:
    """Checkpoint, then metrics.jsonl, of every model that finished the epoch, each in its run
    directory (``run_dirs[i]`` for model i, ``infos[i]`` its config.json; one directory for a lone
    run). Each checkpoint carries its run's record (``checkpoint_record``): config.json can be
    rebuilt from it alone.

    ``saved_epochs[i]`` is the epoch model i's checkpoint on disk holds (updated once the atomic
    write is done). A failed write (a full disk, say) raises OSError naming the file and leaves the
    previous checkpoint as it was. With a ``writer`` (``fileio.BackgroundWriter``) the writes run on
    its thread while the next epoch trains; a failure surfaces from the next epoch's call, or from
    the writer's ``wait()``/``close()`` after the last. A run directory always holds its last good epoch.
    Each write goes through ``fileio.write_owned``: refused over a file jaxvae did not write, and, in a
    locked directory, once its path no longer names the directory locked (it was moved). The
    checkpoint holds the whole history, so metrics.jsonl lost to a kill between the two writes is
    rebuilt on resume (``lifecycle.resume_point``).

    Args:
        run_dirs: Model i's run directory at index i.
        infos: Model i's record (its config.json) at index i.
        saved_epochs: The epoch each model's checkpoint on disk holds; None for 0 each.
        writer: The background writer to save on; None to save in the calling thread.

    Attributes:
        run_dirs: The run directories, as ``Path``s.
        infos: The records.
        saved_epochs: The epoch each model's checkpoint on disk holds.
        writer: The background writer, or None.
    """

    def __init__(self, run_dirs: Sequence[str | os.PathLike], infos: Sequence[RunInfo],
                 saved_epochs: Sequence[int] | None = None, writer: BackgroundWriter | None = None):
        self.run_dirs = [Path(d) for d in run_dirs]
        self.infos = list(infos)
        self.saved_epochs = list(saved_epochs) if saved_epochs is not None else [0] * len(self.run_dirs)
        self.writer = writer

    def checkpoint_path(self, i: int = 0) -> Path:
        """The checkpoint file of model ``i``.

        Args:
            i: The model's index.

        Returns:
            ``run_dirs[i] / CHECKPOINT_FILE``.
        """
        return self.run_dirs[i] / CHECKPOINT_FILE

    def __call__(self, state: ModelsState, records: Sequence[dict | None]) -> None:
        """Save every model that finished the epoch: at once, or on the writer's thread once the
        previous epoch's save is done.

        Args:
            state: The models' state after the epoch.
            records: Model i's history record for the epoch at index i; None for a model that did not
                train it.

        Raises:
            NotOwnedError: A checkpoint or metrics.jsonl holds a file that jaxvae did not write.
            OSError: A write failed (with a writer: the previous epoch's); the message names the file.
        """
        # Copies of the models that trained: the next epoch donates the live state's arrays.
        done = [(i, state.fit_state(i)) for i, record in enumerate(records) if record is not None]
        if self.writer is None:
            self._save(done)
        else:
            # The previous epoch's save had a whole epoch to finish: waiting for it costs nothing, and
            # makes its failure (if any) stop the run here, at the end of the next epoch.
            self.writer.wait()
            self.writer.submit(self._save, done)

    def _save(self, done: list[tuple[int, FitState]]) -> None:
        for i, fit_state in done:
            info = self.infos[i]
            save_checkpoint(self.checkpoint_path(i), fit_state, info.model, info.train_config,
                            run=checkpoint_record(info))
            self.saved_epochs[i] = fit_state.epoch
            write_metrics(self.run_dirs[i], fit_state.history)
