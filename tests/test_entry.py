"""The console script's entry: Ctrl-C is never lost, whatever runs when it arrives."""
import gc
import signal
import subprocess
import sys

import pytest

from jaxvae import entry


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed interrupt itself
def test_a_ctrl_c_swallowed_in_a_gc_callback_is_raised_again(monkeypatch):
    monkeypatch.setattr(entry, "_interrupted", False)
    entry.raise_if_interrupted()  # nothing received: nothing raised

    def callback(phase, info):  # what JAX registers; Python ignores what its callbacks raise
        entry.on_sigint(signal.SIGINT, None)

    gc.callbacks.append(callback)
    try:
        gc.collect()  # the KeyboardInterrupt is raised and ignored in here
    finally:
        gc.callbacks.remove(callback)
    with pytest.raises(KeyboardInterrupt):
        entry.raise_if_interrupted()


# Sends the process its own SIGINT from the first gc callback after the entry starts, i.e. while the
# command's modules (JAX among them) are importing; the handler runs inside the callback or just after.
INTERRUPTED_WHILE_IMPORTING = """
import gc, os, signal, sys
def interrupt_once(phase, info):
    gc.callbacks.remove(interrupt_once)
    os.kill(os.getpid(), signal.SIGINT)
from jaxvae import entry
sys.argv = ["jaxvae", "train", "--dataset", "digits", "--epochs", "1", "--no-download", "--quiet",
            "--no-plots", "--out", sys.argv[1]]
gc.callbacks.append(interrupt_once)
entry.run()
"""


@pytest.mark.slow
def test_ctrl_c_while_jax_imports_is_one_line_and_exit_130(tmp_path):
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", INTERRUPTED_WHILE_IMPORTING, str(run)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == "jaxvae: interrupted"
    assert not (run / "metrics.jsonl").exists()  # no epoch was trained
