"""Data helpers: the autoencoder dataset, a small MNIST IDX reader and the MNIST loader.

Nothing is read at import time. torchvision is optional and only imported inside
:func:`load_mnist` when the IDX files are not found locally.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["AutoencoderDataset", "to_float_features", "read_idx", "load_mnist_idx", "load_mnist"]

_IDX_MAGIC = {2051: 3, 2049: 1}  # images (N, rows, cols) and labels (N,), both uint8
_MAX_IDX_BYTES = 1 << 30  # the most data a header may declare (MNIST's largest file holds 47 MB)
_SLACK = 1024  # bytes read past the declared data, to count a short tail exactly
_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def scale_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1], flattened per sample: torchvision's
    ``ToDtype(float32, scale=True)``, which multiplies by 1/255 (not a division: they differ in the
    last bit for about half the grey levels)."""
    images = np.asarray(images)
    return images.reshape(images.shape[0], -1).astype(np.float32) * np.float32(1.0 / 255.0)


def to_float_features(data) -> torch.Tensor:
    """Array/tensor of samples -> float32 tensor of shape (N, features).

    uint8 input is scaled by 1/255 (MNIST pixels); anything else is cast to float32 unchanged.
    Trailing dims are flattened, so (N, 28, 28) becomes (N, 784).
    """
    t = torch.as_tensor(np.asarray(data) if not isinstance(data, torch.Tensor) else data)
    if t.ndim < 1:
        raise ValueError("data must have a leading sample dimension")
    if t.dtype == torch.uint8:
        t = torch.from_numpy(scale_pixels(t.numpy()))
    else:
        t = t.to(torch.float32)
    return t.reshape(t.shape[0], -1) if t.ndim != 2 else t


class AutoencoderDataset(Dataset):
    """Dataset whose items are ``(x, x)``: input and target are the same flattened sample."""

    def __init__(self, data):
        self.data = to_float_features(data)

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, index):
        x = self.data[index]
        return x, x


def read_idx(path) -> np.ndarray:
    """Read an MNIST IDX file (magic 2051 images or 2049 labels), gzip-compressed or raw.

    Decompresses on the fly and reads at most the size the header declares plus 1 KiB, so a
    decompression bomb or a lying header is a ``ValueError`` naming the file, not an exhausted memory.
    """
    path = Path(path)
    with open(path, "rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"  # gzip magic; do not trust the file name
        raw.seek(0)
        try:
            with gzip.GzipFile(fileobj=raw) if compressed else contextlib.nullcontext(raw) as f:
                return _read_idx_stream(f, path)
        except (EOFError, OSError, zlib.error) as e:  # truncated or corrupt gzip (BadGzipFile is an OSError)
            what = "bad gzip data" if compressed else "cannot read"
            raise ValueError(f"{path}: {what} ({type(e).__name__}: {e})") from None


def _read_idx_stream(f, path: Path) -> np.ndarray:
    head = f.read(4)
    if len(head) < 4:
        raise ValueError(f"{path}: too short to be an IDX file")
    magic = int.from_bytes(head, "big")
    if magic not in _IDX_MAGIC:
        raise ValueError(f"{path}: bad IDX magic {magic} (expected 2051 or 2049)")
    ndim = _IDX_MAGIC[magic]
    dims = f.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(dims, dtype=">u4"))
    expected = math.prod(shape)
    if expected > _MAX_IDX_BYTES:
        raise ValueError(f"{path}: header says {shape} ({expected} bytes), over the {_MAX_IDX_BYTES}-byte limit")
    body = f.read(expected + _SLACK + 1)  # one byte past the slack tells "more" from "exactly this many"
    if len(body) != expected:
        found = f"more than {expected + _SLACK}" if len(body) > expected + _SLACK else str(len(body))
        raise ValueError(f"{path}: header says {shape} ({expected} bytes) but {found} bytes follow")
    return np.frombuffer(body, dtype=np.uint8, count=expected).reshape(shape).copy()


def _find_idx(data_dir: Path, stem: str) -> Path | None:
    # The plain MNIST names, gzip or not, also in torchvision's MNIST/raw layout.
    for folder in (data_dir, data_dir / "MNIST" / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def load_mnist_idx(data_dir) -> dict[str, np.ndarray]:
    """Read the 4 MNIST IDX files in ``data_dir`` -> dict of float32 images (N, 784) in [0, 1]
    and int64 labels, keys ``train_images, train_labels, test_images, test_labels``."""
    data_dir = Path(data_dir)
    out = {}
    for key, stem in _MNIST_FILES.items():
        path = _find_idx(data_dir, stem)
        if path is None:
            raise FileNotFoundError(f"{data_dir}: no {stem} (or {stem}.gz)")
        arr = read_idx(path)
        if key.endswith("images"):
            out[key] = scale_pixels(arr)
        else:
            out[key] = arr.astype(np.int64)
    for split in ("train", "test"):
        if len(out[f"{split}_images"]) != len(out[f"{split}_labels"]):
            raise ValueError(f"{data_dir}: {split} images and labels differ in length")
    return out


def load_mnist(data_dir=None, download: bool = False) -> dict[str, np.ndarray]:
    """MNIST as :func:`load_mnist_idx` returns it.

    Local IDX files in ``data_dir`` (or ``data_dir/MNIST/raw``) are read directly; otherwise
    torchvision's MNIST is used if torchvision imports (``download`` is passed on to it).
    """
    root = Path(data_dir if data_dir is not None else os.environ.get("MNIST_DIR", "data"))
    if all(_find_idx(root, stem) for stem in _MNIST_FILES.values()):
        return load_mnist_idx(root)
    try:
        from torchvision import datasets  # optional dependency
    except ImportError:
        raise FileNotFoundError(
            f"MNIST IDX files not found in {root} and torchvision is not installed; "
            "pass --data-dir pointing at the 4 MNIST IDX files (gzip or raw)"
        ) from None
    out = {}
    for split, train in (("train", True), ("test", False)):
        ds = datasets.MNIST(root=str(root), train=train, download=download)
        out[f"{split}_images"] = scale_pixels(ds.data.numpy())
        out[f"{split}_labels"] = ds.targets.numpy().astype(np.int64)
    return out
