"""The ``jaxvae`` command end to end on the embedded digits (tiny model, 2 epochs, seconds)."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxvae import cli
from jaxvae.checkpoint import load_checkpoint
from jaxvae.config import TrainConfig, VAEConfig
from jaxvae.runs import CHECKPOINT_FILE, read_metrics, read_run_config

TINY = ["--dataset", "digits", "--hidden", "32", "--no-download", "--progress", "none"]
FIGURES = {"latent_scatter.png", "manifold.png", "loss_curves.png", "reconstructions.png", "samples.png"}
REPO = Path(__file__).resolve().parents[1]


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 2-epoch digits run shared by the tests of this file."""
    run_dir = tmp_path_factory.mktemp("runs") / "digits-run"
    assert cli.main(["train", *TINY, "--epochs", "2", "--out", str(run_dir)]) == 0
    return run_dir


def test_train_writes_every_file(trained):
    info = read_run_config(trained)  # reloadable config
    assert info.dataset == "digits" and info.image_shape == (8, 8)
    assert info.vae_config == VAEConfig(input_dim=64, hidden=(32,))  # input_dim followed the data
    assert info.train_config == TrainConfig(max_epochs=2)
    history = read_metrics(trained)
    assert [r["epoch"] for r in history] == [1, 2]
    assert set(history[0]) >= {"train_loss", "val_loss", "lr", "seconds", "val_recon", "val_kl"}
    state, _, _ = load_checkpoint(trained / CHECKPOINT_FILE)
    assert state.epoch == 2 and state.history == history
    assert {p.name for p in (trained / "figures").glob("*.png")} == FIGURES
    assert not [p for p in trained.rglob(".*tmp-*")], "temporary files left behind"


def test_train_prints_one_summary_line_per_epoch(tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", *TINY, "--epochs", "2", "--no-plots", "--out", tmp_path / "r")
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.startswith("epoch")]
    assert len(lines) == 2 and all("train loss" in x and "val loss" in x and "lr" in x for x in lines)
    assert "done after epoch 2" in out


def test_evaluate_table_and_json(trained, capsys):
    code, out, err = run_cli(capsys, "evaluate", trained, "--no-download")
    assert code == 0, err
    assert "loss" in out and "recon" in out and "kl" in out
    (result,) = [r for r in json.loads((trained / "evaluate.json").read_text())["evaluations"]
                 if (r["split"], r["samples"], r.get("k", 0)) == ("test", 297, 0)]
    assert result["split"] == "test" and result["samples"] == 297 and result["epoch"] == 2
    # loss = recon + kl_weight * kl batch by batch, hence also for the means
    assert result["loss"] == pytest.approx(result["recon"] + result["kl"], rel=1e-5)
    code, out, _ = run_cli(capsys, "evaluate", trained, "--json", "--no-download")
    assert code == 0 and json.loads(out)["loss"] == result["loss"]  # fixed noise seed: repeatable


@pytest.mark.slow
def test_evaluate_estimates_the_log_likelihood_with_importance_samples(trained, capsys):
    code, out, err = run_cli(capsys, "evaluate", trained, "--k", "16", "--limit", "40", "--json", "--no-download")
    assert code == 0, err
    result = json.loads(out)
    assert result["samples"] == 40 and result["k"] == 16
    # per image, logsumexp_k log w - log k >= mean_k log w (Jensen): the estimate bounds the ELBO
    assert result["log_likelihood"] >= -result["neg_elbo"]
    assert result["log_likelihood_stderr"] > 0
    code, _, err = run_cli(capsys, "evaluate", trained, "--limit", "0", "--no-download")
    assert code == 2 and "limit must be a positive integer, got 0" in err


def test_evaluations_of_other_splits_sizes_and_k_are_kept_side_by_side(trained, capsys):
    for argv in (["--limit", "40"], ["--split", "train", "--limit", "40"], ["--limit", "40"]):
        assert run_cli(capsys, "evaluate", trained, *argv, "--no-download")[0] == 0
    kept = json.loads((trained / "evaluate.json").read_text())["evaluations"]
    keys = [(r["split"], r["samples"], r.get("k", 0)) for r in kept]
    assert ("train", 40, 0) in keys and keys.count(("test", 40, 0)) == 1


