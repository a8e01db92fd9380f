"""A file is jaxvae's by record, not by name (issue 34): another's file at one of jaxvae's paths is
refused and left byte for byte; special files are refused without blocking; the lock holds a path;
the last epoch survives a kill between the checkpoint and its metrics; a checkpoint of other data,
or with non-finite or wrongly typed weights, is refused."""
import contextlib
import dataclasses
import json
import os
import shutil
import signal
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from cli_helpers import TINY, assert_one_line_error, run_cli

from jaxvae import cli, fileio, runs
from jaxvae.checkpoint import load_checkpoint, save_checkpoint
from jaxvae.runs import saver as saver_module

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-epoch digits run, copied by each test before it changes anything."""
    run = tmp_path_factory.mktemp("ownership") / "run"
    assert cli.main(["train", *TINY, "--epochs", "2", "--out", str(run)]) == 0
    return run


@pytest.fixture
def run(trained, tmp_path):
    return Path(shutil.copytree(trained, tmp_path / "run"))


def files(root: Path, besides=()) -> dict:
    """Every regular file under ``root`` and its bytes, jaxvae's record and ``besides`` aside."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink() and p.name not in (fileio.OWNERSHIP_FILE, *besides)}


def kept(run: Path) -> dict:
    """The files of ``run`` that a refused command must leave as they were (its lock records who tried)."""
    return files(run, besides=(runs.LOCK_FILE,))


@contextlib.contextmanager
def no_hang(seconds: int = 60):
    """Fail instead of hanging: a command that opens a FIFO for reading waits for a writer for ever."""
    def alarm(*_):
        raise TimeoutError(f"blocked for {seconds} s")
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------- 1. ownership by record


# a new run refusing another's file under one of jaxvae's names: tests/test_runs_foreign.py


@pytest.mark.slow  # draws the figures twice
def test_evaluate_and_plot_replace_their_own_files_but_not_anothers(run, tmp_path, capsys):
    assert run_cli(capsys, "evaluate", run, "--no-download")[0] == 0
    assert run_cli(capsys, "evaluate", run, "--no-download", "--k", "2")[0] == 0  # its own file: kept and added to
    assert len(json.loads((run / runs.EVALUATE_FILE).read_text())["evaluations"]) == 2
    (run / runs.EVALUATE_FILE).write_text('{"evaluations": [], "mine": true}')
    figures = tmp_path / "figures"
    assert run_cli(capsys, "plot", run, "--figures", figures, "--no-download")[0] == 0
    assert run_cli(capsys, "plot", run, "--figures", figures, "--no-download")[0] == 0  # its own PNGs again
    (figures / "samples.png").write_bytes(b"a drawing of mine")
    before = files(tmp_path)
    for argv, name in ((["evaluate", run], runs.EVALUATE_FILE), (["plot", run, "--figures", figures], "samples.png")):
        code, _, err = run_cli(capsys, *argv, "--no-download")
        assert code == 2
        assert_one_line_error(err, name, "jaxvae did not write")
    assert files(tmp_path) == before  # a refused plot writes none of its figures


def test_a_new_sweep_refuses_anothers_summary(tmp_path, capsys):
    out = tmp_path / "sweep"
    (out / "summary").mkdir(parents=True)
    (out / "summary" / "summary.json").write_text('{"mine": 1}')
    before = files(tmp_path)
    code, _, err = run_cli(capsys, "sweep", *TINY, "--seeds", "2", "--epochs", "1", "--out", out)
    assert code == 2
    assert_one_line_error(err, "summary.json", "jaxvae did not write")
    assert files(tmp_path) == before


def test_export_replaces_only_its_own_export(run, tmp_path, capsys):
    import torch

    theirs = tmp_path / "vae.pt"
    torch.save({"encoder": {}, "decoder": {}, "config": {}}, theirs)  # the common layout of VAE checkpoints
    before = theirs.read_bytes()
    code, _, err = run_cli(capsys, "export", run, "--torch", theirs)
    assert code == 2
    assert_one_line_error(err, str(theirs), "jaxvae did not write")
    assert theirs.read_bytes() == before
    ours = tmp_path / "ours.pt"
    for _ in range(2):  # an export replaces its own earlier export
        assert run_cli(capsys, "export", run, "--torch", ours)[0] == 0


