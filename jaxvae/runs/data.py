"""A run's data found again: loaded by the name and location ``config.json`` recorded, and checked
against the fingerprints recorded when it trained."""
from __future__ import annotations

import os

from jaxvae.checks import check_data
from jaxvae.config import VAEConfig
from jaxvae.data import Dataset, fingerprint, load_dataset
from jaxvae.model import Model
from jaxvae.runs.format import SPLITS, RunError, RunInfo
from jaxvae.vae import as_model


def data_fingerprints(dataset: Dataset) -> dict:
    """The fingerprints of a dataset's arrays: each split's images and labels.

    Args:
        dataset: The dataset.

    Returns:
        ``{"train", "test", "train_labels", "test_labels"}`` to their ``Fingerprint``.
    """
    return {"train": fingerprint(dataset.train_x), "test": fingerprint(dataset.test_x),
            "train_labels": fingerprint(dataset.train_y), "test_labels": fingerprint(dataset.test_y)}


def run_batches(dataset: Dataset, model: Model | VAEConfig) -> tuple:
    """The train and test data a run feeds ``model``: each split's images, with their labels for a
    model of labelled batches (``Model.batch_of``).

    Args:
        dataset: The dataset.
        model: The model, or a ``VAEConfig``.

    Returns:
        ``(train, test)``, each an array or a pytree of arrays.
    """
    model = as_model(model)
    return model.batch_of(dataset.train_x, dataset.train_y), model.batch_of(dataset.test_x, dataset.test_y)


def check_arrays(dataset: Dataset, model: Model | VAEConfig, batch_size: int | None = None) -> None:
    """fit's own checks of both splits against the model (and the train split against ``batch_size``),
    run before anything is written (fit repeats them: cheap).

    Args:
        dataset: The dataset; its name is in the messages.
        model: The model, or a ``VAEConfig``.
        batch_size: The training batch size, which the train split must hold; None for no check.

    Raises:
        InputError: A split is not data the model can train on, or holds fewer rows than ``batch_size``.
    """
    train, test = run_batches(dataset, model)
    check_data(f"{dataset.name} train split", train, model, batch_size)
    check_data(f"{dataset.name} test split", test, model)


def check_run_data(info: RunInfo, dataset: Dataset, data_dir: str | os.PathLike | None = None,
                   run_dir: str | os.PathLike | None = None) -> None:
    """RunError unless ``dataset`` has the fingerprints ``info`` recorded (none recorded: accepted).

    Args:
        info: The run's record.
        dataset: The data found.
        data_dir: Where they were found, for the message; None for the default search.
        run_dir: The run directory, for the message and the error.

    Raises:
        RunError: A split's fingerprint differs from the recorded one (remedy "data_dir").
    """
    if not info.fingerprints:
        return
    found = data_fingerprints(dataset)
    for split, recorded in info.fingerprints.items():
        problem = recorded.mismatch(found[split])
        if problem:
            where = f"the run in {run_dir}" if run_dir is not None else "the run"
            source = f"from {data_dir}" if data_dir else "found by the default search"
            what = f"{split} split" if split in SPLITS else f"{split.split('_')[0]} split's labels"
            raise RunError(f"the {dataset.name} data {source} are not the data {where} was trained on: {what} "
                           f"{problem} (recorded vs found)", run_dir=run_dir, remedy="data_dir")


def run_dataset(info: RunInfo, data_dir: str | os.PathLike | None = None, download: bool = True, log=None, *,
                run_dir: str | os.PathLike | None = None) -> Dataset:
    """The dataset a run was trained on, checked against its model (MNIST is required for an MNIST
    run: no silent swap to other data) and against the fingerprints the run recorded (runs of jaxvae
    0.1.0 recorded none: nothing to compare).

    Args:
        info: The run's record.
        data_dir: Overrides the run's recorded location: another location of the same data is fine,
            other data is a RunError naming both fingerprints. None for the recorded one.
        download: Whether MNIST may be downloaded.
        log: Called with the lines loading writes; None for silence.
        run_dir: The run directory, for the messages.

    Returns:
        The dataset.

    Raises:
        RunError: The data found are not the data the run recorded.
        InputError: An unknown dataset name, or data the model cannot train on.
        DataError: ``data_dir`` does not exist, or a file is malformed.
        MnistNotFoundError: MNIST is not found.
    """
    dataset = load_dataset(info.dataset, data_dir=data_dir or info.data_dir, download=download, require=True, log=log)
    check_arrays(dataset, info.model)
    check_run_data(info, dataset, data_dir or info.data_dir, run_dir)
    return dataset
