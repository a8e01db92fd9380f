"""Which files of a run or sweep directory are jaxvae's: those whose content its directory's record
(``fileio.OWNERSHIP_FILE``) lists. Directories of jaxvae 0.3 and earlier kept no record: the first
command of this jaxvae there adopts what their run accounts for (``adopt_legacy``) and nothing else.

``config.json`` is judged by its content instead: every command reads and validates it in full
before anything else, a valid one is the run's (``claim_config``: a config.json copied from another
run, or re-indented by hand, is still that run's config), and an invalid one is set aside (renamed
to ``config.json.bad``) or refused, never written over."""
from __future__ import annotations

import json
import os
from pathlib import Path

from jaxvae.fileio import OWNERSHIP_FILE, FrameError, has_record, owns, read_regular, record, temp_of, unframe
from jaxvae.layout import CHECKPOINT_FILE, CONFIG_FILE, EVALUATE_FILE, EXPORT_FILE, FIGURES_DIR, LOCK_FILE
from jaxvae.layout import METRICS_FILE, SWEEP_FILE
from jaxvae.parallel import WRITER

# The files jaxvae writes at the top of a run or sweep directory, and its folders of files it writes
# ("summary": a sweep's, jaxvae.sweep.SUMMARY_DIR). Set-aside ".bad" files are renamed, never written.
OWNED_FILES = (CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE, EVALUATE_FILE, LOCK_FILE, EXPORT_FILE, SWEEP_FILE)
OWNED_FOLDERS = (FIGURES_DIR, "summary")
_PNG = b"\x89PNG\r\n\x1a\n"
_ZIP = b"PK\x03\x04"  # torch.save's archive: an export


def owned_paths(directory: str | os.PathLike) -> list[Path]:
    """The paths in ``directory`` where jaxvae writes files: its names at the top, every entry of its folders.

    Args:
        directory: A run or sweep directory.

    Returns:
        The paths of ``OWNED_FILES`` (whether or not they exist), then every entry of the ``OWNED_FOLDERS``
        that are folders (not links), their record and temporary files aside.
    """
    directory = Path(directory)
    folders = [directory / name for name in OWNED_FOLDERS if (directory / name).is_dir()
               and not (directory / name).is_symlink()]
    inside = [entry for folder in folders for entry in sorted(folder.iterdir())
              if entry.name != OWNERSHIP_FILE and not temp_of(entry.name)]
    return [directory / name for name in OWNED_FILES] + inside


def unowned(directory: str | os.PathLike) -> list[Path]:
    """What sits at one of jaxvae's paths in ``directory`` and is not jaxvae's: a content it did not write,
    or anything other than a regular file (a FIFO, a device, a link, a folder where a file goes).
    config.json is judged by its validity (see the module's note).

    Args:
        directory: A run or sweep directory.

    Returns:
        The paths, in ``owned_paths``' order; config.json is never among them.
    """
    found = []
    for path in owned_paths(directory):
        if not os.path.lexists(path) or path == Path(directory) / CONFIG_FILE:
            continue
        try:
            if not owns(path):
                found.append(path)
        except OSError:  # not a regular file, or unreadable: not one jaxvae wrote either
            found.append(path)
    return found


def claim_config(run_dir: str | os.PathLike) -> None:
    """Record a valid run config at ``run_dir/config.json`` as jaxvae's (see the module's note), so that
    the run's next config may replace it; anything else there stays unrecorded, and refused.

    Args:
        run_dir: The run directory.

    Raises:
        OSError: The record cannot be written; the message names it.
    """
    path = Path(run_dir) / CONFIG_FILE
    data = _read(path) if path.is_file() and not path.is_symlink() else None
    if data is not None and _is_run_config(data) and not owns(path):
        record(path, data)


def _json(data: bytes):
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        return None


def _is_run_config(data: bytes) -> bool:
    from jaxvae.runs.format import info_from_record  # deferred: format imports what needs this module's names

    try:
        info_from_record(_json(data))
        return True
    except (ValueError, KeyError, TypeError, AttributeError):
        return False


def _is_checkpoint(data: bytes) -> bool:
    from jaxvae.checkpoint import MAGIC

    try:
        unframe(MAGIC, data)
        return True
    except FrameError:
        return False


def _is_metrics(data: bytes, epochs: int) -> bool:
    """One record per epoch, 1 to at most ``epochs`` (the checkpoint's): what that run wrote."""
    records = [_json(line) for line in data.splitlines() if line.strip()]
    return all(isinstance(r, dict) and r.get("epoch") == i for i, r in enumerate(records, start=1)) \
        and len(records) <= epochs


def _is_json_with(data: bytes, *keys: str) -> bool:
    value = _json(data)
    return isinstance(value, dict) and any(key in value for key in keys)


def _checkpoint_epochs(directory: Path) -> int:
    """The epochs a legacy run's checkpoint holds (0 without a readable one)."""
    from jaxvae.checkpoint import CheckpointError, read_history

    try:
        return len(read_history(directory / CHECKPOINT_FILE))
    except CheckpointError:
        return 0


def _legacy_checks(directory: Path) -> dict:
    """Per name, what a file of jaxvae 0.3 or earlier at that name held."""
    epochs = _checkpoint_epochs(directory)
    return {
        CONFIG_FILE: _is_run_config,
        CHECKPOINT_FILE: _is_checkpoint,
        METRICS_FILE: lambda data: _is_metrics(data, epochs),
        EVALUATE_FILE: lambda data: _is_json_with(data, "evaluations", "split"),
        LOCK_FILE: lambda data: not data.strip() or _is_json_with(data, "pid"),
        EXPORT_FILE: lambda data: data.startswith(_ZIP),
        SWEEP_FILE: lambda data: _is_json_with(data, "grid"),
    }


def _read(path: Path) -> bytes | None:
    try:
        return read_regular(path)
    except OSError:
        return None


def adopt_legacy(directory: str | os.PathLike) -> list[Path]:
    """Record as jaxvae's the files of a directory jaxvae 0.3 or earlier wrote, which kept no record: only
    where a valid config.json, checkpoint or sweep.json shows a run or sweep of jaxvae's, and only files
    that run accounts for (its metrics no longer than its checkpoint's history, JSON of jaxvae's shape,
    PNGs in its figure folders). Nothing happens where a record exists, nor in a process other than
    the writer.

    Args:
        directory: A run or sweep directory.

    Returns:
        The paths adopted.

    Raises:
        OSError: The record cannot be written; the message names it.
    """
    directory = Path(directory)
    if not WRITER.active or not directory.is_dir() or directory.is_symlink() or has_record(directory):
        return []
    checks = _legacy_checks(directory)
    contents = {path: _read(path) for path in owned_paths(directory) if path.is_file() and not path.is_symlink()}
    marks = {CONFIG_FILE: _is_run_config, CHECKPOINT_FILE: _is_checkpoint, SWEEP_FILE: checks[SWEEP_FILE]}
    if not any(directory / name in contents and contents[directory / name] is not None
               and is_valid(contents[directory / name]) for name, is_valid in marks.items()):
        return []  # not a jaxvae directory: nothing there is jaxvae's
    adopted = []
    for path, data in contents.items():
        in_folder = path.parent != directory
        valid = data is not None and (
            (data.startswith(_PNG) or _is_json_with(data, "settings", "models")) if in_folder
            else checks[path.name](data))
        if valid:
            record(path, data)
            adopted.append(path)
    return adopted
