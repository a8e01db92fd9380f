"""Weights between torchref's blog modules and jaxvae params: one table of names (``LAYER_TABLE``),
transposes here only.

jaxvae's layers are named by their path in the params tree: ``trunk/0``, ..., ``mu``, ``log_sigma``;
``hidden/0``, ..., ``output``. A torch layer's index (``network.network.<i>``) counts activations too.
jaxvae imports torch only to write torch files (``to_torch``, ``save_torch``, ``load_torch``);
elsewhere the state dicts arrive as mappings of tensors (or arrays).
"""
from __future__ import annotations

import io
import math
import os
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae.config import VAEConfig, config_to_dict
from jaxvae.data import DATASETS
from jaxvae.errors import InputError, InputTypeError
from jaxvae.fileio import check_replaceable, write_owned
from jaxvae.likelihoods import likelihood_of
from jaxvae.models import param_shapes

# Per part, (torch stack prefix, jaxvae stack, jaxvae last layer): the torch stack's Linear layers map,
# in order, onto the jaxvae stack's positions (stack/0, stack/1, ...), except the last, which maps onto
# the last layer when one is named. A stack of None takes exactly one Linear layer.
LAYER_TABLE = {
    "encoder": (("prev_network.network", "trunk", None), ("gauss_mu_network.network", None, "mu"),
                ("gauss_logsigma_network.network", None, "log_sigma")),
    "decoder": (("network.network", "hidden", "output"),),
}


def _put(tree: dict, name: str, value) -> None:
    """``tree["trunk"][0] = value`` for ``name`` "trunk/0" (stacks are keyed by int), making the stack."""
    *outer, last = (int(key) if key.isdigit() else key for key in name.split("/"))
    for key in outer:
        tree = tree.setdefault(key, {})
    tree[last] = value


def layers_of(part: Mapping) -> dict[str, Mapping]:
    """The layers of one part of a params tree (``params["encoder"]``), flat: ``{"trunk/0": {"kernel",
    "bias"}, ..., "mu": ...}``. A layer is a mapping that holds a kernel.

    Args:
        part: One part of a params tree.

    Returns:
        The layers by path.

    Raises:
        InputTypeError: An entry is neither a layer nor a stack of layers.
    """
    flat = {}
    for key, value in part.items():
        if not isinstance(value, Mapping):
            raise InputTypeError(f"'{key}' is a {type(value).__name__}, not a layer or a stack of layers")
        if "kernel" in value:
            flat[str(key)] = value
        else:
            flat.update({f"{key}/{name}": layer for name, layer in layers_of(value).items()})
    return flat


def _state_dict(module_or_state) -> Mapping[str, Any]:
    if hasattr(module_or_state, "state_dict"):
        return module_or_state.state_dict()
    if isinstance(module_or_state, Mapping):
        return module_or_state
    raise InputTypeError(f"expected a torch module or a state dict, got {type(module_or_state).__name__}")


# Floating dtypes narrower than float32 are widened on the way in (jaxvae computes in float32 or wider).
HALF_DTYPES = ("float16", "bfloat16")


def _to_numpy(tensor, name: str) -> np.ndarray:
    """A tensor (torch or array-like) as a finite floating NumPy array; ValueError naming ``name`` otherwise.

    float16 and bfloat16 become float32, with a warning that says so (NumPy has no bfloat16 of its own)."""
    dtype = str(getattr(tensor, "dtype", "")).removeprefix("torch.")
    if getattr(tensor, "is_meta", False):  # torch cannot copy out of it (NotImplementedError)
        raise InputError(f"tensor '{name}' is on torch's meta device: a shape without values; save the trained "
                         "weights themselves")
    if hasattr(tensor, "detach"):
        tensor = tensor.detach().cpu()
        if dtype in HALF_DTYPES:
            tensor = tensor.float()
        tensor = tensor.numpy()
    array = np.asarray(tensor)
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"tensor '{name}' has dtype {dtype or array.dtype}; jaxvae takes floating-point weights only")
    if dtype in HALF_DTYPES or array.dtype == np.float16:
        warnings.warn(f"tensor '{name}' is {dtype or array.dtype}; cast to float32", stacklevel=3)
        array = array.astype(np.float32)
    if not np.all(np.isfinite(array)):
        raise InputError(f"tensor '{name}' holds {np.size(array) - np.isfinite(array).sum()} non-finite values (nan or inf)")
    return array


