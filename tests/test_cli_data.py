"""A new user's first run, offline: the README's Quick start works in order, MNIST's absence is one
line that says how to get it, and runs without --out are named after the data they used."""
import re
import shlex
import time
from pathlib import Path

import pytest

from jaxvae import cli
from jaxvae.cli import rundir
from jaxvae.runs import read_run_config

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No MNIST anywhere and every download refused at once (a closed port on this machine)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JAXVAE_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("JAXVAE_MNIST_MIRRORS", "http://127.0.0.1:9/")
    return tmp_path


def quick_start_commands() -> list[list[str]]:
    """The ``jaxvae`` lines of the README's Quick start, in order, comments dropped."""
    section = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    return [shlex.split(line, comments=True)[1:] for line in block.splitlines() if line.startswith("jaxvae ")]


def one_epoch(argv: list[str]) -> list[str]:
    """The same command with ``--epochs 1``: what is tested is the order and the directories, not the model."""
    return [("1" if previous == "--epochs" else arg) for previous, arg in zip(["", *argv], argv)]


@pytest.mark.slow
def test_the_quick_start_works_in_order_offline(offline, capsys):
    commands = quick_start_commands()
    assert [c[0] for c in commands][:4] == ["train", "evaluate", "plot", "export"]
    for argv in commands:
        if "/path/to/mnist" in argv:  # a placeholder for the user's own files
            continue
        if argv[0] == "export":
            pytest.importorskip("torch")
        code = cli.main(one_epoch(argv))
        out, err = capsys.readouterr()
        assert code == 0, (argv, err)
        if argv[0] == "train" and "--dataset" not in argv:  # full MNIST asked for, none to be had
            (line,) = err.strip().splitlines()
            for hint in ("mnist-subset", "--data-dir DIR", "JAXVAE_DATA_DIR=DIR", "download into", "--require-mnist"):
                assert hint in line
            run_dir = Path(re.search(r"run directory: (\S+)", out).group(1))
            assert run_dir.parent == Path("runs") and run_dir.name.startswith("mnist-subset-")
            assert read_run_config(run_dir).dataset == "mnist-subset"
    assert (offline / "runs" / "subset" / "evaluate.json").is_file()
    assert len(list((offline / "runs" / "subset" / "figures").glob("*.png"))) == 5
    assert (offline / "runs" / "subset" / "model.pt").is_file()  # export writes into the run by default
    assert not list(offline.glob("*.pt"))


def test_runs_without_out_never_share_a_directory(offline, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt: "20260101-120000")  # two starts within one second
    first = rundir.default_run_dir("digits")
    assert first == Path("runs/digits-20260101-120000")
    first.mkdir(parents=True)
    assert rundir.default_run_dir("digits") == Path("runs/digits-20260101-120000-2")
    Path("runs/digits-20260101-120000-2").mkdir()
    assert rundir.default_run_dir("digits") == Path("runs/digits-20260101-120000-3")
    assert rundir.default_run_dir("mnist-subset") == Path("runs/mnist-subset-20260101-120000")


def test_a_named_data_dir_without_mnist_is_an_error_not_the_subset(offline, capsys):
    (offline / "empty").mkdir()
    code = cli.main(["train", "--data-dir", str(offline / "empty"), "--epochs", "1", "--out", "r"])
    err = capsys.readouterr().err
    assert code == 2 and "MNIST not found" in err and str(offline / "empty") in err and not (offline / "r").exists()
    # one short line: the places, why the download failed in brief, and the ways to supply the data
    assert len(err.strip().replace(str(offline), "")) < 450 and "--data-dir" in err and "pass it as root" not in err and "https://" not in err
    code = cli.main(["train", "--dataset", "digits", "--data-dir", str(offline / "empty"), "--epochs", "1"])
    assert code == 2 and "--data-dir" in capsys.readouterr().err
