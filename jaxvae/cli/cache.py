"""JAX's persistent compilation cache, on by default for every command."""
from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

from jaxvae.cli.console import warn
from jaxvae.fileio import user_cache_dir

NO_COMPILE_CACHE_ENV = "JAXVAE_NO_COMPILE_CACHE"
COMPILE_CACHE_MAX_BYTES = 256 << 20  # least recently used entries go first; one model's programs take ~1 MB


def compile_cache_dir() -> Path | None:
    """Where jaxvae keeps JAX's persistent compilation cache: ``user_cache_dir()/jax-cache``, or None
    when ``$JAXVAE_NO_COMPILE_CACHE`` is set (to anything but "" or "0").

    Returns:
        The directory (not created here), or None.
    """
    if os.environ.get(NO_COMPILE_CACHE_ENV, "") not in ("", "0"):
        return None
    return user_cache_dir() / "jax-cache"


def enable_compile_cache() -> Path | None:
    """Turn on JAX's persistent compilation cache (before anything is compiled): a second start of the
    same configuration loads its compiled epoch. A directory the user gave JAX
    (``JAX_COMPILATION_CACHE_DIR``) is kept. A cache entry that cannot be read is reported once per
    directory, not once per entry.

    Returns:
        The directory in use, or None (off, or not creatable).
    """
    import jax

    if jax.config.jax_compilation_cache_dir:
        return _report_bad_entries_once(Path(jax.config.jax_compilation_cache_dir))
    directory = compile_cache_dir()
    if directory is None:
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(directory))
    # Every program, however small or quick to compile: JAX's defaults (1 s of compile time) would
    # leave out the validation epoch and the dozens of small programs that building the state runs.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    if importlib.util.find_spec("filelock") is not None:  # a dependency; JAX refuses a size limit without it
        jax.config.update("jax_compilation_cache_max_size", COMPILE_CACHE_MAX_BYTES)
    return _report_bad_entries_once(directory)


_BAD_ENTRY = "persistent compilation cache entry"  # in JAX's warning about an unreadable entry
_noted: set[Path] = set()  # cache directories whose bad entries this process has reported


def _report_bad_entries_once(directory: Path) -> Path:
    """Turn JAX's warning per unreadable cache entry (a damaged or foreign file; dozens for a damaged
    cache) into one note per directory and process; every other warning is shown as before."""
    show = warnings.showwarning
    if getattr(show, "jaxvae_cache_notes", False):  # installed by an earlier command of this process
        show.directory = directory
        return directory

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if _BAD_ENTRY not in str(message):
            return show(message, category, filename, lineno, file, line)
        if showwarning.directory not in _noted:
            _noted.add(showwarning.directory)
            warn(f"jaxvae: note: the compilation cache {showwarning.directory} has entries that cannot be read or "
                 "written; their programs are compiled again (delete the directory to clear it)")

    showwarning.jaxvae_cache_notes, showwarning.directory = True, directory
    warnings.showwarning = showwarning
    return directory