def _linear_layers(state: Mapping[str, Any], prefix: str, what: str) -> list[str]:
    """The torch names of the Linear layers under ``prefix``, in order (each with a weight and a bias)."""
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.weight$")
    indices = sorted(int(m.group(1)) for key in state if (m := pattern.match(key)))
    names = [f"{prefix}.{i}" for i in indices]
    if not names:
        raise InputError(f"{what}: no Linear layers under '{prefix}' (keys: {sorted(state)[:6]}...)")
    for name in names:
        if f"{name}.bias" not in state:
            raise InputError(f"{what}: layer '{name}' has no bias; jaxvae's layers always have one")
    return names


def _layer_names(state: Mapping[str, Any], part: str) -> list[tuple[str, str]]:
    """[(torch layer name, jaxvae layer name)] of one part's state dict, through ``LAYER_TABLE``."""
    pairs = []
    for prefix, stack, last in LAYER_TABLE[part]:
        torch_names = _linear_layers(state, prefix, part)
        if stack is None and len(torch_names) != 1:
            raise InputError(f"{part}: '{prefix}' has {len(torch_names)} Linear layers; jaxvae's '{last}' is one")
        in_stack = torch_names[:-1] if last else torch_names
        pairs += [(torch_name, f"{stack}/{i}") for i, torch_name in enumerate(in_stack)]
        if last:
            pairs.append((torch_names[-1], last))
    return pairs


def layer_table(encoder_state, decoder_state) -> list[tuple[str, str, str]]:
    """[(part, torch layer name, jaxvae layer name)] for both halves of the model.

    Args:
        encoder_state: torchref's encoder, or its state dict.
        decoder_state: torchref's decoder, or its state dict.

    Returns:
        The triples, encoder first.
    """
    states = {"encoder": _state_dict(encoder_state), "decoder": _state_dict(decoder_state)}
    return [(part, t, j) for part, state in states.items() for t, j in _layer_names(state, part)]


def from_torch(encoder, decoder, config=None) -> dict:
    """jaxvae params from torchref's blog encoder and decoder (modules or state dicts).

    Kernels are the torch weights transposed; dtypes are kept (float64 stays float64 under jax x64).

    Args:
        encoder: torchref's encoder, or its state dict.
        decoder: torchref's decoder, or its state dict.
        config: A ``VAEConfig`` to check the shapes against (a mismatch names the layer); None for no check.

    Returns:
        The params tree.

    Raises:
        InputError: An unexpected tensor, a weight and bias that form no Linear layer, or a shape that
            differs from ``config``'s; the message names the tensor or layer.
    """
    states = {"encoder": _state_dict(encoder), "decoder": _state_dict(decoder)}
    for part, state in states.items():
        extra = [k for k in state if not any(k.startswith(prefix + ".") for prefix, _, _ in LAYER_TABLE[part])]
        if extra:
            raise InputError(f"{part}: unexpected tensors {extra}")
    expected = {part: layers_of(tree) for part, tree in param_shapes(config).items()} if config is not None else None
    params: dict = {"encoder": {}, "decoder": {}}
    for part, torch_name, name in layer_table(states["encoder"], states["decoder"]):
        weight = _to_numpy(states[part][f"{torch_name}.weight"], f"{part}.{torch_name}.weight")
        bias = _to_numpy(states[part][f"{torch_name}.bias"], f"{part}.{torch_name}.bias")
        if weight.ndim != 2 or bias.shape != (weight.shape[0],):
            raise InputError(f"{part} layer '{torch_name}': weight {weight.shape} and bias {bias.shape} do not form a Linear layer")
        want = expected[part].get(name) if expected is not None else None
        if want is not None:
            for leaf, got, shape in (("weight", weight.shape, want["kernel"].shape[::-1]), ("bias", bias.shape, want["bias"].shape)):
                if tuple(got) != tuple(shape):
                    raise InputError(f"{part} tensor '{torch_name}.{leaf}' has shape {tuple(got)}; the config expects "
                                     f"{tuple(shape)} (jaxvae layer '{name}')")
        _put(params[part], name, {"kernel": jnp.asarray(weight.T), "bias": jnp.asarray(bias)})
    if config is not None:
        check_params_shapes(params, config)  # the layer sets (a missing or extra layer)
    return params


