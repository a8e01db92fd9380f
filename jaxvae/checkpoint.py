"""Checkpoints: a FitState and its configs in one file, written atomically, checked when read.

File format (``checkpoint.msgpack``): the 8-byte magic ``JAXVAECK``, a SHA-256 of the payload,
then the payload: Flax's msgpack serialisation of::

    {"format_version": 1, "model": json, "training": json, "params": ..., "opt_state": ...,
     "plateau": {"lr", "best", "num_bad_epochs"}, "key": uint32 key data, "epoch": int, "history": json}

The checksum makes a truncated or corrupted file an error instead of silently wrong weights.
Loading rebuilds the structure from the configs (a template) and checks every array's shape against
it, so a checkpoint from another architecture is refused with the layer named.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from jaxvae.config import TrainConfig, VAEConfig
from jaxvae.interop import check_params_shapes
from jaxvae.runs import atomic_write_bytes, config_to_dict
from jaxvae.models import init_params
from jaxvae.training import FitState, PlateauState, TrainState, make_optimizer

MAGIC = b"JAXVAECK"
FORMAT_VERSION = 1
_HEADER = len(MAGIC) + hashlib.sha256().digest_size


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, corrupt or for another model; the message names the file."""


def _key_data(key) -> np.ndarray:
    """Raw uint32 key data, whether ``key`` is a typed key or a legacy uint32 array."""
    if jnp.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.asarray(key, dtype=np.uint32)


def checkpoint_bytes(state: FitState, vae_config: VAEConfig, train_config: TrainConfig) -> bytes:
    """The file's bytes for ``state`` (header + checksummed msgpack payload)."""
    payload = serialization.msgpack_serialize({
        "format_version": FORMAT_VERSION,
        "model": json.dumps(config_to_dict(vae_config)),
        "training": json.dumps(config_to_dict(train_config)),
        "params": serialization.to_state_dict(jax.device_get(state.train_state.params)),
        "opt_state": serialization.to_state_dict(jax.device_get(state.train_state.opt_state)),
        "plateau": {"lr": float(state.plateau.lr), "best": float(state.plateau.best),
                    "num_bad_epochs": int(state.plateau.num_bad_epochs)},
        "key": _key_data(state.key),
        "epoch": int(state.epoch),
        "history": json.dumps(state.history),  # JSON keeps inf/nan and record order as they are
    })
    return MAGIC + hashlib.sha256(payload).digest() + payload


def save_checkpoint(path: str | os.PathLike, state: FitState, vae_config: VAEConfig,
                    train_config: TrainConfig) -> Path:
    """Write ``state`` to ``path`` atomically: a killed save leaves the previous checkpoint intact."""
    path = Path(path)
    atomic_write_bytes(path, checkpoint_bytes(state, vae_config, train_config))
    return path


def _read_payload(path: Path) -> dict:
    if not path.parent.is_dir():
        raise CheckpointError(f"{path}: directory {path.parent} does not exist")
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint file here")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from None
    if len(data) < _HEADER or not data.startswith(MAGIC):
        raise CheckpointError(f"{path}: not a jaxvae checkpoint (bad header; {len(data)} bytes)")
    payload = data[_HEADER:]
    if hashlib.sha256(payload).digest() != data[len(MAGIC):_HEADER]:
        raise CheckpointError(f"{path}: corrupt or truncated (checksum mismatch; {len(data)} bytes)")
    try:
        raw = serialization.msgpack_restore(payload)
    except Exception as e:  # the checksum passed, so this is a writer bug or a foreign file: still name it
        raise CheckpointError(f"{path}: cannot decode ({type(e).__name__}: {e})") from None
    if not isinstance(raw, dict) or raw.get("format_version") != FORMAT_VERSION:
        version = raw.get("format_version") if isinstance(raw, dict) else None
        raise CheckpointError(f"{path}: unsupported checkpoint format version {version!r} (expected {FORMAT_VERSION})")
    return raw


def _configs(raw: dict, path: Path) -> tuple[VAEConfig, TrainConfig]:
    try:
        return VAEConfig(**json.loads(raw["model"])), TrainConfig(**json.loads(raw["training"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid stored config ({e})") from None


def _check_tree(template, restored, where: str, path: Path) -> None:
    """Same nested keys and array shapes as the template; the first difference is named."""
    if isinstance(template, dict):
        if not isinstance(restored, dict) or set(template) != set(restored):
            got = sorted(restored) if isinstance(restored, dict) else type(restored).__name__
            raise CheckpointError(f"{path}: {where} has entries {got}, expected {sorted(template)}")
        for k in template:
            _check_tree(template[k], restored[k], f"{where}/{k}", path)
        return
    shape = np.shape(template)
    if not isinstance(restored, (np.ndarray, np.generic, int, float)) or np.shape(restored) != shape:
        raise CheckpointError(f"{path}: {where} has shape {np.shape(restored)}, the model expects {shape}")


_KEY_SHAPE = (2,)  # jax.random.PRNGKey's raw uint32 data, what init_fit_state uses


def _template(vae_config: VAEConfig, train_config: TrainConfig) -> dict:
    """Shapes and structure of the params and optimizer state (abstract: nothing is computed)."""
    params = jax.eval_shape(lambda: init_params(jax.random.PRNGKey(0), vae_config))
    return {"params": params, "opt_state": jax.eval_shape(make_optimizer(train_config).init, params)}


def load_checkpoint(path: str | os.PathLike, vae_config: VAEConfig | None = None,
                    train_config: TrainConfig | None = None) -> tuple[FitState, VAEConfig, TrainConfig]:
    """``(state, vae_config, train_config)`` from a checkpoint file.

    With ``vae_config`` (e.g. from the run's config.json) the weights must fit that architecture;
    otherwise the checkpoint's own config is used. Every problem raises ``CheckpointError`` naming
    the file (and the layer, for a shape mismatch).
    """
    path = Path(path)
    raw = _read_payload(path)
    stored_vae, stored_train = _configs(raw, path)
    vae_config = vae_config or stored_vae
    train_config = train_config or stored_train
    try:
        check_params_shapes(raw.get("params", {}), vae_config)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: weights do not fit the model: {e}") from None
    template = _template(vae_config, train_config)
    for name, tmpl in template.items():
        _check_tree(serialization.to_state_dict(tmpl), raw.get(name), name, path)
    try:
        params = serialization.from_state_dict(template["params"], raw["params"])
        opt_state = serialization.from_state_dict(template["opt_state"], raw["opt_state"])
        plateau = PlateauState(lr=float(raw["plateau"]["lr"]), best=float(raw["plateau"]["best"]),
                               num_bad_epochs=int(raw["plateau"]["num_bad_epochs"]))
        key = np.asarray(raw["key"], dtype=np.uint32)
        if key.shape != _KEY_SHAPE:
            raise ValueError(f"PRNG key has shape {key.shape}, expected {_KEY_SHAPE}")
        epoch = int(raw["epoch"])
        history = json.loads(raw["history"])
        if not isinstance(history, list) or epoch < 0:
            raise ValueError("bad epoch or history")
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: incomplete checkpoint ({type(e).__name__}: {e})") from None
    to_device = lambda tree: jax.tree.map(jnp.asarray, tree)  # noqa: E731
    state = FitState(TrainState(to_device(params), to_device(opt_state)), plateau, jnp.asarray(key), epoch, history)
    return state, vae_config, train_config
