"""File I/O at the bottom of the package: atomic writes, strict JSON, checksummed framing, and
where jaxvae keeps its per-user cache.

Every file jaxvae writes (checkpoints, run configs, metrics, figures, downloads, exports) goes
through ``atomic_write_bytes``: readers see the old file or the new one, never a mix, even if the
writer is killed. ``BackgroundWriter`` runs such writes on a thread while training goes on.

The files of run directories, figures and exports go through ``write_owned`` on top of that: a file
is jaxvae's by record, not by name. Each directory jaxvae writes into keeps ``OWNERSHIP_FILE``, an
append-only list of the SHA-256 of every content jaxvae wrote there and its name, and jaxvae replaces
a file only when its current content is in that list; anything else at one of its paths (another
tool's ``metrics.jsonl``, a FIFO, a link) is refused, named, and left as it is. Every such file is
opened without following a link and without blocking, and only if it is a regular file
(``read_regular``). Writes under a locked directory (``hold_directory``) first check that its path
still names the directory that was locked.
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
import stat
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

# Temporary files are ".<final name>.tmp-<pid>-<random>": hidden, and never equal to a final name, so a
# temp left by a killed writer can't be mistaken for the file itself; the pid tells a live writer's
# temp (left alone) from a dead one's (removed).
_TMP_MARK = ".tmp-"
# Per directory: one "<sha256 hex> <name>" line for every content jaxvae wrote there (append-only, so
# that two writers, a training run and an evaluate say, never lose each other's lines).
OWNERSHIP_FILE = ".jaxvae-files"


def _file_mode() -> int:
    """0o666 less the process umask: what open() would have given (mkstemp's files are 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


# A temporary's name adds the mark, a pid and mkstemp's 8 random characters to its file's name, and must
# still fit NAME_MAX (255 bytes on common file systems): a longer name's temporary is named by its digest.
_TMP_STEM_BYTES = 200


def _tmp_prefix(path: Path) -> str:
    stem = path.name
    if len(os.fsencode(stem)) > _TMP_STEM_BYTES:
        stem = "~" + hashlib.sha256(os.fsencode(stem)).hexdigest()[:32]
    return f".{stem}{_TMP_MARK}"


def _writer_alive(temp_name: str) -> bool:
    """Whether the process that named temporary ``temp_name`` still runs (older names carry no pid: dead)."""
    pid = temp_name[temp_name.index(_TMP_MARK) + len(_TMP_MARK):].split("-")[0]
    if not pid.isdigit() or int(pid) == os.getpid():
        return False  # this process writes each name from one thread at a time: a temp of ours is a leftover
    if os.name == "nt":  # no signal 0 there (os.kill would stop the process): keep it
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else
        return True
    return True


def temp_of(name: str) -> str | None:
    """The final name whose temporary file ``name`` is, or None when it is not one.

    Args:
        name: A file name.

    Returns:
        The final name, or None.
    """
    if name.startswith(".") and _TMP_MARK in name:
        return name[1:name.index(_TMP_MARK)]
    return None


def refuse_symlink(path: Path) -> None:
    """OSError naming ``path`` when it is a symbolic link: jaxvae writes only files it made itself, and
    never through or over a link (its target may be anyone's file).

    Args:
        path: The path to write.

    Raises:
        OSError: ``path`` is a symbolic link (errno ELOOP).
    """
    if path.is_symlink():
        raise OSError(errno.ELOOP, "is a symbolic link, not a file jaxvae wrote; refusing to write through or "
                      "over it (remove the link to let jaxvae write there)", str(path))


def user_cache_dir() -> Path:
    """jaxvae's per-user cache: ``$XDG_CACHE_HOME/jaxvae``, or ``~/.cache/jaxvae`` when XDG_CACHE_HOME
    is unset (downloaded MNIST, the compilation cache). Nothing is created here.

    Returns:
        The directory's path.
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # the XDG spec says relative values are invalid and must be ignored
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "jaxvae"


def remove_stale_temps(path: str | os.PathLike) -> None:
    """Delete temporary files that a killed writer of ``path`` left behind (a live writer's are kept).

    Args:
        path: The final file whose temporaries are looked for.
    """
    path = Path(path)
    for entry in path.parent.glob(_glob_escape(_tmp_prefix(path)) + "*"):
        if not _writer_alive(entry.name):
            with contextlib.suppress(OSError):
                entry.unlink()


def remove_stale_temps_in(directory: str | os.PathLike) -> list[Path]:
    """Delete every temporary of jaxvae's naming in ``directory`` whose writer is dead; the paths removed.

    Args:
        directory: The directory.

    Returns:
        The paths removed.
    """
    removed = []
    for entry in Path(directory).glob(f".*{_TMP_MARK}*"):
        if temp_of(entry.name) and not entry.is_dir() and not _writer_alive(entry.name):
            with contextlib.suppress(OSError):
                entry.unlink()
                removed.append(entry)
    return removed


def _glob_escape(text: str) -> str:
    """``text`` with glob's special characters taken literally."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


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

    Args:
        path: The file.
        data: Its new content.

    Raises:
        OSError: ``path`` is a symbolic link (``refuse_symlink``), or the write failed (a full disk, no
            permission, ...): ``path`` is left as it was, the temporary file removed, and the error
            names ``path`` itself, not the temporary name.
    """
    path = Path(path)
    refuse_symlink(path)
    remove_stale_temps(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{_tmp_prefix(path)}{os.getpid()}-", dir=path.parent)
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


def os_error_text(e: OSError) -> str:
    """``FILE: reason`` for an OSError (a full disk, a read-only or missing directory, no permission).

    Args:
        e: The error.

    Returns:
        ``FILE: reason`` when the error names both, else its own text.
    """
    if e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    return str(e)


def _naming(error: OSError, path: Path) -> OSError:
    """``error``'s errno and text with ``path`` as the file name (OSError picks the subclass by errno)."""
    if error.errno is None:
        return error
    return OSError(error.errno, error.strerror, str(path))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """``atomic_write_bytes`` of ``text`` in UTF-8.

    Args:
        path: The file.
        text: Its new content.

    Raises:
        OSError: As ``atomic_write_bytes``.
    """
    atomic_write_bytes(path, text.encode("utf-8"))


# --------------------------------------------------------------------------- regular files only

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"), (stat.S_ISLNK, "a symbolic link"))


def file_kind(path: str | os.PathLike) -> str | None:
    """What ``path`` is when it is no regular file ("a FIFO", "a symbolic link", ...); None for a regular
    file or nothing at all.

    Args:
        path: The path.

    Returns:
        The words, or None.
    """
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) else _kind(mode)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _not_regular(path: Path, mode: int) -> OSError:
    kind = _kind(mode)
    return OSError(errno.EINVAL, f"is {kind}, not a regular file; jaxvae reads and writes only regular files, and "
                   "leaves this one as it is", str(path))


def read_regular(path: str | os.PathLike) -> bytes:
    """The bytes of ``path``, opened only if it is a regular file: never through a symbolic link, and
    without blocking (a FIFO or a device is refused before it is opened).

    Args:
        path: The file.

    Returns:
        Its content.

    Raises:
        OSError: ``path`` is missing, no regular file, or unreadable; the message names it.
    """
    path = Path(path)
    try:
        before = os.lstat(path)
        if not stat.S_ISREG(before.st_mode):
            raise _not_regular(path, before.st_mode)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise _naming(e, path) from None
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino):
            raise _not_regular(path, now.st_mode)  # swapped between the look and the open
        with os.fdopen(os.dup(fd), "rb") as fh:
            return fh.read()
    finally:
        os.close(fd)


