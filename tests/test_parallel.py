"""Data-parallel training on 4 simulated CPU devices equals one-device training."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import pytest

from jaxvae.parallel import make_data_parallel

pytestmark = pytest.mark.slow  # trains or starts processes: the full suite only (make test)

SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from jaxvae.config import TrainConfig, VAEConfig
    from jaxvae.parallel import make_data_parallel
    from jaxvae.batching import steps_per_epoch
    from jaxvae.training import ModelsState, TrainStep, fit, fit_models, init_fit_state, models_epoch

    assert len(jax.devices()) == 4, jax.devices()
    assert make_data_parallel(32).num_devices == 4 and make_data_parallel(6).num_devices == 3
    assert make_data_parallel(7) is None
    x = np.random.default_rng(0).random((198, 20)).astype(np.float32)  # 6 full batches of 32 + a tail of 6
    vc = VAEConfig(input_dim=20, hidden=(16,), latent_dim=3, likelihood="bernoulli")
    tc = TrainConfig(batch_size=32, max_epochs=2, binarize="dynamic")
    multi = fit(x, vae_config=vc, train_config=tc)  # "auto": 4 devices here
    single = fit(x, vae_config=vc, train_config=tc, data_parallel=None)
    leaf = jax.tree.leaves(multi.params)[0]
    assert len(leaf.sharding.device_set) == 4 and leaf.sharding.is_fully_replicated, leaf.sharding
    for a, b in zip(jax.tree.leaves(multi.params), jax.tree.leaves(single.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    for a, b in zip(multi.history, single.history):
        np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=1e-5)
    # Several models at once (vmapped), each model's batches split over the devices, equal one device too.
    configs = [tc, tc.replace(seed=1, lr=2e-3)]
    many = fit_models(x, vae_config=vc, train_configs=configs)
    many_single = fit_models(x, vae_config=vc, train_configs=configs, data_parallel=None)
    for a, b in zip(jax.tree.leaves(many.params), jax.tree.leaves(many_single.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    # The batch really is split: the compiled epoch all-reduces the gradient across devices.
    dp = make_data_parallel(32)
    step = TrainStep.from_configs(vc, tc, steps_per_epoch(198, 32))
    states = ModelsState.stack([init_fit_state(step, c) for c in configs])
    data = dp.replicate(jnp.asarray(x))
    hlo = models_epoch.lower(step, *dp.replicate((states.train_state, states.keys, jnp.asarray([True, True]))),
                             states.schedule_arrays(), data, data, batch_size=32,
                             batch_sharding=dp.batch_sharding).compile().as_text()
    assert "all-reduce" in hlo
    print("OK", multi.history[-1]["train_loss"], single.history[-1]["train_loss"])
""")


def test_four_device_training_equals_one_device():
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4".strip()
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK" in done.stdout


def test_one_device_means_no_mesh():
    if len(jax.devices()) == 1:
        assert make_data_parallel(128) is None
    assert make_data_parallel(128, devices=jax.devices()[:1]) is None