def test_a_run_of_an_older_jaxvae_without_a_record_still_resumes_evaluates_and_plots(run, capsys):
    """jaxvae 0.3 kept no record: the files its run accounts for are adopted, nothing else."""
    assert run_cli(capsys, "plot", run, "--no-download")[0] == 0
    for record in run.rglob(fileio.OWNERSHIP_FILE):
        record.unlink()
    for argv in (["evaluate", run, "--no-download"], ["plot", run, "--no-download"], ["export", run],
                 ["train", "--resume", run, "--epochs", "3", "--quiet", "--no-plots"]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 0, (argv, err)
    assert load_checkpoint(run / runs.CHECKPOINT_FILE)[0].epoch == 3


def test_an_older_run_adopts_no_metrics_its_checkpoint_does_not_account_for(run, capsys):
    for record in run.rglob(fileio.OWNERSHIP_FILE):
        record.unlink()
    (run / runs.METRICS_FILE).write_text('{"step": 1, "acc": 0.5}\n')  # another tool's log
    before = kept(run)
    code, _, err = run_cli(capsys, "train", "--resume", run, "--epochs", "3", "--quiet", "--no-plots")
    assert code == 2
    assert_one_line_error(err, runs.METRICS_FILE, "jaxvae did not write")
    assert kept(run) == before


# --------------------------------------------------------------------------- 2. regular files only


@pytest.mark.parametrize("name", [runs.LOCK_FILE, runs.EVALUATE_FILE, runs.METRICS_FILE, runs.CONFIG_FILE,
                                  runs.CHECKPOINT_FILE])
@pytest.mark.parametrize("command", ["evaluate", "resume"])
def test_a_fifo_at_a_jaxvae_path_is_refused_without_blocking(run, capsys, name, command):
    (run / name).unlink(missing_ok=True)
    os.mkfifo(run / name)
    argv = (["evaluate", run, "--no-download"] if command == "evaluate"
            else ["train", "--resume", run, "--epochs", "3", "--quiet", "--no-plots"])
    with no_hang():
        code, _, err = run_cli(capsys, *argv)
    if command == "evaluate" and name in (runs.LOCK_FILE, runs.METRICS_FILE):
        assert code == 0, err  # evaluate reads neither
    else:
        assert code == 2
        assert_one_line_error(err, name, "FIFO")
    assert (run / name).is_fifo()


def test_a_hard_linked_lock_file_is_never_truncated(run, tmp_path, capsys):
    precious = tmp_path / "precious.txt"
    precious.write_text("years of work")
    (run / runs.LOCK_FILE).unlink()
    os.link(precious, run / runs.LOCK_FILE)
    code, _, err = run_cli(capsys, "train", "--resume", run, "--epochs", "3", "--quiet", "--no-plots")
    assert code == 2
    assert_one_line_error(err, runs.LOCK_FILE, "jaxvae did not write")
    assert precious.read_text() == "years of work"


def test_a_garbled_config_is_never_set_aside_over_an_earlier_one(run, capsys):
    (run / runs.CONFIG_FILE).write_text("{garbled")
    (run / (runs.CONFIG_FILE + ".bad")).write_text("kept from last time")
    before = kept(run)
    code, _, err = run_cli(capsys, "train", "--resume", run, "--epochs", "3", "--quiet", "--no-plots")
    assert code == 2
    assert_one_line_error(err, runs.CONFIG_FILE + ".bad", "exists")
    assert kept(run) == before


# --------------------------------------------------------------------------- 3. the lock holds a path


def test_a_locked_directory_moved_away_is_never_written_at_its_old_path(tmp_path):
    old, moved = tmp_path / "run", tmp_path / "moved"
    old.mkdir()
    with runs.RunLock(old, "test"):
        old.rename(moved)
        old.mkdir()  # a new directory at the old path, where another writer may work now
        with pytest.raises(OSError, match="moved or replaced") as caught:
            runs.write_metrics(old, [])
        assert caught.value.filename == str(old)
    assert list(old.iterdir()) == []


def test_training_stops_in_one_line_when_its_directory_is_moved(tmp_path, capsys, monkeypatch):
    run, moved = tmp_path / "run", tmp_path / "moved"
    original = saver_module.RunSaver.__call__

    def move_after_the_first_epoch(self, state, records):
        original(self, state, records)
        if self.writer is not None:
            self.writer.wait()
        if not moved.exists():
            run.rename(moved)
            run.mkdir()

    monkeypatch.setattr(saver_module.RunSaver, "__call__", move_after_the_first_epoch)
    code, _, err = run_cli(capsys, "train", *TINY, "--epochs", "3", "--out", run)
    assert code == 2
    assert_one_line_error(err, str(run), "moved or replaced")
    assert list(run.iterdir()) == []  # the new directory at the old path is left alone
    assert load_checkpoint(moved / runs.CHECKPOINT_FILE)[0].epoch == 1  # the saved epoch went with the directory


# --------------------------------------------------------------------------- 4. the last epoch


def test_resume_repairs_metrics_a_kill_left_one_epoch_short_and_removes_dead_temporaries(run, capsys):
    lines = (run / runs.METRICS_FILE).read_text().splitlines(keepends=True)
    (run / runs.METRICS_FILE).write_text(lines[0])  # what a kill between the checkpoint and the metrics leaves
    dead = run / ".metrics.jsonl.tmp-999999999-abc"  # a killed writer's (no such pid)
    live = run / ".evaluate.json.tmp-1-abc"  # a running writer's (pid 1 always runs)
    dead.write_text("half")
    live.write_text("half")
    code, out, err = run_cli(capsys, "train", "--resume", run, "--epochs", "2", "--quiet", "--no-plots")
    assert code == 0, err
    assert "nothing to do" in out and "rewritten" in err
    assert (run / runs.METRICS_FILE).read_text().splitlines(keepends=True) == lines
    assert not dead.exists() and live.exists()


@pytest.mark.slow  # trains a sweep; the lone run's repair is in the fast tier
def test_a_sweep_resume_repairs_each_models_metrics(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    assert run_cli(capsys, "sweep", *TINY, "--seeds", "2", "--epochs", "2", "--out", sweep)[0] == 0
    model = sorted(p for p in sweep.iterdir() if (p / runs.CONFIG_FILE).is_file())[1]
    lines = (model / runs.METRICS_FILE).read_text().splitlines(keepends=True)
    (model / runs.METRICS_FILE).write_text(lines[0])
    code, out, err = run_cli(capsys, "sweep", "--resume", sweep, "--epochs", "2", "--quiet", "--no-plots")
    assert code == 0 and "nothing to do" in out, err
    assert (model / runs.METRICS_FILE).read_text().splitlines(keepends=True) == lines


# --------------------------------------------------------------------------- 5. trusting a checkpoint


def resave(run: Path, change_state=None, change_record=None) -> None:
    """Save the run's checkpoint again with its state or its run record changed (a valid checksum)."""
    info = runs.read_run_config(run)
    state = load_checkpoint(run / runs.CHECKPOINT_FILE)[0]
    record = runs.checkpoint_record(info)
    save_checkpoint(run / runs.CHECKPOINT_FILE, change_state(state) if change_state else state, info.vae_config,
                    info.train_config, run=change_record(record) if change_record else record)


def with_params(state, fn):
    return dataclasses.replace(state, train_state=state.train_state._replace(params=jax.tree.map(fn, state.train_state.params)))


@pytest.mark.parametrize("change, expected", [
    ({"change_record": lambda r: {**r, "dataset": "mnist-subset"}}, "'mnist-subset' in the checkpoint, 'digits' in the run"),
    ({"change_record": lambda r: {**r, "data_fingerprints": {"train": {"sha256": "0" * 64}}}}, "in the checkpoint"),
    ({"change_state": lambda s: with_params(s, lambda p: p.at[(0,) * p.ndim].set(jnp.nan))}, "nan or inf"),
    ({"change_state": lambda s: with_params(s, lambda p: p.astype(jnp.float16))}, "float16"),
], ids=["dataset", "fingerprints", "nan", "float16"])
def test_a_checkpoint_of_other_data_or_with_bad_weights_is_refused(run, capsys, change, expected):
    resave(run, **change)
    before = kept(run)
    for argv in (["evaluate", run, "--no-download"], ["train", "--resume", run, "--epochs", "3", "--quiet"]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2, err
        assert_one_line_error(err, str(run / runs.CHECKPOINT_FILE), expected)
    assert kept(run) == before
