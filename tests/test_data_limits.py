"""Reading IDX files is bounded by what their header declares: decompression bombs, endless raw files
and lying headers fail with one line naming the file, without allocating what they would inflate to.
Memory is measured with tracemalloc (numpy and zlib allocations are traced too)."""

from __future__ import annotations

import struct
import tracemalloc
import zlib

import pytest

from jaxvae import data
from jaxvae.data import DataError

MiB = 1 << 20
BOMB_INFLATED = 256 * MiB  # what the bomb below inflates to; the readers may use a few MiB at most
PEAK_LIMIT = 8 * MiB
TEN_IMAGES = b"\0\0\x08\x03" + struct.pack(">3I", 10, 28, 28)  # declares 7840 bytes of pixels


def write_bomb(path, header: bytes, inflated: int) -> None:
    """A single-member gzip of ``header`` + ``inflated`` zero bytes, compressed chunk by chunk straight
    to disk (about 1 KiB per MiB), so building it costs the test no memory."""
    zeros = bytes(MiB)
    gz = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # wbits 16+: gzip container
    with open(path, "wb") as f:
        f.write(gz.compress(header))
        for _ in range(inflated // MiB):
            f.write(gz.compress(zeros))
        f.write(gz.flush())


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    path = tmp_path_factory.mktemp("bomb") / "train-images-idx3-ubyte.gz"
    write_bomb(path, TEN_IMAGES, BOMB_INFLATED)
    assert path.stat().st_size < BOMB_INFLATED // 500  # it really is a bomb
    return path


def peak_of(call):
    """``(exception raised by call(), tracemalloc peak in bytes)``; call() must raise."""
    tracemalloc.start()
    try:
        with pytest.raises(Exception) as info:
            call()
        return info.value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --------------------------------------------------------------------------- jaxvae.data


def test_read_idx_stops_a_decompression_bomb(bomb):
    error, peak = peak_of(lambda: data.read_idx(bomb, "images"))
    assert isinstance(error, DataError)
    msg = str(error)
    assert msg.startswith(f"{bomb}: ") and "\n" not in msg
    assert "trailing bytes after the 7840 bytes of shape (10, 28, 28)" in msg
    assert peak < PEAK_LIMIT, f"peak {peak / MiB:.1f} MiB for a bomb of {BOMB_INFLATED // MiB} MiB"


def test_verify_mnist_dir_stops_a_decompression_bomb(bomb):
    error, peak = peak_of(lambda: data.verify_mnist_dir(bomb.parent, splits=("train",)))
    assert isinstance(error, DataError)
    assert f"{bomb}: more than 1024 trailing bytes" in str(error)
    assert "train-labels-idx1-ubyte[.gz]: missing" in str(error)  # the other problems are still listed
    assert peak < PEAK_LIMIT


def test_download_of_a_decompression_bomb_is_refused(bomb, tmp_path):
    # a file:// mirror serves the bomb; no checksum, so only the content check can stop it
    dest = tmp_path / "dest"
    mirror = bomb.parent.as_uri() + "/"
    error, peak = peak_of(
        lambda: data.download_mnist(dest, [mirror], splits=("train",), checksums=None)
    )
    assert isinstance(error, data.DownloadError)
    assert "train-images-idx3-ubyte.gz" in str(error) and "trailing bytes" in str(error)
    assert peak < PEAK_LIMIT + 2 * bomb.stat().st_size  # the archive itself is held (and copied) once
    assert not dest.exists()


def test_raw_file_read_stops_at_the_declared_size(tmp_path):
    path = tmp_path / "images"
    with open(path, "wb") as f:
        f.write(TEN_IMAGES + bytes(7840))
        f.truncate(BOMB_INFLATED)  # sparse: 256 MiB long, nothing on disk
    error, peak = peak_of(lambda: data.read_idx(path))
    assert isinstance(error, DataError) and "more than 1024 trailing bytes" in str(error)
    assert peak < PEAK_LIMIT


@pytest.mark.parametrize("compress", [False, True])
def test_header_declaring_too_much_is_refused(tmp_path, compress):
    header = b"\0\0\x08\x03" + struct.pack(">3I", 1 << 16, 1 << 8, 1 << 7)  # 2 GiB of pixels
    path = tmp_path / "lying"
    path.write_bytes(zlib.compress(header, wbits=31) if compress else header)
    error, peak = peak_of(lambda: data.read_idx(path))
    assert isinstance(error, DataError)
    assert str(error).startswith(f"{path}: IDX header declares shape (65536, 256, 128), 2147483648 bytes")
    assert str(data.MAX_IDX_BYTES) in str(error)
    assert peak < MiB


def test_gzip_header_declaring_more_than_the_file_can_inflate_to_is_refused_at_once(tmp_path):
    declared = (1_360_000, 28, 28)  # 1.07 GB of pixels, under MAX_IDX_BYTES, in a gzip of about 16 KiB
    path = tmp_path / "train-images-idx3-ubyte.gz"
    write_bomb(path, b"\0\0\x08\x03" + struct.pack(">3I", *declared), 16 * MiB)
    size = path.stat().st_size
    error, peak = peak_of(lambda: data.read_idx(path, "images"))
    assert isinstance(error, DataError)
    assert str(error) == (f"{path}: IDX header declares shape {declared}, 1066240000 bytes, more than this file can "
                          f"hold (a gzip file of {size} bytes inflates to {size * 1032} at most)")
    assert peak < MiB  # refused from the header: nothing inflated


def test_a_gzip_at_deflates_best_ratio_is_still_read(tmp_path):
    path = tmp_path / "zeros.gz"
    write_bomb(path, TEN_IMAGES[:4] + struct.pack(">3I", 4096, 64, 64), 16 * MiB)  # zeros: ratio near the limit
    assert 16 * MiB > 900 * path.stat().st_size
    assert data.read_idx(path, "images").shape == (4096, 64, 64)


def test_declared_size_is_not_allocated_before_the_data_arrives(tmp_path):
    declared = (1000, 1000, 1000)  # 1e9 bytes: under the limit, yet the file holds 16 bytes
    assert 10**9 < data.MAX_IDX_BYTES
    path = tmp_path / "short"
    path.write_bytes(b"\0\0\x08\x03" + struct.pack(">3I", *declared))
    error, peak = peak_of(lambda: data.read_idx(path))
    assert f"{path}: truncated: shape {declared} needs 1000000000 data bytes, found 0" == str(error)
    assert peak < 4 * MiB  # one read buffer (1 MiB pieces), not the gigabyte


def test_a_short_tail_is_still_counted_exactly(tmp_path):
    path = tmp_path / "tail"
    path.write_bytes(zlib.compress(TEN_IMAGES + bytes(7840 + 1024), wbits=31))  # exactly the margin
    with pytest.raises(DataError, match=r": 1024 trailing bytes after the 7840 bytes"):
        data.read_idx(path)


# --------------------------------------------------------------------------- torchref


def test_torchref_read_idx_stops_a_decompression_bomb(bomb):
    torchref_data = pytest.importorskip("torchref.data")
    error, peak = peak_of(lambda: torchref_data.read_idx(bomb))
    assert type(error) is ValueError
    assert str(error).startswith(f"{bomb}: header says (10, 28, 28) (7840 bytes) but more than")
    assert peak < PEAK_LIMIT


def test_torchref_read_idx_refuses_a_lying_header(tmp_path):
    torchref_data = pytest.importorskip("torchref.data")
    path = tmp_path / "lying.gz"
    path.write_bytes(zlib.compress(b"\0\0\x08\x03" + struct.pack(">3I", 1 << 16, 1 << 8, 1 << 7), wbits=31))
    error, peak = peak_of(lambda: torchref_data.read_idx(path))
    assert type(error) is ValueError and str(error).startswith(f"{path}: header says (65536, 256, 128)")
    assert "limit" in str(error)
    assert peak < MiB
