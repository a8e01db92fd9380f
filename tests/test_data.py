"""Tests for jaxvae.data. Small IDX files are written to tmp_path; downloads are served by a local
http.server on 127.0.0.1. No test touches the internet or the user's real cache."""

from __future__ import annotations

import gzip
import fnmatch
import hashlib
import http.server
import json
import os
import re
import runpy
import shutil
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxvae import data
from jaxvae.data import DataError, MnistNotFoundError

NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
N_TRAIN, N_TEST = 7, 3


# --------------------------------------------------------------------------- helpers


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: 00 00 08 ndim, big-endian int32 dims, raw bytes."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def fake_split(n: int, seed: int):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


SPLITS = {"train": fake_split(N_TRAIN, 0), "test": fake_split(N_TEST, 1)}


def write_mnist(directory: Path, compress: bool, splits=("train", "test")) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for split in splits:
        for name, array in zip(NAMES[split], SPLITS[split]):
            raw = idx_bytes(array)
            if compress:
                (directory / (name + ".gz")).write_bytes(gzip.compress(raw))
            else:
                (directory / name).write_bytes(raw)
    return directory


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (bound, then released): connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """Never read the real cache, never reach a real mirror, never go through a proxy."""
    monkeypatch.delenv("JAXVAE_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("JAXVAE_MNIST_MIRRORS", f"http://127.0.0.1:{closed_port()}/")
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


# --------------------------------------------------------------------------- read_idx


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_roundtrip(tmp_path, compress):
    images, labels = SPLITS["train"]
    for name, array in [("img", images), ("lbl", labels)]:
        raw = idx_bytes(array)
        path = tmp_path / name
        path.write_bytes(gzip.compress(raw) if compress else raw)
        out = data.read_idx(path)
        assert out.dtype == np.uint8 and out.shape == array.shape
        np.testing.assert_array_equal(out, array)
        out[...] = 0  # an ordinary writable array


def test_gzip_detected_by_magic_not_extension(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"  # no .gz, but gzip content
    path.write_bytes(gzip.compress(idx_bytes(SPLITS["train"][0])))
    np.testing.assert_array_equal(data.read_idx(path, "images"), SPLITS["train"][0])


def _valid():
    return idx_bytes(SPLITS["train"][0])


BROKEN = {
    "empty": (lambda: b"", "empty file"),
    "truncated_gzip": (lambda: gzip.compress(_valid())[:-40], "truncated gzip"),
    # Flipped inside the pixel data (the header is intact, so the reader gets to the CRC at the end);
    # corruption of the header itself is reported as what the header then claims.
    "corrupt_gzip": (
        lambda: (lambda g: g[:200] + bytes(b ^ 0xFF for b in g[200:240]) + g[240:])(gzip.compress(_valid())),
        "corrupt gzip",
    ),
    "corrupt_gzip_crc": (lambda: (lambda g: g[:-8] + bytes([g[-8] ^ 1]) + g[-7:])(gzip.compress(_valid())), "corrupt gzip"),
    "truncated_data": (lambda: _valid()[:-5], "truncated"),
    "truncated_gzip_member_of_short_idx": (lambda: gzip.compress(_valid()[:-5]), "truncated"),
    "trailing_bytes": (lambda: _valid() + b"\0\0\0", "3 trailing bytes"),
    "not_idx": (lambda: b"hello world, not an IDX file", "not an IDX file"),
    "short_header": (lambda: b"\0\0", "too short"),
    "truncated_header": (lambda: _valid()[:9], "truncated IDX header"),
    "wrong_dtype": (lambda: b"\0\0\x0d\x01" + struct.pack(">I", 1) + b"\0\0\0\0", "element type 0x0d"),
    "zero_dims": (lambda: b"\0\0\x08\x00", "0 dimensions"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_read_idx_broken_files(tmp_path, case):
    make, message = BROKEN[case]
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(make())
    with pytest.raises(DataError) as info:
        data.read_idx(path)
    assert str(path) in str(info.value) and message in str(info.value)


@pytest.mark.parametrize("kind, head", [("images", struct.pack(">IIII", 0x803, 0, 28, 28)),
                                        ("labels", struct.pack(">II", 0x801, 0))])
def test_an_idx_file_of_zero_items_is_named(tmp_path, kind, head):
    """Valid IDX, but no MNIST split: the error names the file, not a shape deep in training."""
    path = tmp_path / f"train-{kind}.gz"
    path.write_bytes(gzip.compress(head))
    with pytest.raises(DataError, match=rf"{path}: holds no {kind} \(its IDX header declares shape \(0"):
        data.read_idx(path, kind)
    assert data.read_idx(path).shape[0] == 0  # without a kind, an empty array is what the file holds


def test_labels_where_images_expected(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(SPLITS["train"][1])))
    with pytest.raises(DataError, match=r"wrong magic number 2049 \(a labels file\?\), expected 2051 for images"):
        data.read_idx(path, "images")
    with pytest.raises(DataError, match=r"wrong magic number 2051 \(an images file\?\), expected 2049"):
        labels = tmp_path / "labels"
        labels.write_bytes(idx_bytes(SPLITS["train"][0]))
        data.read_idx(labels, "labels")


def test_read_idx_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        data.read_idx(tmp_path / "nope")
    with pytest.raises(DataError, match="cannot read"):
        data.read_idx(tmp_path)


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "f"


_VALID_SMALL = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
_VALID_GZ = gzip.compress(_VALID_SMALL, mtime=0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    raw=st.one_of(
        st.binary(max_size=64),
        st.binary(max_size=8).map(lambda b: b"\x1f\x8b" + b),
        st.integers(0, len(_VALID_SMALL)).map(lambda k: _VALID_SMALL[:k]),
        st.integers(0, len(_VALID_GZ)).map(lambda k: _VALID_GZ[:k]),
        st.tuples(st.integers(0, len(_VALID_SMALL) - 1), st.integers(0, 255)).map(
            lambda t: _VALID_SMALL[: t[0]] + bytes([t[1]]) + _VALID_SMALL[t[0] + 1 :]
        ),
        st.tuples(st.integers(0, len(_VALID_GZ) - 1), st.integers(1, 255)).map(
            lambda t: _VALID_GZ[: t[0]] + bytes([_VALID_GZ[t[0]] ^ t[1]]) + _VALID_GZ[t[0] + 1 :]
        ),
    ),
    kind=st.sampled_from([None, "images", "labels"]),
)
def test_read_idx_never_raises_anything_but_data_error(fuzz_file, raw, kind):
    fuzz_file.write_bytes(raw)
    try:
        out = data.read_idx(fuzz_file, kind)
    except DataError as e:
        assert str(fuzz_file) in str(e)
        return
    assert out.dtype == np.uint8
    assert out.size == len(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw) - 4 - 4 * out.ndim


# --------------------------------------------------------------------------- finding files


@pytest.mark.parametrize("compress", [False, True])
def test_load_mnist_flat_layout(tmp_path, compress):
    write_mnist(tmp_path / "d", compress)
    for split, n in [("train", N_TRAIN), ("test", N_TEST)]:
        images, labels = data.load_mnist(tmp_path / "d", split, download=False)
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (n,) and labels.dtype == np.uint8
        np.testing.assert_array_equal(images, SPLITS[split][0])
        np.testing.assert_array_equal(labels, SPLITS[split][1])


def test_torchvision_layout_with_both_raw_and_gz(tmp_path):
    raw = tmp_path / "root" / "MNIST" / "raw"
    write_mnist(raw, compress=True)
    write_mnist(raw, compress=False)  # torchvision keeps the .gz and the extracted file
    assert data.find_mnist_dir(tmp_path / "root") == raw
    np.testing.assert_array_equal(data.load_mnist(tmp_path / "root", download=False)[0], SPLITS["train"][0])


def test_mixed_gz_and_raw_in_one_directory(tmp_path):
    d = write_mnist(tmp_path / "d", compress=True, splits=("train",))
    write_mnist(d, compress=False, splits=("test",))
    assert data.find_mnist_dir(d) == d
    assert data.load_mnist(d, "test", download=False)[0].shape == (N_TEST, 28, 28)


def test_root_given_does_not_fall_back_to_env(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXVAE_DATA_DIR", str(write_mnist(tmp_path / "env", True)))
    (tmp_path / "empty").mkdir()
    assert data.find_mnist_dir(tmp_path / "empty") is None
    with pytest.raises(MnistNotFoundError):
        data.load_mnist(tmp_path / "empty", download=False)


def test_env_var_then_xdg_cache(tmp_path, monkeypatch):
    env, cache = tmp_path / "env", tmp_path / "xdg-cache" / "jaxvae" / "mnist"
    monkeypatch.setenv("JAXVAE_DATA_DIR", str(env))
    assert data.find_mnist_dir() is None
    write_mnist(cache, compress=True)
    assert data.find_mnist_dir() == cache
    write_mnist(env / "MNIST" / "raw", compress=False)  # env var wins over the cache, either layout
    assert data.find_mnist_dir() == env / "MNIST" / "raw"
    assert data.load_mnist(split="test", download=False)[0].shape == (N_TEST, 28, 28)
    assert data.mnist_search_dirs() == [env, env / "MNIST" / "raw", cache, cache / "MNIST" / "raw"]


def test_home_cache_without_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cache = write_mnist(tmp_path / "home" / ".cache" / "jaxvae" / "mnist", compress=True)
    assert data.find_mnist_dir() == cache
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # invalid per the XDG spec: ignored
    assert data.find_mnist_dir() == cache


def test_split_only_needs_its_own_files(tmp_path):
    d = write_mnist(tmp_path / "d", compress=False, splits=("train",))
    assert data.find_mnist_dir(d, splits=("train",)) == d
    assert data.find_mnist_dir(d) is None
    with pytest.raises(MnistNotFoundError):
        data.load_mnist(d, "test", download=False)


def test_bad_split(tmp_path):
    with pytest.raises(ValueError, match="'validation'"):
        data.load_mnist(tmp_path, "validation")


# --------------------------------------------------------------------------- load_mnist validation


def test_count_mismatch_names_both_files(tmp_path):
    d = write_mnist(tmp_path / "d", compress=False)
    (d / "train-labels-idx1-ubyte").write_bytes(idx_bytes(SPLITS["train"][1][:-1]))
    with pytest.raises(DataError) as info:
        data.load_mnist(d, download=False)
    msg = str(info.value)
    assert "train-images-idx3-ubyte" in msg and "train-labels-idx1-ubyte" in msg
    assert f"{N_TRAIN} images" in msg and f"{N_TRAIN - 1} labels" in msg


def test_wrong_image_size_and_label_range(tmp_path):
    d = write_mnist(tmp_path / "d", compress=False)
    (d / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((N_TRAIN, 8, 8))))
    with pytest.raises(DataError, match="8x8, expected 28x28"):
        data.load_mnist(d, download=False)
    d = write_mnist(tmp_path / "e", compress=False)
    (d / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.full(N_TEST, 17)))
    with pytest.raises(DataError, match="label 17 out of range"):
        data.load_mnist(d, "test", download=False)


def test_labels_file_in_place_of_images_in_load_mnist(tmp_path):
    d = write_mnist(tmp_path / "d", compress=True)
    (d / "train-images-idx3-ubyte.gz").write_bytes((d / "train-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: wrong magic number 2049 \(a labels file"):
        data.load_mnist(d, download=False)


# --------------------------------------------------------------------------- download


class Server:
    """http.server in a thread; ``routes`` maps a path to (status, body, declared length or None)."""

    def __init__(self):
        self.routes: dict[str, tuple[int, bytes, int | None]] = {}
        self.hits: list[str] = []
        routes, hits = self.routes, self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hits.append(self.path)
                status, body, length = routes.get(self.path, (404, b"not found", None))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        # (a short poll interval: shutdown() waits up to one interval)
        self.thread.start()

    def serve_mnist(self, prefix: str, split: str = "train") -> dict[str, str]:
        """Serve good archives of ``split`` under ``prefix``; return their MD5s (for checksums=)."""
        sums = {}
        for name, array in zip(NAMES[split], SPLITS[split]):
            archive = gzip.compress(idx_bytes(array))
            self.routes[f"{prefix}{name}.gz"] = (200, archive, None)
            sums[name] = hashlib.md5(archive).hexdigest()
        return sums


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def test_download_good_archives_then_load(tmp_path, server):
    sums = server.serve_mnist("/m/", "train")
    dest = tmp_path / "dest"
    dest.mkdir()  # a given root must exist; the files it lacks are downloaded into it
    logs = []
    images, labels = data.load_mnist(
        dest, "train", mirrors=[server.url + "/m/"], checksums=sums, log=logs.append
    )
    np.testing.assert_array_equal(images, SPLITS["train"][0])
    np.testing.assert_array_equal(labels, SPLITS["train"][1])
    assert sorted(p.name for p in dest.iterdir()) == [n + ".gz" for n in sorted(NAMES["train"])]
    assert len(logs) == 2 and all("Downloaded" in line for line in logs)
    server.hits.clear()
    data.load_mnist(dest, "train", mirrors=[server.url + "/m/"], checksums=sums)
    assert server.hits == []  # second load is from disk


def test_download_goes_to_env_dir_else_cache(tmp_path, server, monkeypatch):
    sums = server.serve_mnist("/m/", "test")
    monkeypatch.setenv("JAXVAE_MNIST_MIRRORS", f"http://127.0.0.1:{closed_port()}/, {server.url}/m/")
    monkeypatch.setenv("JAXVAE_DATA_DIR", str(tmp_path / "env"))
    data.load_mnist(split="test", checksums=sums)  # env mirrors: the first refuses, the second serves
    assert data.find_mnist_dir(splits=("test",)) == tmp_path / "env"
    monkeypatch.delenv("JAXVAE_DATA_DIR")
    data.load_mnist(split="test", checksums=sums)
    assert data.find_mnist_dir(splits=("test",)) == tmp_path / "xdg-cache" / "jaxvae" / "mnist"


def test_first_mirror_404_second_good(tmp_path, server):
    sums = server.serve_mnist("/good/", "train")
    dest = data.download_mnist(
        tmp_path / "d", [server.url + "/missing/", server.url + "/good"], splits=("train",), checksums=sums
    )
    assert data.find_mnist_dir(dest, splits=("train",)) == dest
    assert server.hits == [
        "/missing/train-images-idx3-ubyte.gz",
        "/good/train-images-idx3-ubyte.gz",
        "/missing/train-labels-idx1-ubyte.gz",
        "/good/train-labels-idx1-ubyte.gz",
    ]


def test_only_missing_files_are_downloaded(tmp_path, server):
    sums = server.serve_mnist("/m/", "train")
    d = write_mnist(tmp_path / "d", compress=False, splits=("train",))
    (d / "train-labels-idx1-ubyte").unlink()
    data.download_mnist(d, [server.url + "/m/"], splits=("train",), checksums=sums)
    assert server.hits == ["/m/train-labels-idx1-ubyte.gz"]


def test_published_checksums_are_the_default(tmp_path, server):
    server.serve_mnist("/m/", "train")  # our fake archives cannot match the real MNIST MD5s
    with pytest.raises(data.DownloadError, match="does not match the published f68b3c2dcbeaaa9fbdd348bbdeb94873"):
        data.download_mnist(tmp_path / "d", [server.url + "/m/"], splits=("train",))
    assert not (tmp_path / "d").exists()  # the directory it created is removed again


def _listing(directory: Path) -> list[str]:
    return sorted(os.listdir(directory)) if directory.exists() else []


@pytest.mark.parametrize("case", ["wrong_checksum", "truncated_body", "truncated_md5_ok", "cut_connection", "corrupt"])
def test_bad_downloads_leave_no_file(tmp_path, server, case):
    sums = server.serve_mnist("/m/", "train")
    name = "/m/train-images-idx3-ubyte.gz"
    archive = server.routes[name][1]
    if case == "wrong_checksum":
        sums = dict(sums, **{"train-images-idx3-ubyte": "0" * 32})
    elif case == "truncated_body":  # honest length, short archive: the MD5 catches it
        server.routes[name] = (200, archive[:-30], None)
    elif case == "truncated_md5_ok":  # MD5 of the short archive given: the IDX check catches it
        server.routes[name] = (200, archive[:-30], None)
        sums["train-images-idx3-ubyte"] = hashlib.md5(archive[:-30]).hexdigest()
    elif case == "cut_connection":  # the server promises more bytes than it sends
        server.routes[name] = (200, archive[:-30], len(archive))
    elif case == "corrupt":
        bad = gzip.compress(idx_bytes(SPLITS["train"][1]))  # a labels archive served as images
        server.routes[name] = (200, bad, None)
        sums["train-images-idx3-ubyte"] = hashlib.md5(bad).hexdigest()
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(data.DownloadError) as info:
        data.download_mnist(dest, [server.url + "/m/"], splits=("train",), checksums=sums)
    assert "train-images-idx3-ubyte.gz" in str(info.value)
    assert _listing(dest) == []  # neither a partial file nor a leftover temporary
    with pytest.raises(MnistNotFoundError):  # and so nothing loads afterwards
        data.load_mnist(dest, "train", download=False)


def test_offline_refused_port(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXVAE_DATA_DIR", str(tmp_path / "env"))
    with pytest.raises(MnistNotFoundError) as info:
        data.load_mnist()  # mirrors from JAXVAE_MNIST_MIRRORS: a closed port (autouse fixture)
    msg = str(info.value)
    cache = tmp_path / "xdg-cache" / "jaxvae" / "mnist"
    for place in (tmp_path / "env", tmp_path / "env" / "MNIST" / "raw", cache, cache / "MNIST" / "raw"):
        assert str(place) in msg
    assert "JAXVAE_DATA_DIR" in msg and "digits" in msg and "--data-dir" in msg
    assert "refused" in msg.lower()
    assert "\n" not in msg
    assert not (tmp_path / "env").exists()
    monkeypatch.delenv("JAXVAE_DATA_DIR")  # now the download goes to the cache: ~/.cache/jaxvae/mnist
    with pytest.raises(MnistNotFoundError):
        data.load_mnist()
    assert not (tmp_path / "xdg-cache").exists()  # neither jaxvae/mnist nor its parents are left behind


def test_download_disabled(tmp_path):
    with pytest.raises(MnistNotFoundError, match="download disabled"):
        data.load_mnist(tmp_path, download=False)


@pytest.mark.parametrize("make", [None, "file"])
def test_given_root_must_be_a_directory(tmp_path, server, make):
    sums = server.serve_mnist("/m/", "train")  # a download would succeed: the check comes first
    root = tmp_path / "typo"
    if make == "file":
        root.write_bytes(b"")
    problem = "is not a directory" if make else "does not exist"
    with pytest.raises(DataError, match=f"^{root}: the given data directory {problem}$") as info:
        data.load_mnist(root, "train", mirrors=[server.url + "/m/"], checksums=sums)
    assert not isinstance(info.value, MnistNotFoundError)  # so load_dataset does not fall back
    with pytest.raises(DataError, match=f"^{root}: the given data directory {problem}$"):
        data.load_dataset("mnist", data_dir=root, mirrors=[server.url + "/m/"], checksums=sums, log=None)
    assert server.hits == [] and (root.is_file() if make else not root.exists())


def test_mirrors_from_env(monkeypatch):
    monkeypatch.setenv("JAXVAE_MNIST_MIRRORS", " http://a/ , ,http://b ")
    assert data.mnist_mirrors() == ["http://a/", "http://b"]
    monkeypatch.setenv("JAXVAE_MNIST_MIRRORS", "")
    assert data.mnist_mirrors() == list(data.MNIST_MIRRORS)


# --------------------------------------------------------------------------- digits, scaling, datasets


def test_load_digits_is_scikit_learns_copy():
    images, labels = data.load_digits()
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8
    assert labels.shape == (1797,) and labels.dtype == np.uint8
    assert images.max() == 16 and images.min() == 0
    for name, array in zip(data.DIGITS_FILES, (images, labels)):
        content = gzip.decompress((data.DIGITS_DIR / (name + ".gz")).read_bytes())
        assert content == idx_bytes(array) and hashlib.sha256(content).hexdigest() == data.DIGITS_SHA256[name]
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    ref = sklearn_datasets.load_digits()
    np.testing.assert_array_equal(images, ref.images)
    np.testing.assert_array_equal(labels, ref.target)


def test_make_datasets_rebuilds_the_bundled_digits(tmp_path, monkeypatch, capsys):
    pytest.importorskip("sklearn")
    script = Path(data.__file__).resolve().parent / "datasets" / "make_datasets.py"
    assert runpy.run_path(str(script))["main"](["digits", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("matches jaxvae.data") == 2
    bundled = data.load_digits()
    monkeypatch.setattr(data, "DIGITS_DIR", tmp_path)
    for rebuilt, array in zip(data.load_digits(), bundled):  # the rebuilt files pass the same checksums
        np.testing.assert_array_equal(rebuilt, array)


def test_to_unit_float_matches_torchvision_arithmetic():
    x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    out = data.to_unit_float(x)
    assert out.shape == (1, 256) and out.dtype == np.float32
    assert out[0, 0] == 0.0 and out[0, 255] == 1.0
    # torchvision ToDtype(float32, scale=True): image.to(float32).mul_(1.0 / 255)
    np.testing.assert_array_equal(out[0], x.ravel().astype(np.float32) * np.float32(1 / 255))
    np.testing.assert_array_equal(data.to_unit_float(np.arange(17).reshape(1, 17), 16)[0], np.arange(17) / 16)


def test_to_unit_float_same_as_torch():
    torch = pytest.importorskip("torch")
    x = np.arange(256, dtype=np.uint8).reshape(2, 128)
    expected = torch.from_numpy(x).to(torch.float32).mul_(1.0 / 255).numpy()
    np.testing.assert_array_equal(data.to_unit_float(x), expected)


@pytest.mark.parametrize(
    "bad, max_value, match",
    [
        (np.zeros((0, 28, 28), np.uint8), 255, "non-empty"),
        (np.zeros(5, np.uint8), 255, "shape"),
        (np.full((2, 4), 17), 16, r"\[0, 16\]"),
        (np.full((2, 4), -1), 255, "in \\[0"),
        (np.full((2, 4), 1.5), 1, "in \\[0"),
        (np.full((2, 4), np.nan), 1, "in \\[0"),
        (np.zeros((2, 4), bool), 255, "dtype bool"),
        (np.array([["a"]]), 255, "dtype"),
        (np.zeros((2, 4)), 0, "max_value"),
    ],
)
def test_to_unit_float_errors(bad, max_value, match):
    with pytest.raises(ValueError, match=match):
        data.to_unit_float(bad, max_value)


def test_load_dataset_digits_is_deterministic():
    a, b = data.load_dataset("digits"), data.load_dataset("digits", log=None)
    assert a.name == "digits" and a.image_shape == (8, 8)
    assert a.train_x.shape == (1500, 64) and a.test_x.shape == (297, 64)
    assert a.train_x.dtype == np.float32 and 0 <= a.train_x.min() and a.train_x.max() == 1.0
    assert a.train_y.dtype == np.uint8 and a.test_y.shape == (297,)
    np.testing.assert_array_equal(a.test_x, b.test_x)
    images, labels = data.load_digits()
    np.testing.assert_array_equal(a.test_x, images[-297:].reshape(297, 64) / np.float32(16))
    np.testing.assert_array_equal(a.test_y, labels[-297:])


def test_load_dataset_mnist_from_dir(tmp_path):
    d = write_mnist(tmp_path / "d", compress=True)
    ds = data.load_dataset("mnist", data_dir=d, log=None)
    assert ds.name == "mnist" and ds.image_shape == (28, 28)
    assert ds.train_x.shape == (N_TRAIN, 784) and ds.test_x.shape == (N_TEST, 784)
    np.testing.assert_array_equal(ds.train_x, data.to_unit_float(SPLITS["train"][0]))
    np.testing.assert_array_equal(ds.test_y, SPLITS["test"][1])


@pytest.mark.parametrize("download", [True, False])
def test_load_dataset_falls_back_to_the_subset_with_one_line(tmp_path, download):
    # the autouse fixture: empty cache under tmp_path, no JAXVAE_DATA_DIR, a mirror that refuses
    logs = []
    ds = data.load_dataset("mnist", download=download, log=logs.append)
    assert ds.name == "mnist-subset" and ds.image_shape == (28, 28)
    np.testing.assert_array_equal(ds.test_x, data.load_dataset("mnist-subset").test_x)
    (line,) = logs
    cache = tmp_path / "xdg-cache" / "jaxvae" / "mnist"
    assert "\n" not in line and line.startswith(f"MNIST not found in {cache}, {cache / 'MNIST' / 'raw'}")
    assert ("Connection refused" in line) if download else ("(download disabled)" in line)
    for hint in (
        "using the bundled MNIST subset (10000 train / 2000 test images, dataset 'mnist-subset')",
        "pass data_dir=DIR",  # in a Python caller's words (the command line's: tests/test_cli_data.py)
        "DIR/MNIST/raw",
        ".gz or not",
        "JAXVAE_DATA_DIR=DIR",
        f"let it download into {cache};",
        "require=True makes this an error",
    ):
        assert hint in line
    assert "--" not in line


def test_a_named_data_dir_without_mnist_is_an_error_and_the_fallback_names_where_a_download_would_go(
        tmp_path, monkeypatch):
    logs = []
    with pytest.raises(MnistNotFoundError, match=str(tmp_path)):
        data.load_dataset("mnist", data_dir=tmp_path, log=logs.append)  # exists, lacks the files: asked for there
    assert logs == []
    monkeypatch.setenv("JAXVAE_DATA_DIR", str(tmp_path / "env"))
    data.load_dataset("mnist", log=logs.append)
    assert f"let it download into {tmp_path / 'env'};" in logs[0]


def test_load_dataset_require_raises(tmp_path):
    with pytest.raises(MnistNotFoundError):
        data.load_dataset("mnist", data_dir=tmp_path, require=True, log=None)


def test_load_dataset_corrupt_local_files_raise_not_fall_back(tmp_path):
    d = write_mnist(tmp_path / "d", compress=True)
    (d / "t10k-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(DataError, match="empty file"):
        data.load_dataset("mnist", data_dir=d, log=None)


def test_load_dataset_unknown_name():
    with pytest.raises(ValueError, match="'cifar'; valid names: mnist, mnist-subset, digits$"):
        data.load_dataset("cifar")


# --------------------------------------------------------------------------- the bundled MNIST subset

SUBSET_PER_DIGIT = {"train": 1000, "test": 200}  # the selection rule in datasets/mnist_subset/README.md


@pytest.mark.parametrize("split", ["train", "test"])
def test_bundled_subset_loads(split):
    images, labels = data.load_mnist_subset(split)
    n = 10 * SUBSET_PER_DIGIT[split]
    assert images.shape == (n, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == [SUBSET_PER_DIGIT[split]] * 10
    assert 0.7 < np.mean(images == 0) < 0.9 and images.max() == 255  # MNIST-like: mostly background
    for name, array in zip(NAMES[split], (images, labels)):
        # the recorded checksums are those of the shipped content, recomputed here without data.py
        content = gzip.decompress((data.MNIST_SUBSET_DIR / (name + ".gz")).read_bytes())
        assert content == idx_bytes(array)
        assert hashlib.sha256(content).hexdigest() == data.MNIST_SUBSET_SHA256[name]


def test_load_dataset_mnist_subset():
    ds = data.load_dataset("mnist-subset", data_dir=None, download=False, log=None)
    assert ds.name == "mnist-subset" and ds.image_shape == (28, 28)
    assert ds.train_x.shape == (10000, 784) and ds.test_x.shape == (2000, 784)
    assert ds.train_x.dtype == np.float32 and ds.train_y.dtype == np.uint8
    np.testing.assert_array_equal(ds.train_x, data.to_unit_float(data.load_mnist_subset("train")[0]))
    np.testing.assert_array_equal(ds.test_y, data.load_mnist_subset("test")[1])


@pytest.fixture
def subset_copy(tmp_path, monkeypatch):
    """A copy of the bundled subset that a test may damage, in place of the real one."""
    copy = tmp_path / "subset"
    shutil.copytree(data.MNIST_SUBSET_DIR, copy)
    monkeypatch.setattr(data, "MNIST_SUBSET_DIR", copy)
    return copy


def test_damaged_bundled_file_raises_naming_it(subset_copy):
    path = subset_copy / "t10k-images-idx3-ubyte.gz"
    content = bytearray(gzip.decompress(path.read_bytes()))
    content[-1] ^= 1  # one pixel off by one grey level: a valid IDX file, only the checksum can tell
    path.write_bytes(gzip.compress(bytes(content)))
    data.load_mnist_subset("train")  # the intact split still loads
    expected = data.MNIST_SUBSET_SHA256["t10k-images-idx3-ubyte"]
    message = f"^{re.escape(str(path))}: content SHA-256 [0-9a-f]{{64}}, expected {expected}: a damaged copy"
    with pytest.raises(DataError, match=message):
        data.load_mnist_subset("test")
    with pytest.raises(DataError, match=message):  # nor does the fallback hide it
        data.load_dataset("mnist", download=False, log=None)


def test_truncated_or_missing_bundled_file_raises_naming_it(subset_copy):
    path = subset_copy / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=f"^{re.escape(str(path))}: truncated gzip archive"):
        data.load_mnist_subset("train")
    path.unlink()
    with pytest.raises(DataError, match=re.escape(f"{path.with_suffix('')}[.gz]: missing (reinstall jaxvae")):
        data.load_dataset("mnist-subset")


def test_bundled_files_are_package_data():
    pyproject = Path(data.__file__).resolve().parents[1] / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip("an installed jaxvae, not a source checkout")
    tomllib = pytest.importorskip("tomllib")
    globs = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"]["jaxvae"]
    package = Path(data.__file__).resolve().parent
    for directory, n_files in ((data.MNIST_SUBSET_DIR, 6), (data.DIGITS_DIR, 4)):
        shipped = sorted(p.relative_to(package).as_posix() for p in directory.iterdir())
        assert len(shipped) == n_files and {"LICENSE", "README.md"} <= {Path(f).name for f in shipped}
        for file in shipped:
            assert any(fnmatch.fnmatch(file, g) for g in globs), f"{file} is not in [tool.setuptools.package-data]"


# --------------------------------------------------------------------------- fingerprints


def test_fingerprint_equal_for_equal_values_whatever_the_layout():
    x = np.random.default_rng(0).random((50, 12), dtype=np.float32)
    fp = data.fingerprint(x)
    assert (fp.shape, fp.dtype) == ((50, 12), "float32")
    # an independent computation of the documented hash: little-endian bytes in C order
    assert fp.sha256 == hashlib.sha256(x.astype("<f4").tobytes(order="C")).hexdigest()
    for same in (x.copy(), np.asfortranarray(x), x.astype(">f4"), x[::-1][::-1], np.array(x.tolist(), np.float32)):
        assert data.fingerprint(same) == fp and fp.mismatch(data.fingerprint(same)) is None
    jnp = pytest.importorskip("jax.numpy")
    assert data.fingerprint(jnp.asarray(x)) == fp


def test_fingerprint_one_changed_pixel():
    x = np.random.default_rng(1).random((20, 784), dtype=np.float32)
    y = x.copy()
    y[7, 300] = np.nextafter(y[7, 300], np.float32(2))  # the smallest possible change
    a, b = data.fingerprint(x), data.fingerprint(y)
    assert a != b and a.shape == b.shape and a.dtype == b.dtype
    line = a.mismatch(b)
    assert line == f"sha256 differs: {a} vs {b}" and "\n" not in line
    assert str(a) == f"shape (20, 784) float32 sha256 {a.sha256[:12]}..." and a.sha256[:12] != b.sha256[:12]


def test_fingerprint_dtype_and_shape_differences():
    x = np.arange(24, dtype=np.float32).reshape(4, 6)
    a = data.fingerprint(x)
    reshaped = data.fingerprint(x.reshape(6, 4))  # same bytes, other shape
    assert reshaped.sha256 == a.sha256 and a.mismatch(reshaped) == f"shape differs: {a} vs {reshaped}"
    wider = data.fingerprint(x.astype(np.float64))
    assert a.mismatch(wider).startswith("dtype and sha256 differ: shape (4, 6) float32 ")
    assert " vs shape (4, 6) float64 " in a.mismatch(wider)
    other = data.fingerprint(np.zeros((1500, 64), np.float32))
    assert a.mismatch(other).startswith("shape and sha256 differ: ")


def test_fingerprint_json_round_trip():
    fp = data.fingerprint(np.random.default_rng(2).integers(0, 256, (3, 28, 28), dtype=np.uint8))
    back = data.Fingerprint.from_dict(json.loads(json.dumps(fp.to_dict())))
    assert back == fp and isinstance(back.shape, tuple) and back.mismatch(fp) is None
    assert fp.to_dict() == {"shape": [3, 28, 28], "dtype": "uint8", "sha256": fp.sha256}


@pytest.mark.parametrize(
    "change, match",
    [
        ({"shape": [3, -1]}, "field 'shape'"),
        ({"shape": "3x28"}, "field 'shape'"),
        ({"shape": [3.0]}, "field 'shape'"),
        ({"dtype": "f4"}, "field 'dtype'.*'f4'"),
        ({"dtype": "no-such-type"}, "field 'dtype'"),
        ({"sha256": "ABC"}, "field 'sha256'.*'ABC'"),
        ({"sha256": "0" * 63 + "g"}, "field 'sha256'"),
        ({"extra": 1}, "unknown field 'extra'"),
    ],
)
def test_fingerprint_from_dict_errors_name_the_field(change, match):
    good = data.fingerprint(np.zeros(3, np.uint8)).to_dict()
    with pytest.raises(ValueError, match=match):
        data.Fingerprint.from_dict({**good, **change})
    with pytest.raises(ValueError, match="missing field 'sha256'"):
        data.Fingerprint.from_dict({"shape": [3], "dtype": "uint8"})


def test_fingerprint_refuses_object_arrays():
    with pytest.raises(ValueError, match="dtype object"):
        data.fingerprint(np.array([1, "a"], dtype=object))


# --------------------------------------------------------------------------- numpy_batches


def test_numpy_batches_cover_epoch_once():
    x = np.arange(10)
    batches = list(data.numpy_batches(x, 3, seed=0))
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert sorted(np.concatenate(batches)) == list(range(10))
    again = list(data.numpy_batches(x, 3, seed=0))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    assert not np.array_equal(np.concatenate(batches), x)  # actually shuffled
    other = np.concatenate(list(data.numpy_batches(x, 3, seed=1)))
    assert not np.array_equal(np.concatenate(batches), other)


def test_numpy_batches_options():
    x = np.arange(20).reshape(10, 2)
    y = np.arange(10) * 10
    assert [len(b) for b in data.numpy_batches(x, 4, drop_last=True, seed=0)] == [4, 4]
    plain = list(data.numpy_batches(x, 4, shuffle=False))
    np.testing.assert_array_equal(np.concatenate(plain), x)
    for bx, by in data.numpy_batches(x, 3, y=y, seed=5):
        np.testing.assert_array_equal(bx[:, 0] * 5, by)
    assert len(list(data.numpy_batches(x, 100))) == 1
    assert list(data.numpy_batches(x, 100, drop_last=True)) == []


@pytest.mark.parametrize("bs", [0, -1, 2.0, True, None])
def test_numpy_batches_bad_batch_size_fails_at_call(bs):
    with pytest.raises(ValueError, match="batch_size"):
        data.numpy_batches(np.arange(4), bs)


def test_numpy_batches_label_mismatch():
    with pytest.raises(ValueError, match="4 items but y has 3"):
        data.numpy_batches(np.arange(4), 2, y=np.arange(3))


# --------------------------------------------------------------------------- module hygiene, real MNIST


def test_import_is_light():
    # jaxvae's names load on first use: the data module alone loads neither jax nor torch nor sklearn
    code = """
import sys
import jaxvae.data
bad = {"torch", "sklearn", "jax"} & set(sys.modules)
assert not bad, bad
"""
    subprocess.run([sys.executable, "-c", code], check=True)


REAL_MNIST = os.environ.get("JAXVAE_TEST_MNIST_DIR")


@pytest.mark.skipif(not (REAL_MNIST and Path(REAL_MNIST).is_dir()), reason="set JAXVAE_TEST_MNIST_DIR to real MNIST")
def test_real_mnist():
    images, labels = data.load_mnist(REAL_MNIST, "train", download=False)
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    images, labels = data.load_mnist(REAL_MNIST, "test", download=False)
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    data.verify_mnist_dir(data.find_mnist_dir(REAL_MNIST))


@pytest.mark.skipif(not (REAL_MNIST and Path(REAL_MNIST).is_dir()), reason="set JAXVAE_TEST_MNIST_DIR to real MNIST")
def test_make_datasets_reproduces_the_bundled_mnist_subset(tmp_path, monkeypatch, capsys):
    script = Path(data.__file__).resolve().parent / "datasets" / "make_datasets.py"
    assert runpy.run_path(str(script))["main"](["mnist-subset", REAL_MNIST, "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("matches jaxvae.data") == 4
    bundled = {split: data.load_mnist_subset(split) for split in ("train", "test")}
    monkeypatch.setattr(data, "MNIST_SUBSET_DIR", tmp_path)
    for split, (images, labels) in bundled.items():  # the rebuilt files pass the same checksums
        rebuilt_images, rebuilt_labels = data.load_mnist_subset(split)
        np.testing.assert_array_equal(rebuilt_images, images)
        np.testing.assert_array_equal(rebuilt_labels, labels)


def test_verify_mnist_dir_rejects_other_content(tmp_path):
    d = write_mnist(tmp_path / "d", compress=True, splits=("train",))
    with pytest.raises(DataError) as info:
        data.verify_mnist_dir(d)
    msg = str(info.value)
    assert "content MD5" in msg and "t10k-images-idx3-ubyte[.gz]: missing" in msg
