"""``jaxvae sweep`` end to end on the embedded digits (tiny model, 2 epochs): one run directory per model,
each an ordinary run, a summary directory, exact resume, bad input, a model that goes non-finite."""
import json
import shutil

import jax
import numpy as np
import pytest

from jaxvae import cli
from jaxvae.checkpoint import load_checkpoint
from jaxvae.config import TrainConfig, VAEConfig
from jaxvae.fileio import OWNERSHIP_FILE
from jaxvae.runs import CHECKPOINT_FILE, RunLock, read_metrics, read_run_config
from test_cli import run_cli

pytestmark = pytest.mark.slow  # trains or starts processes: the full suite only (make test)

TINY = ["--dataset", "digits", "--hidden", "16", "--no-download", "--progress", "none"]
GRID = ["--seeds", "2", "--recon-sigma", "0.5", "1"]
MODELS = ["sigma0.5_seed0", "sigma0.5_seed1", "sigma1.0_seed0", "sigma1.0_seed1"]
RUN_FIGURES = {"latent_scatter.png", "manifold.png", "loss_curves.png", "reconstructions.png", "samples.png"}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One 2-epoch sweep of 2 seeds x 2 sigmas, shared by the tests of this file."""
    out = tmp_path_factory.mktemp("sweeps") / "sweep"
    assert cli.main(["sweep", *TINY, *GRID, "--epochs", "2", "--out", str(out)]) == 0
    return out


def train_states(sweep_dir):
    return [load_checkpoint(sweep_dir / name / CHECKPOINT_FILE)[0].train_state for name in MODELS]


def test_sweep_writes_one_ordinary_run_per_model_and_a_summary(swept):
    assert sorted(p.name for p in swept.iterdir()) == sorted([*MODELS, "summary", "sweep.json", ".lock", OWNERSHIP_FILE])
    for name in MODELS:
        info = read_run_config(swept / name)
        sigma, seed = float(name[5:8]), int(name[-1])
        assert info.vae_config == VAEConfig(input_dim=64, hidden=(16,))
        assert info.train_config == TrainConfig(max_epochs=2, seed=seed, recon_sigma=sigma)
        history = read_metrics(swept / name)
        state, _, _ = load_checkpoint(swept / name / CHECKPOINT_FILE)
        assert [r["epoch"] for r in history] == [1, 2] and state.epoch == 2 and state.history == history
        assert {p.name for p in (swept / name / "figures").iterdir()} == {*RUN_FIGURES, OWNERSHIP_FILE}
    summary = json.loads((swept / "summary" / "summary.json").read_text())
    assert summary["varying"] == ["recon_sigma"]
    assert [(s["label"], s["models"], s["val_loss"]["n"]) for s in summary["settings"]] == [
        ("sigma=0.5", MODELS[:2], 2), ("sigma=1", MODELS[2:], 2)]
    final = [read_metrics(swept / name)[-1]["val_loss"] for name in MODELS[:2]]
    assert summary["settings"][0]["val_loss"]["mean"] == pytest.approx(np.mean(final))
    assert {p.name for p in (swept / "summary").iterdir()} == {
        "summary.json", "sweep_loss_curves.png", "sweep_rate_distortion.png", "sweep_latents.png", OWNERSHIP_FILE}
    assert not [p for p in swept.rglob(".*tmp-*")], "temporary files left behind"


def test_a_models_directory_is_an_ordinary_run(swept, tmp_path, capsys):
    code, out, err = run_cli(capsys, "evaluate", swept / MODELS[1], "--no-download")
    assert code == 0 and "recon" in out, err
    alone = tmp_path / "alone"
    shutil.copytree(swept / MODELS[1], alone)
    code, out, err = run_cli(capsys, "train", "--resume", alone, "--epochs", "3", "--no-plots", "--quiet")
    assert code == 0, err
    assert [r["epoch"] for r in read_metrics(alone)] == [1, 2, 3]


def test_a_sweep_locks_every_models_directory(swept, tmp_path, capsys):
    """While anything writes one model's run directory, resuming the sweep is refused, and the other
    way round (the sweep holds its models' locks as train holds its run's)."""
    sweep = tmp_path / "sweep"
    shutil.copytree(swept, sweep)
    with RunLock(sweep / MODELS[2], "jaxvae train --resume MODEL"):
        code, _, err = run_cli(capsys, "sweep", "--resume", sweep, "--epochs", "3", "--no-plots", "--quiet")
    assert code == 2 and "being written by another jaxvae" in err and "jaxvae train --resume MODEL" in err
    assert [r["epoch"] for r in read_metrics(sweep / MODELS[0])] == [1, 2]  # nothing trained meanwhile


@pytest.mark.parametrize("crafted", ["[" * 100_000 + "]" * 100_000, '{"grid": {}, "models": []}',
                                     '{"grid": 1, "models": [{"name": "../../elsewhere", "error": null}]}'])
def test_a_crafted_sweep_json_is_one_line_and_changes_nothing(swept, tmp_path, capsys, crafted):
    sweep = tmp_path / "sweep"
    shutil.copytree(swept, sweep)
    (sweep / "sweep.json").write_text(crafted)
    before = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    code, _, err = run_cli(capsys, "sweep", "--resume", sweep, "--epochs", "3", "--no-plots", "--quiet")
    assert code == 2 and err.count("\n") == 1 and "not a valid jaxvae sweep file" in err, err
    # the lock, and jaxvae's record of the lock's holders, record who tried
    untouched = lambda p: p.name not in (".lock", OWNERSHIP_FILE)
    assert {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file() and untouched(p)} == {
        p: b for p, b in before.items() if untouched(p)}


def test_resume_continues_every_model_exactly(swept, tmp_path, capsys):
    out = tmp_path / "sweep"
    code, _, err = run_cli(capsys, "sweep", *TINY, *GRID, "--epochs", "1", "--no-plots", "--out", out)
    assert code == 0, err
    code, stdout, err = run_cli(capsys, "sweep", "--resume", out, "--epochs", "2", "--no-plots", "--progress", "none")
    assert code == 0, err
    assert "resuming after epoch 1" in stdout
    for resumed, straight in zip(train_states(out), train_states(swept)):
        for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(straight)):
            assert np.array_equal(a, b)
    code, _, err = run_cli(capsys, "sweep", "--resume", out, "--epochs", "3", "--lr", "0.1")
    assert code == 2 and "--lr: a resumed sweep keeps its configs and values" in err
    code, _, err = run_cli(capsys, "sweep", *TINY, *GRID, "--out", out)
    assert code == 2 and "already holds a run or a sweep" in err and f"--resume {out}" in err


@pytest.mark.parametrize("flags, message", [
    (["--recon-sigma", "0.5", "-1"], "recon_sigma must be a finite number > 0, got -1.0"),
    (["--lr", "0.001", "0.001"], "lr: a value is given twice"),
    (["--seeds", "0"], "seeds: the number of seeds must be >= 1"),
    (["--latent-dim", "0"], "latent_dim must be a positive integer"),
    (["--mesh", "4y2"], "mesh '4y2': give the devices on the model axis and on the data axis, as 4x2"),
    (["--seeds", "3", "--mesh", f"{len(jax.devices()) + 1}x1"], f"needs {len(jax.devices()) + 1} devices"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, flags, message):
    code, _, err = run_cli(capsys, "sweep", *TINY, *flags, "--out", tmp_path / "s")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "s").exists()


def test_a_model_that_goes_non_finite_stops_alone(tmp_path, capsys):
    out = tmp_path / "sweep"
    code, stdout, err = run_cli(capsys, "sweep", *TINY, "--lr", "1e-3", "1e30", "--lr-schedule", "constant",
                                "--epochs", "2", "--no-plots", "--out", out)
    assert code == 1
    assert "model lr1e+30_seed0: non-finite loss or parameter in epoch 1" in err
    assert "1 of 2 models stopped on a non-finite loss (lr1e+30_seed0)" in err
    assert [r["epoch"] for r in read_metrics(out / "lr0.001_seed0")] == [1, 2]
    assert not (out / "lr1e+30_seed0" / CHECKPOINT_FILE).exists()  # no good epoch to keep
    info = json.loads((out / "sweep.json").read_text())
    assert [m["error"] is not None for m in info["models"]] == [False, True]
    summary = json.loads((out / "summary" / "summary.json").read_text())
    assert summary["settings"][1]["failed"] == ["lr1e+30_seed0"]
    # resuming keeps the failed model stopped and trains the other one on
    code, _, err = run_cli(capsys, "sweep", "--resume", out, "--epochs", "3", "--no-plots", "--quiet")
    assert code == 1 and [r["epoch"] for r in read_metrics(out / "lr0.001_seed0")] == [1, 2, 3]
