"""Checkpoint round trip, refusal of wrong or damaged files, atomic writes, byte-level fuzzing."""
import dataclasses
import json
import os
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxvae import runs
from jaxvae.checkpoint import CheckpointError, checkpoint_bytes, load_checkpoint, save_checkpoint
from jaxvae.config import TrainConfig, VAEConfig
from jaxvae.data import load_dataset
from jaxvae.fileio import OWNERSHIP_FILE, atomic_write_text
from jaxvae.training import TrainStep, fit, init_fit_state

# The CLI tests' tiny digits model: the same configs and shapes reuse their compiled epoch.
VAE = VAEConfig(input_dim=64, hidden=(32,))
TRAIN = TrainConfig(max_epochs=2)


@pytest.fixture(scope="module")
def fitted():
    data = load_dataset("digits")
    return fit(data.train_x, data.test_x, vae_config=VAE, train_config=TRAIN).state


@pytest.fixture(scope="module")
def fresh():
    """A run's state before its first epoch: what the refusal tests need, without compiling an epoch."""
    return init_fit_state(TrainStep.from_configs(VAE, TRAIN), TRAIN)


@pytest.fixture(scope="module")
def good_bytes(fresh):
    return checkpoint_bytes(fresh, VAE, TRAIN)


def _assert_same_state(a, b):
    for x, y in zip(jax.tree.leaves((a.train_state, a.key)), jax.tree.leaves((b.train_state, b.key))):
        assert np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(x, y)
    assert (a.schedules, a.epoch, a.history) == (b.schedules, b.epoch, b.history)


@pytest.mark.slow
def test_round_trip_is_exact(fitted, tmp_path):
    path = save_checkpoint(tmp_path / "ckpt.msgpack", fitted, VAE, TRAIN)
    state, vae, train = load_checkpoint(path)
    assert (vae, train) == (VAE, TRAIN)
    assert state.epoch == 2 and len(state.history) == 2
    _assert_same_state(state, fitted)


def test_missing_file_and_directory_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        load_checkpoint(tmp_path / "checkpoint.msgpack")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere" / "checkpoint.msgpack")


def test_weights_that_do_not_fit_their_stored_config_name_the_layer(fresh, tmp_path):
    """A file whose configs claim another architecture than its weights hold (crafted, or a writer bug)."""
    for hidden, named in (((12,), r"params/decoder/hidden/0/bias has shape \(32,\), the config expects \(12,\)"),
                          ((8, 8), r"params/decoder/hidden has entries \['0'\], expected \['0', '1'\]")):
        path = tmp_path / "c.msgpack"
        path.write_bytes(checkpoint_bytes(fresh, VAE.replace(hidden=hidden), TRAIN))
        with pytest.raises(CheckpointError, match=r"c\.msgpack: (does not fit the model: )?" + named):
            load_checkpoint(path)


