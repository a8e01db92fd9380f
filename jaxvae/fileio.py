"""File I/O at the bottom of the package: atomic writes, strict JSON, checksummed framing, and
where jaxvae keeps its per-user cache.

Every file jaxvae writes (checkpoints, run configs, metrics, figures, downloads, exports) goes
through ``atomic_write_bytes``: readers see the old file or the new one, never a mix, even if the
writer is killed. ``BackgroundWriter`` runs such writes on a thread while training goes on.
Standard library only, so that any module can use it.
"""
from __future__ import annotations

import collections
import contextlib
import errno
import hashlib
import json
import math
import os
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

# Temporary files are ".<final name>.tmp-<random>": hidden, and never equal to a final name, so a
# temp left by a killed writer can't be mistaken for the file itself.
_TMP_MARK = ".tmp-"


def _file_mode() -> int:
    """0o666 less the process umask: what open() would have given (mkstemp's files are 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}{_TMP_MARK}"


def temp_of(name: str) -> str | None:
    """The final name whose temporary file ``name`` is, or None when it is not one."""
    if name.startswith(".") and _TMP_MARK in name:
        return name[1:name.index(_TMP_MARK)]
    return None


def refuse_symlink(path: Path) -> None:
    """OSError naming ``path`` when it is a symbolic link: jaxvae writes only files it made itself, and
    never through or over a link (its target may be anyone's file)."""
    if path.is_symlink():
        raise OSError(errno.ELOOP, "is a symbolic link, not a file jaxvae wrote; refusing to write through or "
                      "over it (remove the link to let jaxvae write there)", str(path))


def user_cache_dir() -> Path:
    """jaxvae's per-user cache: ``$XDG_CACHE_HOME/jaxvae``, or ``~/.cache/jaxvae`` when XDG_CACHE_HOME
    is unset (downloaded MNIST, the compilation cache). Nothing is created here."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # the XDG spec says relative values are invalid and must be ignored
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "jaxvae"


def remove_stale_temps(path: str | os.PathLike) -> None:
    """Delete temporary files that a killed writer of ``path`` left behind."""
    path = Path(path)
    for entry in path.parent.glob(_tmp_prefix(path) + "*"):
        with contextlib.suppress(OSError):
            entry.unlink()


def _fsync_dir(directory: Path) -> None:
    # some platforms can't open (or fsync) a directory; the rename is still atomic there
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is always either the old file or the new one.

    Writes a temporary file in the same directory, flushes and fsyncs it, renames it over ``path``
    (atomic on POSIX and Windows) and fsyncs the directory so the rename itself survives a crash.
    A symbolic link at ``path`` is refused (``refuse_symlink``). An OSError (a full disk, no
    permission, ...) leaves ``path`` as it was, removes the temporary file and is raised naming
    ``path`` itself, not the temporary name.
    """
    path = Path(path)
    refuse_symlink(path)
    remove_stale_temps(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), dir=path.parent)
    except OSError as e:
        raise _naming(e, path) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            if hasattr(os, "fchmod"):  # not on Windows
                os.fchmod(fh.fileno(), _file_mode())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise _naming(e, path) from None
        raise
    _fsync_dir(path.parent)


def _naming(error: OSError, path: Path) -> OSError:
    """``error``'s errno and text with ``path`` as the file name (OSError picks the subclass by errno)."""
    if error.errno is None:
        return error
    return OSError(error.errno, error.strerror, str(path))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(value):
    """``value`` with non-finite floats as strings ("inf", "nan"): JSON has no inf/nan."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(path: str | os.PathLike, obj) -> None:
    """``obj`` as indented strict JSON, atomically."""
    atomic_write_text(path, json.dumps(json_safe(obj), indent=2) + "\n")


def frame(magic: bytes, payload: bytes) -> bytes:
    """``magic + sha256(payload) + payload``: a file that ``unframe`` can check before parsing."""
    return magic + hashlib.sha256(payload).digest() + payload


class FrameError(ValueError):
    """The bytes are not a frame of the expected kind, or their checksum does not match."""


def unframe(magic: bytes, data: bytes) -> bytes:
    """The payload of ``frame(magic, payload)``; FrameError for a foreign, truncated or corrupt file."""
    header = len(magic) + hashlib.sha256().digest_size
    if len(data) < header or not data.startswith(magic):
        raise FrameError(f"bad header; {len(data)} bytes")
    payload = data[header:]
    if hashlib.sha256(payload).digest() != data[len(magic):header]:
        raise FrameError(f"checksum mismatch; {len(data)} bytes")
    return payload


class BackgroundWriter:
    """Runs writes (any callables) on one background thread, in the order given, so that the caller
    can go on computing while a checkpoint is serialised, hashed and fsynced.

    ``submit(fn, *args)`` queues ``fn(*args)``; at most ``max_pending`` writes wait at once (a further
    ``submit`` first waits for the oldest). A failed write raises from the next ``submit`` or from
    ``wait()``, never silently. ``wait()`` and leaving a ``with`` block (also when it raises) block
    until everything queued is on disk.
    """

    def __init__(self, max_pending: int = 4):
        self.max_pending = max_pending
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jaxvae-writer")
        self._pending: collections.deque[Future] = collections.deque()
        self._lock = threading.Lock()

    def submit(self, fn, *args, **kwargs) -> None:
        with self._lock:
            while self._pending and (self._pending[0].done() or len(self._pending) >= self.max_pending):
                self._pending.popleft().result()  # re-raises a failed write
            self._pending.append(self._pool.submit(fn, *args, **kwargs))

    def wait(self) -> None:
        """Block until every queued write has finished; raise the first failure."""
        with self._lock:
            while self._pending:
                self._pending.popleft().result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
