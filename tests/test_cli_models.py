"""`jaxvae train|sweep --model cvae|vqvae|betatc`: each family from the command line, its flags from its declaration."""
import json

import pytest

from jaxvae.cli.flags import SWEEP_VALUE_FLAGS, SWEPT_HYPERPARAMETERS
from jaxvae.config import FAMILIES, LR
from jaxvae.model import import_path
from jaxvae.runs import load_run, read_metrics
from tests.cli_helpers import assert_one_line_error, run_cli

TINY = ["--dataset", "digits", "--hidden", "32", "--latent-dim", "4", "--batch-size", "64", "--progress", "none"]


def test_every_familys_hyperparameters_are_flags_of_train_and_sweep():
    for family in FAMILIES.values():
        assert import_path(family.model_class).family_hyperparameters == family.hyperparameters
        for h in (*family.hyperparameters, LR):
            assert SWEEP_VALUE_FLAGS[h.name] == h.flag
    assert [h.name for h in SWEPT_HYPERPARAMETERS] == ["recon_sigma", "kl_weight", "commitment", "quantization",
                                                       "alpha", "beta", "gamma", "lr"]


@pytest.mark.slow
def test_a_conditional_vae_trains_draws_its_classes_and_resumes(tmp_path, capsys):
    run = tmp_path / "cvae"
    code, out, err = run_cli(capsys, "train", "--model", "cvae", *TINY, "--epochs", "2", "--out", run)
    assert code == 0, err
    assert "model ConditionalVAEModel" in out
    assert json.loads((run / "config.json").read_text())["model"]["class"] == "jaxvae.cvae:ConditionalVAEModel"
    assert {p.name for p in (run / "figures").glob("*.png")} == {"class_samples.png", "loss_curves.png"}
    code, out, err = run_cli(capsys, "train", "--resume", run, "--model", "vqvae")
    assert_one_line_error(err, "--model vqvae: a resumed run keeps its model (cvae")
    code, out, err = run_cli(capsys, "train", "--resume", run, "--epochs", "3", "--no-plots")
    assert code == 0, err
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2, 3]


@pytest.mark.slow
def test_a_vq_vae_takes_its_own_hyperparameters_by_flag(tmp_path, capsys):
    run = tmp_path / "vq"
    code, out, err = run_cli(capsys, "train", "--model", "vqvae", *TINY, "--epochs", "1", "--commitment", "0.5",
                             "--no-plots", "--out", run)
    assert code == 0, err
    info, _ = load_run(run)
    assert info.train_config.hyper == {"commitment": 0.5}
    assert {"val_recon", "val_commitment", "val_perplexity"} <= set(read_metrics(run)[-1])
    code, out, err = run_cli(capsys, "evaluate", run)
    assert code == 0 and "perplexity" in out and "vq_loss" in out


@pytest.mark.slow
def test_a_beta_tcvae_sweeps_its_beta(tmp_path, capsys):
    code, out, err = run_cli(capsys, "sweep", "--model", "betatc", *TINY, "--epochs", "1", "--beta", "1", "4",
                             "--no-plots", "--out", tmp_path / "sweep")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.name.startswith("beta")) == \
        ["beta1.0_seed0", "beta4.0_seed0"]
    header = next(line for line in out.splitlines() if line.startswith("setting"))
    assert header.split()[1:6] == ["val", "loss", "recon", "mi", "tc"]


@pytest.mark.parametrize("argv, fragments", [
    (["train", "--beta", "2"], ["--beta: --model vae has no such hyperparameter", "--recon-sigma, --kl-weight, --lr"]),
    (["train", "--model", "betatc", "--commitment", "1"], ["--commitment: --model betatc has no such hyperparameter"]),
    (["train", "--model", "betatc", "--kl-weight", "2"], ["--kl-weight: --model betatc has no such hyperparameter"]),
    (["sweep", "--model", "vqvae", "--alpha", "1", "2"], ["--alpha: --model vqvae has no such hyperparameter"]),
    (["train", "--model", "betatc", "--beta", "-1"], ["beta must be a finite number >= 0, got -1.0"]),
    (["sweep", "--model", "vqvae", "--commitment", "0.5", "-2"], ["commitment must be a finite number >= 0, got -2.0"]),
    (["train", "--model", "gan"], ["--model", "gan"]),
])
def test_flags_a_model_does_not_read_fail_before_any_data(tmp_path, capsys, argv, fragments):
    code, out, err = run_cli(capsys, *argv, "--dataset", "digits", "--out", tmp_path / "never")
    assert code == 2
    assert_one_line_error(err, *fragments)
    assert not (tmp_path / "never").exists()
