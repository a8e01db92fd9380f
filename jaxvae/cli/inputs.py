"""The data a command trains on, as --dataset and --data-dir name it."""
from __future__ import annotations

from jaxvae.cli.console import warn
from jaxvae.cli.flags import UsageError
from jaxvae.data import load_dataset


def load_data(name: str, data_dir, download: bool, require: bool):
    if data_dir is not None and name != "mnist":
        raise UsageError(f"--data-dir {data_dir}: applies to --dataset mnist (the IDX files), not {name}")
    return load_dataset(name, data_dir=data_dir, download=download, require=require, log=warn, words="cli")

