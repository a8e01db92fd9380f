"""Where jaxvae's data comes from, as plain NumPy arrays: MNIST IDX files (local, in torchvision's
layout, or downloaded), and the two datasets bundled with the package: an MNIST subset (the offline
fallback) and the 8x8 digits (the UCI set that scikit-learn also ships). The search order,
downloads and the fallback are described in docs/guide/data.md and in ``load_mnist`` and
``load_dataset``.

Reading an IDX file (raw or gzip, told apart by its magic bytes) stops at the size its header
declares plus 1 KiB, so a decompression bomb costs no memory. Every bad file or source raises
``DataError`` naming the file and what is wrong. ``fingerprint(x)`` identifies an array's content.
The on-device epoch pipeline is in ``jaxvae.batching``; this module does no device work, no I/O at
import time, and never imports torch.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import io
import math
import os
import urllib.request
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Sequence

import numpy as np

from jaxvae.errors import InputError
from jaxvae.fileio import atomic_write_bytes, user_cache_dir

__all__ = [
    "DataError", "DownloadError", "MnistNotFoundError",
    "MNIST_FILES", "MNIST_MIRRORS", "MNIST_ARCHIVE_MD5", "MNIST_CONTENT_MD5", "MNIST_SUBSET_DIR",
    "MNIST_SUBSET_SHA256", "DIGITS_DIR", "DIGITS_FILES", "DIGITS_SHA256", "DATASETS", "DIGITS_NUM_TEST",
    "MAX_IDX_BYTES",
    "Dataset", "read_idx", "mnist_search_dirs", "find_mnist_dir", "mnist_mirrors", "download_mnist",
    "load_mnist", "load_mnist_subset", "load_digits", "verify_mnist_dir", "to_unit_float",
    "load_dataset", "numpy_batches", "Fingerprint", "fingerprint",
]
# --------------------------------------------------------------------------- constants

# (images, labels) base names per split; on disk each may also carry a ".gz" suffix.
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

# MD5 of the published ``<name>.gz`` archives on the mirrors (what a download is checked against).
MNIST_ARCHIVE_MD5 = {
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}

# MD5 of the uncompressed IDX bytes: independent of how a copy was (re)compressed.
MNIST_CONTENT_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

# The datasets shipped inside the package as gzip IDX files (see each directory's README.md,
# load_mnist_subset and load_digits); rebuilt by jaxvae/datasets/make_datasets.py.
MNIST_SUBSET_DIR = Path(__file__).resolve().parent / "datasets" / "mnist_subset"
# SHA-256 of the uncompressed IDX bytes of each bundled file: a damaged copy is caught on loading.
MNIST_SUBSET_SHA256 = {
    "train-images-idx3-ubyte": "96448e792027ae8c3d693bf7f6685beb422442276734ffe24b7860a3581dcb08",
    "train-labels-idx1-ubyte": "dfa6309ccbfc44ab3df730fa9d1b133e2baeb0fe7db8e4bbdcd05d3e5bd811ea",
    "t10k-images-idx3-ubyte": "780e99a56e963f3affe4791a03545a6ddbdc0904dd880c7f3c50753282177303",
    "t10k-labels-idx1-ubyte": "b547e409b08f1d55c77b7f0964dfb27202f97c41c014d9427a3acecfcf6a7129",
}

DIGITS_DIR = MNIST_SUBSET_DIR.parent / "digits"
DIGITS_FILES = ("digits-images-idx3-ubyte", "digits-labels-idx1-ubyte")
DIGITS_SHA256 = {
    "digits-images-idx3-ubyte": "359cd13f0f514122884198b78a131df597421cbf5e93a76678fa96fc548f0d96",
    "digits-labels-idx1-ubyte": "ce71631c1f31ce56fa54f31d1d498fafacff59b001e6c30c4a5e29508aa277ad",
}

DATASETS = ("mnist", "mnist-subset", "digits")
DIGITS_NUM_TEST = 297  # load_dataset("digits"): first 1500 images train, last 297 test

ENV_DATA_DIR = "JAXVAE_DATA_DIR"
ENV_MIRRORS = "JAXVAE_MNIST_MIRRORS"
DEFAULT_TIMEOUT = 20.0  # seconds per socket operation, per mirror

_GZIP_MAGIC = b"\x1f\x8b"
_IDX_UBYTE = 0x08
_MAGIC = {"images": 0x0803, "labels": 0x0801}  # 2051 and 2049
_MNIST_IMAGE_SHAPE = (28, 28)
_MAX_DOWNLOAD_BYTES = 64 << 20  # the largest archive is ~9.5 MiB; stop a runaway server early
MAX_IDX_BYTES = 1 << 30  # the most data an IDX header may declare (MNIST's largest file: 47 MB)
_TRAILING_MARGIN = 1024  # bytes read past the declared data, so that a short tail is counted exactly
_CHUNK = 1 << 20  # read and inflate in pieces of at most this size
# Deflate's best ratio (a 258-byte match in as little as 2 bits): no gzip file inflates to more than
# this many times its own size, so a header declaring more is refused before anything is inflated.
_GZIP_MAX_RATIO = 1032


# --------------------------------------------------------------------------- errors


class DataError(InputError):
    """A data file or source is missing, unreadable or malformed; the message names it."""


class DownloadError(DataError):
    """No mirror delivered a verified archive; ``failures`` holds (url, reason) for each try.

    Args:
        message: What failed.
        failures: ``(url, reason)`` for each try.
    """

    def __init__(self, message: str, failures: Sequence[tuple[str, str]] = ()):
        self.failures = list(failures)
        super().__init__(message)


class MnistNotFoundError(DataError):
    """MNIST is neither on disk nor downloadable: ``places`` lists the directories searched,
    ``download_error`` is the ``DownloadError`` (None when downloading was disabled).

    Args:
        places: The directories searched.
        download_error: Why the download failed; None when downloading was disabled.
    """

    def __init__(self, places: Sequence[str], download_error: DownloadError | None = None):
        self.places = list(places)
        self.download_error = download_error
        super().__init__(
            f"{self.summary()}. To supply it, put the four MNIST IDX files (train-/t10k-images-idx3-ubyte, "
            "train-/t10k-labels-idx1-ubyte; .gz or not) in a directory and pass it "
            f"as --data-dir (data_dir= from Python), or set {ENV_DATA_DIR}; or use the bundled 'mnist-subset' "
            "(or the 8x8 'digits')")

    def summary(self) -> str:
        """One short line for logs: where it looked and why the download failed.

        Returns:
            The line.
        """
        error = self.download_error
        if not error:
            why = " (download disabled)"
        elif error.failures:
            first = error.failures[0][1]
            why = f" and {len(error.failures)} download attempt(s) failed (first: {first[:100]})"
        else:
            why = f" and the download failed ({error})"
        return ("MNIST not found in " + ", ".join(self.places) + why).replace("\n", " ")


# --------------------------------------------------------------------------- IDX parsing


def _read_upto(stream: BinaryIO, n: int, into: bytearray | None = None) -> bytearray:
    """``into`` (default: a new bytearray) grown by up to ``n`` bytes of ``stream``, fewer only at its end
    (a gzip stream may return short reads). Grown chunk by chunk rather than allocated up front: a
    64-byte file may declare a gigabyte."""
    out = bytearray() if into is None else into
    end = len(out) + n
    while len(out) < end and (part := stream.read(min(end - len(out), _CHUNK))):
        out += part
    return out


def _read_idx_stream(stream: BinaryIO, name: str, kind: str | None,
                     gzip_size: int | None = None) -> tuple[bytearray, np.ndarray]:
    """Read one uncompressed IDX stream as ``(content, array)``: header + data bytes, and a uint8 view
    of the data. Reads stop at the declared size (at most ``MAX_IDX_BYTES``) plus ``_TRAILING_MARGIN`` + 1
    bytes, so an endless stream costs no more memory than the data it claims to hold. ``gzip_size``:
    the bytes of the gzip file the stream inflates, which bound what it can hold."""
    content = _read_upto(stream, 4)  # zero, zero, element type, ndim
    if len(content) < 4:
        raise DataError(f"{name}: too short for an IDX header ({len(content)} bytes)")
    if content[0] != 0 or content[1] != 0:
        raise DataError(f"{name}: not an IDX file (first bytes {content.hex()}, expected 0000 08 <ndim>)")
    magic = int.from_bytes(content, "big")
    if kind is not None and magic != _MAGIC[kind]:
        hint = {_MAGIC["labels"]: " (a labels file?)", _MAGIC["images"]: " (an images file?)"}.get(magic, "")
        raise DataError(f"{name}: wrong magic number {magic}{hint}, expected {_MAGIC[kind]} for {kind}")
    if content[2] != _IDX_UBYTE:
        raise DataError(f"{name}: unsupported IDX element type 0x{content[2]:02x} (only unsigned byte 0x08)")
    ndim = content[3]
    if ndim == 0:
        raise DataError(f"{name}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(_read_upto(stream, 4 * ndim, content)) < header:
        raise DataError(f"{name}: truncated IDX header ({len(content)} bytes, {ndim} dimensions need {header})")
    shape = tuple(int.from_bytes(content[i : i + 4], "big") for i in range(4, header, 4))
    if kind is not None and 0 in shape:
        raise DataError(f"{name}: holds no {kind} (its IDX header declares shape {shape})")
    expected = math.prod(shape)
    if expected > MAX_IDX_BYTES:
        raise DataError(
            f"{name}: IDX header declares shape {shape}, {expected} bytes, over this reader's limit of "
            f"{MAX_IDX_BYTES} bytes (MNIST's largest file holds 47040000)"
        )
    if gzip_size is not None and expected > gzip_size * _GZIP_MAX_RATIO:
        raise DataError(f"{name}: IDX header declares shape {shape}, {expected} bytes, more than this file can "
                        f"hold (a gzip file of {gzip_size} bytes inflates to {gzip_size * _GZIP_MAX_RATIO} at most)")
    found = len(_read_upto(stream, expected, content)) - header
    if found < expected:
        raise DataError(f"{name}: truncated: shape {shape} needs {expected} data bytes, found {found}")
    if tail := len(_read_upto(stream, _TRAILING_MARGIN + 1)):
        over = tail > _TRAILING_MARGIN
        count, stopped = (f"more than {_TRAILING_MARGIN}", " (stopped reading there)") if over else (tail, "")
        raise DataError(f"{name}: {count} trailing bytes after the {expected} bytes of shape {shape}{stopped}")
    # a view of the bytearray: writable, and no second copy of the data
    return content, np.frombuffer(content, dtype=np.uint8, offset=header).reshape(shape)


def _read_idx_file(f: BinaryIO, name: str, kind: str | None) -> tuple[bytearray, np.ndarray]:
    """``_read_idx_stream`` on seekable ``f``, gunzipped on the fly if it starts with the gzip magic."""
    start = f.read(2)
    if not start:
        raise DataError(f"{name}: empty file")
    f.seek(0)
    if start != _GZIP_MAGIC:
        return _read_idx_stream(f, name, kind)
    size = f.seek(0, os.SEEK_END)
    f.seek(0)
    try:
        with gzip.GzipFile(fileobj=f, mode="rb") as stream:
            return _read_idx_stream(stream, name, kind, gzip_size=size)
    except EOFError as e:
        raise DataError(f"{name}: truncated gzip archive (the compressed stream ends early: {e})") from None
    except (OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{name}: corrupt gzip archive ({type(e).__name__}: {e})") from None


def _read_idx_path(path: Path, kind: str | None) -> tuple[bytearray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            return _read_idx_file(f, str(path), kind)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


def read_idx(path: str | os.PathLike, kind: str | None = None) -> np.ndarray:
    """Read one IDX file of unsigned bytes (gzip-compressed or not) into a uint8 array.

    Validates the header, element type and exact byte count (truncated data or trailing bytes are
    errors). A header declaring more than ``MAX_IDX_BYTES`` is refused.

    Args:
        path: The IDX file.
        kind: ``"images"`` or ``"labels"`` also checks the MNIST magic number (2051 / 2049); None does not.

    Returns:
        The array, shaped as the header declares.

    Raises:
        DataError: The file is missing, unreadable or malformed; the message names it.
        InputError: ``kind`` is none of the three.
    """
    if kind is not None and kind not in _MAGIC:
        raise InputError(f"kind must be 'images', 'labels' or None, got {kind!r}")
    return _read_idx_path(Path(path), kind)[1]


# --------------------------------------------------------------------------- locating files


def _base_dirs(root) -> list[Path]:
    """The directories the user pointed at, in order (each checked in both layouts)."""
    if root is not None:
        return [Path(root).expanduser()]
    env = os.environ.get(ENV_DATA_DIR)
    return ([Path(env).expanduser()] if env else []) + [user_cache_dir() / "mnist"]


def mnist_search_dirs(root: str | os.PathLike | None = None) -> list[Path]:
    """Every directory ``find_mnist_dir`` looks in, in order.

    Args:
        root: A directory to search first; None for ``$JAXVAE_DATA_DIR``, then the cache directory.

    Returns:
        Each base directory and its ``MNIST/raw``.
    """
    return [d for base in _base_dirs(root) for d in (base, base / "MNIST" / "raw")]


def _locate(directory: Path, base: str) -> Path | None:
    # Prefer the uncompressed file: torchvision keeps both, and raw bytes parse faster.
    return next((c for c in (directory / base, directory / (base + ".gz")) if c.is_file()), None)


def _names(splits: Sequence[str]) -> list[str]:
    return [n for s in splits for n in MNIST_FILES[_check_split(s)]]


def find_mnist_dir(root: str | os.PathLike | None = None, splits: Sequence[str] = ("train", "test")) -> Path | None:
    """The first search directory holding the IDX files of ``splits`` (each as name or name.gz), or None.

    Args:
        root: As for ``mnist_search_dirs``.
        splits: ``"train"`` and/or ``"test"``.

    Returns:
        The directory, or None.
    """
    names = _names(splits)
    return next((d for d in mnist_search_dirs(root) if all(_locate(d, n) for n in names)), None)


def _check_split(split: str) -> str:
    if split not in MNIST_FILES:
        raise InputError(f"split must be 'train' or 'test', got {split!r}")
    return split


# --------------------------------------------------------------------------- downloading


def mnist_mirrors() -> list[str]:
    """Base URLs to try: ``$JAXVAE_MNIST_MIRRORS`` (comma-separated) if set, else ``MNIST_MIRRORS``.

    Returns:
        The URLs.
    """
    env = [u.strip() for u in os.environ.get(ENV_MIRRORS, "").split(",") if u.strip()]
    return env or list(MNIST_MIRRORS)


def _fetch(url: str, timeout: float) -> bytes:
    """The bytes at ``url`` (an MNIST archive is at most ~10 MB; more than 64 MiB is refused)."""
    chunks, total = [], 0
    request = urllib.request.Request(url, headers={"User-Agent": "jaxvae"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        while chunk := response.read(_CHUNK):
            total += len(chunk)
            if total > _MAX_DOWNLOAD_BYTES:
                raise DataError(f"more than {_MAX_DOWNLOAD_BYTES} bytes, not an MNIST archive")
            chunks.append(chunk)
    return b"".join(chunks)


def _download_one(url: str, target: Path, base: str, expected_md5: str | None, timeout: float) -> None:
    """Download and verify one archive in memory, then install it atomically: a failed or
    interrupted download never leaves a file under the real name."""
    data = _fetch(url, timeout)
    digest = hashlib.md5(data).hexdigest()
    if expected_md5 is not None and digest != expected_md5:
        raise DataError(f"MD5 {digest} does not match the published {expected_md5}")
    # The checksum can be wrong or missing for a custom mirror: parse the content as well.
    _read_idx_file(io.BytesIO(data), url, "images" if "images" in base else "labels")
    atomic_write_bytes(target, data)


def download_mnist(
    dest: str | os.PathLike, mirrors: Sequence[str] | None = None, *, splits: Sequence[str] = ("train", "test"),
    checksums: dict[str, str | None] | None = MNIST_ARCHIVE_MD5, timeout: float = DEFAULT_TIMEOUT,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Download the MNIST archives of ``splits`` that ``dest`` lacks, as ``dest/<name>.gz``.

    Each file is tried on every mirror in turn; an archive is kept only if its MD5 matches and it
    parses as the expected IDX file.

    Args:
        dest: The directory to download into (created if needed; removed again if the download fails).
        mirrors: Base URLs; None for ``mnist_mirrors()``.
        splits: ``"train"`` and/or ``"test"``.
        checksums: The MD5 expected of each archive by name; a None entry skips that check.
        timeout: Seconds per socket operation, per mirror.
        log: Called with a line per file downloaded; None for silence.

    Returns:
        ``dest``.

    Raises:
        DownloadError: No mirror delivered a file; it lists every URL tried and why it failed.
    """
    dest = Path(dest).expanduser()
    mirrors = list(mirrors) if mirrors is not None else mnist_mirrors()
    if not mirrors:
        raise DownloadError("no MNIST mirrors configured")
    created = [d for d in (dest, *dest.parents) if not d.exists()]  # deepest first
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"{dest}: cannot create the download directory ({e.strerror or e})") from None
    try:
        _download_missing(dest, mirrors, splits, checksums, timeout, log)
    except DownloadError:
        # leave no empty directories behind after a failed (e.g. offline) attempt, ~/.cache/jaxvae included
        for d in created:
            try:
                d.rmdir()
            except OSError:
                break
        raise
    return dest