def check_params_shapes(params: dict, config) -> None:
    """Raise ValueError naming the first layer whose shape differs from ``config``'s architecture.

    Args:
        params: The params tree.
        config: The ``VAEConfig`` it should fit.

    Raises:
        InputError: Other layers, or a layer of another shape.
    """
    expected = param_shapes(config)
    for part in ("encoder", "decoder"):
        got_layers, want_layers = layers_of(params.get(part, {})), layers_of(expected[part])
        if set(got_layers) != set(want_layers):
            raise InputError(f"{part}: layers {sorted(got_layers)} do not match the config's {sorted(want_layers)}")
        for name, want in want_layers.items():
            for leaf in ("kernel", "bias"):
                got_shape = tuple(np.shape(got_layers[name][leaf]))
                if got_shape != tuple(want[leaf].shape):
                    raise InputError(f"{part} layer '{name}' {leaf}: shape {got_shape}, the config expects {tuple(want[leaf].shape)}")


def to_torch(params: dict, encoder, decoder):
    """Write jaxvae ``params`` into torchref's blog modules in place (shapes checked per layer).

    Args:
        params: The params tree.
        encoder: torchref's encoder (loaded in place), or its state dict.
        decoder: torchref's decoder (loaded in place), or its state dict.

    Returns:
        ``(encoder_state, decoder_state)``: new state dicts, in every case.

    Raises:
        InputError: A layer without a counterpart, or of another shape; the message names it.
    """
    import torch

    out = []
    for part, target in (("encoder", encoder), ("decoder", decoder)):
        state = dict(_state_dict(target))
        names = _layer_names(state, part)
        layers = layers_of(params[part])
        missing = set(layers) - {name for _, name in names}
        if missing:
            raise InputError(f"{part}: jaxvae layers {sorted(missing)} have no counterpart in the torch module")
        for torch_name, name in names:
            if name not in layers:
                raise InputError(f"{part}: torch layer '{torch_name}' has no jaxvae layer '{name}'")
            for leaf, value in (("weight", np.asarray(layers[name]["kernel"]).T),
                                ("bias", np.asarray(layers[name]["bias"]))):
                key = f"{torch_name}.{leaf}"
                old = state[key]
                if tuple(old.shape) != value.shape:
                    raise InputError(f"{part} layer '{torch_name}' {leaf}: torch shape {tuple(old.shape)}, "
                                     f"jaxvae layer '{name}' gives {value.shape}")
                state[key] = torch.tensor(np.array(value), dtype=old.dtype)
        if hasattr(target, "load_state_dict"):
            target.load_state_dict(state)
        out.append(state)
    return tuple(out)


def _stack(part: Mapping, name: str) -> list[Mapping]:
    """The layers of a stack (``part[name]``, keyed by position), in order; none when it is absent."""
    layers = part.get(name, {})
    return [layers[i] for i in sorted(layers, key=int)]


def infer_config(params: dict) -> VAEConfig:
    """The blog-style VAEConfig that the layer shapes of ``params`` imply (for files without a config).

    Args:
        params: The params tree of an MLP.

    Returns:
        The ``VAEConfig``.

    Raises:
        InputError: The encoder has no trunk layers.
    """
    enc, dec = params["encoder"], params["decoder"]
    trunk = _stack(enc, "trunk")
    if not trunk:
        raise InputError("encoder: no trunk layers (prev_network.network.*)")
    hidden = tuple(int(layer["kernel"].shape[1]) for layer in trunk)
    dec_hidden = tuple(int(layer["kernel"].shape[1]) for layer in _stack(dec, "hidden"))
    return VAEConfig(input_dim=int(trunk[0]["kernel"].shape[0]), hidden=hidden,
                     latent_dim=int(enc["mu"]["kernel"].shape[1]),
                     decoder_hidden=None if dec_hidden == tuple(reversed(hidden)) else dec_hidden)


def check_torch_compatible(config: VAEConfig) -> None:
    """ValueError unless torchref's blog modules can hold this model: LeakyReLU(0.01) hidden layers,
    a sigmoid output, a mirrored decoder, the MLP architecture.

    Args:
        config: The model's config.

    Raises:
        InputError: The fields that differ, named.
    """
    problems = []
    if config.architecture != "mlp":
        problems.append(f"architecture={config.architecture}")
    if config.activation != "leaky_relu" or config.negative_slope != 0.01:
        problems.append(f"activation={config.activation} (slope {config.negative_slope})")
    if config.output_activation != "sigmoid" or likelihood_of(config.likelihood).outputs_logits:
        problems.append(f"output_activation={config.output_activation}, likelihood={config.likelihood}")
    if config.decoder_widths != tuple(reversed(config.hidden)):
        problems.append(f"decoder_hidden={config.decoder_hidden}")
    if problems:
        raise InputError("torchref's blog modules need an MLP with LeakyReLU(0.01), a sigmoid output and a "
                         f"mirrored decoder; this model has {', '.join(problems)}")


