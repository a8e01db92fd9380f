"""fileio.BackgroundWriter: writes in order on another thread, and failures are never silent.
fileio.write_owned: a file jaxvae owns stays its own, whatever point of a save a kill interrupts."""
import os
import threading

import pytest

from jaxvae import fileio
from jaxvae.fileio import BackgroundWriter, atomic_write_bytes


def test_writes_run_in_the_order_given_on_another_thread():
    done, threads = [], set()

    def write(i):
        threads.add(threading.get_ident())
        done.append(i)

    with BackgroundWriter(max_pending=2) as writer:
        for i in range(20):
            writer.submit(write, i)
    assert done == list(range(20))  # leaving the block waited for all of them
    assert threading.get_ident() not in threads and len(threads) == 1


def test_a_failed_write_raises_from_the_next_submit_and_from_wait():
    def fail():
        raise OSError(28, "No space left on device")

    with BackgroundWriter(max_pending=1) as writer:  # one pending: the next submit waits for it
        writer.submit(fail)
        with pytest.raises(OSError, match="No space left"):
            writer.submit(lambda: None)
        writer.submit(fail)
        with pytest.raises(OSError, match="No space left"):
            writer.wait()


def test_leaving_the_block_with_an_exception_still_waits_for_queued_writes():
    release, done = threading.Event(), []

    def slow_write():
        release.wait(5)
        done.append(True)

    with pytest.raises(KeyboardInterrupt), BackgroundWriter() as writer:
        writer.submit(slow_write)
        threading.Timer(0.2, release.set).start()
        raise KeyboardInterrupt
    assert done == [True]


class Killed(BaseException):
    """Stands for a SIGKILL at one point of a save (what the writer's own cleanup would skip is undone by hand)."""


@pytest.mark.parametrize("point", ["record", "mkstemp", "fsync", "replace", "fsync_dir"])
def test_a_save_killed_at_any_point_leaves_a_file_its_record_accounts_for(tmp_path, monkeypatch, point):
    path = tmp_path / "metrics.jsonl"
    fileio.write_owned(path, b"old\n")
    targets = {"record": (fileio, "record"), "mkstemp": (fileio.tempfile, "mkstemp"), "fsync": (os, "fsync"),
               "replace": (os, "replace"), "fsync_dir": (fileio, "_fsync_dir")}
    module, name = targets[point]

    def kill(*args, **kwargs):
        raise Killed

    with monkeypatch.context() as patched:
        patched.setattr(module, name, kill)
        with pytest.raises(Killed):
            fileio.write_owned(path, b"new\n")
    (tmp_path / ".metrics.jsonl.tmp-999999999-x").write_bytes(b"ne")  # a killed writer's half temporary
    assert path.read_bytes() in (b"old\n", b"new\n") and fileio.owns(path)
    fileio.write_owned(path, b"newer\n")  # the next save goes on, and clears the dead writer's temporary
    assert path.read_bytes() == b"newer\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [fileio.OWNERSHIP_FILE, "metrics.jsonl"]


def test_write_owned_refuses_anothers_file_and_anything_but_a_regular_file(tmp_path):
    theirs, fifo = tmp_path / "evaluate.json", tmp_path / "metrics.jsonl"
    theirs.write_bytes(b"{}")
    os.mkfifo(fifo)
    with pytest.raises(fileio.NotOwnedError, match="did not write"):
        fileio.write_owned(theirs, b"[]")
    with pytest.raises(OSError, match="FIFO"):
        fileio.write_owned(fifo, b"")
    assert theirs.read_bytes() == b"{}" and fifo.is_fifo()


def test_a_long_file_name_is_written_through_a_temporary_that_fits(tmp_path):
    # 253 characters is a legal name; its temporary, ".NAME.tmp-PID-XXXXXXXX", would not be
    path = tmp_path / ("m" * 250 + ".pt")
    atomic_write_bytes(path, b"first")
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second" and [p.name for p in tmp_path.iterdir()] == [path.name]
    dead = tmp_path / f"{fileio._tmp_prefix(path)}999999999-abcdefgh"  # a killed writer's temporary
    dead.write_bytes(b"half")
    assert len(dead.name.encode()) < 255
    atomic_write_bytes(path, b"third")
    assert not dead.exists() and path.read_bytes() == b"third"
