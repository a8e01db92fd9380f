"""What a command shows while it runs: lines on stdout/stderr, progress bars (only on a terminal),
epoch loggers, and the Ctrl-C handling (first: stop after the epoch; second: at once)."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
from typing import Callable, Iterator, TextIO

from jaxvae.config import VAEConfig
from jaxvae.entry import EXIT_INTERRUPTED, raise_if_interrupted


def _write(stream, message: str) -> None:
    # Once a bar may be on screen (tqdm loaded), tqdm.write clears it, prints the line and redraws it below.
    bars = sys.modules.get("tqdm")
    if bars is None:
        print(message, file=stream, flush=True)
    else:
        bars.tqdm.write(message, file=stream)
        stream.flush()


_quiet = False  # --quiet: stdout gets only the closing line


@contextlib.contextmanager
def quiet(on: bool = True) -> Iterator[None]:
    """While inside, ``say`` prints only the lines marked ``closing`` (``--quiet``); ``warn`` is unchanged.

    Args:
        on: Whether to be quiet; False leaves every line printed.

    Yields:
        Nothing; the previous setting is restored on leaving.
    """
    global _quiet
    previous, _quiet = _quiet, bool(on)
    try:
        yield
    finally:
        _quiet = previous


def say(message: str = "", *, closing: bool = False) -> None:
    """A line on stdout, printed below any progress bar.

    Args:
        message: The line.
        closing: Whether it is the line that ends a command (its result), printed even under --quiet.
    """
    if _quiet and not closing:
        return
    _write(sys.stdout, message)


def warn(message: str) -> None:
    """A line on stderr, printed below any progress bar, even under --quiet.

    Args:
        message: The line.
    """
    _write(sys.stderr, message)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class EpochProgress:
    """Progress bars on stderr, only when it is a terminal (a log file has the epoch lines on stdout).

    ``kind`` "epochs": one bar over the run's epochs, advanced after each. "steps": a bar within each
    epoch, fed by fit's ``progress(step, running_loss, model)`` host callback (``step_hook``), which keeps the
    epoch out of JAX's persistent compilation cache. "none": nothing.

    Args:
        kind: "epochs", "steps" or "none"; "none" whenever ``stream`` is not a terminal.
        steps_per_epoch: The steps of one epoch (the "steps" bar's total).
        first_epoch: The first epoch to be trained.
        max_epochs: The epoch limit.
        stream: Where the bars go; None for stderr.
        models: How many models train together; with several, the bar shows their number, not a loss.
    """

    def __init__(self, kind: str, steps_per_epoch: int, first_epoch: int, max_epochs: int,
                 stream: TextIO | None = None, models: int = 1):
        self.stream = sys.stderr if stream is None else stream
        self.models = models  # several: every model reports each step; the bar counts steps, not losses
        self.kind = kind if _is_terminal(self.stream) else "none"
        self.steps, self.epoch, self.max_epochs = steps_per_epoch, first_epoch, max_epochs
        self.bar = None  # the bar on screen: the epoch's ("steps") or the run's ("epochs")
        if self.kind == "epochs" and first_epoch <= max_epochs:
            self.bar = self._new_bar("training", max_epochs, "epoch", initial=first_epoch - 1)

    @property
    def step_hook(self):
        """What fit's ``progress`` argument gets: this object for "steps", else None (no host callback)."""
        return self if self.kind == "steps" else None

    def _new_bar(self, desc: str, total: int, unit: str, initial: int = 0):
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False, file=self.stream,
                    dynamic_ncols=True)

    def __call__(self, step, running_loss, model=0):
        if self.bar is None:
            self.bar = self._new_bar(f"epoch {self.epoch}/{self.max_epochs}", self.steps, "batch")
        self.bar.update(max(0, int(step) - self.bar.n))
        if self.models > 1:
            self.bar.set_postfix(models=self.models, refresh=False)
        else:
            self.bar.set_postfix(loss=f"{float(running_loss):.4f}", refresh=False)

    def end_epoch(self) -> None:
        """Advance the run's bar ("epochs"), or take the epoch's bar off the screen, after an epoch."""
        if self.kind == "epochs" and self.bar is not None:
            self.bar.update(1)
            if not self._timed:
                self._forget_the_compile()
        else:
            self.close()
        self.epoch += 1

    _timed = False  # whether the bar's rate has started counting (after this process's first epoch)

    def _forget_the_compile(self) -> None:
        """The first epoch of a process also compiles, which can take ten times a later epoch: an ETA
        from it is far too long. So the bar's rate starts after it: no ETA ("?") until the second epoch
        ends, then one from the epochs after the first. The elapsed time still counts from the start."""
        from tqdm.std import EMA

        bar = self.bar
        bar._ema_dn, bar._ema_dt = EMA(bar.smoothing), EMA(bar.smoothing)  # tqdm's smoothed rate
        bar.initial = bar.n  # its fallback rate, (n - initial) / elapsed, is 0 (no ETA) until the next epoch
        bar.last_print_n, bar.last_print_t = bar.n, bar._time()
        bar.refresh()
        self._timed = True

    def close(self) -> None:
        """Take the bar off the screen (the epoch lines above it stay)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def model_shape(vc) -> str:
    """784-400-2 for an MLP; conv 32-64, latent 2 for the conv architecture (whose ``hidden`` is unused);
    any other model (one made in Python) by its class.

    Args:
        vc: The model's config, or the model.

    Returns:
        The shape, as text.
    """
    if not isinstance(vc, VAEConfig):
        return type(vc).__name__
    if vc.architecture == "conv":
        return f"conv {'-'.join(map(str, vc.conv_channels))}, latent {vc.latent_dim}"
    return f"{vc.input_dim}-{'-'.join(map(str, vc.hidden))}-{vc.latent_dim}"


class StopAfterEpoch(Exception):
    """Raised from fit's epoch callback after the checkpoint is saved, on the first Ctrl-C."""