@pytest.mark.slow  # starts a process
def test_a_closed_pipe_ends_quietly(trained):
    import subprocess
    import sys

    from cli_helpers import subprocess_env

    done = subprocess.run(f"{sys.executable} -m jaxvae evaluate {trained} --no-download | head -1", shell=True,
                          capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert done.stdout.count("\n") == 1 and "Error" not in done.stderr and "error" not in done.stderr, done.stderr


def test_a_sweep_directory_points_to_its_models(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for name in ("seed0", "seed1"):
        (sweep / name).mkdir(parents=True)
        (sweep / name / "config.json").write_text("{}")
    (sweep / "sweep.json").write_text("{}")
    code, _, err = run_cli(capsys, "evaluate", sweep, "--no-download")
    assert code == 2 and "is a sweep directory" in err and str(sweep / "seed0") in err


def test_plot_redraws_from_checkpoint(trained, tmp_path, capsys):
    code, _, err = run_cli(capsys, "plot", trained, "--figures", tmp_path / "figs", "--no-download")
    assert code == 0, err
    assert {p.name for p in (tmp_path / "figs").glob("*.png")} == FIGURES


def test_flags_are_generated_from_the_config_fields():
    parser = cli.build_parser()
    args = parser.parse_args(["train"])
    vae, train = cli.configs_from_args(args)
    assert vae == VAEConfig() and train == TrainConfig()  # one place for defaults
    options = {s for a in parser._subparsers._group_actions[0].choices["train"]._actions for s in a.option_strings}
    for cls in (VAEConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            flag = "--" + cli.FLAG_NAMES.get(f.name, f.name).replace("_", "-")
            assert (flag in options) == (f.name != "hyper"), flag  # the models' own hyperparameters: no flag
    args = parser.parse_args(["train", "--hidden", "512", "256", "--epochs", "7", "--no-drop-last", "--kl-weight", "0.5",
                              "--init", "flax"])
    vae, train = cli.configs_from_args(args)
    assert vae.hidden == (512, 256) and train.kl_weight == 0.5 and train.max_epochs == 7 and train.drop_last is False
    assert vae.init == "flax"


def test_existing_run_is_not_overwritten(trained, capsys):
    before = (trained / CHECKPOINT_FILE).read_bytes()
    code, _, err = run_cli(capsys, "train", *TINY, "--epochs", "1", "--out", trained)
    assert code == 2 and "--resume" in err
    assert (trained / CHECKPOINT_FILE).read_bytes() == before


def test_resume_refuses_config_changes(trained, capsys):
    code, _, err = run_cli(capsys, "train", "--resume", trained, "--lr", "0.1", "--quiet")
    assert code == 2 and "--lr" in err and "only --epochs" in err


def _torchref_loss(blob, x, eps, config):
    import torch

    import torchref

    encoder, sample, decoder = torchref.build_blog_model(config.input_dim, config.latent_dim, config.hidden)
    encoder.load_state_dict(blob["encoder"])
    decoder.load_state_dict(blob["decoder"])
    with torch.no_grad():
        xt = torch.as_tensor(x)
        mu, sigma = encoder(xt)
        x_hat = decoder(sample((mu, sigma), torch.as_tensor(eps)))
        recon = torchref.GaussSimilarityLoss(TrainConfig().recon_sigma)(xt, x_hat)
        kl = torchref.UnitGaussKullbackLeiblerDivergenceLoss()((mu, sigma))
    return float(recon + TrainConfig().kl_weight * kl)


def test_export_import_parity(trained, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from jaxvae import vae_loss
    from jaxvae.data import load_dataset

    target = tmp_path / "model.pt"
    code, _, err = run_cli(capsys, "export", trained, "--torch", target)
    assert code == 0, err
    blob = torch.load(target, weights_only=True)
    state, config, _ = load_checkpoint(trained / CHECKPOINT_FILE)
    x = load_dataset("digits").test_x[:64]
    eps = np.random.default_rng(0).standard_normal((64, config.latent_dim)).astype(np.float32)
    jax_loss = float(vae_loss(state.params, x, eps, config)[0])
    assert _torchref_loss(blob, x, eps, config) == pytest.approx(jax_loss, rel=1e-5)

    code, _, err = run_cli(capsys, "import", target, "--out", tmp_path / "imported")
    assert code == 0, err
    imported, imported_config, _ = load_checkpoint(tmp_path / "imported" / CHECKPOINT_FILE)
    assert imported_config == config
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(imported.params)))
    losses = []
    for run in (trained, tmp_path / "imported"):
        code, out, err = run_cli(capsys, "evaluate", run, "--json", "--no-download")
        assert code == 0, err
        losses.append(json.loads(out)["loss"])
    assert losses[0] == losses[1]  # same weights, same data, same noise seed


def test_python_dash_m_entry_point():
    done = subprocess.run([sys.executable, "-m", "jaxvae", "train", "--help"], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert done.returncode == 0
    for flag in ("--latent-dim", "--hidden", "--batch-size", "--lr", "--epochs", "--plateau-factor",
                 "--plateau-patience", "--stop-lr", "--recon-sigma", "--kl-weight", "--seed", "--dataset",
                 "--data-dir", "--out", "--resume"):
        assert flag in done.stdout


def test_posterior_collapse_gets_one_warning_line(trained, tmp_path, capsys):
    """A KL weight this large pushes every posterior onto the prior: one line names it and what to try
    (the same program as the trained fixture's: the KL weight is data)."""
    code, out, err = run_cli(capsys, "train", *TINY, "--epochs", "3", "--kl-weight", "50", "--out", tmp_path / "r")
    assert code == 0, err
    (line,) = [x for x in err.splitlines() if "posterior collapse" in x]
    assert "after epoch 2" in line and "--kl-weight" in line and "--kl-warmup-epochs" in line
    # (the tiny digits model nearly collapses at the blog's weight 1 too; a small weight keeps z in use)
    code, out, err = run_cli(capsys, "train", *TINY, "--epochs", "3", "--kl-weight", "0.01", "--out", tmp_path / "b")
    assert code == 0 and "posterior collapse" not in err, err