def test_a_checkpoint_of_other_settings_is_refused_naming_each_field(fresh, tmp_path):
    """Same shapes are not the same model: another activation, likelihood or seed is named, not trusted."""
    path = save_checkpoint(tmp_path / "c.msgpack", fresh, VAE, TRAIN)
    other = VAE.replace(activation="tanh", likelihood="bernoulli")
    with pytest.raises(CheckpointError, match=r"c\.msgpack: was trained with other settings .*activation: 'leaky_relu' "
                                              r"in the checkpoint, 'tanh' given; likelihood: "):
        load_checkpoint(path, other)
    with pytest.raises(CheckpointError, match=r"seed: 0 in the checkpoint, 1 given\)"):
        load_checkpoint(path, VAE, TRAIN.replace(seed=1))
    longer = TRAIN.replace(max_epochs=TRAIN.max_epochs + 5)  # a resumed run may train longer
    assert load_checkpoint(path, VAE, longer)[2] == longer


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "foreign"])
def test_damaged_files_are_refused_and_left_alone(good_bytes, tmp_path, damage):
    data = {"truncate": good_bytes[: len(good_bytes) // 2], "empty": b"",
            "flip": good_bytes[:-10] + bytes([good_bytes[-10] ^ 1]) + good_bytes[-9:],
            "foreign": b"PK\x03\x04 a zip file, say"}[damage]
    path = tmp_path / "checkpoint.msgpack"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="checkpoint.msgpack"):
        load_checkpoint(path)
    assert path.read_bytes() == data


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_bytes_raise_only_checkpoint_error(good_bytes, tmp_path, data):
    kind = data.draw(st.sampled_from(["truncate", "flip", "garbage", "splice"]))
    if kind == "truncate":
        blob = good_bytes[: data.draw(st.integers(0, len(good_bytes) - 1))]
    elif kind == "flip":
        i = data.draw(st.integers(0, len(good_bytes) - 1))
        blob = good_bytes[:i] + bytes([good_bytes[i] ^ data.draw(st.integers(1, 255))]) + good_bytes[i + 1:]
    elif kind == "garbage":
        blob = data.draw(st.binary(max_size=2000))
    else:  # a valid header before garbage: exercises the checksum, not just the magic
        blob = good_bytes[:40] + data.draw(st.binary(max_size=500))
    path = tmp_path / "fuzz.msgpack"
    path.write_bytes(blob)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert path.read_bytes() == blob


def test_failed_save_keeps_the_old_checkpoint(fresh, tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "checkpoint.msgpack", fresh, VAE, TRAIN)
    before = path.read_bytes()

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, fresh, VAE, TRAIN.replace(max_epochs=5))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [OWNERSHIP_FILE, "checkpoint.msgpack"]  # no temp left


def test_stale_temps_are_ignored_and_cleaned(fresh, tmp_path):
    path = save_checkpoint(tmp_path / "checkpoint.msgpack", fresh, VAE, TRAIN)
    stale = tmp_path / ".checkpoint.msgpack.tmp-killed"
    stale.write_bytes(b"half a checkpoint")
    load_checkpoint(path)  # the temp is not mistaken for the checkpoint
    save_checkpoint(path, fresh, VAE, TRAIN)
    assert not stale.exists()


def test_atomic_write_keeps_umask_permissions(tmp_path):
    target = tmp_path / "f.json"
    atomic_write_text(target, "{}")
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


DATA = Path(__file__).resolve().parent / "data"


@pytest.mark.slow  # trains
def test_a_run_of_jaxvae_0_1_0_resumes_as_0_1_0_resumed_it(tmp_path, capsys):
    """tests/data/run-0.1.0: `jaxvae train --dataset digits --hidden 32 --epochs 1 --seed 3` by
    jaxvae 0.1.0 (checkpoint format 1); the JSON beside it is epoch 2 as 0.1.0's --resume made it."""
    from jaxvae import cli

    run = tmp_path / "run"
    shutil.copytree(DATA / "run-0.1.0", run)
    state, _, train = load_checkpoint(run / runs.CHECKPOINT_FILE)
    assert state.epoch == 1 and int(state.train_state.step) == 12
    assert state.schedules.lr.scale == 1.0 and train.lr == 1e-3  # 0.1.0 stored the plateau's lr itself
    assert cli.main(["train", "--resume", str(run), "--epochs", "2", "--quiet", "--no-plots", "--no-download"]) == 0
    capsys.readouterr()
    got = runs.read_metrics(run)[-1]
    want = json.loads((DATA / "run-0.1.0-epoch2-by-0.1.0.json").read_text())
    for name in ("train_loss", "train_recon", "train_kl", "lr"):
        assert got[name] == pytest.approx(want[name], rel=1e-6), name
    # validation now weighs its partial batch (41 of 297 images) by its images, 0.1.0 as a whole batch
    for name in ("val_loss", "val_recon", "val_kl"):
        assert got[name] == pytest.approx(want[name], rel=5e-2) and got[name] != want[name], name
    resumed, _, _ = load_checkpoint(run / runs.CHECKPOINT_FILE)  # and it is written back in this version's format
    assert resumed.epoch == 2 and int(resumed.train_state.step) == 24


