"""Checkpoints: a FitState and its configs in one file, written atomically, checked when read.

File format (``checkpoint.msgpack``): ``jaxvae.fileio.frame`` of the 8-byte magic ``JAXVAECK`` (the
magic, a SHA-256 of the payload, the payload), the payload being Flax's msgpack serialisation of::

    {"format_version": 4, "model": json, "training": json, "params": ..., "opt_state": ...,
     "step": int, "schedules": {"lr": ..., "kl_weight": ...}, "key": uint32 key data, "epoch": int,
     "history": json, "run": json (optional: the run's data and fingerprints, as in config.json)}

The checksum makes a truncated or corrupted file an error instead of silently wrong weights.
Loading rebuilds the structure from the train step (a template) and checks every array's shape
against it, so a checkpoint from another architecture is refused with the entry named. The
hyperparameters of the train state (``jaxvae.hyper.Hyper``) are the training config's. Older formats
are upgraded as they are read: 3 (flat layer names such as ``trunk_0``, ``block0_conv0``), 2
(jaxvae 0.2: the plateau's absolute lr, kl_weight and recon_sigma in the model's config) and 1
(jaxvae 0.1.0).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from jaxvae.config import TrainConfig, VAEConfig, config_to_dict, configs_from_dicts
from jaxvae.errors import InputError
from jaxvae.fileio import FrameError, frame, read_regular, unframe, write_owned
from jaxvae.model import Model, model_from_record
from jaxvae.parallel import WRITER
from jaxvae.training import FitState, ScheduleStates, TrainState, TrainStep, hyper_of
from jaxvae.vae import model_record  # noqa: F401 (public here too)

MAGIC = b"JAXVAECK"
FORMAT_VERSION = 4
_KEY_SHAPE = (2,)  # jax.random.PRNGKey's raw uint32 data, what init_fit_state uses


class CheckpointError(InputError):
    """A checkpoint is missing, unreadable, corrupt or for another model; the message names the file."""


def _key_data(key) -> np.ndarray:
    """Raw uint32 key data, whether ``key`` is a typed key or a legacy uint32 array."""
    if jnp.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.asarray(key, dtype=np.uint32)


def checkpoint_bytes(state: FitState, vae_config: Model | VAEConfig, train_config: TrainConfig,
                     run: dict | None = None) -> bytes:
    """The file's bytes for ``state`` (header + checksummed msgpack payload).

    Args:
        state: The run's state.
        vae_config: The model, or a ``VAEConfig`` (recorded by ``model_record``).
        train_config: The training config.
        run: What else the run directory records about the model (a JSON-ready dict: its data and their
            fingerprints), kept so that the run can be rebuilt from the checkpoint alone
            (``checkpoint_run_record``); None for nothing.

    Returns:
        The file's bytes.

    Raises:
        InputError: A ``VAEConfig`` whose ``init`` is a pair of functions, which JSON cannot hold.
    """
    host = jax.device_get(state.train_state)
    payload = serialization.msgpack_serialize({
        "format_version": FORMAT_VERSION,
        "model": json.dumps(model_record(vae_config)),
        "training": json.dumps(config_to_dict(train_config)),
        "params": serialization.to_state_dict(host.params),
        "opt_state": serialization.to_state_dict(host.opt_state),
        "step": int(host.step),
        "schedules": serialization.to_state_dict(jax.device_get(state.schedules)),
        "key": _key_data(state.key),
        "epoch": int(state.epoch),
        "history": json.dumps(state.history),  # JSON keeps inf/nan and record order as they are
        **({} if run is None else {"run": json.dumps(run)}),
        # the model's own state (an EMA codebook, say); the VAE family has none, and its files stay as they were
        **({"model_state": serialization.to_state_dict(host.model_state)}
           if jax.tree.leaves(host.model_state) else {}),
    })
    return frame(MAGIC, payload)


def save_checkpoint(path: str | os.PathLike, state: FitState, vae_config: VAEConfig,
                    train_config: TrainConfig, run: dict | None = None) -> Path:
    """Write ``state`` to ``path`` atomically: a killed save leaves the previous checkpoint intact.
    In a multi-process run only process 0 writes (every process holds the same replicated state). A
    file at ``path`` that jaxvae did not write is refused (``fileio.write_owned``), left as it is.

    Args:
        path: The checkpoint file.
        state: The run's state.
        vae_config: The model, or a ``VAEConfig``.
        train_config: The training config.
        run: The run's record of its data, as for ``checkpoint_bytes``.

    Returns:
        ``path``.

    Raises:
        jaxvae.fileio.NotOwnedError: A file at ``path`` that jaxvae did not write.
        InputError: A ``VAEConfig`` whose ``init`` is a pair of functions.
    """
    path = Path(path)
    WRITER(lambda: write_owned(path, checkpoint_bytes(state, vae_config, train_config, run)))
    return path


def checkpoint_run_record(path: str | os.PathLike) -> dict | None:
    """The ``run`` record a checkpoint was saved with, its configs added as "model" and "training"
    (config.json's layout); None for a checkpoint saved without one.

    Args:
        path: The checkpoint file.

    Returns:
        The record, or None.

    Raises:
        CheckpointError: The file is missing, unreadable or corrupt, or its record is invalid; the
            message names the file.
    """
    path = Path(path)
    raw = _read_payload(path)
    if "run" not in raw:
        return None
    try:
        run = json.loads(raw["run"])
        if not isinstance(run, dict):
            raise InputError(f"a JSON object expected, got {type(run).__name__}")
        return {**run, "model": json.loads(raw["model"]), "training": json.loads(raw["training"])}
    except (TypeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: invalid stored run record ({e})") from None


def _stored_configs(path: Path, raw: dict, given_model) -> tuple:
    """The checkpoint's model (a ``VAEConfig``, or the model its record names) and ``TrainConfig``.
    The record of a model of your own is rebuilt by importing its class, unless ``given_model`` is given."""
    try:
        record, training = json.loads(raw["model"]), json.loads(raw["training"])
        if not (isinstance(record, dict) and "class" in record):
            return configs_from_dicts(record, training)
        train_config = TrainConfig(**training)
    except (KeyError, TypeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: invalid stored config ({e})") from None
    if given_model is not None:
        if model_record(given_model) != record:
            raise CheckpointError(f"{path}: was trained with another model ({record}) than the one given "
                                  f"({model_record(given_model)})")
        return given_model, train_config
    try:
        return model_from_record(record), train_config
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: was made by {record.get('class')}, which cannot be built again: {e}") from None


def read_history(path: str | os.PathLike) -> list[dict]:
    """The history (one record per finished epoch) a checkpoint holds.

    Args:
        path: The checkpoint file.

    Returns:
        The records.

    Raises:
        CheckpointError: The file is missing, unreadable or corrupt, or its history is invalid; the
            message names the file.
    """
    path = Path(path)
    try:
        history = json.loads(_read_payload(path)["history"])
        if not isinstance(history, list):
            raise InputError(f"a list expected, got {type(history).__name__}")
        return history
    except (KeyError, TypeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: invalid stored history ({e})") from None


# What of a run's record names its data: a checkpoint of other data is another run's.
_DATA_FIELDS = ("dataset", "data_fingerprints")


def _check_same_data(path: Path, raw: dict, data: dict) -> None:
    """CheckpointError naming both when the checkpoint's own run record names other data than ``data``
    (the run's record); a field either side lacks (older runs recorded less) is not compared."""
    try:
        stored = json.loads(raw["run"]) if "run" in raw else {}
    except (TypeError, ValueError, RecursionError):
        stored = {}
    stored = stored if isinstance(stored, dict) else {}
    for field in _DATA_FIELDS:
        if stored.get(field) is not None and data.get(field) is not None and stored[field] != data[field]:
            raise CheckpointError(f"{path}: was trained on other data than its run records ({field}: "
                                  f"{_data_text(stored[field])} in the checkpoint, {_data_text(data[field])} in the run)")


def _data_text(value) -> str:
    """A dataset name, or fingerprints as their splits' short hashes."""
    if isinstance(value, dict):
        return ", ".join(f"{split} sha256 {str(fp.get('sha256', fp))[:12]}" if isinstance(fp, dict) else f"{split} {fp}"
                         for split, fp in value.items())
    return repr(value)


def _check_weights(path: Path, params) -> None:
    """CheckpointError naming the first weight that is not finite: no model trains on from NaN."""
    for where, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if not np.all(np.isfinite(leaf)):
            raise CheckpointError(f"{path}: weight params{jax.tree_util.keystr(where)} holds nan or inf; a "
                                  "checkpoint holds the last good epoch only, so this one was damaged or made elsewhere")


def _upgrade_format_1(raw: dict) -> dict:
    """jaxvae 0.1.0's layout as format 2. Its optimizer was ``inject_hyperparams(adam)``, holding
    the lr (the plateau's, kept in the plateau state too) and chaining Adam with the lr scaling. The
    step count is Adam's count."""
    old = raw["opt_state"]
    hyper = {name: old["hyperparams"][name] for name in ("b1", "b2", "eps", "eps_root")}
    adam = old["inner_state"]["0"]
    opt_state = {"count": old["count"], "hyperparams": hyper, "hyperparams_states": old["hyperparams_states"],
                 "inner_state": adam}
    return {**raw, "format_version": 2, "opt_state": opt_state,
            "step": int(adam["count"]), "schedules": {"lr": raw["plateau"], "kl_weight": {}}}


def _upgrade_format_2(raw: dict) -> dict:
    """jaxvae 0.2's layout as format 3: the plateau's lr as a scale of the configured lr (the lr
    itself is a hyperparameter of the train state now)."""
    schedules = dict(raw["schedules"])
    plateau = schedules.get("lr")
    if isinstance(plateau, dict) and "lr" in plateau:
        _, train = configs_from_dicts(json.loads(raw["model"]), json.loads(raw["training"]))
        schedules["lr"] = {"scale": float(plateau["lr"]) / train.lr, "best": plateau["best"],
                           "num_bad_epochs": plateau["num_bad_epochs"]}
    return {**raw, "format_version": 3, "schedules": schedules}


# Format 3's flat layer names and their place in format 4's nested layout (stacks keyed by position).
_FLAT_NAMES = (
    (re.compile(r"(trunk|hidden)_(\d+)"), lambda m: (m[1], m[2])),  # trunk_1 -> trunk/1
    (re.compile(r"block(\d+)_(\w+)"), lambda m: ("blocks", m[1], m[2])),  # block0_conv1 -> blocks/0/conv1
)


def _nested_layers(part: dict) -> dict:
    """One part of a format-3 params tree (``{"trunk_0": layer, ..., "mu": layer}``) in format 4's layout."""
    nested: dict = {}
    for name, layer in part.items():
        path = next((to_path(m) for pattern, to_path in _FLAT_NAMES if (m := pattern.fullmatch(name))), (name,))
        node = nested
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = layer
    return nested


def _renamed_params_trees(tree):
    """``tree`` with every params tree in it (a dict of "encoder" and "decoder": the params, and Adam's
    mu and nu, which mirror them) in format 4's layout."""
    if not isinstance(tree, dict):
        return tree
    if set(tree) == {"encoder", "decoder"}:
        return {part: _nested_layers(layers) for part, layers in tree.items()}
    return {key: _renamed_params_trees(value) for key, value in tree.items()}


def _upgrade_format_3(raw: dict) -> dict:
    """Format 3 as format 4: the stacks' layers nested (``_FLAT_NAMES``) in the params and the optimizer state alike."""
    return {**raw, "format_version": 4, "params": _renamed_params_trees(raw["params"]),
            "opt_state": _renamed_params_trees(raw["opt_state"])}


def _read_payload(path: Path) -> dict:
    if not path.parent.is_dir():
        raise CheckpointError(f"{path}: directory {path.parent} does not exist")
    if not os.path.lexists(path):
        raise CheckpointError(f"{path}: no checkpoint file here")
    try:
        data = read_regular(path)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from None
    try:
        payload = unframe(MAGIC, data)
    except FrameError as e:
        what = "not a jaxvae checkpoint" if "header" in str(e) else "corrupt or truncated"
        raise CheckpointError(f"{path}: {what} ({e})") from None
    try:
        raw = serialization.msgpack_restore(payload)
    except Exception as e:  # the checksum passed, so this is a writer bug or a foreign file: still name it
        raise CheckpointError(f"{path}: cannot decode ({type(e).__name__}: {e})") from None
    version = raw.get("format_version") if isinstance(raw, dict) else None
    try:  # a missing entry of an older format is a KeyError (or a TypeError, where another type stands)
        for old, upgrade in enumerate((_upgrade_format_1, _upgrade_format_2, _upgrade_format_3), start=1):
            if version == old:
                raw, version = upgrade(raw), old + 1
    except (KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: incomplete checkpoint (a format-{version} checkpoint without {e})") from None
    except ValueError as e:
        raise CheckpointError(f"{path}: incomplete checkpoint ({e})") from None
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint format version {version!r} (this jaxvae reads 1 to "
                              f"{FORMAT_VERSION}); load it with the jaxvae that wrote it, or start a new run")
    return raw


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
        raise CheckpointError(f"{path}: does not fit the model: {where} has shape {np.shape(restored)}, "
                              f"the config expects {shape}")
    expected = getattr(template, "dtype", None)
    if (isinstance(restored, (np.ndarray, np.generic)) and expected is not None
            and jnp.issubdtype(expected, jnp.floating) and restored.dtype != expected):
        raise CheckpointError(f"{path}: does not fit the model: {where} is {restored.dtype}, the model's weights "
                              f"are {np.dtype(expected)}")


# What may differ between a checkpoint and the configs it is loaded with: a resumed run may train longer.
_MAY_DIFFER = {"max_epochs"}


def _check_same_run(path: Path, stored: tuple, given: tuple) -> None:
    """A checkpoint trained another model (or with other settings) than the configs it is loaded with
    when a field other than the epoch limit differs; CheckpointError naming each such field. (A model of
    your own is compared by its record, in ``_stored_configs``.)"""
    differing = [f"{field.name}: {a!r} in the checkpoint, {b!r} given"
                 for s_config, g_config in zip(stored, given) if dataclasses.is_dataclass(s_config)
                 for field in dataclasses.fields(s_config)
                 if field.name not in _MAY_DIFFER
                 and (a := getattr(s_config, field.name)) != (b := getattr(g_config, field.name))]
    if differing:
        raise CheckpointError(f"{path}: was trained with other settings than the config it is loaded with ("
                              + "; ".join(differing) + ")")


def load_checkpoint(path: str | os.PathLike, vae_config: Model | VAEConfig | None = None,
                    train_config: TrainConfig | None = None, *, train_step: TrainStep | None = None,
                    data: dict | None = None) -> tuple[FitState, VAEConfig, TrainConfig]:
    """``(state, vae_config, train_config)`` from a checkpoint file.

    A checkpoint of a model of your own records its class, and loads without one given when that class
    can be imported. Weights must be finite and of the model's dtype.

    Args:
        path: The checkpoint file.
        vae_config: A ``VAEConfig`` or any ``jaxvae.model.Model``; with ``train_config`` (e.g. from the
            run's config.json) the checkpoint must have been trained with them (only ``max_epochs`` may
            differ) and its weights must fit. None for the checkpoint's own.
        train_config: The training config; None for the checkpoint's own.
        train_step: The optimizer and schedules whose state structure to expect; None for what the
            configs name.
        data: The run's record, as config.json holds it: it must name the data the checkpoint records,
            if it records any.

    Returns:
        ``(state, vae_config, train_config)``: the ``FitState`` and the configs (or model) it was
        trained with.

    Raises:
        CheckpointError: Every problem: a missing, corrupt or foreign file, an unsupported format, a
            model class that cannot be imported, other configs or data, or weights of another shape or
            dtype (the entry named) or not finite. The message names the file.
    """
    path = Path(path)
    raw = _read_payload(path)
    stored_vae, stored_train = _stored_configs(path, raw, vae_config)
    vae_config = vae_config or stored_vae
    train_config = train_config or stored_train
    _check_same_run(path, (stored_vae, stored_train), (vae_config, train_config))
    if data is not None:
        _check_same_data(path, raw, data)
    try:
        train_step = train_step or TrainStep.from_configs(vae_config, train_config)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    params = train_step.model.param_shapes()
    template = {"params": params, "opt_state": jax.eval_shape(train_step.optimizer.init, params),
                "schedules": train_step.init_schedules()}
    model_state = jax.eval_shape(lambda: train_step.model.init(jax.random.PRNGKey(0))[1])
    if jax.tree.leaves(model_state):
        template["model_state"] = model_state
    for name, tmpl in template.items():
        _check_tree(serialization.to_state_dict(tmpl), raw.get(name), name, path)
    try:
        restored = {name: serialization.from_state_dict(tmpl, raw[name]) for name, tmpl in template.items()}
        key = np.asarray(raw["key"], dtype=np.uint32)
        if key.shape != _KEY_SHAPE:
            raise InputError(f"PRNG key has shape {key.shape}, expected {_KEY_SHAPE}")
        epoch, step = int(raw["epoch"]), int(raw["step"])
        history = json.loads(raw["history"])
        if not isinstance(history, list) or epoch < 0 or step < 0:
            raise InputError("bad epoch, step or history")
    except (KeyError, TypeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: incomplete checkpoint ({type(e).__name__}: {e})") from None
    _check_weights(path, restored["params"])
    params, opt_state = jax.tree.map(jnp.asarray, (restored["params"], restored["opt_state"]))
    hyper = hyper_of(train_step.model, train_config).as_arrays(jax.tree.leaves(params)[0].dtype)
    train_state = TrainState(params, opt_state, jnp.asarray(step, jnp.int32), hyper,
                             jax.tree.map(jnp.asarray, restored.get("model_state", ())))
    schedules = ScheduleStates(*restored["schedules"])
    return FitState(train_state, schedules, jnp.asarray(key), epoch, history), vae_config, train_config
