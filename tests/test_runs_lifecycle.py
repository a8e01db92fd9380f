"""The run directory is never a dead end, and --resume keeps a run's data (issue 12).

Every state a run directory can be left in (config.json alone, an epoch-0 checkpoint, stale temporary
files, the lock file of a dead process, a damaged checkpoint, an interrupted or NaN first epoch) is
continued or restarted by the command its message names, and that command is run here.
"""
import gzip
import json
import shlex
import shutil
import struct
import subprocess
import zlib

import numpy as np
import pytest
from cli_helpers import TINY, assert_one_line_error, run_cli, suggested_command

from jaxvae.checkpoint import load_checkpoint, save_checkpoint
from jaxvae.config import TrainConfig, VAEConfig
from jaxvae.data import MNIST_FILES
from jaxvae.fileio import OWNERSHIP_FILE, write_owned_text
from jaxvae.runs import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, RunInfo, read_metrics, read_run_config, write_run_config
from jaxvae.runs import trainer as train_flow
from jaxvae.training import TrainStep, init_fit_state

TINY_VAE = VAEConfig(input_dim=64, hidden=(32,))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-epoch digits run; tests copy it before changing anything."""
    path = tmp_path_factory.mktemp("lifecycle") / "run"
    from jaxvae import cli

    assert cli.main(["train", *TINY, "--epochs", "2", "--out", str(path)]) == 0
    return path


def copy_run(src, dst):
    shutil.copytree(src, dst)
    return dst


def config_only_run(path, epochs=2):
    """What a run killed (or interrupted, or NaN) before its first epoch leaves: config.json alone."""
    path.mkdir()
    write_run_config(path, RunInfo(TINY_VAE, TrainConfig(max_epochs=epochs), "digits", (8, 8)))
    return path


def checkpoint_epoch(run):
    return load_checkpoint(run / CHECKPOINT_FILE)[0].epoch


# --------------------------------------------------------------------------- states that used to be dead ends


def test_epochs_zero_checks_the_inputs_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "train", *TINY, "--epochs", "0", "--out", out)
    assert code == 0, err
    assert "nothing to train, nothing written" in stdout
    assert not out.exists()
    code, _, err = run_cli(capsys, "train", *TINY, "--epochs", "0", "--latent-dim", "0", "--out", out)
    assert code == 2  # ... but it still checks them
    assert_one_line_error(err, "latent_dim")


@pytest.mark.parametrize("how", ["resume", "out"])
def test_a_directory_with_only_config_json_resumes_or_restarts(tmp_path, capsys, how):
    run = config_only_run(tmp_path / "run")
    argv = ["--resume", run, "--progress", "none", "--no-plots"] if how == "resume" else [*TINY, "--epochs", "2", "--out", run]
    code, out, err = run_cli(capsys, "train", *argv, "--no-download")
    assert code == 0, err
    assert checkpoint_epoch(run) == 2 and [r["epoch"] for r in read_metrics(run)] == [1, 2]
    if how == "resume":
        assert "no checkpoint yet: starting at epoch 1" in out


@pytest.mark.parametrize("state", ["missing", "empty"])
def test_resume_of_a_directory_without_a_run_names_the_command_that_starts_one(tmp_path, capsys, state):
    run = tmp_path / "run"
    if state == "empty":
        run.mkdir()
    code, _, err = run_cli(capsys, "train", "--resume", run, "--quiet")
    assert code == 2
    assert_one_line_error(err, str(run), f"start a run there with: jaxvae train --out {run}")
    code, _, err = run_cli(capsys, *suggested_command(err), *TINY, "--epochs", "1")
    assert code == 0, err
    assert checkpoint_epoch(run) == 1


def test_stale_temporary_files_and_a_dead_writers_lock_file_are_harmless(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path / "run")
    (run / ".checkpoint.msgpack.tmp-abc123").write_bytes(b"half a checkpoint")
    (run / ".config.json.tmp-def456").write_bytes(b"{")
    # as a jaxvae killed while holding the lock left it
    write_owned_text(run / ".lock", json.dumps({"pid": 999999, "host": "gone", "started": "yesterday",
                                                "command": "jaxvae train --out run"}))
    code, out, err = run_cli(capsys, "train", "--resume", run, "--epochs", "3", "--quiet", "--no-plots")
    assert code == 0, err
    assert checkpoint_epoch(run) == 3
    assert not list(run.glob(".checkpoint.msgpack.tmp-*"))  # the next save removed its stale temps


def test_a_checkpoint_of_epoch_0_is_restarted_in_place_or_resumed(tmp_path, capsys, monkeypatch):
    for how in ("out", "resume"):
        run = config_only_run(tmp_path / how)
        state = init_fit_state(TrainStep.from_configs(TINY_VAE, TrainConfig()), TrainConfig())
        save_checkpoint(run / CHECKPOINT_FILE, state, TINY_VAE, TrainConfig(max_epochs=2))
        if how == "out":  # a new run of another shape replaces it, even when interrupted before its first epoch
            with monkeypatch.context() as m:
                m.setattr(train_flow, "fit_models", interrupted)
                code, _, err = run_cli(capsys, "train", *TINY, "--hidden", "16", "--epochs", "1", "--out", run)
            assert code == 130, err
            assert not (run / CHECKPOINT_FILE).exists() and read_run_config(run).vae_config.hidden == (16,)
        code, _, err = run_cli(capsys, "train", "--resume", run, "--quiet", "--no-plots")
        assert code == 0, err
        assert checkpoint_epoch(run) == (1 if how == "out" else 2)


def interrupted(*args, **kwargs):
    """The training loop, as Ctrl-C before the first epoch ends leaves it."""
    raise KeyboardInterrupt


def test_a_trained_run_is_not_overwritten_and_the_message_names_resume(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path / "run")
    before = (run / CHECKPOINT_FILE).read_bytes()
    code, _, err = run_cli(capsys, "train", *TINY, "--epochs", "1", "--out", run)
    assert code == 2
    assert_one_line_error(err, "--out", "trained for 2 epochs", f"jaxvae train --resume {run}")
    assert (run / CHECKPOINT_FILE).read_bytes() == before
    command = err.split("continue it with '", 1)[1].split("'", 1)[0]
    code, _, err = run_cli(capsys, *shlex.split(command)[1:], "--epochs", "3", "--quiet", "--no-plots")
    assert code == 0, err
    assert checkpoint_epoch(run) == 3


def test_interrupted_before_the_first_epoch_names_a_command_that_works(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train_flow, "fit_models", interrupted)
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", *TINY, "--epochs", "2", "--out", run)
    assert code == 130
    assert "interrupted before the first epoch finished" in err
    monkeypatch.undo()
    code, _, err = run_cli(capsys, *suggested_command(err), "--quiet", "--no-plots")
    assert code == 0, err
    assert checkpoint_epoch(run) == 2


def test_nan_in_the_first_epoch_names_a_command_that_works(tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", *TINY, "--epochs", "2", "--lr", "1e30", "--out", run)
    assert code == 1
    assert "non-finite" in err and "Traceback" not in err
    argv = suggested_command(err, "smaller --lr: ")
    assert argv[:3] == ["train", "--out", str(run)]
    code, _, err = run_cli(capsys, "train", *TINY, "--epochs", "2", "--lr", "1e-3", "--out", run)
    assert code == 0, err
    assert checkpoint_epoch(run) == 2


def test_a_damaged_checkpoint_names_the_command_that_restarts_the_run(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path / "run")
    damaged = (run / CHECKPOINT_FILE).read_bytes()[:-50]
    (run / CHECKPOINT_FILE).write_bytes(damaged)
    for argv in (["train", "--resume", run, "--quiet"], ["train", *TINY, "--out", run]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2
        assert_one_line_error(err, "corrupt or truncated", "mv ")
    assert (run / CHECKPOINT_FILE).read_bytes() == damaged  # never touched
    shell_line = err.split("(keeping that file): ", 1)[1].strip()
    move, resume = shell_line.split(" && ")
    subprocess.run(shlex.split(move), check=True)
    code, _, err = run_cli(capsys, *shlex.split(resume)[1:], "--quiet", "--no-plots")
    assert code == 0, err
    assert checkpoint_epoch(run) == 2 and (run / (CHECKPOINT_FILE + ".bad")).read_bytes() == damaged


# --------------------------------------------------------------------------- values that used to escape as tracebacks
# (the train flags' cases are in test_cli_errors.py's test_bad_flags_give_one_line_and_write_nothing)


def test_evaluate_seed_out_of_range(trained, capsys):
    code, _, err = run_cli(capsys, "evaluate", trained, "--seed", str(2**64), "--no-download")
    assert code == 2
    assert_one_line_error(err, "seed")


# --------------------------------------------------------------------------- resume with nothing to do


def test_resume_with_nothing_to_do_says_so_and_leaves_the_run_alone(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path / "run")
    files = {name: (run / name).read_bytes() for name in (CONFIG_FILE, CHECKPOINT_FILE, METRICS_FILE)}
    for epochs in (["--epochs", "1"], []):
        code, out, err = run_cli(capsys, "train", "--resume", run, *epochs, "--quiet")
        assert code == 0, err
        assert "nothing to do" in out and "after epoch 2" in out
    assert {name: (run / name).read_bytes() for name in files} == files


def test_resume_after_the_schedule_ended_has_nothing_to_do(tmp_path, capsys):
    run = tmp_path / "run"
    # patience 0 and a threshold no epoch can meet: the lr drops 10x per epoch until below stop_lr
    flags = ["--plateau-patience", "0", "--plateau-threshold", "0.99", "--stop-lr", "1e-4", "--epochs", "50"]
    code, out, err = run_cli(capsys, "train", *TINY, *flags, "--out", run)
    assert code == 0, err
    assert "schedule ended" in out
    ended = checkpoint_epoch(run)
    assert ended < 50
    code, out, err = run_cli(capsys, "train", "--resume", run, "--epochs", "60", "--quiet")
    assert code == 0, err
    assert "nothing to do" in out and "plateau lr schedule ended" in out
    assert checkpoint_epoch(run) == ended and read_run_config(run).train_config.max_epochs == 50


# --------------------------------------------------------------------------- a resumed run keeps its data


def test_resume_refuses_another_dataset(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path / "run")
    for flags, named in ((["--dataset", "mnist"], "--dataset mnist"), (["--require-mnist"], "--require-mnist")):
        code, _, err = run_cli(capsys, "train", "--resume", run, "--epochs", "3", "--quiet", *flags)
        assert code == 2
        assert_one_line_error(err, named, "trained on digits")
    assert checkpoint_epoch(run) == 2


def write_mnist_dir(path, seed, n_train=64, n_test=32):
    """A tiny MNIST in IDX files (gzip): random strokes of grey, labels 0..9."""
    rng = np.random.default_rng(seed)
    path.mkdir()
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = MNIST_FILES[split]
        pixels = (rng.random((n, 28, 28)) ** 4 * 255).astype(np.uint8)
        (path / f"{images}.gz").write_bytes(gzip.compress(struct.pack(">I3I", 0x0803, n, 28, 28) + pixels.tobytes()))
        (path / f"{labels}.gz").write_bytes(gzip.compress(struct.pack(">II", 0x0801, n) + bytes(rng.integers(0, 10, n).tolist())))
    return path


MNIST_TINY = ["--dataset", "mnist", "--require-mnist", "--no-download", "--hidden", "16", "--batch-size", "32",
              "--quiet", "--no-plots"]


@pytest.mark.slow
def test_other_data_are_refused_naming_both_fingerprints_and_moved_data_accepted(tmp_path, capsys):
    data_a, data_b = write_mnist_dir(tmp_path / "a", 0), write_mnist_dir(tmp_path / "b", 1)
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", *MNIST_TINY, "--data-dir", data_a, "--epochs", "1", "--out", run)
    assert code == 0, err
    recorded = read_run_config(run).fingerprints
    assert recorded["train"].shape == (64, 784) and recorded["test"].shape == (32, 784)
    config = (run / CONFIG_FILE).read_bytes()
    for argv in (["train", "--resume", run, "--epochs", "2", "--quiet"], ["evaluate", run], ["plot", run]):
        code, _, err = run_cli(capsys, *argv, "--data-dir", data_b, "--no-download")
        assert code == 2
        assert_one_line_error(err, str(data_b), "train split sha256 differs", recorded["train"].sha256[:12])
        assert err.count("sha256") == 3  # what differs, then both fingerprints
    assert (run / CONFIG_FILE).read_bytes() == config and checkpoint_epoch(run) == 1
    moved = data_a.rename(tmp_path / "moved")  # the same data somewhere else: the fingerprint says so
    code, _, err = run_cli(capsys, "train", "--resume", run, "--epochs", "2", "--data-dir", moved, "--quiet",
                           "--no-download", "--no-plots")
    assert code == 0, err
    assert read_run_config(run).data_dir == str(moved.resolve()) and checkpoint_epoch(run) == 2
    code, _, err = run_cli(capsys, "evaluate", run, "--no-download")  # found where the run now records it
    assert code == 0, err


def test_a_run_of_jaxvae_0_1_0_is_accepted_and_records_its_fingerprint_from_then_on(tmp_path, capsys):
    from pathlib import Path

    run = copy_run(Path(__file__).parent / "data" / "run-0.1.0", tmp_path / "old")
    assert read_run_config(run).fingerprints is None
    code, _, err = run_cli(capsys, "evaluate", run, "--no-download")
    assert code == 0, err
    code, _, err = run_cli(capsys, "train", "--resume", run, "--epochs", "2", "--quiet", "--no-plots", "--no-download")
    assert code == 0, err
    assert read_run_config(run).fingerprints["train"].shape == (1500, 64)


def test_a_missing_data_dir_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data-dir", tmp_path / "mnsit", "--epochs", "1", "--out", out)
    assert code == 2
    assert_one_line_error(err, str(tmp_path / "mnsit"), "does not exist")
    assert not out.exists()


@pytest.mark.slow
def test_a_decompression_bomb_through_the_command_line(tmp_path, capsys):
    data = write_mnist_dir(tmp_path / "mnist", 0)
    images = MNIST_FILES["train"][0]
    gz = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    with open(data / f"{images}.gz", "wb") as f:  # declares 64 images, inflates to 1 GiB
        f.write(gz.compress(struct.pack(">I3I", 0x0803, 64, 28, 28)))
        zeros = bytes(1 << 20)
        for _ in range(1024):
            f.write(gz.compress(zeros))
        f.write(gz.flush())
    assert (data / f"{images}.gz").stat().st_size < 2 << 20
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", *MNIST_TINY, "--data-dir", data, "--epochs", "1", "--out", out)
    assert code == 2
    assert_one_line_error(err, f"{images}.gz", "trailing")
    assert not out.exists()


# --------------------------------------------------------------------------- import: the model's epoch and data


@pytest.mark.slow  # trains
def test_import_records_the_source_epoch_and_data(tmp_path, capsys):
    pytest.importorskip("torch")
    data = write_mnist_dir(tmp_path / "mnist", 0)
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", *MNIST_TINY, "--data-dir", data, "--epochs", "2", "--out", run)
    assert code == 0, err
    code, _, err = run_cli(capsys, "export", run, "--torch", tmp_path / "model.pt")
    assert code == 0, err
    imported = tmp_path / "imported"
    code, out, err = run_cli(capsys, "import", tmp_path / "model.pt", "--out", imported)
    assert code == 0, err
    assert "after epoch 2" in out
    info = read_run_config(imported)
    assert info.imported_from["epoch"] == 2 and info.data_dir == str(data.resolve())
    assert info.fingerprints == read_run_config(run).fingerprints
    code, out, err = run_cli(capsys, *suggested_command(out, "try: "), "--no-download")  # works offline
    assert code == 0, err
    assert "model after epoch 2" in out
    config = (imported / CONFIG_FILE).read_bytes()
    code, out, err = run_cli(capsys, "train", "--resume", imported, "--epochs", "2", "--quiet")
    assert code == 0 and "nothing to do" in out
    assert (imported / CONFIG_FILE).read_bytes() == config
    code, _, err = run_cli(capsys, "import", tmp_path / "model.pt", "--out", imported)  # holds a model now
    assert code == 2
    assert_one_line_error(err, "--out", "imported from")


def _damage_config(run, damage):
    if damage == "deleted":
        (run / CONFIG_FILE).unlink()
    else:
        (run / CONFIG_FILE).write_text('{"model": ')


@pytest.mark.parametrize("damage", ["deleted", "garbled"])
def test_a_lost_config_json_is_rebuilt_from_the_checkpoint_alone(trained, tmp_path, capsys, damage):
    """The checkpoint carries config.json's record (data, fingerprints, image shape): nothing to name."""
    run = copy_run(trained, tmp_path / "run")
    original = read_run_config(run)
    _damage_config(run, damage)
    code, _, err = run_cli(capsys, "evaluate", run, "--no-download")  # a reader writes nothing: it names the way
    assert code == 2
    assert_one_line_error(err, str(run / CONFIG_FILE), f"rebuild config.json from it (and train on, if the run has "
                          f"epochs left) with: jaxvae train --resume {run}")
    command = suggested_command(err)
    assert command == ["train", "--resume", str(run)]
    code, _, err = run_cli(capsys, *command, "--quiet", "--no-plots", "--no-download")
    assert code == 0, err
    assert f"rebuilt {run / CONFIG_FILE} from {run / CHECKPOINT_FILE}" in err
    assert read_run_config(run) == original  # every field, the data's fingerprints and the image shape included
    assert (run / (CONFIG_FILE + ".bad")).exists() == (damage == "garbled")
    assert run_cli(capsys, "evaluate", run, "--no-download")[0] == 0
    _damage_config(run, damage)  # the record is there: another dataset named is refused, not taken
    code, _, err = run_cli(capsys, "train", "--resume", run, "--dataset", "mnist-subset", "--quiet")
    assert code == 2
    assert_one_line_error(err, str(run / CHECKPOINT_FILE), "was trained on digits, not on --dataset mnist-subset")