def test_an_unknown_format_says_how_to_proceed(good_bytes, tmp_path):
    from flax import serialization

    from jaxvae.fileio import frame, unframe

    raw = serialization.msgpack_restore(unframe(b"JAXVAECK", good_bytes))
    path = tmp_path / "checkpoint.msgpack"
    path.write_bytes(frame(b"JAXVAECK", serialization.msgpack_serialize({**raw, "format_version": 7})))
    with pytest.raises(CheckpointError, match="unsupported checkpoint format version 7 .* load it with the jaxvae "
                                              "that wrote it, or start a new run"):
        load_checkpoint(path)


# The flat layer names of formats 1 to 3, written out, per part.
FLAT_NAMES_OF_FORMAT_3 = {
    "mlp": {"encoder": {"trunk_0", "trunk_1", "mu", "log_sigma"}, "decoder": {"hidden_0", "hidden_1", "output"}},
    "conv": {"encoder": {"block0_conv0", "block0_conv1", "block1_conv0", "block1_conv1", "mu", "log_sigma"},
             "decoder": {"input", "block0_up", "block0_conv", "block1_up", "block1_conv", "output"}},
}


def _format_3_part(part: dict) -> dict:
    """One part of a stored params tree with format 3's flat names (trunk_0, block1_conv0, ...)."""
    flat = {}
    for name, value in part.items():
        if name in ("trunk", "hidden"):
            flat.update({f"{name}_{i}": layer for i, layer in value.items()})
        elif name == "blocks":
            flat.update({f"block{i}_{conv}": layer for i, block in value.items() for conv, layer in block.items()})
        else:
            flat[name] = value
    return flat


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_a_checkpoint_with_format_3_layer_names_loads_into_the_nested_layout(tmp_path, architecture):
    """Params and Adam's moments (random values, so that each lands where it belongs) stored under
    the flat names of jaxvae 0.1.0 to 0.3 load into this version's layout, every value equal."""
    from flax import serialization

    from jaxvae.fileio import frame, unframe

    vae = VAEConfig(input_dim=16, hidden=(8, 4), architecture=architecture, conv_channels=(2, 3))
    rng = np.random.default_rng(0)
    randomised = lambda tree: jax.tree.map(lambda a: rng.standard_normal(np.shape(a)).astype(np.float32), tree)
    fresh = init_fit_state(TrainStep.from_configs(vae, TRAIN), TRAIN)
    opt = fresh.train_state.opt_state  # Adam inside inject_hyperparams: its moments in inner_state
    adam = opt.inner_state._replace(mu=randomised(opt.inner_state.mu), nu=randomised(opt.inner_state.nu))
    state = dataclasses.replace(fresh, train_state=fresh.train_state._replace(
        params=randomised(fresh.params), opt_state=opt._replace(inner_state=adam)))

    raw = serialization.msgpack_restore(unframe(b"JAXVAECK", checkpoint_bytes(state, vae, TRAIN)))
    flat = lambda tree: {part: _format_3_part(layers) for part, layers in tree.items()}
    inner = raw["opt_state"]["inner_state"]
    old = {**raw, "format_version": 3, "params": flat(raw["params"]),
           "opt_state": {**raw["opt_state"],
                         "inner_state": {**inner, "mu": flat(inner["mu"]), "nu": flat(inner["nu"])}}}
    assert {part: set(layers) for part, layers in old["params"].items()} == FLAT_NAMES_OF_FORMAT_3[architecture]
    path = tmp_path / "checkpoint.msgpack"
    path.write_bytes(frame(b"JAXVAECK", serialization.msgpack_serialize(old)))

    loaded, loaded_vae, _ = load_checkpoint(path)
    assert loaded_vae == vae
    assert jax.tree.structure(loaded.train_state) == jax.tree.structure(state.train_state)
    _assert_same_state(loaded, state)
    # written back in this version's layout, it reads the same (beside it: the file above is not jaxvae's by record)
    again = save_checkpoint(tmp_path / "again.msgpack", loaded, vae, TRAIN)
    _assert_same_state(load_checkpoint(again)[0], state)
