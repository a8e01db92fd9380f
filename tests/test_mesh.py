"""A (model, data) mesh: 64 models on 8 simulated CPU devices, split over the model axis, the data axis
or both, each train as its lone fit does, with 1/8 of the state on each device; and the mesh's rules."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from jaxvae import TrainConfig, VAEConfig
from jaxvae.errors import InputError
from jaxvae.parallel import DeviceMesh, make_mesh, mesh_shape, plan_mesh
from jaxvae.training import fit_models

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json
    import jax, numpy as np
    from jaxvae.config import TrainConfig, VAEConfig
    from jaxvae.errors import InputError
    from jaxvae.parallel import plan_mesh
    from jaxvae.training import fit, fit_models

    assert len(jax.devices()) == 8, jax.devices()
    # "auto": every device on the model axis when the models divide by the device count, else data-parallel
    assert plan_mesh(n_models=64, batch_size=16).shape == (8, 1)
    assert plan_mesh(n_models=12, batch_size=16).shape == (1, 8) and plan_mesh(n_models=12, batch_size=16).model_axis is None
    assert plan_mesh(n_models=1, batch_size=16).model_axis is None
    for shape, n, words in (((8, 1), 12, "12 models do not split evenly over a model axis of 8"),
                            ((2, 4), 64, "batch_size 6 does not split evenly over a data axis of 4")):
        try:
            plan_mesh(shape, n_models=n, batch_size=6 if n == 64 else 16)
        except InputError as e:
            assert words in str(e), e
        else:
            raise AssertionError(shape)

    x = np.random.default_rng(0).random((96, 12)).astype(np.float32)  # 6 batches of 16
    vc = VAEConfig(input_dim=12, hidden=(8,), latent_dim=2)
    configs = [TrainConfig(batch_size=16, max_epochs=1, seed=i, lr=1e-3 * (1 + i % 4)) for i in range(64)]
    lone = [fit(x, vae_config=vc, train_config=c, data_parallel=None) for c in configs]
    state_bytes = {}
    reports = []  # (2, 4) runs with progress: every model reports its steps under its own index
    for shape in ((8, 1), (4, 2), (2, 4)):
        progress = (lambda step, loss, model: reports.append((model, step, loss))) if shape == (2, 4) else None
        result = fit_models(x, vae_config=vc, train_configs=configs, mesh=shape, progress=progress, progress_every=3)
        leaves = jax.tree.leaves(result.state.train_state)
        assert all(leaf.sharding.mesh.devices.shape == shape for leaf in leaves), shape
        per_device = [sum(s.data.nbytes for leaf in leaves for s in leaf.addressable_shards if s.device == d)
                      for d in jax.devices()]
        state_bytes[f"{shape[0]}x{shape[1]}"] = {"whole": sum(leaf.nbytes for leaf in leaves),
                                                 "per_device": per_device}
        for i, alone in enumerate(lone):
            mine = result.fit_result(i)
            for got, want in zip(jax.tree.leaves(mine.state.train_state), jax.tree.leaves(alone.state.train_state)):
                np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-7)
            for got, want in zip(mine.history, alone.history):
                for name in ("train_loss", "val_loss", "val_recon", "val_kl", "lr"):
                    np.testing.assert_allclose(got[name], want[name], rtol=1e-5, err_msg=f"{shape} {i} {name}")
    # progress_every 3 rounds up to whole noise chunks of 32: one report, after the last full batch
    assert sorted((model, step) for model, step, _ in reports) == [(i, 6) for i in range(64)]
    # The command line: jaxvae sweep --mesh 4x2 trains 8 models, 2 on each pair of devices, and saves each
    import tempfile
    from pathlib import Path
    from jaxvae import cli
    from jaxvae.checkpoint import load_checkpoint
    out = Path(tempfile.mkdtemp()) / "sweep"
    assert cli.main(["sweep", "--dataset", "digits", "--hidden", "16", "--no-download", "--progress", "none",
                     "--seeds", "8", "--epochs", "1", "--no-plots", "--mesh", "4x2", "--out", str(out)]) == 0
    assert [load_checkpoint(out / f"seed{i}" / "checkpoint.msgpack")[0].epoch for i in range(8)] == [1] * 8
    print("RESULT", json.dumps(state_bytes))
""")


@pytest.mark.slow
def test_64_models_on_8_devices_train_as_lone_fits_with_an_eighth_of_the_state_each():
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    env = {**os.environ, "XLA_FLAGS": " ".join([*flags, "--xla_force_host_platform_device_count=8"]),
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    state_bytes = json.loads(done.stdout.split("RESULT", 1)[1])
    whole = state_bytes["8x1"]["whole"]  # all 64 models: what one device holds without a model axis
    assert state_bytes["8x1"]["per_device"] == [whole // 8] * 8 and whole % 8 == 0
    assert state_bytes["4x2"]["per_device"] == [whole // 4] * 8  # 4 groups of models, each on 2 devices
    assert state_bytes["2x4"]["per_device"] == [whole // 2] * 8


def test_mesh_shapes_are_read_and_refused_by_name():
    assert mesh_shape("4x2") == (4, 2) and mesh_shape(" 1X8 ") == (1, 8)
    for bad in ("4", "4x", "0x2", "ax2", "4x2x1"):
        with pytest.raises(InputError, match=f"mesh '{bad}'"):
            mesh_shape(bad)
    with pytest.raises(InputError, match=f"mesh 4x2: needs 8 devices, there are {len(jax.devices())}"):
        make_mesh((4, 2), devices=jax.devices()[:1])
    with pytest.raises(InputError, match="each axis needs at least one device"):
        make_mesh((0, 1))
    with pytest.raises(InputError, match=r"its axes are \('x',\)"):
        plan_mesh(Mesh(np.array(jax.devices()[:1]), ("x",)), n_models=2, batch_size=4)
    with pytest.raises(InputError, match="3 models do not split evenly over a model axis of 2 devices"):
        plan_mesh(DeviceMesh(Mesh(np.array(jax.devices()[:1] * 2).reshape(2, 1), ("model", "data"))), n_models=3,
                  batch_size=4)


def test_a_one_device_mesh_is_the_one_device_program():
    device = jax.devices()[:1]
    assert plan_mesh((1, 1), n_models=4, batch_size=16, devices=device) is None
    assert plan_mesh(n_models=4, batch_size=16, devices=device) is None
    x = np.random.default_rng(0).random((40, 12)).astype(np.float32)
    vc = VAEConfig(input_dim=12, hidden=(8,), latent_dim=2)
    configs = [TrainConfig(batch_size=16, max_epochs=1, seed=s) for s in (0, 1)]
    plain = fit_models(x, vae_config=vc, train_configs=configs, data_parallel=None)
    meshed = fit_models(x, vae_config=vc, train_configs=configs, mesh=Mesh(np.array(device).reshape(1, 1),
                                                                          ("model", "data")))
    for a, b in zip(jax.tree.leaves(plain.state.train_state), jax.tree.leaves(meshed.state.train_state)):
        assert np.array_equal(a, b)
    assert plain.histories[0][0]["val_loss"] == meshed.histories[0][0]["val_loss"]
    with pytest.raises(InputError, match="give one of them"):
        fit_models(x, vae_config=vc, train_configs=configs, mesh=(1, 1), data_parallel=None)
