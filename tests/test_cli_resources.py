"""Memory: a model that cannot fit is refused before anything is allocated or written, and an
allocation that fails anyway is one line with its own exit code (3), the last saved epoch kept."""
import pytest
from cli_helpers import TINY, assert_one_line_error, run_cli

from jaxvae import checks
from jaxvae.checkpoint import load_checkpoint
from jaxvae.cli.flags import EXIT_RESOURCES
from jaxvae.config import VAEConfig
from jaxvae.runs import CHECKPOINT_FILE
from jaxvae.runs import trainer as train_flow


def test_check_memory_names_the_parameters_the_batch_and_the_data():
    vc = VAEConfig(input_dim=784, hidden=(400,), latent_dim=2)  # the blog's model: 631,188 parameters
    checks.check_memory(vc, batch_size=128, data_values=70000 * 784, available=2**30)
    with pytest.raises(checks.ResourceError, match=r"needs about 0\.3 GiB but the device has 0\.1 GiB free: "
                                                   r"631,188 parameters x 8 models"):
        checks.check_memory(vc, batch_size=128, data_values=70000 * 784, n_models=8, available=2**30 // 10)
    assert checks.available_memory() is None or checks.available_memory() > 0


def test_a_model_too_large_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    for epochs in ("0", "3"):  # --epochs 0 checks the sizes too
        code, _, err = run_cli(capsys, "train", *TINY, "--hidden", "200000", "200000", "--epochs", epochs, "--out", out)
        assert code == EXIT_RESOURCES == 3
        assert_one_line_error(err, "parameters", "GiB free", "--hidden", "--batch-size")
        assert not out.exists()


def test_a_sweep_counts_every_model(tmp_path, capsys, monkeypatch):
    one = 4 * 5 * (64 * 32 + 32 + 32 * 4 + 4 + 2 * 32 + 32 + 32 * 64 + 64)  # weights, grads, Adam: 5 copies
    monkeypatch.setattr(checks, "available_memory", lambda device=None: 3 * one + 64 * 64 * 16 * 4 * 8 + 1797 * 64 * 4)
    code, _, err = run_cli(capsys, "sweep", *TINY, "--latent-dim", "2", "--seeds", "8", "--epochs", "1",
                           "--out", tmp_path / "sweep")
    assert code == 3
    assert_one_line_error(err, "x 8 models", "fewer models")
    assert not (tmp_path / "sweep").exists()


def test_an_allocation_that_fails_mid_run_is_one_line_and_keeps_the_saved_epoch(tmp_path, capsys, monkeypatch):
    real_fit_models = train_flow.fit_models

    def fit_models_that_runs_out(*args, callbacks=(), **kwargs):
        def allocate(state, records):
            if records[0]["epoch"] == 2:  # as XLA reports it, after the epoch's checkpoint was queued
                raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 8589934592 bytes.\n"
                                   "BufferAssignment OOM Debugging. ...")
        return real_fit_models(*args, callbacks=[*callbacks, allocate], **kwargs)

    monkeypatch.setattr(train_flow, "fit_models", fit_models_that_runs_out)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", *TINY, "--epochs", "4", "--out", out)
    assert code == 3
    assert_one_line_error(err, "out of memory after epoch 2", "Out of memory while trying to allocate 8589934592 bytes",
                          f"continue with: jaxvae train --resume {out}")
    assert "BufferAssignment" not in err
    assert load_checkpoint(out / CHECKPOINT_FILE)[0].epoch == 2
    monkeypatch.setattr(train_flow, "fit_models", real_fit_models)
    code, _, err = run_cli(capsys, "train", "--resume", out, "--quiet", "--no-plots")
    assert code == 0, err
    assert load_checkpoint(out / CHECKPOINT_FILE)[0].epoch == 4


def test_a_memory_error_in_any_command_is_one_line_with_exit_3(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert run_cli(capsys, "train", *TINY, "--epochs", "1", "--out", out)[0] == 0
    from jaxvae.cli import run_tools

    def evaluate_run(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(run_tools, "evaluate_run", evaluate_run)
    code, _, err = run_cli(capsys, "evaluate", out, "--k", "100000")
    assert code == 3
    assert_one_line_error(err, "out of memory (MemoryError)", "--batch-size")


def test_a_sweep_too_large_for_memory_is_refused_before_its_models_are_built(tmp_path, capsys, monkeypatch):
    built = []
    monkeypatch.setattr(train_flow.sw, "SweepModel", lambda *a, **k: built.append(a))
    code, _, err = run_cli(capsys, "sweep", *TINY, "--seeds", "1000000000", "--lr", "1e-3", "2e-3", "--epochs", "0",
                           "--out", tmp_path / "sweep")
    assert code == 3
    assert_one_line_error(err, "--seeds 1000000000 x --lr (2 values): 2,000,000,000 models;", "GiB free", "fewer models")
    assert built == [] and not (tmp_path / "sweep").exists()  # counted from the flags: no model built