def _torch():
    try:
        import torch

        import torchref
    except ImportError as e:
        raise InputError(f"torch files need PyTorch and torchref ({e}); install with: pip install 'jaxvae[torch]'") from None
    return torch, torchref


def save_torch(path: str | os.PathLike, params: dict, config: VAEConfig, **extra) -> Path:
    """``torch.save`` of ``{"encoder": state_dict, "decoder": state_dict, "config": ..., **extra}`` for
    torchref's blog modules, written atomically, and only over an earlier export (by record:
    ``fileio.write_owned``).

    Args:
        path: The file to write.
        params: The params tree.
        config: The model's config.
        **extra: More entries of the file (``dataset``, ``image_shape``, ``epoch``, ``data_dir``).

    Returns:
        ``path``.

    Raises:
        InputError: The model does not fit torchref's modules, or ``path``'s directory does not exist.
        jaxvae.fileio.NotOwnedError: A file at ``path`` that jaxvae did not write.
    """
    check_torch_compatible(config)
    torch, torchref = _torch()
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{path}: directory {path.parent} does not exist")
    check_replaceable(path)  # before the work: another file of that name is refused, left as it is
    encoder, _, decoder = torchref.build_blog_model(config.input_dim, config.latent_dim, config.hidden)
    # writable NumPy copies: torch warns about (and cannot own) read-only buffers from jax arrays
    enc_state, dec_state = to_torch(jax.tree.map(np.array, params), encoder, decoder)
    buffer = io.BytesIO()
    torch.save({"encoder": enc_state, "decoder": dec_state, "config": config_to_dict(config), **extra}, buffer)
    write_owned(path, buffer.getvalue())
    return path


def load_torch(path: str | os.PathLike) -> tuple[dict, VAEConfig, dict]:
    """``(params, config, file contents)`` from a file of torchref blog state dicts (``save_torch``'s
    or any ``torch.save({"encoder": ..., "decoder": ...})``); the config is the file's, or inferred
    from the shapes.

    Args:
        path: The torch file.

    Returns:
        ``(params, config, blob)``: the params tree, the ``VAEConfig`` and the file's dict.

    Raises:
        InputError: The file is missing, empty, not a torch file or not such a dict, or a tensor or
            field does not fit; the message names the file and the tensor at fault.
    """
    torch, _ = _torch()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path}: not a torch file (torch.save writes a zip archive; this is not one)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file; all mean "not a state-dict file"
        raise InputError(f"{path}: not a readable torch file ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if not isinstance(blob, dict) or "encoder" not in blob or "decoder" not in blob:
        keys = sorted(blob) if isinstance(blob, dict) else type(blob).__name__
        raise InputError(f"{path}: expected a dict with 'encoder' and 'decoder' state dicts, got {keys}")
    try:
        config = VAEConfig(**blob["config"]) if "config" in blob else None
        params = from_torch(blob["encoder"], blob["decoder"], config)
        config = config or infer_config(params)
        check_torch_compatible(config)
        check_metadata(blob, config)
    except (ValueError, TypeError) as e:
        raise InputError(f"{path}: {e}") from None
    return params, config, blob


def check_metadata(blob: Mapping, config: VAEConfig) -> None:
    """ValueError naming the first metadata field of a torch file (``save_torch``'s ``extra``) that is
    malformed: a run directory made from it would be refused later by the commands that read it.

    Args:
        blob: The file's dict.
        config: The model's config (``image_shape`` must match its input size).

    Raises:
        InputError: ``dataset``, ``image_shape``, ``epoch`` or ``data_dir`` malformed.
    """
    def natural(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    if "dataset" in blob and blob["dataset"] not in DATASETS:
        raise InputError(f"field 'dataset' is {blob['dataset']!r}; expected one of {', '.join(DATASETS)}")
    if "image_shape" in blob:
        shape = blob["image_shape"]
        if (not isinstance(shape, (list, tuple)) or not shape or not all(natural(n) and n > 0 for n in shape)
                or math.prod(shape) != config.input_dim):
            raise InputError(f"field 'image_shape' is {shape!r}; expected positive sizes whose product is the "
                             f"model's input size {config.input_dim}")
    if "epoch" in blob and not natural(blob["epoch"]):
        raise InputError(f"field 'epoch' is {blob['epoch']!r}; expected a whole number >= 0")
    if blob.get("data_dir") is not None and not isinstance(blob["data_dir"], str):
        raise InputError(f"field 'data_dir' is {blob['data_dir']!r}; expected a path or None")