@pytest.mark.parametrize("damage", ["deleted", "garbled"])
def test_a_checkpoint_without_a_record_rebuilds_config_json_given_the_dataset(trained, tmp_path, capsys, damage):
    """Checkpoints of jaxvae 0.2 and earlier hold the configs but not the name of the data."""
    run = copy_run(trained, tmp_path / "run")
    state, vae, train = load_checkpoint(run / CHECKPOINT_FILE)
    save_checkpoint(run / CHECKPOINT_FILE, state, vae, train)  # no run record
    _damage_config(run, damage)
    for argv in (["evaluate", run, "--no-download"], ["train", "--resume", run, "--quiet"]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2
        assert_one_line_error(err, str(run / CONFIG_FILE), f"jaxvae train --resume {run} --dataset NAME")
    command = suggested_command(err, "rebuild config.json from it with: ")
    argv = [a if a != "NAME" else "digits" for a in command[:command.index("NAME") + 1]]
    code, _, err = run_cli(capsys, *argv, "--epochs", "3", "--quiet", "--no-plots", "--no-download")
    assert code == 0, err
    assert f"rebuilt {run / CONFIG_FILE}" in err
    info = read_run_config(run)
    assert info.vae_config == TINY_VAE and info.dataset == "digits" and info.image_shape == (8, 8)
    assert checkpoint_epoch(run) == 3 and info.fingerprints["test"].shape == (297, 64)
    assert (run / (CONFIG_FILE + ".bad")).exists() == (damage == "garbled")
    assert run_cli(capsys, "evaluate", run, "--no-download")[0] == 0


def test_a_garbled_config_json_without_a_checkpoint_is_kept_and_set_aside_to_restart(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / CONFIG_FILE).write_text("{")
    for argv in (["train", "--resume", run, "--quiet"], ["train", *TINY, "--epochs", "1", "--out", run]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2
        assert_one_line_error(err, str(run / CONFIG_FILE), f"mv {run / CONFIG_FILE} {run / CONFIG_FILE}.bad && "
                              f"jaxvae train --out {run}")
        assert (run / CONFIG_FILE).read_text() == "{"
    (run / CONFIG_FILE).rename(run / (CONFIG_FILE + ".bad"))
    code, _, err = run_cli(capsys, *suggested_command(err, after="&& "), *TINY, "--epochs", "1")
    assert code == 0, err
    assert checkpoint_epoch(run) == 1 and (run / (CONFIG_FILE + ".bad")).read_text() == "{"


def test_an_import_without_a_recorded_epoch_says_so(trained, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    assert run_cli(capsys, "export", trained, "--torch", tmp_path / "model.pt")[0] == 0
    blob = torch.load(tmp_path / "model.pt", weights_only=True)
    torch.save({"encoder": blob["encoder"], "decoder": blob["decoder"]}, tmp_path / "bare.pt")  # state dicts only
    code, out, err = run_cli(capsys, "import", tmp_path / "bare.pt", "--out", tmp_path / "imported", "--dataset", "digits")
    assert code == 0, err
    assert "epoch not recorded in the file" in out
    assert read_run_config(tmp_path / "imported").imported_from == {"file": str((tmp_path / "bare.pt").resolve()),
                                                                   "epoch": None}
    code, out, err = run_cli(capsys, "evaluate", tmp_path / "imported", "--no-download")
    assert code == 0, err
    assert f"model imported from {(tmp_path / 'bare.pt').resolve()} (its epoch is not recorded)" in out


def test_import_checks_the_file_at_the_door_and_writes_nothing_on_refusal(trained, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    assert run_cli(capsys, "export", trained, "--torch", tmp_path / "model.pt")[0] == 0
    blob = torch.load(tmp_path / "model.pt", weights_only=True)
    torch.save({**blob, "epoch": "three"}, tmp_path / "bad.pt")
    code, _, err = run_cli(capsys, "import", tmp_path / "bad.pt", "--out", tmp_path / "refused")
    assert code == 2
    assert_one_line_error(err, str(tmp_path / "bad.pt"), "field 'epoch' is 'three'")
    assert not (tmp_path / "refused").exists()
    half = {part: {k: v.half() for k, v in blob[part].items()} for part in ("encoder", "decoder")}
    torch.save({**blob, **half}, tmp_path / "half.pt")
    code, out, err = run_cli(capsys, "import", tmp_path / "half.pt", "--out", tmp_path / "imported")
    assert code == 0, err
    warnings = err.strip().splitlines()
    assert len(warnings) == len(blob["encoder"]) + len(blob["decoder"])
    assert all(line.startswith("jaxvae import: warning: ") and "is float16; cast to float32" in line for line in warnings)
    assert run_cli(capsys, "evaluate", tmp_path / "imported", "--no-download")[0] == 0


def test_a_hand_edited_config_json_is_refused_by_every_command_naming_the_field(trained, tmp_path, capsys):
    """Same shapes, another model: config.json says tanh, the checkpoint was trained with leaky ReLU."""
    run = copy_run(trained, tmp_path / "run")
    raw = json.loads((run / CONFIG_FILE).read_text())
    assert raw["model"]["activation"] == "leaky_relu"
    raw["model"]["activation"] = "tanh"
    (run / CONFIG_FILE).write_text(json.dumps(raw))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != OWNERSHIP_FILE}
    for argv in (["evaluate", run, "--no-download"], ["plot", run, "--no-download"],
                 ["export", run], ["train", "--resume", run, "--epochs", "3", "--quiet"]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2, (argv, err)
        assert_one_line_error(err, str(run / CHECKPOINT_FILE), "activation: 'leaky_relu' in the checkpoint, 'tanh' given")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != OWNERSHIP_FILE} == before