def read_regular_text(path: str | os.PathLike) -> str:
    """``read_regular`` decoded as UTF-8.

    Args:
        path: The file.

    Returns:
        Its text.

    Raises:
        OSError: As ``read_regular``.
        UnicodeDecodeError: The content is not UTF-8.
    """
    return read_regular(path).decode("utf-8")


# --------------------------------------------------------------------------- ownership by record


class NotOwnedError(OSError):
    """A file at one of jaxvae's paths holds content jaxvae did not write there; it is left as it is.

    Args:
        path: The file.
        why: What is wrong with it.
    """

    def __init__(self, path: Path, why: str = "holds content that jaxvae did not write"):
        super().__init__(errno.EEXIST, f"{why}; jaxvae replaces only its own files and leaves this one as it is: "
                         "move it away or choose another directory", str(path))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def has_record(directory: str | os.PathLike) -> bool:
    """Whether jaxvae keeps a record of its files in ``directory`` (jaxvae 0.3 and earlier kept none).

    Args:
        directory: The directory.

    Returns:
        True when ``OWNERSHIP_FILE`` is there.
    """
    return os.path.lexists(Path(directory) / OWNERSHIP_FILE)


def _recorded(directory: Path) -> set[tuple[str, str]]:
    """``{(name, sha256 hex)}`` of every content jaxvae wrote in ``directory`` (none without a record)."""
    path = directory / OWNERSHIP_FILE
    if not os.path.lexists(path):
        return set()
    lines = read_regular(path).decode("utf-8", "replace").splitlines()
    return {(name, digest) for digest, _, name in (line.partition(" ") for line in lines) if name}


