"""A run's data found again: loaded by the name and location ``config.json`` recorded, and checked
against the fingerprints recorded when it trained."""
from __future__ import annotations

import os

from jaxvae.checks import check_data
from jaxvae.config import VAEConfig
from jaxvae.data import Dataset, fingerprint, load_dataset
from jaxvae.runs.format import RunError, RunInfo


def data_fingerprints(dataset: Dataset) -> dict:
    """``{"train": Fingerprint, "test": Fingerprint}`` of a dataset's arrays."""
    return {"train": fingerprint(dataset.train_x), "test": fingerprint(dataset.test_x)}


def check_arrays(dataset: Dataset, vae_config: VAEConfig, batch_size: int | None = None) -> None:
    """fit's own checks of both splits against the model (and the train split against ``batch_size``),
    run before anything is written (fit repeats them: cheap)."""
    check_data(f"{dataset.name} train split", dataset.train_x, vae_config, batch_size)
    check_data(f"{dataset.name} test split", dataset.test_x, vae_config)


def check_run_data(info: RunInfo, dataset: Dataset, data_dir=None, run_dir=None) -> None:
    """RunError unless ``dataset`` has the fingerprints ``info`` recorded (none recorded: accepted)."""
    if not info.fingerprints:
        return
    found = data_fingerprints(dataset)
    for split, recorded in info.fingerprints.items():
        problem = recorded.mismatch(found[split])
        if problem:
            where = f"the run in {run_dir}" if run_dir is not None else "the run"
            source = f"from {data_dir}" if data_dir else "found by the default search"
            raise RunError(f"the {dataset.name} data {source} are not the data {where} was trained on: {split} split "
                           f"{problem} (recorded vs found)", run_dir=run_dir, remedy="data_dir")


def run_dataset(info: RunInfo, data_dir: str | os.PathLike | None = None, download: bool = True, log=None, *,
                run_dir: str | os.PathLike | None = None) -> Dataset:
    """The dataset a run was trained on, checked against its model (MNIST is required for an MNIST
    run: no silent swap to other data) and against the fingerprints the run recorded (runs of jaxvae
    0.1.0 recorded none: nothing to compare). ``data_dir`` overrides the run's recorded one: another
    location of the same data is fine, other data is a RunError naming both fingerprints."""
    dataset = load_dataset(info.dataset, data_dir=data_dir or info.data_dir, download=download, require=True, log=log)
    check_arrays(dataset, info.vae_config)
    check_run_data(info, dataset, data_dir or info.data_dir, run_dir)
    return dataset
