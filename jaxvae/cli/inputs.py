"""The data a command trains or scores on, checked before any work."""
from __future__ import annotations

from jaxvae.checks import check_data
from jaxvae.cli.console import warn
from jaxvae.cli.flags import UsageError
from jaxvae.config import VAEConfig
from jaxvae.data import load_dataset


def load_data(name: str, data_dir, download: bool, require: bool):
    if data_dir is not None and name != "mnist":
        raise UsageError(f"--data-dir {data_dir}: applies to --dataset mnist (the IDX files), not {name}")
    return load_dataset(name, data_dir=data_dir, download=download, require=require, log=warn, words="cli")


def check_arrays(dataset, vae_config: VAEConfig, batch_size: int | None = None) -> None:
    # fit's own checks, run before anything is written (fit repeats them: cheap)
    check_data(f"{dataset.name} train split", dataset.train_x, vae_config, batch_size)
    check_data(f"{dataset.name} test split", dataset.test_x, vae_config)

