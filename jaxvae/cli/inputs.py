"""The data a command trains or scores on, checked before any work, and OSError as one line."""
from __future__ import annotations

from jaxvae.cli.console import warn
from jaxvae.config import VAEConfig
from jaxvae.runs import RunInfo, run_dataset


def load_data(name: str, data_dir, download: bool, require: bool):
    from jaxvae.data import load_dataset

    return load_dataset(name, data_dir=data_dir, download=download, require=require, log=warn)


def check_arrays(dataset, vae_config: VAEConfig, batch_size: int | None = None) -> None:
    # fit's own checks, run before anything is written (fit repeats them: cheap)
    from jaxvae.checks import check_data

    check_data(f"{dataset.name} train split", dataset.train_x, vae_config, batch_size)
    check_data(f"{dataset.name} test split", dataset.test_x, vae_config)


def run_data(info: RunInfo, args, run_dir):
    return run_dataset(info, getattr(args, "data_dir", None), not getattr(args, "no_download", False), warn,
                       run_dir=run_dir)


def os_error_text(e: OSError) -> str:
    """``FILE: reason`` for an OSError (a full disk, a read-only or missing directory, no permission)."""
    if e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    return str(e)
