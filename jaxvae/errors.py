"""The errors jaxvae raises on purpose, and the exit code the command line gives each.

Every error jaxvae raises on purpose is a ``JaxvaeError``; its message names the argument, flag,
field or file at fault. Each subclass also derives from the built-in exception it used to be
(``InputError`` is a ``ValueError``, say), so code that catches those keeps working. The command
line prints a ``JaxvaeError`` as one line and exits with its ``exit_code``; any other exception is
a bug, in jaxvae or in a library it uses, and keeps its traceback.

This module imports nothing: the command line's parser loads it without JAX.
"""
from __future__ import annotations

#: The command line's exit codes: a non-finite loss, bad input or environment, not enough memory.
EXIT_NONFINITE, EXIT_USAGE, EXIT_RESOURCES = 1, 2, 3


class JaxvaeError(Exception):
    """An error jaxvae raises on purpose; the message names what is at fault and, where one exists,
    the way forward. ``exit_code`` is the command line's code for it.

    Attributes:
        exit_code: The command line's exit code: 2 (usage) unless a subclass says otherwise.
    """

    exit_code = EXIT_USAGE


class InputError(JaxvaeError, ValueError):
    """A value jaxvae was given (an argument, a config field, a flag, an array, a file's content)
    that it cannot use."""


class InputTypeError(JaxvaeError, TypeError):
    """An argument of a type jaxvae does not take (a schedule that is not one, a torch state dict
    that holds something other than layers)."""


class MemoryLimitError(JaxvaeError, ValueError):
    """The work asked for would not fit the device's memory; refused before anything is allocated."""

    exit_code = EXIT_RESOURCES


class NumericalError(JaxvaeError, FloatingPointError):
    """A computation produced non-finite values (nan or inf)."""

    exit_code = EXIT_NONFINITE