class SigintFlag:
    """First Ctrl-C: finish the current epoch, save its checkpoint, stop. Second Ctrl-C: print
    ``second_line()`` and exit with 130 at once (the previous epoch's checkpoint is already on disk).

    Python runs signal handlers only between bytecodes of the main thread, which sits inside XLA for a
    whole epoch. So the Python handler does nothing: the C-level handler writes each signal's number to
    a socket (``signal.set_wakeup_fd``) at once, and a watcher thread reading it acts on it.

    Used as a context manager: the handling is installed on entering (in the main thread only) and the
    previous handler restored on leaving. Entering raises ``KeyboardInterrupt`` for a Ctrl-C that came
    while the run was being prepared.

    Args:
        second_line: Returns the line printed on the second Ctrl-C.

    Attributes:
        requested: Whether a first Ctrl-C asked to stop after the epoch.
    """

    def __init__(self, second_line: Callable[[], str]):
        self.second_line = second_line
        self.requested = False
        self._active = False

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self  # signals reach the main thread only; nothing to install
        raise_if_interrupted()  # a Ctrl-C swallowed while the run was being prepared: do not start
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)  # set_wakeup_fd's requirement
        self._previous_handler = signal.signal(signal.SIGINT, lambda signum, frame: None)
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._watcher = threading.Thread(target=self._watch, name="jaxvae-sigint", daemon=True)
        self._watcher.start()
        self._active = True
        return self

    def __exit__(self, *exc):
        if not self._active:
            return
        signal.set_wakeup_fd(self._previous_fd)
        signal.signal(signal.SIGINT, self._previous_handler)
        self._writer.close()  # the watcher's recv returns b"" and it ends
        self._watcher.join()
        self._reader.close()
        self._active = False

    def _watch(self):
        with contextlib.suppress(OSError):
            while received := self._reader.recv(64):  # b"" once __exit__ closes the writer
                for signum in received:
                    if signum == signal.SIGINT:
                        self._sigint()

    def _sigint(self):
        if not self.requested:
            self.requested = True
            warn("\nCtrl-C: stopping after this epoch and saving a checkpoint (Ctrl-C again to stop now)")
            return
        warn("\n" + self.second_line())
        sys.stdout.flush()
        os._exit(EXIT_INTERRUPTED)  # the OS closes our files and releases the run's lock
