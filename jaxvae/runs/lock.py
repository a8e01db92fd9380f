"""One writer per run directory: ``RunLock``."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Callable

from jaxvae.fileio import hold_directory, read_regular_text, release_directory, write_owned_text
from jaxvae.runs.format import LOCK_FILE, RunError
from jaxvae.runs.ownership import adopt_legacy

try:
    import fcntl
except ImportError:  # Windows: no advisory locks (see RunLock)
    fcntl = None


class RunBusyError(RunError):
    """Another process holds the run directory's lock; the message names it."""


def _holder_text(path: Path) -> str:
    """Who holds the lock, from what it wrote to ``path`` (it may be writing it this instant)."""
    for _ in range(20):
        try:
            holder = json.loads(read_regular_text(path))  # a FIFO or device there is refused, never waited on
            return (f"pid {holder['pid']} on {holder['host']}, since {holder['started']}: "
                    f"{holder['command']}")
        except OSError:
            break
        except (ValueError, KeyError, TypeError, RecursionError):
            time.sleep(0.05)
    return "a process that has not said who it is"


class RunLock:
    """One writer per run directory: an exclusive advisory lock (``fcntl.flock``) on the directory
    itself, held from ``acquire`` to ``release``. The OS drops it when the process ends in any way
    (SIGKILL too), so nothing is left to clean up. Locking the directory rather than a file in it
    means that deleting or replacing a file cannot let a second writer in. ``RUN_DIR/.lock`` records
    the holder (pid, host, start time, command) for the refusal, ``RunBusyError``; it is written like
    every file of the run (``fileio.write_owned``): replaced whole, never truncated in place (a hard
    link's other name keeps its content), and only over a ``.lock`` that jaxvae wrote.

    The lock holds a path, too: once locked, the path must name the directory locked, and every
    write under it checks that it still does (``fileio.hold_directory``), so a run whose directory
    is moved, and a new one made at its path, stops before writing rather than sharing the path.

    Where ``fcntl`` does not exist (Windows) nothing is locked: ``locked`` stays False, and callers
    should say so. Readers (evaluate, plot, export) take no lock; atomic writes keep their view whole.

    Args:
        run_dir: The run directory to lock.
        command: What the holder is doing, recorded in ``.lock``; None for this process's command line.

    Attributes:
        run_dir: ``run_dir`` as a ``Path``.
        command: The command recorded.
        locked: Whether the lock is held (always False where ``fcntl`` does not exist).
    """

    def __init__(self, run_dir: str | os.PathLike, command: str | None = None):
        self.run_dir = Path(run_dir)
        self.command = command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
        self.locked = False
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        """Take the lock, hold the directory's path, adopt the files of a run of jaxvae 0.3 or earlier
        and record the holder in ``.lock``. Nothing happens where ``fcntl`` does not exist or the lock is
        already held.

        Returns:
            This lock.

        Raises:
            RunBusyError: Another process holds the lock; the message names it.
            RunError: ``run_dir`` was moved or replaced while it was being locked.
            NotOwnedError: ``.lock`` holds a file that jaxvae did not write.
            OSError: ``run_dir`` cannot be opened as a directory (a symbolic link is refused), or ``.lock``
                cannot be written.
        """
        if fcntl is None or self._fd is not None:
            return self
        fd = os.open(self.run_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunBusyError(f"{self.run_dir} is being written by another jaxvae "
                                   f"({_holder_text(self.run_dir / LOCK_FILE)}); wait for it to finish or stop it "
                                   "(Ctrl-C saves its checkpoint), then try again", run_dir=self.run_dir) from None
            raise
        try:
            self._check_path(fd)
            hold_directory(self.run_dir, fd)
            adopt_legacy(self.run_dir)  # a run of jaxvae 0.3 or earlier: its files, .lock included, are its own
            holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                      "started": time.strftime("%Y-%m-%d %H:%M:%S")}
            self._write_holder(json.dumps(holder) + "\n")
        except BaseException:
            release_directory(self.run_dir)
            os.close(fd)  # closing releases the lock
            raise
        self._fd, self.locked = fd, True
        return self

    def _check_path(self, fd: int) -> None:
        """RunError unless ``run_dir`` still names the directory open as ``fd`` (it may have moved meanwhile)."""
        held, now = os.fstat(fd), os.lstat(self.run_dir)
        if (held.st_dev, held.st_ino) != (now.st_dev, now.st_ino):
            raise RunError(f"{self.run_dir} was moved or replaced while jaxvae locked it; nothing was written: "
                           "try again", run_dir=self.run_dir)

    def _write_holder(self, text: str) -> None:
        write_owned_text(self.run_dir / LOCK_FILE, text)

    def release(self) -> None:
        """Empty ``.lock`` (where it can still be written) and release the lock; nothing happens when
        it is not held."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self._write_holder("")  # nobody holds it now (not where the directory no longer is: check_held)
        release_directory(self.run_dir)
        os.close(self._fd)  # closing releases the lock
        self._fd, self.locked = None, False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def hold_lock(stack: contextlib.ExitStack, run_dir: str | os.PathLike, holder: str | None = None,
              log: Callable[[str], None] | None = None) -> RunLock:
    """``RunLock(run_dir, holder)``, held until ``stack`` closes.

    Args:
        stack: The stack that releases the lock when it closes.
        run_dir: The run directory.
        holder: What the holder is doing (``RunLock``'s ``command``); None for this process's command line.
        log: Told when this platform has no advisory file locks (the directory is then not locked); None
            for silence.

    Returns:
        The lock, acquired.

    Raises:
        RunBusyError: Another process holds the lock.
        RunError: ``run_dir`` was moved or replaced while it was being locked.
        OSError: ``run_dir`` cannot be opened as a directory, or ``.lock`` cannot be written.
    """
    lock = stack.enter_context(RunLock(run_dir, holder))
    if not lock.locked and log:
        log(f"jaxvae: note: this platform has no advisory file locks; make sure no other jaxvae writes {run_dir}")
    return lock