def record(path: str | os.PathLike, data: bytes) -> None:
    """Add ``data`` to the contents jaxvae wrote at ``path`` (to its directory's record), durably.

    Args:
        path: The file that will hold ``data``.
        data: The content.

    Raises:
        OSError: The record cannot be written, or is no regular file; the message names it.
    """
    path = Path(path)
    line = f"{_digest(data)} {path.name}\n".encode("utf-8")
    record_path = path.parent / OWNERSHIP_FILE
    try:
        fd = os.open(record_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                     | getattr(os, "O_NONBLOCK", 0), _file_mode())
    except OSError as e:
        raise _naming(e, record_path) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(record_path, mode)
        os.write(fd, line)  # one small append: whole, whoever else appends
        os.fsync(fd)
    except OSError as e:
        raise _naming(e, record_path) from None
    finally:
        os.close(fd)


def owns(path: str | os.PathLike) -> bool:
    """Whether the regular file at ``path`` holds a content jaxvae wrote there (by its directory's record).

    Args:
        path: The file.

    Returns:
        True when its content is in the record.

    Raises:
        OSError: ``path`` is no regular file; the message names it.
    """
    path = Path(path)
    return (path.name, _digest(read_regular(path))) in _recorded(path.parent)


def check_replaceable(path: str | os.PathLike) -> set[tuple[str, str]]:
    """OSError naming ``path`` unless jaxvae may write it: nothing is there, or a regular file whose content
    jaxvae wrote.

    Args:
        path: The file to write.

    Returns:
        The directory's record, as read for the check: ``{(name, sha256 hex)}``.

    Raises:
        NotOwnedError: Anything else is at ``path``.
        OSError: ``path`` is a symbolic link (``refuse_symlink``) or no regular file.
    """
    path = Path(path)
    refuse_symlink(path)
    recorded = _recorded(path.parent)
    if os.path.lexists(path) and (path.name, _digest(read_regular(path))) not in recorded:
        raise NotOwnedError(path)
    return recorded


def write_owned(path: str | os.PathLike, data: bytes) -> None:
    """``atomic_write_bytes`` of a file jaxvae owns: refused (``check_replaceable``) unless ``path`` is free
    or holds a content jaxvae wrote, under a held directory only while its path still names it
    (``check_held``). The new content is recorded before it is renamed into place, so a kill at any
    point leaves a file that the record accounts for.

    Args:
        path: The file.
        data: Its new content.

    Raises:
        NotOwnedError: ``path`` holds a file that jaxvae did not write.
        OSError: ``path`` is a symbolic link or no regular file, a held directory above it was moved,
            or the write failed; the message names the path.
    """
    path = Path(path)
    check_held(path)
    if (path.name, _digest(data)) not in check_replaceable(path):
        record(path, data)
    atomic_write_bytes(path, data)


def write_owned_text(path: str | os.PathLike, text: str) -> None:
    """``write_owned(path, text)`` of ``text`` in UTF-8, with its errors."""
    write_owned(path, text.encode("utf-8"))


# --------------------------------------------------------------------------- a held directory's path

_held: dict[str, tuple[int, int]] = {}  # absolute path of a locked directory -> its (st_dev, st_ino)


