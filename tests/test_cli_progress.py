"""Progress bars only on a terminal; in a log file nothing per step and one line per epoch."""
import io
import sys

import pytest

from jaxvae import cli
from jaxvae.cli import console

TINY = ["--dataset", "digits", "--hidden", "16", "--no-download", "--no-plots", "--epochs", "2"]


class Terminal(io.StringIO):
    """What a terminal on stderr looks like to the code: a stream whose isatty() is True."""

    def isatty(self):
        return True


def train(tmp_path, capsys, monkeypatch, stderr, *flags):
    monkeypatch.setattr(sys, "stderr", stderr)
    code = cli.main(["train", *TINY, "--out", str(tmp_path / "run"), *flags])
    out = capsys.readouterr().out
    assert code == 0
    return out


def drawn(err: str) -> str:
    """What a progress display wrote to stderr: everything but the run's warning lines (a tiny model's collapse)."""
    return "".join(line for line in err.splitlines(keepends=True) if not line.startswith("jaxvae train: warning: "))


def epoch_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("epoch")]


@pytest.mark.slow
def test_a_log_file_gets_no_bar_frames(tmp_path, capsys, monkeypatch):
    with open(tmp_path / "stderr.log", "w+") as log:  # a real file: isatty() is False
        out = train(tmp_path, capsys, monkeypatch, log, "--progress", "steps")
        log.seek(0)
        assert drawn(log.read()) == ""
    assert len(epoch_lines(out)) == 2  # the one line per epoch, on stdout


@pytest.mark.slow
@pytest.mark.parametrize("kind, bar_text", [("epochs", "training"), ("steps", "epoch 1/2")])
def test_a_terminal_gets_a_bar_and_the_epoch_lines(tmp_path, capsys, monkeypatch, kind, bar_text):
    terminal = Terminal()
    out = train(tmp_path, capsys, monkeypatch, terminal, "--progress", kind)
    frames = terminal.getvalue()
    assert "\r" in frames and bar_text in frames
    assert len(epoch_lines(out)) == 2 and all("\r" not in line for line in out.splitlines())


@pytest.mark.slow  # trains
def test_quiet_and_none_draw_nothing_even_on_a_terminal(tmp_path, capsys, monkeypatch):
    for n, flags in enumerate((["--quiet"], ["--progress", "none"])):
        terminal = Terminal()
        train(tmp_path / str(n), capsys, monkeypatch, terminal, *flags)
        assert drawn(terminal.getvalue()) == ""


def test_none_draws_nothing_on_a_terminal():
    terminal = Terminal()
    progress = console.EpochProgress("none", 10, 1, 2, stream=terminal)
    assert progress.step_hook is None
    progress.end_epoch()
    progress.close()
    assert terminal.getvalue() == ""


def test_only_the_steps_bar_runs_inside_the_compiled_epoch():
    # fit adds a host callback to the compiled epoch only for a step hook; JAX's persistent
    # compilation cache skips programs with host callbacks
    terminal = Terminal()
    assert console.EpochProgress("epochs", 10, 1, 3, stream=terminal).step_hook is None
    steps = console.EpochProgress("steps", 10, 1, 3, stream=terminal)
    assert steps.step_hook is steps
    assert console.EpochProgress("steps", 10, 1, 3, stream=io.StringIO()).step_hook is None  # not a terminal


def test_the_run_bar_counts_epochs_from_a_resumed_start():
    terminal = Terminal()
    progress = console.EpochProgress("epochs", 10, 4, 6, stream=terminal)  # resuming after epoch 3 of 6
    progress.end_epoch()
    assert progress.bar.n == 4 and progress.bar.total == 6
    progress.close()
    assert progress.bar is None


def test_the_eta_leaves_out_the_first_epoch_which_compiles(monkeypatch):
    progress = console.EpochProgress("epochs", steps_per_epoch=10, first_epoch=1, max_epochs=10, stream=Terminal())
    clock = [progress.bar.start_t]
    monkeypatch.setattr(progress.bar, "_time", lambda: clock[0])
    clock[0] += 60.0  # epoch 1: compiling and training
    progress.end_epoch()
    assert not progress.bar.format_dict["rate"] and "?" in str(progress.bar)  # no ETA from the compile
    clock[0] += 2.0  # epoch 2: 2 s
    progress.end_epoch()
    assert progress.bar.format_dict["rate"] == pytest.approx(0.5)
    assert "00:16" in str(progress.bar)  # 8 epochs left at 2 s each, not at the first epoch's 60
    progress.close()


def test_quiet_prints_only_the_closing_line(tmp_path, capsys):
    code = cli.main(["train", "--dataset", "digits", "--hidden", "16", "--no-download", "--no-plots", "--epochs", "1",
                     "--out", str(tmp_path / "run"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines() == [out.strip()] and out.startswith("done after epoch 1 (max epochs): train loss")
