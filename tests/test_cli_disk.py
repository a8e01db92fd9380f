"""A read-only or full disk is one line naming the file, exit 2, and never costs the last good
checkpoint (issue 12).

Tests run as root here, where chmod does not stop a write, and mounting a read-only file system
needs privileges; so the file system's answers are simulated at the lowest Python level jaxvae
calls: ``os.open``/``os.mkdir`` raise EROFS under a chosen directory, and the file object that
``fileio`` writes through raises ENOSPC halfway through a chosen file, as a full disk does.
"""
import errno
import os
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest
from cli_helpers import TINY, assert_one_line_error, run_cli

from jaxvae.checkpoint import load_checkpoint
from jaxvae.fileio import OWNERSHIP_FILE
from jaxvae.runs import CHECKPOINT_FILE, CONFIG_FILE, EVALUATE_FILE, read_metrics

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _under(path, root: Path) -> bool:
    return Path(os.path.abspath(path)).is_relative_to(root)


@pytest.fixture
def read_only(monkeypatch):
    """``read_only(root)``: from now on, creating or writing anything under ``root`` fails with EROFS."""
    real_open, real_mkdir = os.open, os.mkdir
    roots = []

    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    def fake_open(path, flags, *args, **kwargs):
        if flags & WRITE_FLAGS and any(_under(path, r) for r in roots):
            refuse(path)
        return real_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if any(_under(path, r) for r in roots):
            refuse(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    return lambda root: roots.append(Path(os.path.abspath(root)))


class _FullDiskFile:
    """A file object whose write stores half the bytes, then fails as a full disk does."""

    def __init__(self, fh):
        self._fh = fh

    def write(self, data):
        self._fh.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(name, after=n)``: the disk fills up once ``n`` files called ``name`` were written."""
    real_mkstemp, real_fdopen = tempfile.mkstemp, os.fdopen
    temp_names, rule = {}, {}

    def mkstemp(*args, **kwargs):
        fd, path = real_mkstemp(*args, **kwargs)
        temp_names[fd] = Path(path).name
        return fd, path

    def fdopen(fd, *args, **kwargs):
        fh = real_fdopen(fd, *args, **kwargs)
        name = temp_names.pop(fd, "")
        if rule and name.startswith(f".{rule['name']}.tmp-"):
            rule["seen"] += 1
            if rule["seen"] > rule["after"]:
                return _FullDiskFile(fh)
        return fh

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(os, "fdopen", fdopen)
    return lambda name, after=0: rule.update(name=name, after=after, seen=0)


def test_a_read_only_out_directory(tmp_path, capsys, read_only):
    read_only(tmp_path)
    for out in (tmp_path / "new-run", tmp_path):  # a directory to make, and one that exists
        code, _, err = run_cli(capsys, "train", *TINY, "--epochs", "1", "--out", out)
        assert code == 2
        assert_one_line_error(err, f"--out {out}", "Read-only file system")
    assert list(tmp_path.iterdir()) == []


def test_resume_on_a_read_only_run_keeps_it_whole(tmp_path, capsys, read_only):
    run = tmp_path / "run"
    assert run_cli(capsys, "train", *TINY, "--epochs", "1", "--out", run)[0] == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    read_only(run)
    code, _, err = run_cli(capsys, "train", "--resume", run, "--epochs", "2", "--quiet", "--no-plots")
    assert code == 2
    assert_one_line_error(err, str(run), "Read-only file system")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_a_full_disk_while_saving_an_epoch_keeps_the_last_good_checkpoint(tmp_path, capsys, full_disk):
    straight, run = tmp_path / "straight", tmp_path / "run"
    assert run_cli(capsys, "train", *TINY, "--epochs", "3", "--out", straight)[0] == 0
    full_disk(CHECKPOINT_FILE, after=1)  # epoch 1 is saved, epoch 2's save finds the disk full
    code, out, err = run_cli(capsys, "train", *TINY, "--epochs", "3", "--out", run)
    assert code == 2
    assert_one_line_error(err, str(run / CHECKPOINT_FILE), "No space left on device",
                          "last good checkpoint (epoch 1) is unchanged", f"jaxvae train --resume {run}")
    # Saves run on a background thread while the next epoch trains: epoch 2's failed save surfaces
    # when epoch 3 hands over its own, so the run stops there, before epoch 3's line.
    assert "epoch   2/3" in out and "epoch   3/3" not in out
    assert load_checkpoint(run / CHECKPOINT_FILE)[0].epoch == 1
    assert [r["epoch"] for r in read_metrics(run)] == [1]
    assert sorted(p.name for p in run.iterdir()) == [OWNERSHIP_FILE, ".lock", CHECKPOINT_FILE, CONFIG_FILE, "metrics.jsonl"]
    full_disk(CHECKPOINT_FILE, after=10**6)  # space again: the command the message names finishes the run
    code, _, err = run_cli(capsys, "train", "--resume", run, "--quiet", "--no-plots")
    assert code == 0, err
    a, b = (load_checkpoint(r / CHECKPOINT_FILE)[0] for r in (straight, run))
    assert a.epoch == b.epoch == 3
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)))


def test_a_full_disk_when_evaluate_writes_its_result(tmp_path, capsys, full_disk):
    run = tmp_path / "run"
    assert run_cli(capsys, "train", *TINY, "--epochs", "1", "--out", run)[0] == 0
    full_disk(EVALUATE_FILE)
    code, out, err = run_cli(capsys, "evaluate", run, "--no-download")
    assert code == 2
    assert "loss" in out  # the numbers were shown before the write failed
    assert_one_line_error(err, str(run / EVALUATE_FILE), "No space left on device")
    assert not list(run.glob(f"*{EVALUATE_FILE}*"))


def test_resume_on_a_full_disk_names_the_file_it_could_not_write(tmp_path, capsys, full_disk):
    run = tmp_path / "run"
    assert run_cli(capsys, "train", *TINY, "--epochs", "1", "--out", run)[0] == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != OWNERSHIP_FILE}
    for name in (".lock", CONFIG_FILE):  # taking the lock, and recording the data used from now on
        full_disk(name)
        code, _, err = run_cli(capsys, "train", "--resume", run, "--epochs", "2", "--quiet", "--no-plots")
        assert code == 2
        assert_one_line_error(err, str(run / name), "No space left on device")
        assert {p.name: p.read_bytes() for p in run.iterdir()
                if p.is_file() and p.name not in (OWNERSHIP_FILE, ".lock")} == {k: v for k, v in before.items()
                                                                                if k != ".lock"}
