"""The run directory: where one model's training run keeps its config, metrics, checkpoint and figures.

Layout (names are the constants of ``jaxvae.runs.format``)::

    RUN_DIR/
      config.json         both configs, the dataset actually used, its image shape, where it came from
                          and its fingerprints, jaxvae's version
      metrics.jsonl       one JSON record per finished epoch (fit's history records)
      checkpoint.msgpack  the last finished epoch's FitState (see jaxvae.checkpoint), its configs and the
                          rest of config.json's record: config.json can be rebuilt from it alone
      evaluate.json       written by ``jaxvae evaluate``
      figures/*.png       written by ``jaxvae train`` and ``jaxvae plot``
      .lock               who holds the writer's lock (see RunLock)
      .jaxvae-files       the record of every content jaxvae wrote here (``fileio.write_owned``)

One module per job: ``format`` (the files and ``RunInfo``), ``data`` (finding a run's data again and
checking its fingerprints), ``lock`` (one writer per directory and path), ``lifecycle`` (new run,
resume or nothing to do), ``ownership`` (which files are jaxvae's, and adopting those of older
runs), ``saver`` (``RunSaver``: the checkpoints and metrics of N models as they train) and
``trainer`` (``train_run``: a new run, a resumed one or nothing to do, locked, trained and saved:
the one flow behind ``jaxvae train`` and ``jaxvae sweep``).
Errors are ``RunError``s that say what is wrong; their ``remedy`` lets the command line name the
command that fixes it.
"""
from jaxvae.runs.data import check_run_data, data_fingerprints, run_dataset
from jaxvae.runs.format import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    EVALUATE_FILE,
    EXPORT_FILE,
    FIGURES_DIR,
    LOCK_FILE,
    METRICS_FILE,
    RUN_ENTRIES,
    SPLITS,
    SWEEP_FILE,
    TENSORBOARD_DIR,
    RunError,
    RunInfo,
    checkpoint_record,
    default_image_shape,
    evaluation_key,
    fingerprints_from_dict,
    read_metrics,
    read_run_config,
    require_run_dir,
    write_evaluation,
    write_metrics,
    write_run_config,
)
from jaxvae.runs.lifecycle import (
    check_new_run_dir,
    foreign_entries,
    load_run,
    nothing_to_do,
    read_checkpoint,
    read_run_info,
    refuse_foreign,
    resume_point,
    resumed_info,
    start_new_run,
)
from jaxvae.runs.lock import RunBusyError, RunLock, hold_lock
from jaxvae.runs.saver import RunSaver
from jaxvae.runs.trainer import TrainRun, train_run

__all__ = [
    "CHECKPOINT_FILE", "CONFIG_FILE", "EVALUATE_FILE", "EXPORT_FILE", "FIGURES_DIR", "LOCK_FILE", "METRICS_FILE",
    "RUN_ENTRIES", "SPLITS", "SWEEP_FILE", "TENSORBOARD_DIR", "evaluation_key", "write_evaluation",
    "RunError", "RunBusyError", "RunInfo", "RunLock", "RunSaver", "hold_lock",
    "check_new_run_dir", "check_run_data", "checkpoint_record", "data_fingerprints", "default_image_shape", "fingerprints_from_dict", "foreign_entries",
    "load_run", "nothing_to_do", "read_checkpoint", "read_metrics", "read_run_config", "read_run_info", "refuse_foreign", "require_run_dir",
    "resume_point", "resumed_info", "run_dataset", "start_new_run", "write_metrics", "write_run_config",
    "TrainRun", "train_run",
]
