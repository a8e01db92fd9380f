"""One writer per run directory (issue 12): a second writer is refused naming the first, and the
first's epochs survive. Two real processes race for the same directory."""
import json
import os
import signal
import socket
import subprocess

import pytest
from cli_helpers import PYTHON, TINY, assert_one_line_error, run_cli, subprocess_env

from jaxvae import runs
from jaxvae.checkpoint import load_checkpoint
from jaxvae.runs import CHECKPOINT_FILE, LOCK_FILE, RunBusyError, RunLock, read_metrics


def test_a_second_lock_is_refused_naming_the_holder(tmp_path):
    with RunLock(tmp_path, "jaxvae train --out here") as first:
        assert first.locked
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["command"] == "jaxvae train --out here"
        with pytest.raises(RunBusyError) as refused:  # a second open file description: as another process
            RunLock(tmp_path, "jaxvae train --resume here").acquire()
        message = str(refused.value)
        assert f"pid {os.getpid()} on {socket.gethostname()}" in message and "jaxvae train --out here" in message
        assert "\n" not in message
    with RunLock(tmp_path) as again:  # released: free for the next writer
        assert again.locked


def test_deleting_or_replacing_the_lock_file_lets_no_second_writer_in(tmp_path):
    """The lock is on the directory itself: the .lock file only says who holds it."""
    with RunLock(tmp_path, "jaxvae train --out here"):
        (tmp_path / LOCK_FILE).unlink()
        with pytest.raises(RunBusyError):
            RunLock(tmp_path, "jaxvae train --resume here").acquire()
        (tmp_path / LOCK_FILE).write_text("{}")  # a file of someone else's in its place
        with pytest.raises(RunBusyError):
            RunLock(tmp_path, "jaxvae train --resume here").acquire()


def test_a_lock_file_of_deeply_nested_json_still_gives_the_refusal(tmp_path):
    with RunLock(tmp_path, "jaxvae train --out here"):
        (tmp_path / LOCK_FILE).write_text("[" * 100_000)  # json.loads: RecursionError
        with pytest.raises(RunBusyError, match="another jaxvae \\(a process that has not said who it is\\)"):
            RunLock(tmp_path, "jaxvae train --resume here").acquire()


def test_a_symlink_in_place_of_the_lock_file_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("not jaxvae's")
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).symlink_to(victim)
    with pytest.raises(OSError):
        RunLock(run, "jaxvae train --out run").acquire()
    assert victim.read_text() == "not jaxvae's"
    plain = tmp_path / "plain"
    plain.mkdir()
    with RunLock(plain) as lock:  # a directory without the link locks as usual
        assert lock.locked


def test_the_lock_file_of_a_dead_process_blocks_nobody(tmp_path):
    child = subprocess.run([PYTHON, "-c", "import sys; from jaxvae.runs import RunLock; "
                            "RunLock(sys.argv[1], 'jaxvae train --out x').acquire(); import os; os._exit(9)",
                            str(tmp_path)], env=subprocess_env(), timeout=120)
    assert child.returncode == 9
    assert json.loads((tmp_path / LOCK_FILE).read_text())["command"] == "jaxvae train --out x"  # left behind
    with RunLock(tmp_path, "jaxvae train --resume x") as lock:
        assert lock.locked


def test_without_fcntl_the_run_trains_and_says_it_is_unlocked(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runs.lock, "fcntl", None)
    code, _, err = run_cli(capsys, "train", *TINY, "--epochs", "1", "--out", tmp_path / "run")
    assert code == 0
    assert "no advisory file locks" in err and str(tmp_path / "run") in err


@pytest.mark.slow
def test_two_processes_training_one_run_directory(tmp_path, capsys):
    """The issue's case: `--resume RUN --epochs 3` while another process trains RUN; and a new run
    into RUN while the first holds only config.json (which a new run may replace in place, unless
    someone is writing it). The second writer is refused naming the first, which trains on and keeps
    every epoch."""
    run = tmp_path / "run"
    first = subprocess.Popen([PYTHON, "-m", "jaxvae", "train", *TINY, "--epochs", "100000", "--stop-lr", "0",
                              "--out", str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=subprocess_env())
    attempts = {"data:": [*TINY, "--epochs", "3", "--out", run], "epoch": ["--resume", run, "--epochs", "3", "--quiet"]}
    refused = []
    try:
        for line in first.stdout:
            for started, argv in list(attempts.items()):
                if line.startswith(started):
                    refused.append(run_cli(capsys, "train", *argv))
                    del attempts[started]
            if not attempts:
                break
        first.send_signal(signal.SIGINT)  # the first stops after its current epoch
        _, first_err = first.communicate(timeout=120)
    finally:
        first.kill()
    assert len(refused) == 2
    for code, _, err in refused:
        assert code == 2
        assert_one_line_error(err, str(run), f"pid {first.pid}", f"jaxvae train {' '.join(TINY)}", "wait for it to finish")
    assert first.returncode == 130, first_err
    state, _, train = load_checkpoint(run / CHECKPOINT_FILE)
    assert state.epoch >= 1 and f"interrupted after epoch {state.epoch};" in first_err
    assert train.max_epochs == 100000  # the second writers changed nothing
    assert [r["epoch"] for r in read_metrics(run)] == list(range(1, state.epoch + 1))
