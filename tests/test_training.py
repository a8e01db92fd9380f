import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvae import NonFiniteError, TrainConfig, TrainStep, VAEConfig, fit, init_params, train_epoch
from jaxvae.batching import epoch_indices, steps_per_epoch
from jaxvae.training import adam, epoch_plan, eval_epoch

SMALL = VAEConfig(input_dim=64, hidden=(32,), latent_dim=2)


def small_data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    protos = rng.random((5, 64)) ** 3  # a few prototypes plus noise: something learnable
    return np.clip(protos[rng.integers(0, 5, n)] + 0.05 * rng.standard_normal((n, 64)), 0, 1).astype(np.float32)


def test_epoch_indices_keep_the_partial_batch_and_cover_every_row_once():
    batches = epoch_indices(jax.random.PRNGKey(0), 300, 128)
    assert batches.full.shape == (2, 128) and batches.tail.shape == (44,)
    rows = np.concatenate([np.asarray(batches.full).ravel(), np.asarray(batches.tail)])
    assert sorted(rows.tolist()) == list(range(300))
    assert not np.array_equal(rows, np.arange(300))  # shuffled
    dropped = epoch_indices(jax.random.PRNGKey(0), 300, 128, drop_last=True)
    assert dropped.full.shape == (2, 128) and dropped.tail.shape == (0,)
    assert np.array_equal(np.asarray(epoch_indices(None, 10, 4).full).ravel(), np.arange(8))


