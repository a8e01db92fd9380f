"""The data a command trains on, as --dataset and --data-dir name it."""
from __future__ import annotations

from jaxvae.cli.console import warn
from jaxvae.cli.flags import UsageError
from jaxvae.data import Dataset, load_dataset


def load_data(name: str, data_dir: str | None, download: bool, require: bool) -> Dataset:
    """``data.load_dataset`` for the command line: its notes go to stderr, worded for the flags.

    Args:
        name: The --dataset name.
        data_dir: The --data-dir, or None for the default search.
        download: Whether MNIST may be downloaded.
        require: Whether a missing MNIST is an error rather than a fallback to other data.

    Returns:
        The dataset.

    Raises:
        UsageError: ``data_dir`` is given for a dataset other than mnist.
        InputError: An unknown dataset name.
        DataError: ``data_dir`` does not exist, or a file is malformed.
        MnistNotFoundError: MNIST is not found and ``require`` or ``data_dir`` was given.
    """
    if data_dir is not None and name != "mnist":
        raise UsageError(f"--data-dir {data_dir}: applies to --dataset mnist (the IDX files), not {name}")
    return load_dataset(name, data_dir=data_dir, download=download, require=require, log=warn, words="cli")

