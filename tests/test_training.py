import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvae import NonFiniteError, TrainConfig, VAEConfig, create_train_state, fit, init_params, train_epoch, train_step
from jaxvae.batching import epoch_indices
from jaxvae.training import PlateauState, epoch_plan, eval_epoch, plateau_step

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


@pytest.mark.parametrize("seed", range(3))
def test_plateau_schedule_is_torchs_reduce_lr_on_plateau(seed):
    torch = pytest.importorskip("torch")
    tc = TrainConfig(plateau_patience=3, plateau_threshold=1e-2, min_lr=2e-6)
    rng = np.random.default_rng(seed)
    # Noisy, slowly improving losses with long plateaus: many reductions, down to min_lr.
    losses = np.concatenate([np.linspace(10, 9, 10), 9 + 0.05 * rng.random(40), np.linspace(9, 8.9, 20)])
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=tc.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=tc.plateau_factor, patience=tc.plateau_patience,
                                                       threshold=tc.plateau_threshold, min_lr=tc.min_lr)
    state = PlateauState(lr=tc.lr)
    lrs = []
    for loss in losses:
        sched.step(float(loss))
        state = plateau_step(state, float(loss), tc)
        assert state.lr == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        lrs.append(state.lr)
    assert len(set(lrs)) >= 3  # the test exercised reductions


def test_compiled_epoch_equals_a_python_loop_of_train_steps():
    vc, tc = SMALL, TrainConfig(batch_size=64)
    data = jnp.asarray(small_data(200))
    params = init_params(jax.random.PRNGKey(0), vc)
    key = jax.random.PRNGKey(1)
    scanned, metrics, finite = train_epoch(create_train_state(jax.tree.map(jnp.copy, params), tc), data, key, vc, tc)
    plan, step_keys = epoch_plan(key, 200, 64)
    state = create_train_state(params, tc)
    losses = []
    for rows, k in zip([*plan.full, plan.tail], step_keys):
        state, m = train_step(state, data[rows], k, vc, tc)
        losses.append(float(m["loss"]))
    assert bool(finite) and metrics["loss"].shape == (4,)
    np.testing.assert_allclose(metrics["loss"], losses, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(scanned.params), jax.tree.leaves(state.params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_fit_learns_reproducibly_and_records_history():
    x = small_data(400)
    tc = TrainConfig(batch_size=32, max_epochs=4, seed=3)
    first = fit(x[:300], x[300:], SMALL, tc)
    again = fit(x[:300], x[300:], SMALL, tc)
    other = fit(x[:300], x[300:], SMALL, tc.replace(seed=4))
    hist = first.history
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    assert hist[-1]["val_loss"] < hist[0]["val_loss"] and hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert set(hist[0]) >= {"train_loss", "val_loss", "val_recon", "val_kl", "lr", "seconds"}
    for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(again.params)):
        assert np.array_equal(a, b)
    assert not np.array_equal(first.params["decoder"]["output"]["bias"], other.params["decoder"]["output"]["bias"])


def test_fit_resumes_exactly_from_its_state():
    x = small_data(200)
    tc = TrainConfig(batch_size=50, max_epochs=4)
    straight = fit(x, None, SMALL, tc)
    half = fit(x, None, SMALL, tc.replace(max_epochs=2))
    resumed = fit(x, None, SMALL, tc, state=half.state)
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in straight.history]
    for a, b in zip(jax.tree.leaves(straight.params), jax.tree.leaves(resumed.params)):
        assert np.array_equal(a, b)


def test_fit_stops_below_stop_lr_and_lowers_lr_on_plateau():
    x = small_data(128)
    tc = TrainConfig(batch_size=64, max_epochs=50, plateau_patience=0, plateau_threshold=0.5, stop_lr=1e-5)
    hist = fit(x, None, SMALL, tc).history
    # threshold 0.5: every epoch after the first is a plateau, so the lr falls tenfold per epoch.
    # (the lr after a plateau step applies from the next epoch; 1e-6 < stop_lr ends the run)
    assert [h["lr"] for h in hist] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-5])


def test_non_finite_training_stops_with_the_epoch_and_step_and_keeps_the_last_good_state():
    x = small_data(256)
    calls = []
    with pytest.raises(NonFiniteError, match=r"epoch \d+, step \d+") as err:
        fit(x, None, SMALL, TrainConfig(batch_size=32, lr=1e30, max_epochs=3), callback=lambda s, r: calls.append(r))
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
        fit(bad, None, SMALL, TrainConfig(batch_size=4, max_epochs=1))


def test_bernoulli_model_rejects_values_outside_the_unit_interval():
    x = small_data(64)
    x[3, 5] = 1.5
    with pytest.raises(ValueError, match=r"values in \[0, 1.5\]; likelihood='bernoulli' needs them in \[0, 1\]"):
        fit(x, None, SMALL.replace(likelihood="bernoulli"), TrainConfig(batch_size=16, max_epochs=1))


def test_batch_larger_than_the_dataset_is_an_error():
    with pytest.raises(ValueError, match="batch_size=128 is larger"):
        fit(small_data(50), None, SMALL, TrainConfig())


def test_eval_epoch_is_deterministic_for_a_key_and_covers_the_tail():
    data = jnp.asarray(small_data(150))
    params = init_params(jax.random.PRNGKey(0), SMALL)
    a = eval_epoch(params, data, jax.random.PRNGKey(1), SMALL, 64)
    b = eval_epoch(params, data, jax.random.PRNGKey(1), SMALL, 64)
    assert a["loss"].shape == (3,) and np.array_equal(a["loss"], b["loss"])