def test_compiled_epoch_equals_a_python_loop_of_train_steps():
    vc, tc = SMALL, TrainConfig(batch_size=64)
    data = jnp.asarray(small_data(200))
    step = TrainStep.from_configs(vc, tc, steps_per_epoch(200, 64))
    params = init_params(jax.random.PRNGKey(0), vc)
    key, schedules = jax.random.PRNGKey(1), step.init_schedules()
    scanned, metrics, finite = train_epoch(step, step.init(jax.tree.map(jnp.copy, params)), data, key, schedules,
                                           batch_size=64)
    plan, step_keys = epoch_plan(key, 200, 64)
    state, jitted = step.init(params), jax.jit(step)
    losses = []
    for rows, k in zip([*plan.full, plan.tail], step_keys):
        state, m = jitted(state, data[rows], k, schedules)
        losses.append(float(m["loss"]))
    assert bool(finite) and metrics["loss"].shape == (4,)
    assert int(scanned.step) == int(state.step) == 4
    np.testing.assert_allclose(metrics["loss"], losses, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(scanned.params), jax.tree.leaves(state.params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("binarize", [False, True])
def test_an_epoch_run_in_progress_chunks_gives_every_step_its_own_noise(binarize):
    """With a progress hook the epoch runs as a scan over chunks of progress_every steps (here 3: 10
    full batches, so a remainder, and the tail). Every step must still get the eps (and binary image)
    its own key gives: with lr 0 the parameters stay put, so each step's loss depends only on its
    batch and its noise, and must be that of a Python loop of single steps. The hook sees the step
    count and the running mean loss after every chunk."""
    vc = SMALL.replace(latent_dim=5)
    tc = TrainConfig(batch_size=20, binarize="dynamic" if binarize else "none")
    data = jnp.asarray(small_data(213))
    step = TrainStep.from_configs(vc, tc, steps_per_epoch(213, 20), lr_schedule=0.0)
    params = init_params(jax.random.PRNGKey(0), vc)
    key, schedules = jax.random.PRNGKey(3), step.init_schedules()
    reports = []
    _, metrics, _ = train_epoch(step, step.init(jax.tree.map(jnp.copy, params)), data, key, schedules, batch_size=20,
                                progress=lambda n, mean: reports.append((int(n), float(mean))), progress_every=3)
    jax.effects_barrier()
    plan, step_keys = epoch_plan(key, 213, 20)
    jitted = jax.jit(step)
    want = [float(jitted(step.init(params), data[rows], k, schedules)[1]["loss"])
            for rows, k in zip([*plan.full, plan.tail], step_keys)]
    assert metrics["loss"].shape == (11,)
    np.testing.assert_allclose(metrics["loss"], want, rtol=1e-6)
    assert [n for n, _ in reports] == [3, 6, 9, 10]
    np.testing.assert_allclose([mean for _, mean in reports], [np.mean(want[:n]) for n in (3, 6, 9, 10)], rtol=1e-5)


def test_the_step_is_params_minus_lr_times_adams_direction():
    """One step by hand: the gradient of the loss at the schedule's KL weight, Adam's direction
    (optax.adam at lr 1), scaled by the schedule's lr. (optax.adam rounds 1 - b1 in float64, jaxvae
    in float32 as 0.1.0 did: directions agree to ~1e-5, far closer than a wrong lr or weight.)"""
    import optax

    from jaxvae.losses import vae_loss

    vc = SMALL.replace(kl_weight=0.7)
    step = TrainStep(vc, lr=0.05, kl_weight=0.25)
    params = init_params(jax.random.PRNGKey(0), vc)
    x = jnp.asarray(small_data(16))
    eps = jax.random.normal(jax.random.PRNGKey(1), (16, 2))
    new, metrics = step.with_noise(step.init(params), x, eps)
    grads = jax.grad(lambda p: vae_loss(p, x, eps, vc, kl_weight=0.25)[0])(params)
    reference = optax.adam(1.0)
    direction, _ = reference.update(grads, reference.init(params), params)
    for p, d, got in zip(jax.tree.leaves(params), jax.tree.leaves(direction), jax.tree.leaves(new.params)):
        np.testing.assert_allclose(got, p + 0.05 * d, rtol=1e-4, atol=1e-6)
    assert float(metrics["loss"]) == pytest.approx(float(metrics["recon"] + 0.25 * metrics["kl"]), rel=1e-6)
    assert int(new.step) == 1


def test_equal_train_steps_share_compiled_code_and_the_optimizer_is_cached():
    a = TrainStep.from_configs(SMALL, TrainConfig(lr=1e-3), 10)
    b = TrainStep.from_configs(SMALL, TrainConfig(lr=1e-3, seed=5, max_epochs=3), 10)
    assert a == b and hash(a) == hash(b) and a.optimizer is adam()
    assert a != TrainStep.from_configs(SMALL, TrainConfig(lr=1e-3, b1=0.8), 10)
    assert a != TrainStep.from_configs(SMALL, TrainConfig(lr=2e-3), 10)  # the plateau's start lr is static


def test_a_step_built_for_other_data_is_refused():
    step = TrainStep.from_configs(SMALL, TrainConfig(batch_size=64), steps_per_epoch(300, 64))
    state = step.init(init_params(jax.random.PRNGKey(0), SMALL))
    with pytest.raises(ValueError, match="built for 5 steps per epoch; 200 samples in batches of 64 make 4"):
        train_epoch(step, state, jnp.asarray(small_data(200)), jax.random.PRNGKey(0), step.init_schedules(),
                    batch_size=64)


def test_fit_learns_reproducibly_and_records_history():
    x = small_data(400)
    tc = TrainConfig(batch_size=32, max_epochs=4, seed=3)
    first = fit(x[:300], x[300:], vae_config=SMALL, train_config=tc)
    again = fit(x[:300], x[300:], vae_config=SMALL, train_config=tc)
    other = fit(x[:300], x[300:], vae_config=SMALL, train_config=tc.replace(seed=4))
    hist = first.history
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    assert hist[-1]["val_loss"] < hist[0]["val_loss"] and hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert set(hist[0]) >= {"train_loss", "val_loss", "val_recon", "val_kl", "lr", "kl_weight", "seconds"}
    assert first.stop_reason == "max_epochs"
    for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(again.params)):
        assert np.array_equal(a, b)
    assert not np.array_equal(first.params["decoder"]["output"]["bias"], other.params["decoder"]["output"]["bias"])


def test_fit_resumes_exactly_from_its_state():
    x = small_data(200)
    tc = TrainConfig(batch_size=50, max_epochs=4)
    straight = fit(x, vae_config=SMALL, train_config=tc)
    half = fit(x, vae_config=SMALL, train_config=tc.replace(max_epochs=2))
    resumed = fit(x, vae_config=SMALL, train_config=tc, state=half.state)
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in straight.history]
    for a, b in zip(jax.tree.leaves(straight.params), jax.tree.leaves(resumed.params)):
        assert np.array_equal(a, b)


