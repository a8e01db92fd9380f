"""Weights between torchref's blog modules and jaxvae params: one table of names, transposes here only.

torchref's encoder keeps its Linear layers in ``prev_network.network.<i>``, ``gauss_mu_network.network.<i>``
and ``gauss_logsigma_network.network.<i>``; its decoder in ``network.network.<i>`` (the index ``i``
counts activations too). The n-th Linear of each stack maps onto jaxvae's n-th layer of that stack.
jaxvae itself never imports torch: the state dicts arrive as mappings of tensors (or arrays).
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

# (torch stack prefix, jaxvae layer names): a stack of n Linear layers maps onto the first n names;
# a name ending in "_" is numbered (trunk_0, trunk_1, ...).
ENCODER_TABLE = (("prev_network.network", "trunk_"), ("gauss_mu_network.network", "mu"),
                 ("gauss_logsigma_network.network", "log_sigma"))
DECODER_TABLE = (("network.network", None),)  # hidden_0 .. hidden_{n-2}, then output


def _state_dict(module_or_state) -> Mapping[str, Any]:
    if hasattr(module_or_state, "state_dict"):
        return module_or_state.state_dict()
    if isinstance(module_or_state, Mapping):
        return module_or_state
    raise TypeError(f"expected a torch module or a state dict, got {type(module_or_state).__name__}")


def _to_numpy(tensor) -> np.ndarray:
    if hasattr(tensor, "detach"):
        return tensor.detach().cpu().numpy()
    return np.asarray(tensor)


def _linear_layers(state: Mapping[str, Any], prefix: str, what: str) -> list[tuple[str, Any, Any]]:
    """[(torch layer name, weight, bias)] of the stack under ``prefix``, in order."""
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.weight$")
    indices = sorted(int(m.group(1)) for key in state if (m := pattern.match(key)))
    if not indices:
        raise ValueError(f"{what}: no Linear layers under '{prefix}' (keys: {sorted(state)[:6]}...)")
    layers = []
    for i in indices:
        name = f"{prefix}.{i}"
        if f"{name}.bias" not in state:
            raise ValueError(f"{what}: layer '{name}' has no bias; jaxvae's layers always have one")
        layers.append((name, state[f"{name}.weight"], state[f"{name}.bias"]))
    return layers


def _unexpected_keys(state: Mapping[str, Any], prefixes, what: str) -> None:
    extra = [k for k in state if not any(k.startswith(p + ".") for p in prefixes)]
    if extra:
        raise ValueError(f"{what}: unexpected tensors {extra}")


def _encoder_names(state) -> list[tuple[str, str]]:
    pairs = []
    for prefix, name in ENCODER_TABLE:
        layers = _linear_layers(state, prefix, "encoder")
        if name.endswith("_"):
            pairs += [(torch_name, f"{name}{i}") for i, (torch_name, _, _) in enumerate(layers)]
        elif len(layers) != 1:
            raise ValueError(f"encoder: '{prefix}' has {len(layers)} Linear layers; jaxvae's heads have one")
        else:
            pairs.append((layers[0][0], name))
    return pairs


def _decoder_names(state) -> list[tuple[str, str]]:
    layers = _linear_layers(state, DECODER_TABLE[0][0], "decoder")
    names = [f"hidden_{i}" for i in range(len(layers) - 1)] + ["output"]
    return [(torch_name, name) for (torch_name, _, _), name in zip(layers, names)]


def layer_table(encoder_state, decoder_state) -> list[tuple[str, str, str]]:
    """[(part, torch layer name, jaxvae layer name)] for both halves of the model."""
    enc, dec = _state_dict(encoder_state), _state_dict(decoder_state)
    return [("encoder", t, j) for t, j in _encoder_names(enc)] + [("decoder", t, j) for t, j in _decoder_names(dec)]


def from_torch(encoder, decoder, config=None) -> dict:
    """jaxvae params from torchref's blog encoder and decoder (modules or state dicts).

    Kernels are the torch weights transposed; dtypes are kept (float64 stays float64 under jax x64).
    With ``config``, shapes are checked against that architecture and a mismatch names the layer.
    """
    states = {"encoder": _state_dict(encoder), "decoder": _state_dict(decoder)}
    _unexpected_keys(states["encoder"], [p for p, _ in ENCODER_TABLE], "encoder")
    _unexpected_keys(states["decoder"], [p for p, _ in DECODER_TABLE], "decoder")
    params: dict = {"encoder": {}, "decoder": {}}
    for part, torch_name, name in layer_table(states["encoder"], states["decoder"]):
        weight = _to_numpy(states[part][f"{torch_name}.weight"])
        bias = _to_numpy(states[part][f"{torch_name}.bias"])
        if weight.ndim != 2 or bias.shape != (weight.shape[0],):
            raise ValueError(f"{part} layer '{torch_name}': weight {weight.shape} and bias {bias.shape} do not form a Linear layer")
        params[part][name] = {"kernel": jnp.asarray(weight.T), "bias": jnp.asarray(bias)}
    if config is not None:
        check_params_shapes(params, config)
    return params


def check_params_shapes(params: dict, config) -> None:
    """Raise ValueError naming the first layer whose shape differs from ``config``'s architecture."""
    import jax

    from jaxvae.models import init_params

    expected = jax.eval_shape(lambda: init_params(jax.random.PRNGKey(0), config))
    for part in ("encoder", "decoder"):
        got_layers, want_layers = params.get(part, {}), expected[part]
        if set(got_layers) != set(want_layers):
            raise ValueError(f"{part}: layers {sorted(got_layers)} do not match the config's {sorted(want_layers)}")
        for name, want in want_layers.items():
            for leaf in ("kernel", "bias"):
                got_shape = tuple(np.shape(got_layers[name][leaf]))
                if got_shape != tuple(want[leaf].shape):
                    raise ValueError(f"{part} layer '{name}' {leaf}: shape {got_shape}, the config expects {tuple(want[leaf].shape)}")


def to_torch(params: dict, encoder, decoder):
    """Write jaxvae ``params`` into torchref's blog modules in place (shapes checked per layer).

    ``encoder`` and ``decoder`` may also be state dicts; new state dicts are returned in every case.
    """
    import torch

    out = []
    for part, target in (("encoder", encoder), ("decoder", decoder)):
        state = dict(_state_dict(target))
        names = _encoder_names(state) if part == "encoder" else _decoder_names(state)
        missing = set(params[part]) - {name for _, name in names}
        if missing:
            raise ValueError(f"{part}: jaxvae layers {sorted(missing)} have no counterpart in the torch module")
        for torch_name, name in names:
            if name not in params[part]:
                raise ValueError(f"{part}: torch layer '{torch_name}' has no jaxvae layer '{name}'")
            for leaf, value in (("weight", np.asarray(params[part][name]["kernel"]).T),
                                ("bias", np.asarray(params[part][name]["bias"]))):
                key = f"{torch_name}.{leaf}"
                old = state[key]
                if tuple(old.shape) != value.shape:
                    raise ValueError(f"{part} layer '{torch_name}' {leaf}: torch shape {tuple(old.shape)}, "
                                     f"jaxvae layer '{name}' gives {value.shape}")
                state[key] = torch.tensor(np.array(value), dtype=old.dtype)
        if hasattr(target, "load_state_dict"):
            target.load_state_dict(state)
        out.append(state)
    return tuple(out)
