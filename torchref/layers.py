"""Stacked fully-connected layers described by a list of dicts (the blog's ``VGGStackedLinear``)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from torch import nn

__all__ = ["VGGStackedLinear", "resolve_linear_descriptors"]

_KNOWN_KEYS = frozenset(
    {"nof_layers", "in_features", "out_features", "bias", "activation", "dropout_p"}
)


def _positive_int(value: Any, index: int, key: str) -> int:
    # bool is an int subclass; True as a layer size is almost certainly a mistake.
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(
            f"layer descriptor {index}: {key!r} must be a positive int, got {value!r}"
        )
    return value


def resolve_linear_descriptors(
    layer_descriptors: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """Return new dicts with every default filled in; the caller's dicts are left untouched.

    Defaults: ``nof_layers=1``, ``in_features`` = previous descriptor's ``out_features``,
    ``bias=True``, ``activation=nn.ReLU`` (``None`` = no activation), ``dropout_p=None``.
    Raises ``ValueError`` naming the descriptor index and key for a bad descriptor.
    """
    if isinstance(layer_descriptors, Mapping) or not isinstance(layer_descriptors, Sequence):
        raise TypeError(
            f"layer_descriptors must be a list of dicts, got {type(layer_descriptors).__name__}"
        )
    resolved: list[dict[str, Any]] = []
    prev_out: int | None = None
    for index, desc in enumerate(layer_descriptors):
        if not isinstance(desc, Mapping):
            raise TypeError(f"layer descriptor {index} must be a dict, got {type(desc).__name__}")
        unknown = set(desc) - _KNOWN_KEYS
        if unknown:
            raise ValueError(f"layer descriptor {index}: unknown key(s) {sorted(unknown)}")
        if "out_features" not in desc:
            raise ValueError(f"layer descriptor {index}: missing required key 'out_features'")
        out_features = _positive_int(desc["out_features"], index, "out_features")
        if "in_features" in desc:
            in_features = _positive_int(desc["in_features"], index, "in_features")
        elif prev_out is None:
            raise ValueError(
                f"layer descriptor {index}: missing 'in_features' and there is no previous "
                "descriptor to infer it from"
            )
        else:
            in_features = prev_out
        nof_layers = _positive_int(desc.get("nof_layers", 1), index, "nof_layers")
        dropout_p = desc.get("dropout_p", None)
        if dropout_p is not None and not (0.0 <= float(dropout_p) <= 1.0):
            raise ValueError(
                f"layer descriptor {index}: 'dropout_p' must be in [0, 1], got {dropout_p!r}"
            )
        activation = desc.get("activation", nn.ReLU)
        if activation is not None and not callable(activation):
            raise ValueError(
                f"layer descriptor {index}: 'activation' must be a module class or None, "
                f"got {activation!r}"
            )
        resolved.append(
            {
                "nof_layers": nof_layers,
                "in_features": in_features,
                "out_features": out_features,
                "bias": bool(desc.get("bias", True)),
                "activation": activation,
                "dropout_p": dropout_p,
            }
        )
        prev_out = out_features
    return resolved


class VGGStackedLinear(nn.Module):
    """Fully-connected stack built from layer descriptors, held in ``self.network`` (nn.Sequential).

    For each descriptor and each of its ``nof_layers`` repeats: ``Linear(in, out, bias)``, then
    ``activation()`` unless it is ``None``, then ``Dropout(dropout_p)`` if ``dropout_p`` is given.
    Within a descriptor, repeats after the first take ``in = out``. The Sequential's indices
    therefore follow the blog (e.g. ``network.0`` Linear, ``network.1`` activation, ...).
    The caller's descriptor dicts are never modified.
    """

    def __init__(self, layer_descriptors: Sequence[Mapping[str, Any]]):
        super().__init__()
        layers: list[nn.Module] = []
        for desc in resolve_linear_descriptors(layer_descriptors):
            in_features = desc["in_features"]
            for _ in range(desc["nof_layers"]):
                layers.append(nn.Linear(in_features, desc["out_features"], bias=desc["bias"]))
                if desc["activation"] is not None:
                    layers.append(desc["activation"]())
                if desc["dropout_p"] is not None:
                    layers.append(nn.Dropout(p=desc["dropout_p"]))
                in_features = desc["out_features"]
        self.network = nn.Sequential(*layers)

    def forward(self, x):
        return self.network(x)