def test_fit_stops_below_stop_lr_and_lowers_lr_on_plateau():
    x = small_data(128)
    tc = TrainConfig(batch_size=64, max_epochs=50, plateau_patience=0, plateau_threshold=0.5, stop_lr=1e-5)
    result = fit(x, vae_config=SMALL, train_config=tc)
    # threshold 0.5: every epoch after the first is a plateau, so the lr falls tenfold per epoch.
    # (the lr after a plateau step applies from the next epoch; 1e-6 < stop_lr ends the run)
    assert [h["lr"] for h in result.history] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-5])
    assert result.stop_reason == "schedule"


def test_non_finite_training_stops_with_the_epoch_and_step_and_keeps_the_last_good_state():
    x = small_data(256)
    calls = []
    with pytest.raises(NonFiniteError, match=r"epoch \d+, step \d+") as err:
        fit(x, vae_config=SMALL, train_config=TrainConfig(batch_size=32, lr=1e30, max_epochs=3),
            callbacks=[lambda s, r: calls.append(r)])
    last_good = err.value.state
    assert last_good.epoch == len(calls)
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(last_good.params))


@pytest.mark.parametrize("bad, message", [
    (np.zeros((10, 63), np.float32), "63 features"),
    (np.zeros((0, 64), np.float32), "empty"),
    (np.full((10, 64), np.nan, np.float32), "NaN"),
    (np.zeros((10, 64), np.uint8), "floating point"),
    (np.zeros(64, np.float32), "2-D"),
])
def test_fit_rejects_bad_data_before_compute(bad, message):
    with pytest.raises(ValueError, match=message):
        fit(bad, vae_config=SMALL, train_config=TrainConfig(batch_size=4, max_epochs=1))


def test_bernoulli_model_rejects_values_outside_the_unit_interval():
    x = small_data(64)
    x[3, 5] = 1.5
    with pytest.raises(ValueError, match=r"train_x has values in \[0, 1.5\]; a Bernoulli likelihood"):
        fit(x, vae_config=SMALL.replace(likelihood="bernoulli"), train_config=TrainConfig(batch_size=16, max_epochs=1))


def test_batch_larger_than_the_dataset_is_an_error():
    with pytest.raises(ValueError, match="batch_size=128 is larger"):
        fit(small_data(50), vae_config=SMALL, train_config=TrainConfig())


def test_eval_epoch_is_deterministic_for_a_key_and_covers_the_tail():
    data = jnp.asarray(small_data(150))
    params = init_params(jax.random.PRNGKey(0), SMALL)
    a = eval_epoch(params, data, jax.random.PRNGKey(1), SMALL, 64)
    b = eval_epoch(params, data, jax.random.PRNGKey(1), SMALL, 64)
    assert a["loss"].shape == (3,) and np.array_equal(a["loss"], b["loss"])


@pytest.mark.parametrize("group_rows", [64, 1024])
def test_eval_epoch_scores_each_batch_with_its_own_rows_and_noise(monkeypatch, group_rows):
    """Validation runs several batches through each matmul (EVAL_GROUP_ROWS); every batch's metrics
    must still be objective_loss on that batch's rows with that batch's noise (groups of 4 batches
    leave a remainder here, and the tail is scored alone)."""
    import jaxvae.training as training
    from jaxvae.losses import objective_loss, sample_eps

    monkeypatch.setattr(training, "EVAL_GROUP_ROWS", group_rows)
    data = jnp.asarray(small_data(310))
    params = init_params(jax.random.PRNGKey(0), SMALL)
    key = jax.random.PRNGKey(5)
    got = eval_epoch(params, data, key, SMALL, 16)
    plan, step_keys = epoch_plan(key, 310, 16)
    want = [objective_loss(params, data[rows], sample_eps(k, len(rows), SMALL), SMALL)
            for rows, k in zip([*plan.full, plan.tail], step_keys)]
    assert got["loss"].shape == (20,)
    np.testing.assert_allclose(got["loss"], [float(loss) for loss, _ in want], rtol=1e-6)
    np.testing.assert_allclose(got["kl"], [float(aux["kl"]) for _, aux in want], rtol=1e-6)
