"""A second Ctrl-C stops at once (issue 12), even while the main thread is inside a long compiled
epoch, where Python would run a signal handler only when the epoch returns."""
import dataclasses
import re
import signal
import subprocess
import threading
import time
import pytest

from cli_helpers import PYTHON, subprocess_env

from jaxvae.checkpoint import load_checkpoint, save_checkpoint
from jaxvae.config import TrainConfig, VAEConfig
from jaxvae.runs import CHECKPOINT_FILE, RunInfo, write_run_config
from jaxvae.training import TrainStep, init_fit_state

pytestmark = pytest.mark.slow  # trains or starts processes: the full suite only (make test)

# The blog's model with a 1000-sample IWAE bound on the bundled MNIST subset: a small checkpoint and a
# quick compile, but an epoch of minutes on a CPU (1000 decoder passes per image), so whatever stops
# the run early is the second Ctrl-C.
MODEL = VAEConfig(objective="iwae", iwae_k=1000)
TRAIN = TrainConfig(batch_size=32, max_epochs=3)
PROMPT_S = 6.0  # the second Ctrl-C to exit, allowing for a loaded machine
COMPILED = re.compile(r"Finished XLA compilation of jit\(models_epoch\)")  # JAX_LOG_COMPILES=1's line


def test_second_ctrl_c_exits_at_once_with_130_and_keeps_the_checkpoint(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write_run_config(run, RunInfo(MODEL, TRAIN, "mnist-subset", (28, 28)))
    state = dataclasses.replace(init_fit_state(TrainStep.from_configs(MODEL, TRAIN), TRAIN), epoch=1)
    save_checkpoint(run / CHECKPOINT_FILE, state, MODEL, TRAIN)  # as if epoch 1 had finished
    saved = (run / CHECKPOINT_FILE).read_bytes()

    # JAX logs when the epoch is compiled: from then on the main thread is inside the compiled epoch. Each
    # Ctrl-C is sent once the run has reported the previous step: no timing is left to chance.
    proc = subprocess.Popen([PYTHON, "-m", "jaxvae", "train", "--resume", str(run), "--quiet", "--no-plots"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**subprocess_env(), "JAX_LOG_COMPILES": "1"})
    watchdog = threading.Timer(180, proc.kill)  # should the log line never come
    watchdog.start()
    try:
        if not any(COMPILED.search(line) for line in proc.stdout):
            raise AssertionError(f"no line matching {COMPILED.pattern!r}: has the compiled epoch been renamed?")
        watchdog.cancel()
        proc.send_signal(signal.SIGINT)
        first_reply = next((line for line in proc.stdout if "Ctrl-C" in line or "Traceback" in line), "")
        if "stopping after this epoch" not in first_reply:
            raise AssertionError(f"the first Ctrl-C was not acknowledged: {first_reply!r}")
        second = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            rest, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError("the second Ctrl-C did not stop the run within 60 s") from None
        elapsed = time.monotonic() - second
    finally:
        watchdog.cancel()
        proc.kill()
    stderr = first_reply + rest
    assert proc.returncode == 130, stderr[-2000:]
    assert elapsed < PROMPT_S, f"exited {elapsed:.1f} s after the second Ctrl-C"
    assert "stopping after this epoch" in stderr and "Traceback" not in stderr
    assert (f"second Ctrl-C: stopped at once; the checkpoint of epoch 1 is at {run / CHECKPOINT_FILE}; "
            f"resume with: jaxvae train --resume {run}") in stderr
    assert (run / CHECKPOINT_FILE).read_bytes() == saved
    assert load_checkpoint(run / CHECKPOINT_FILE)[0].epoch == 1
