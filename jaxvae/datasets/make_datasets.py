"""Rebuild the datasets that jaxvae bundles (``jaxvae/datasets/``): the MNIST subset from full MNIST,
the 8x8 digits from scikit-learn's copy.

    python jaxvae/datasets/make_datasets.py mnist-subset /path/to/mnist [--out DIR]
    python jaxvae/datasets/make_datasets.py digits [--out DIR]     # needs scikit-learn

The MNIST subset is the first 1000 images of each digit in MNIST's training split (10000 images)
and the first 200 of each digit in its test split (2000 images), each kept in the original order;
the source is checked against MNIST's canonical content MD5s first. The digits are all 1797 images
of the UCI test set that scikit-learn ships, in its order. The output is gzip IDX files (MNIST's
format, so one reader validates them all); their gzip bytes depend on the zlib version, so what
``jaxvae.data`` checks is the SHA-256 of the uncompressed content, which this script prints and
compares with the digests recorded there. jaxvae never imports it; run it from a checkout, where
--out defaults to the checkout's copy.
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


def write_idx(out: Path, name: str, array: np.ndarray, recorded: dict[str, str]) -> None:
    """``out/<name>.gz``, and one line comparing its content digest with the one ``jaxvae.data`` records."""
    content = idx_bytes(array)
    # mtime=0 and no file name in the header: the same content gives the same archive here
    atomic_write_bytes(out / f"{name}.gz", gzip.compress(content, compresslevel=9, mtime=0))
    digest = hashlib.sha256(content).hexdigest()
    expected = recorded.get(name)
    status = "matches jaxvae.data" if digest == expected else f"differs from jaxvae.data ({expected})"
    print(f"{name}.gz  {array.shape}  sha256 {digest}  {status}")


def mnist_subset(mnist_dir: str, out: Path) -> None:
    source = data.find_mnist_dir(mnist_dir)
    if source is None:
        raise SystemExit(f"{mnist_dir}: no MNIST IDX files found")
    data.verify_mnist_dir(source)
    for split, (image_name, label_name) in data.MNIST_FILES.items():
        images, labels = data.load_mnist(source, split, download=False)
        keep = select(labels, PER_DIGIT[split])
        write_idx(out, image_name, images[keep], data.MNIST_SUBSET_SHA256)
        write_idx(out, label_name, labels[keep], data.MNIST_SUBSET_SHA256)


def digits(out: Path) -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    grey = bunch.images  # float64 holding integers 0..16: check that before a lossless cast
    if not (np.all(grey == np.round(grey)) and grey.min() >= 0 and grey.max() <= 16):
        raise SystemExit("sklearn digits: expected integer grey levels 0..16")
    image_name, label_name = data.DIGITS_FILES
    write_idx(out, image_name, grey.astype(np.uint8), data.DIGITS_SHA256)
    write_idx(out, label_name, bunch.target.astype(np.uint8), data.DIGITS_SHA256)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_subparsers(dest="dataset", required=True)
    subset = which.add_parser("mnist-subset", help="from full MNIST")
    subset.add_argument("mnist_dir", help="a directory with the four MNIST IDX files (.gz or not, or MNIST/raw)")
    subset.add_argument("--out", default=str(data.MNIST_SUBSET_DIR), help="where to write (default: %(default)s)")
    digit_parser = which.add_parser("digits", help="from scikit-learn's copy")
    digit_parser.add_argument("--out", default=str(data.DIGITS_DIR), help="where to write (default: %(default)s)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.dataset == "digits":
        digits(out)
    else:
        mnist_subset(args.mnist_dir, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
