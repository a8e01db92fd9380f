"""Where a command writes: the default run directory, the --out checks, the locks, and the command
that a library ``RunError``'s remedy stands for."""
from __future__ import annotations

import contextlib
import os
import shlex
import time
from pathlib import Path

from jaxvae.cli.console import warn
from jaxvae.cli.flags import PROG, UsageError
from jaxvae.layout import CHECKPOINT_FILE, CONFIG_FILE
from jaxvae.runs import RunError, check_new_run_dir, hold_lock


def default_run_dir(dataset_name: str, prefix: str = "") -> Path:
    """``runs/<prefix><dataset>-<YYYYmmdd-HHMMSS>`` named after the data actually used (the fallback's
    too), with ``-2``, ``-3``, ... when that directory exists (two runs started within one second).

    Args:
        dataset_name: The name of the data used.
        prefix: Put before the name ("sweep-", say).

    Returns:
        The path, relative to the working directory; not created.
    """
    stem = Path("runs") / f"{prefix}{dataset_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, n = stem, 1
    while out.exists():
        n += 1
        out = stem.with_name(f"{stem.name}-{n}")
    return out


def check_out_dir(out: Path) -> bool:
    """``runs.check_new_run_dir`` for ``--out``: whether a run that never trained is there to restart.

    Args:
        out: The --out directory.

    Returns:
        True when it holds a run that never saved a trained epoch, which the new run replaces.

    Raises:
        UsageError: A new run may not start there; the message says why and the command that fixes it.
    """
    try:
        return check_new_run_dir(out)
    except RunError as e:
        raise UsageError(f"--out {e}{remedy_text(e)}") from None


def lock_run(run_dir: Path, command_line: str | None, stack: contextlib.ExitStack) -> None:
    """Hold the run directory's lock until ``stack`` closes (the end of the command).

    Args:
        run_dir: The run directory.
        command_line: What a second writer's refusal names; None for this process's command line.
        stack: The stack that releases the lock when it closes.

    Raises:
        RunBusyError: Another process holds the lock.
        RunError: ``run_dir`` was moved or replaced while it was being locked.
        OSError: ``run_dir`` cannot be opened as a directory, or its ``.lock`` cannot be written.
    """
    hold_lock(stack, run_dir, command_line, warn)


def resume_command(command: str, root: str | os.PathLike) -> str:
    """The command line that continues the run or sweep in ``root``: ``jaxvae train|sweep --resume ROOT``.

    Args:
        command: "train" or "sweep".
        root: The run or sweep directory.

    Returns:
        The command line, ``root`` shell-quoted.
    """
    return f"{PROG} {command} --resume {shlex.quote(str(root))}"


def remedy_text(error: RunError, resume: str | None = None) -> str:
    """The command that fixes ``error``, as ``; <what to do>: <command>``, or "" when none applies.

    Args:
        error: The error, whose ``remedy`` and ``run_dir`` are used.
        resume: The command that continues the run; None for ``jaxvae train --resume RUN_DIR``.

    Returns:
        The text to append to the error's message, or "" when it has no remedy or no run directory.
    """
    if error.remedy is None or error.run_dir is None:
        return ""
    where = shlex.quote(str(error.run_dir))
    resume = resume or resume_command("train", error.run_dir)
    checkpoint, config = error.run_dir / CHECKPOINT_FILE, error.run_dir / CONFIG_FILE
    return {
        "resume": f"; continue it with '{resume}' or choose another directory",
        "resume_sweep": f"; continue a sweep with '{resume_command('sweep', error.run_dir)}' or choose another --out",
        "start": f"; start a run there with: {PROG} train --out {where}",
        "rebuild_config": f"; rebuild {CONFIG_FILE} from it with: {resume} --dataset NAME (the data it was trained on)",
        "rebuild_config_from_checkpoint": (f"; rebuild {CONFIG_FILE} from it (and train on, if the run has "
                                           f"epochs left) with: {resume}"),
        "set_aside_checkpoint": (f"; to start this run again from scratch (keeping that file): mv "
                                 f"{shlex.quote(str(checkpoint))} {shlex.quote(str(checkpoint) + '.bad')} && {resume}"),
        "set_aside_config": (f"; to start a new run there (keeping that file): mv {shlex.quote(str(config))} "
                             f"{shlex.quote(str(config) + '.bad')} && {PROG} train --out {where}"),
        "data_dir": "; pass --data-dir with the run's data",
    }.get(error.remedy, "")