def _download_missing(dest, mirrors, splits, checksums, timeout, log) -> None:
    for base in _names(splits):
        if _locate(dest, base):
            continue
        target = dest / (base + ".gz")
        expected = (checksums or {}).get(base)
        failures = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + base + ".gz"
            try:
                _download_one(url, target, base, expected, timeout)
            except DataError as e:
                failures.append((url, str(e).removeprefix(url + ": ")))
            except (OSError, http.client.HTTPException, ValueError) as e:
                # URLError/HTTPError/timeouts (OSError) and IncompleteRead (a cut connection) land here
                failures.append((url, f"{type(e).__name__}: {getattr(e, 'reason', None) or e}"))
            else:
                if log:  # only after success, so an offline fallback stays a single line
                    log(f"Downloaded {url} -> {target}")
                break
        else:
            tried = "; ".join(f"{url}: {why}" for url, why in failures)
            raise DownloadError(f"{base}.gz: no mirror delivered a valid archive: {tried}", failures)


# --------------------------------------------------------------------------- loading


def load_mnist(
    root: str | os.PathLike | None = None, split: str = "train", download: bool = True, *,
    mirrors: Sequence[str] | None = None, checksums: dict[str, str | None] | None = MNIST_ARCHIVE_MD5,
    timeout: float = DEFAULT_TIMEOUT, log: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST ``split`` ("train" or "test") as ``(images, labels)``: uint8 (N, 28, 28) and uint8 (N,).

    Args:
        root: A directory holding the IDX files, directly or as ``MNIST/raw/`` (torchvision); it must
            exist. None searches ``$JAXVAE_DATA_DIR`` then the cache directory.
        split: ``"train"`` or ``"test"``.
        download: Whether missing files are downloaded.
        mirrors: As for ``download_mnist``.
        checksums: As for ``download_mnist``.
        timeout: As for ``download_mnist``.
        log: As for ``download_mnist``.

    Returns:
        ``(images, labels)``.

    Raises:
        InputError: ``split`` is neither ``"train"`` nor ``"test"``.
        DataError: ``root`` does not exist (before any search or download), or a file is malformed.
        MnistNotFoundError: MNIST is neither found nor downloadable.
    """
    _check_split(split)
    # a directory the caller named must exist: a typo in --data-dir is an error, not a quiet fallback
    if root is not None and not (path := Path(root).expanduser()).is_dir():
        problem = "is not a directory" if path.exists() else "does not exist"
        raise DataError(f"{path}: the given data directory {problem}")
    directory = find_mnist_dir(root, splits=(split,))
    if directory is None:
        places = [str(d) for d in mnist_search_dirs(root)]
        if not download:
            raise MnistNotFoundError(places)
        try:  # into root if given, else $JAXVAE_DATA_DIR if set, else the cache dir
            directory = download_mnist(
                _base_dirs(root)[0], mirrors, splits=(split,), checksums=checksums, timeout=timeout, log=log
            )
        except DownloadError as e:
            raise MnistNotFoundError(places, e) from None
    return _read_images_and_labels(directory, MNIST_FILES[split], _MNIST_IMAGE_SHAPE)


def _read_images_and_labels(directory: Path, names: Sequence[str], image_shape: tuple[int, int],
                            sha256: dict[str, str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The validated (images, labels) of the IDX files ``names`` (images, then labels) in ``directory``.
    ``sha256`` (content digests by base name, given for the bundled datasets) also checks each
    file's uncompressed bytes."""
    found = []
    restore = " (reinstall jaxvae to restore it)" if sha256 is not None else ""
    for base, kind in zip(names, ("images", "labels")):
        path = _locate(directory, base)
        if path is None:
            raise DataError(f"{directory / base}[.gz]: missing{restore}")
        content, array = _read_idx_path(path, kind)
        if sha256 is not None and (digest := hashlib.sha256(content).hexdigest()) != sha256[base]:
            raise DataError(f"{path}: content SHA-256 {digest}, expected {sha256[base]}: a damaged copy{restore}")
        found.append((path, array))
    (image_path, images), (label_path, labels) = found
    if images.shape[1:] != image_shape:
        raise DataError(f"{image_path}: images are {images.shape[1]}x{images.shape[2]}, "
                        f"expected {image_shape[0]}x{image_shape[1]}")
    if len(images) != len(labels):
        raise DataError(
            f"{image_path} has {len(images)} images but {label_path} has {len(labels)} labels; they must agree"
        )
    if labels.size and labels.max() > 9:
        raise DataError(f"{label_path}: label {labels.max()} out of range 0..9")
    return images, labels


def load_mnist_subset(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """The MNIST subset bundled with jaxvae, as ``load_mnist`` returns a split, with no search and no
    network: "train" holds the first 1000 images of each digit of MNIST's training split (10000),
    "test" the first 200 of each digit of its test split (2000), in MNIST's order.

    Args:
        split: ``"train"`` or ``"test"``.

    Returns:
        ``(images, labels)``: uint8 (N, 28, 28) and uint8 (N,).

    Raises:
        InputError: ``split`` is neither ``"train"`` nor ``"test"``.
        DataError: A file is damaged or missing (its content is checked against
            ``MNIST_SUBSET_SHA256``); the message names it.
    """
    return _read_images_and_labels(MNIST_SUBSET_DIR, MNIST_FILES[_check_split(split)], _MNIST_IMAGE_SHAPE,
                                   MNIST_SUBSET_SHA256)


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 digits bundled with jaxvae (the UCI test set that scikit-learn ships, in its order):
    uint8 images (1797, 8, 8) in 0..16 and uint8 labels, checked against ``DIGITS_SHA256`` like the
    MNIST subset.

    Returns:
        ``(images, labels)``.

    Raises:
        DataError: A file is damaged or missing.
    """
    return _read_images_and_labels(DIGITS_DIR, DIGITS_FILES, (8, 8), DIGITS_SHA256)


def verify_mnist_dir(path: str | os.PathLike, splits: Sequence[str] = ("train", "test")) -> None:
    """Check the uncompressed MNIST files in ``path`` (any compression) against the canonical content
    MD5s.

    Args:
        path: The directory.
        splits: ``"train"`` and/or ``"test"``.

    Raises:
        DataError: Files are missing or differ; the message lists them.
    """
    path = Path(path)
    problems = []
    for base in _names(splits):
        found = _locate(path, base)
        if found is None:
            problems.append(f"{path / base}[.gz]: missing")
            continue
        try:  # bounded by the header like any read: a bomb named like MNIST is a problem, not an OOM
            digest = hashlib.md5(_read_idx_path(found, None)[0]).hexdigest()
            if digest != MNIST_CONTENT_MD5[base]:
                problems.append(f"{found}: content MD5 {digest}, expected {MNIST_CONTENT_MD5[base]}")
        except DataError as e:
            problems.append(str(e))
    if problems:
        raise DataError("MNIST verification failed: " + "; ".join(problems))


# --------------------------------------------------------------------------- training arrays


def to_unit_float(images, max_value: int | float = 255) -> np.ndarray:
    """Flatten (N, H, W) or (N, D) images to float32 (N, H*W) in [0, 1].

    Same arithmetic as torchvision's ``ToDtype(float32, scale=True)`` used by the blog:
    ``float32(x) * float32(1 / max_value)``.

    Args:
        images: Integer or float pixels in [0, ``max_value``].
        max_value: The brightest pixel (255 for MNIST, 16 for digits).

    Returns:
        float32 (N, H*W).

    Raises:
        InputError: ``max_value`` not positive, an empty or 1-D batch, pixels that are not numbers, or
            values outside [0, ``max_value``].
    """
    x = np.asarray(images)
    if not max_value > 0:
        raise InputError(f"max_value must be positive, got {max_value}")
    if x.ndim < 2 or x.size == 0:
        raise InputError(f"expected a non-empty batch of images (N, H, W) or (N, D), got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise InputError(f"expected integer or float pixels, got dtype {x.dtype}")
    lo, hi = x.min(), x.max()
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > max_value:
        raise InputError(f"pixel values must lie in [0, {max_value}], found [{lo}, {hi}]")
    return x.reshape(len(x), -1).astype(np.float32) * np.float32(1.0 / max_value)


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Arrays ready for training: x float32 (N, D) in [0, 1], y uint8 labels (for plots).

    Attributes:
        name: ``"mnist"``, ``"mnist-subset"`` or ``"digits"``.
        train_x: The training images.
        train_y: Their labels.
        test_x: The test images.
        test_y: Their labels.
        image_shape: ``(height, width)`` of one image.
    """

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    image_shape: tuple[int, int]


def _mnist_dataset(name: str, load: Callable[[str], tuple[np.ndarray, np.ndarray]]) -> Dataset:
    """``load(split)``'s train and test splits (read in that order) as a 28x28 ``Dataset``."""
    (train_images, train_y), (test_images, test_y) = load("train"), load("test")
    return Dataset(name, to_unit_float(train_images), train_y, to_unit_float(test_images), test_y, _MNIST_IMAGE_SHAPE)


# How to get full MNIST, in the caller's words: "python" (load_dataset's arguments) or "cli" (the flags).
_MNIST_HOW = {"python": ("pass data_dir=DIR", "require=True"), "cli": ("pass --data-dir DIR", "--require-mnist")}


def load_dataset(
    name: str = "mnist", data_dir: str | os.PathLike | None = None, download: bool = True, require: bool = False,
    log: Callable[[str], None] | None = print, words: str = "python", **mnist_kwargs,
) -> Dataset:
    """Load ``name`` ("mnist", "mnist-subset" or "digits") as a ``Dataset``.

    If MNIST can be neither found nor downloaded, ``require=False`` logs one line and returns the
    bundled subset ("mnist-subset", see ``load_mnist_subset``) instead, unless a ``data_dir`` was named:
    MNIST was asked for there, so its absence raises ``MnistNotFoundError``, as ``require=True`` does.
    Digits: first 1500 images train, last 297 test.

    Args:
        name: ``"mnist"``, ``"mnist-subset"`` or ``"digits"``.
        data_dir: MNIST's directory (as ``load_mnist``'s ``root``); None searches.
        download: Whether MNIST may be downloaded.
        require: Whether MNIST's absence is an error rather than the subset.
        log: Called with the fallback line; None for silence.
        words: The vocabulary of the fallback line: ``"python"``, or ``"cli"`` for the command line's flags.
        **mnist_kwargs: ``mirrors``, ``checksums``, ``timeout``, for ``load_mnist``.

    Returns:
        The ``Dataset``.

    Raises:
        InputError: An unknown ``name``.
        DataError: ``data_dir`` does not exist, or a file is malformed.
        MnistNotFoundError: MNIST is not found and ``require`` or ``data_dir`` was given.
    """
    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    if name == "digits":
        images, labels = load_digits()
        k = len(images) - DIGITS_NUM_TEST  # a fixed split keeps runs comparable without any RNG
        x = to_unit_float(images, 16)
        return Dataset("digits", x[:k], labels[:k], x[k:], labels[k:], (8, 8))
    if name == "mnist-subset":
        return _mnist_dataset(name, load_mnist_subset)
    try:
        return _mnist_dataset(name, lambda split: load_mnist(data_dir, split, download, log=log, **mnist_kwargs))
    except MnistNotFoundError as e:
        if require or data_dir is not None:
            raise
        subset = _mnist_dataset("mnist-subset", load_mnist_subset)
        if log:  # one line: why, what it uses instead, how to get full MNIST
            give_dir, require_flag = _MNIST_HOW[words]
            log(
                f"{e.summary()}; using the bundled MNIST subset ({len(subset.train_x)} train / {len(subset.test_x)}"
                f" test images, dataset 'mnist-subset') instead. For full MNIST {give_dir} (the four IDX files,"
                " .gz or not, in DIR or in torchvision's DIR/MNIST/raw), or set"
                f" {ENV_DATA_DIR}=DIR, or let it download into {_base_dirs(data_dir)[0]};"
                f" {require_flag} makes this an error"
            )
        return subset


# --------------------------------------------------------------------------- fingerprints


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    """What identifies an array's content: shape, dtype name and the SHA-256 of its bytes in C order,
    little-endian (so the same values give the same hash on any machine and from any memory layout).

    A run can record ``fingerprint(train_x).to_dict()`` and later refuse other data with
    ``recorded.mismatch(fingerprint(x))``.

    Args:
        shape: The array's shape (a JSON list is taken).
        dtype: A NumPy dtype name, such as ``"float32"``.
        sha256: 64 lowercase hex digits.

    Raises:
        InputError: A field of the wrong form; the message names it.
    """

    shape: tuple[int, ...]
    dtype: str
    sha256: str

    def __post_init__(self):
        shape = self.shape
        if not isinstance(shape, (tuple, list)) or not all(_is_count(d) for d in shape):
            raise InputError(f"fingerprint field 'shape': expected a list of integers >= 0, got {shape!r}")
        object.__setattr__(self, "shape", tuple(int(d) for d in shape))  # a JSON list becomes a tuple
        try:
            canonical = np.dtype(self.dtype).name if isinstance(self.dtype, str) else None
        except TypeError:
            canonical = None
        if canonical != self.dtype:
            raise InputError(f"fingerprint field 'dtype': expected a NumPy dtype name such as 'float32', got {self.dtype!r}")
        if not (isinstance(self.sha256, str) and len(self.sha256) == 64 and set(self.sha256) <= set("0123456789abcdef")):
            raise InputError(f"fingerprint field 'sha256': expected 64 lowercase hex digits, got {self.sha256!r}")

    def __str__(self) -> str:
        # 12 hex digits tell two hashes apart in a message; the full hash is in to_dict()
        return f"shape {self.shape} {self.dtype} sha256 {self.sha256[:12]}..."

    def to_dict(self) -> dict:
        """JSON-ready: ``{"shape": [...], "dtype": "float32", "sha256": "<64 hex digits>"}``.

        Returns:
            The dict.
        """
        return {"shape": list(self.shape), "dtype": self.dtype, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, d) -> "Fingerprint":
        """The inverse of ``to_dict``.

        Args:
            d: The dict.

        Returns:
            The ``Fingerprint``.

        Raises:
            InputError: ``d`` is not a dict, or a field is missing, unknown or bad; the message names it.
        """
        if not isinstance(d, dict):
            raise InputError(f"fingerprint: expected a mapping with shape, dtype and sha256, got {type(d).__name__}")
        fields = ("shape", "dtype", "sha256")
        problems = [f"missing field {f!r}" for f in fields if f not in d]
        problems += [f"unknown field {f!r}" for f in sorted(map(str, set(d) - set(fields)))]
        if problems:
            raise InputError("fingerprint: " + ", ".join(problems))
        return cls(d["shape"], d["dtype"], d["sha256"])

    def mismatch(self, other: "Fingerprint") -> str | None:
        """None if ``other`` is the same data, else one line naming what differs and both fingerprints,
        e.g. ``shape and sha256 differ: shape (60000, 784) float32 sha256 1a2b... vs shape (1500, 64) ...``.

        Args:
            other: The fingerprint of the data found.

        Returns:
            The line, or None.
        """
        differ = [f for f in ("shape", "dtype", "sha256") if getattr(self, f) != getattr(other, f)]
        if not differ:
            return None
        what = differ[0] if len(differ) == 1 else ", ".join(differ[:-1]) + " and " + differ[-1]
        return f"{what} differ{'s' if len(differ) == 1 else ''}: {self} vs {other}"


def _is_count(d) -> bool:
    return isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0


def fingerprint(x) -> Fingerprint:
    """The ``Fingerprint`` of array ``x`` (NumPy, JAX or anything ``np.asarray`` takes).

    Hashes the values' bytes without copying when ``x`` is already C-contiguous and little-endian
    (about 0.1 s for 60000 x 784 float32).

    Args:
        x: The array.

    Returns:
        Its ``Fingerprint``.

    Raises:
        InputError: An array of Python objects.
    """
    a = np.asarray(x)
    if a.dtype.hasobject:
        raise InputError(f"cannot fingerprint an array of dtype {a.dtype}: its bytes are pointers, not values")
    data = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
    return Fingerprint(a.shape, data.dtype.name, hashlib.sha256(data).hexdigest())


# --------------------------------------------------------------------------- host-side batches


def numpy_batches(
    x, batch_size: int, *, seed: int | None = None, shuffle: bool = True, drop_last: bool = False, y=None
) -> Iterator:
    """One epoch of batches of ``x`` (or ``(x, y)`` pairs when ``y`` is given) as NumPy arrays.

    For a plain host-side loop; training uses ``jaxvae.batching``.

    Args:
        x: The examples, with a leading batch axis.
        batch_size: Rows per batch.
        seed: Seeds ``np.random.default_rng`` for the shuffle.
        shuffle: Whether the order is shuffled.
        drop_last: Whether the last partial batch is dropped.
        y: Labels, one per row of ``x``; None for batches of ``x`` alone.

    Returns:
        An iterator of batches.

    Raises:
        InputError: ``batch_size`` below 1, ``x`` without a batch axis, or ``y`` of another length.
    """
    # validate now, not at the first next(): errors should point at the call
    if not _is_count(batch_size) or batch_size < 1:
        raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    x = np.asarray(x)
    if x.ndim == 0:
        raise InputError("x must have a leading batch dimension")
    if y is not None:
        y = np.asarray(y)
        if y.ndim == 0 or len(y) != len(x):
            raise InputError(f"x has {len(x)} items but y has {len(y) if y.ndim else 'no'} items")
    n = len(x)
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    batches = (order[start : start + batch_size] for start in range(0, stop, batch_size))
    return ((x[idx], y[idx]) if y is not None else x[idx] for idx in batches)
