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

from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp

# The declarations live beside the configs (no JAX needed to parse a command line); here for users too.
from jaxvae.config import KL_WEIGHT, LR, RECON_SIGMA, Hyperparameter  # noqa: F401


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