def hold_directory(directory: str | os.PathLike, fd: int) -> None:
    """From now on, writes under ``directory`` check that its path still names the directory open as ``fd``.

    Args:
        directory: The locked directory.
        fd: A descriptor of it, open.
    """
    st = os.fstat(fd)
    _held[os.path.abspath(directory)] = (st.st_dev, st.st_ino)


def release_directory(directory: str | os.PathLike) -> None:
    """Writes under ``directory`` no longer check it (``hold_directory`` undone).

    Args:
        directory: The directory held.
    """
    _held.pop(os.path.abspath(directory), None)


def check_held(path: str | os.PathLike) -> None:
    """OSError naming a held directory above ``path`` whose path no longer names the directory held (it was
    moved or replaced): another process may write at that path now, so nothing is written there.

    Args:
        path: The path to write.

    Raises:
        OSError: A held directory above ``path`` was moved or replaced (errno ESTALE).
    """
    where = os.path.abspath(path)
    for directory, identity in list(_held.items()):
        if where.startswith(directory + os.sep):
            try:
                st = os.lstat(directory)
                moved = (st.st_dev, st.st_ino) != identity
            except OSError:
                moved = True
            if moved:
                raise OSError(errno.ESTALE, "no longer names the directory this jaxvae locked (it was moved or "
                              "replaced while jaxvae worked there); stopped without writing there: the run and its "
                              "saved epochs are wherever the directory went", directory)


def json_safe(value):
    """``value`` with non-finite floats as strings ("inf", "nan"): JSON has no inf/nan.

    Args:
        value: JSON-ready data, floats possibly non-finite.

    Returns:
        The same data (tuples as lists).
    """
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(path: str | os.PathLike, obj) -> None:
    """``obj`` as indented strict JSON, atomically, into a file jaxvae owns (``write_owned``).

    Args:
        path: The file.
        obj: JSON-ready data.

    Raises:
        NotOwnedError: ``path`` holds a file that jaxvae did not write.
        OSError: ``path`` is a symbolic link or no regular file, a held directory above it was moved,
            or the write failed; the message names the path.
    """
    write_owned_text(path, json.dumps(json_safe(obj), indent=2) + "\n")


def frame(magic: bytes, payload: bytes) -> bytes:
    """``magic + sha256(payload) + payload``: a file that ``unframe`` can check before parsing.

    Args:
        magic: The file kind's magic bytes.
        payload: The content.

    Returns:
        The framed bytes.
    """
    return magic + hashlib.sha256(payload).digest() + payload


class FrameError(ValueError):
    """The bytes are not a frame of the expected kind, or their checksum does not match."""


def unframe(magic: bytes, data: bytes) -> bytes:
    """The payload of ``frame(magic, payload)``; FrameError for a foreign, truncated or corrupt file.

    Args:
        magic: The expected magic bytes.
        data: The file's bytes.

    Returns:
        The payload.

    Raises:
        FrameError: A bad header, or a checksum that does not match.
    """
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

    A failed write raises from the next ``submit`` or from ``wait()``, never silently. ``wait()`` and
    leaving a ``with`` block (also when it raises) block until everything queued is on disk.

    Args:
        max_pending: At most this many writes wait at once (a further ``submit`` first waits for the
            oldest).
    """

    def __init__(self, max_pending: int = 4):
        self.max_pending = max_pending
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jaxvae-writer")
        self._pending: collections.deque[Future] = collections.deque()
        self._lock = threading.Lock()

    def submit(self, fn, *args, **kwargs) -> None:
        """Queue ``fn(*args, **kwargs)``, first waiting for the oldest write when ``max_pending`` wait.

        Args:
            fn: The write.
            *args: Its arguments.
            **kwargs: Its keyword arguments.

        Raises:
            Exception: A failed earlier write's error.
        """
        with self._lock:
            while self._pending and (self._pending[0].done() or len(self._pending) >= self.max_pending):
                self._pending.popleft().result()  # re-raises a failed write
            self._pending.append(self._pool.submit(fn, *args, **kwargs))

    def wait(self) -> None:
        """Block until every queued write has finished; raise the first failure.

        Raises:
            Exception: A failed write's error.
        """
        with self._lock:
            while self._pending:
                self._pending.popleft().result()

    def close(self) -> None:
        """``wait()``, then stop the thread.

        Raises:
            Exception: A failed write's error (the thread is stopped all the same).
        """
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
