"""Rebuild the MNIST subset that jaxvae bundles (``jaxvae/datasets/mnist_subset/``) from full MNIST.

    python jaxvae/datasets/make_mnist_subset.py /path/to/mnist [--out DIR]

The selection is deterministic: the first 1000 images of each digit in MNIST's training split
(10000 images) and the first 200 of each digit in its test split (2000 images), each kept in the
original order. The source is checked against MNIST's canonical content MD5s first. The output is
gzip IDX files (the same format as MNIST, so the same reader validates them); their gzip bytes
depend on the zlib version, so what ``jaxvae.data`` checks is the SHA-256 of the uncompressed
content, which this script prints and compares with ``jaxvae.data.MNIST_SUBSET_SHA256``.
Nothing imports it (setuptools still puts it in the wheel, as jaxvae/datasets is found as a
namespace package); run it from a checkout, where --out defaults to the checkout's copy.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np

from jaxvae import data
from jaxvae.fileio import atomic_write_bytes

PER_DIGIT = {"train": 1000, "test": 200}


def select(labels: np.ndarray, per_digit: int) -> np.ndarray:
    """Indices of the first ``per_digit`` items of each digit 0..9, in their original order."""
    picks = [np.flatnonzero(labels == digit)[:per_digit] for digit in range(10)]
    if any(len(p) < per_digit for p in picks):
        raise SystemExit(f"fewer than {per_digit} images of some digit: not the full MNIST")
    return np.sort(np.concatenate(picks))


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: 00 00 08 ndim, the dimensions as big-endian uint32, the bytes."""
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mnist_dir", help="a directory with the four MNIST IDX files (.gz or not, or MNIST/raw)")
    parser.add_argument("--out", default=str(data.MNIST_SUBSET_DIR), help="where to write (default: %(default)s)")
    args = parser.parse_args(argv)
    source = data.find_mnist_dir(args.mnist_dir)
    if source is None:
        raise SystemExit(f"{args.mnist_dir}: no MNIST IDX files found")
    data.verify_mnist_dir(source)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split, (image_name, label_name) in data.MNIST_FILES.items():
        images, labels = data.load_mnist(source, split, download=False)
        keep = select(labels, PER_DIGIT[split])
        for name, array in ((image_name, images[keep]), (label_name, labels[keep])):
            content = idx_bytes(array)
            # mtime=0 and no file name in the header: the same content gives the same archive here
            atomic_write_bytes(out / f"{name}.gz", gzip.compress(content, compresslevel=9, mtime=0))
            digest = hashlib.sha256(content).hexdigest()
            recorded = data.MNIST_SUBSET_SHA256.get(name)
            status = "matches jaxvae.data" if digest == recorded else f"differs from jaxvae.data ({recorded})"
            print(f"{name}.gz  {array.shape}  sha256 {digest}  {status}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
