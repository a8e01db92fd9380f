"""The ``jaxvae`` console script and ``python -m jaxvae``: ``cli.main`` with Ctrl-C honoured from the
first instant.

A KeyboardInterrupt raised inside a garbage-collector callback is "ignored" by Python: JAX registers
one, so a Ctrl-C in the first seconds, while JAX loads, used to be lost and the run trained to the end
with exit 0. So ``run`` installs ``on_sigint`` before anything else is imported; it records the
signal as well as raising, and ``raise_if_interrupted`` raises a swallowed one again once the
imports are done (and before training starts). This module imports nothing of JAX's, so the window
before the handler is the interpreter's own start-up.
"""
from __future__ import annotations

import signal
import sys

EXIT_INTERRUPTED = 130  # the shell's code for a process stopped by SIGINT

_interrupted = False


def on_sigint(signum, frame) -> None:
    """The start-up SIGINT handler: remember the signal, then raise as Python's default handler does."""
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if a Ctrl-C arrived (and was perhaps swallowed) since ``run`` began."""
    if _interrupted:
        raise KeyboardInterrupt


def _quiet_about_interrupts(unraisable, default_hook=sys.unraisablehook) -> None:
    """Python prints an "Exception ignored" traceback for the swallowed KeyboardInterrupt; it is
    recorded and acted on instead. Every other unraisable exception is printed as usual."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        default_hook(unraisable)


def run() -> None:
    """Exit with ``cli.main``'s code; Ctrl-C at any moment is one line and exit 130."""
    signal.signal(signal.SIGINT, on_sigint)
    sys.unraisablehook = _quiet_about_interrupts
    try:
        from jaxvae.cli.main import main

        code = main()
        if code != EXIT_INTERRUPTED:
            raise_if_interrupted()  # swallowed during a command that then finished: still not ignored
    except KeyboardInterrupt:
        print("jaxvae: interrupted", file=sys.stderr, flush=True)
        code = EXIT_INTERRUPTED
    sys.exit(code)
