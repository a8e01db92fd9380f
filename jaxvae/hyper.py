"""Hyperparameters as data: what a model declares (``Hyperparameter``) and what its loss reads (``Hyper``).

A model lists the hyperparameters its loss reads (``Model.hyperparameters``), each with its default and
its valid range. Everything else follows from that declaration: the values a training config may set,
the grid a sweep spans, the command line's value flags, and the validation that names a bad value.
The learning rate (``LR``) belongs to the optimizer and every model has it.

``Hyper`` carries the values through compiled code: a pytree of scalars keyed by name (read as
``hyper.kl_weight`` or ``hyper["kl_weight"]``), so models that differ only in their values share one
compiled program, and a sweep stacks them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp

from jaxvae.errors import InputError


@dataclass(frozen=True)
class Hyperparameter:
    """One hyperparameter a model's loss reads: its name, default and valid range.

    Attributes:
        name: The name: a ``Hyper`` key, a ``TrainConfig`` field or ``TrainConfig.hyper`` key, and the
            command line's flag (``--kl-weight`` for ``kl_weight``).
        default: The value when none is given.
        help: One line for ``--help`` and the docs.
        low: The smallest valid value (excluded when ``low_open``).
        low_open: True: values must be above ``low``; False: at least ``low``.
        high: The largest valid value (included); infinite for none.
    """

    name: str
    default: float
    help: str
    low: float = 0.0
    low_open: bool = False
    high: float = math.inf

    @property
    def flag(self) -> str:
        """The command line's flag: ``--`` and the name with dashes."""
        return "--" + self.name.replace("_", "-")

    @property
    def valid(self) -> str:
        """The valid range in words, e.g. ``"> 0"`` or ``"in [0, 1]"``."""
        if math.isinf(self.high):
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"

    def check(self, value, where: str = "") -> float:
        """``value`` as a float, or InputError naming the hyperparameter, the value and its range.

        Args:
            value: The value to check.
            where: Where it was given (``"TrainConfig.hyper"``, say), for the message.

        Returns:
            The value as a Python float.

        Raises:
            InputError: Not a finite real number in the valid range.
        """
        label = f"{where}{'.' if where else ''}{self.name}"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InputError(f"{label} must be a finite number {self.valid}, got {value!r}")
        too_low = value <= self.low if self.low_open else value < self.low
        if too_low or value > self.high:
            raise InputError(f"{label} must be {self.valid}, got {value!r}")
        return float(value)


#: Adam's learning rate (before its schedule's factor); every model has it.
LR = Hyperparameter("lr", 1e-3, "the learning rate (before its schedule's factor)", low_open=True)
#: The KL term's weight (before its schedule's factor): the blog's ``distrib_loss_rate``, a beta-VAE's beta.
KL_WEIGHT = Hyperparameter("kl_weight", 1.0, "the KL term's weight: the blog's distrib_loss_rate, a beta-VAE's beta")
#: The Gaussian likelihood's sigma (the blog's ``gauss_sigma``).
RECON_SIGMA = Hyperparameter("recon_sigma", 1.0, "the Gaussian likelihood's sigma (the blog's gauss_sigma)",
                             low_open=True)


@jax.tree_util.register_pytree_node_class
class Hyper(Mapping):
    """The hyperparameters' values, by name, in the declared order: a pytree of scalars (arrays inside
    compiled code, Python floats on the host). ``hyper.kl_weight`` and ``hyper["kl_weight"]`` read one.

    Args:
        values: A mapping of name to value, or name=value arguments.
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any] | Iterable = (), **named):
        object.__setattr__(self, "_values", dict(values, **named))

    @classmethod
    def defaults(cls, declared: Iterable[Hyperparameter]) -> "Hyper":
        """Every declared hyperparameter at its default, lr first.

        Args:
            declared: The hyperparameters (``Model.hyperparameters``).

        Returns:
            A ``Hyper`` of Python floats.
        """
        return cls({h.name: h.default for h in with_lr(declared)})

    def __getitem__(self, name: str):
        return self._values[name]

    def __getattr__(self, name: str):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"this model declares no hyperparameter {name!r} (it has: "
                                 f"{', '.join(self._values)})") from None

    def __setattr__(self, name, value):
        raise AttributeError("Hyper is immutable; use replace()")

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Hyper({', '.join(f'{k}={v!r}' for k, v in self._values.items())})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Hyper) and self._values == other._values

    __hash__ = None

    def replace(self, **changes) -> "Hyper":
        """A copy with the named values changed (each must be one of its names).

        Args:
            **changes: Names and their new values.

        Returns:
            The new ``Hyper``.

        Raises:
            KeyError: A name it does not hold.
        """
        unknown = set(changes) - set(self._values)
        if unknown:
            raise KeyError(f"no hyperparameter {sorted(unknown)} in {self!r}")
        return Hyper({**self._values, **changes})

    def as_arrays(self, dtype=jnp.float32) -> "Hyper":
        """The values as scalar arrays of ``dtype``.

        Args:
            dtype: The arrays' float type.

        Returns:
            A ``Hyper`` of 0-d arrays.
        """
        return Hyper({k: jnp.asarray(v, dtype) for k, v in self._values.items()})

    def tree_flatten(self):
        return tuple(self._values.values()), tuple(self._values)

    @classmethod
    def tree_unflatten(cls, names, values):
        return cls(zip(names, values))


def with_lr(declared: Iterable[Hyperparameter]) -> tuple[Hyperparameter, ...]:
    """``LR`` and then the declared hyperparameters (a model need not list lr).

    Args:
        declared: A model's hyperparameters.

    Returns:
        The tuple, lr first, without repeats.
    """
    rest = tuple(h for h in declared if h.name != LR.name)
    return (LR, *rest)


def names(declared: Iterable[Hyperparameter]) -> tuple[str, ...]:
    """The names of ``declared``, in order.

    Args:
        declared: Hyperparameters.

    Returns:
        Their names.
    """
    return tuple(h.name for h in declared)
