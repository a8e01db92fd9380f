import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvae import Hyper, NonFiniteError, TrainConfig, TrainStep, VAEConfig, fit, init_params, train_epoch
from jaxvae.batching import epoch_indices, steps_per_epoch
from jaxvae.training import epoch_plan, eval_epoch, fit_models, per_image_mean

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


@pytest.mark.slow
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


@pytest.fixture
def fresh_programs():
    """A test that patches a constant read when the epoch is traced gets programs of its own."""
    jax.clear_caches()
    yield
    jax.clear_caches()


@pytest.mark.slow
@pytest.mark.parametrize("binarize", [False, True])
@pytest.mark.parametrize("progress_every,noise_chunk", [(3, 2), (7, 4), (None, 4)])
def test_an_epoch_run_in_progress_chunks_gives_every_step_its_own_noise(binarize, progress_every, noise_chunk,
                                                                       monkeypatch, fresh_programs):
    """The epoch draws its noise in chunks of NOISE_CHUNK steps (2 or 4: 10 full batches, so a
    remainder, and the tail), and with a progress hook runs as a scan over chunks of progress_every
    steps rounded up to whole noise chunks (3 -> 4, 7 -> 8). Every step must still get the eps (and binary image)
    its own key gives: with lr 0 the parameters stay put, so each step's loss depends only on its
    batch and its noise, and must be that of a Python loop of single steps. The hook sees the step
    count and the running mean loss after every chunk."""
    import jaxvae.training as training

    monkeypatch.setattr(training, "NOISE_CHUNK", noise_chunk)
    vc = SMALL.replace(latent_dim=5)
    tc = TrainConfig(batch_size=20, binarize="dynamic" if binarize else "none")
    data = jnp.asarray(small_data(213))
    step = TrainStep.from_configs(vc, tc, steps_per_epoch(213, 20), lr_schedule=0.0)
    params = init_params(jax.random.PRNGKey(0), vc)
    key, schedules = jax.random.PRNGKey(3), step.init_schedules()
    reports = []
    progress = None if progress_every is None else lambda n, mean, model: reports.append((int(n), float(mean)))
    _, metrics, _ = train_epoch(step, step.init(jax.tree.map(jnp.copy, params)), data, key, schedules, batch_size=20,
                                progress=progress, progress_every=progress_every or 20)
    jax.effects_barrier()
    plan, step_keys = epoch_plan(key, 213, 20)
    jitted = jax.jit(step)
    want = [float(jitted(step.init(params), data[rows], k, schedules)[1]["loss"])
            for rows, k in zip([*plan.full, plan.tail], step_keys)]
    assert metrics["loss"].shape == (11,)
    np.testing.assert_allclose(metrics["loss"], want, rtol=1e-6)
    reported = {3: [4, 8, 10], 7: [8, 10], None: []}[progress_every]
    assert [n for n, _ in reports] == reported
    np.testing.assert_allclose([mean for _, mean in reports], [np.mean(want[:n]) for n in reported], rtol=1e-5)


@pytest.mark.slow
def test_progress_reports_leave_the_numbers_unchanged_bit_for_bit():
    """Reports come between whole noise chunks, so a binarised model (whose draws round differently in
    differently sized chunks) trains to the same weights with and without them."""
    vc = VAEConfig(hidden=(64,), latent_dim=5, activation="tanh", likelihood="bernoulli")
    tc = TrainConfig(batch_size=20, binarize="dynamic")
    data = jnp.asarray(np.random.default_rng(0).random((1000, 784), dtype=np.float32))  # 50 steps: a remainder
    step = TrainStep.from_configs(vc, tc, steps_per_epoch(1000, 20))
    params = init_params(jax.random.PRNGKey(0), vc)
    runs = []
    for progress in (None, lambda *_: None):
        state = step.init(jax.tree.map(jnp.copy, params))
        for epoch in range(2):
            state, metrics, _ = train_epoch(step, state, data, jax.random.PRNGKey(epoch), batch_size=20,
                                            progress=progress, progress_every=7)
        runs.append(jax.tree.leaves((state.params, metrics)))
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_the_step_is_params_minus_lr_times_adams_direction():
    """One step by hand: the gradient of the loss at the KL weight (the state's value times the
    schedule's factor), Adam's direction (optax.adam at lr 1), scaled by the lr (likewise)."""
    import optax

    from jaxvae.losses import vae_loss

    vc = SMALL
    step = TrainStep(vc, lr=0.5, kl_weight=0.25)  # factors of the state's lr 0.1 and KL weight 1
    params = init_params(jax.random.PRNGKey(0), vc)
    x = jnp.asarray(small_data(16))
    eps = jax.random.normal(jax.random.PRNGKey(1), (16, 2))
    new, metrics = step.with_noise(step.init(params, Hyper(lr=0.1, kl_weight=1.0, recon_sigma=0.8)), x, eps)
    grads = jax.grad(lambda p: vae_loss(p, x, eps, vc, kl_weight=0.25, recon_sigma=0.8)[0])(params)
    reference = optax.adam(1.0)
    direction, _ = reference.update(grads, reference.init(params), params)
    for p, d, got in zip(jax.tree.leaves(params), jax.tree.leaves(direction), jax.tree.leaves(new.params)):
        np.testing.assert_allclose(got, p + 0.05 * d, rtol=1e-4, atol=1e-6)  # |g| ~ eps: direction rounding
    assert float(metrics["loss"]) == pytest.approx(float(metrics["recon"] + 0.25 * metrics["kl"]), rel=1e-6)
    assert int(new.step) == 1


def test_steps_are_equal_when_they_compute_the_same_whatever_the_hyperparameters():
    import optax

    a = TrainStep.from_configs(SMALL, TrainConfig(lr=1e-3), 10)
    b = TrainStep.from_configs(SMALL, TrainConfig(lr=2e-3, kl_weight=0.5, recon_sigma=0.3, seed=5, max_epochs=3), 10)
    assert a == b and hash(a) == hash(b) and a.optimizer is not b.optimizer  # the values are data of the step
    assert a != TrainStep.from_configs(SMALL, TrainConfig(lr=1e-3, b1=0.8), 10)
    assert a != TrainStep.from_configs(SMALL, TrainConfig(lr_schedule="constant"), 10)
    # a user's own optax transformation: fresh but identical ones are equal, other settings are not
    own = TrainStep(SMALL, optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam()), steps_per_epoch=10)
    same = TrainStep(SMALL, optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam()), steps_per_epoch=10)
    other = TrainStep(SMALL, optax.chain(optax.clip_by_global_norm(2.0), optax.scale_by_adam()), steps_per_epoch=10)
    assert own == same and hash(own) == hash(same) and own != other


def _compiles(caplog, name: str) -> int:
    """How many XLA compilations of ``jit(name)`` JAX logged (``jax.log_compiles``)."""
    return sum(f"Finished XLA compilation of jit({name})" in r.getMessage() for r in caplog.records)


def test_each_model_reports_its_progress_to_its_own_fits_hook(monkeypatch, fresh_programs):
    from jaxvae import training

    monkeypatch.setattr(training, "NOISE_CHUNK", 1)  # reports come between noise chunks: here every step
    x = small_data(60)
    configs = [TrainConfig(batch_size=20, max_epochs=1, seed=s) for s in (0, 1, 2)]
    reports = []
    result = fit_models(x, vae_config=SMALL, train_configs=configs, data_parallel=None, progress_every=1,
                        progress=lambda step, loss, model: reports.append((model, step, loss)))
    assert sorted((model, step) for model, step, _ in reports) == [(i, n) for i in range(3) for n in (1, 2, 3)]
    for i in range(3):  # the running mean after the epoch's 3 steps is the model's own train loss
        last = next(loss for model, step, loss in reports if (model, step) == (i, 3))
        assert last == pytest.approx(result.histories[i][0]["train_loss"], rel=1e-5)
    assert training._progress_hooks == {}  # the hook was the call's alone


@pytest.mark.slow
def test_fresh_optimizers_hyperparameters_and_progress_hooks_reuse_the_compiled_epoch(caplog):
    """The epoch compiles once per program: another lr, KL weight, sigma or seed, a fresh but equal
    optax transformation, or a new progress callable run the same program."""
    import logging

    import optax

    from jaxvae.training import adam

    x = small_data(128)
    tc = TrainConfig(batch_size=64, max_epochs=1, lr_schedule="constant")
    runs = [dict(train_config=tc),
            dict(train_config=tc.replace(lr=3e-3, kl_weight=0.5, recon_sigma=0.7, seed=4)),
            dict(train_config=tc, optimizer=adam()),  # a fresh object equal to the default: no compile
            dict(train_config=tc, optimizer=optax.scale_by_adam()),  # another optimizer: its own program
            dict(train_config=tc, optimizer=optax.scale_by_adam()),  # made again: no compile
            dict(train_config=tc, progress=lambda step, loss, model: None),  # a host callback: its own program
            dict(train_config=tc, progress=lambda step, loss, model: None)]  # another callable: no compile
    caplog.set_level(logging.WARNING)
    with jax.log_compiles(True):
        losses = [fit(x, vae_config=SMALL, data_parallel=None, **run).history[0]["train_loss"] for run in runs]
    assert _compiles(caplog, "models_epoch") == 3
    assert losses[0] != losses[1] and losses[0] == losses[2] == losses[5]  # the values took effect; equal is equal


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


@pytest.mark.slow
def test_fit_resumes_exactly_from_its_state():
    x = small_data(200)
    tc = TrainConfig(batch_size=50, max_epochs=4)
    straight = fit(x, vae_config=SMALL, train_config=tc)
    half = fit(x, vae_config=SMALL, train_config=tc.replace(max_epochs=2))
    resumed = fit(x, vae_config=SMALL, train_config=tc, state=half.state)
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in straight.history]
    for a, b in zip(jax.tree.leaves(straight.params), jax.tree.leaves(resumed.params)):
        assert np.array_equal(a, b)


@pytest.mark.slow
def test_fit_stops_below_stop_lr_and_lowers_lr_on_plateau():
    x = small_data(128)
    tc = TrainConfig(batch_size=64, max_epochs=50, plateau_patience=0, plateau_threshold=0.5, stop_lr=1e-5)
    result = fit(x, vae_config=SMALL, train_config=tc)
    # threshold 0.5: every epoch after the first is a plateau, so the lr falls tenfold per epoch.
    # (the lr after a plateau step applies from the next epoch; 1e-6 < stop_lr ends the run)
    assert [h["lr"] for h in result.history] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-5])
    assert result.stop_reason == "schedule"


@pytest.mark.slow
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


@pytest.mark.slow
def test_validation_scores_every_image_and_weighs_each_alike():
    """drop_last drops training batches only: the record's validation loss is the mean over every
    validation image (150 here, in batches of 64, 64 and 22), each image's loss computed alone."""
    from jaxvae.losses import objective_loss, sample_eps

    x, val = small_data(256), jnp.asarray(small_data(150, seed=1))
    tc = TrainConfig(batch_size=64, max_epochs=1, drop_last=True, seed=2)
    result = fit(x, val, vae_config=SMALL, train_config=tc)
    _, loop_key = jax.random.split(jax.random.PRNGKey(tc.seed))
    val_key = jax.random.split(loop_key, 3)[2]  # the epoch's validation key (models_epoch's split)
    plan, keys = epoch_plan(val_key, 150, 64)
    per_image = []
    for rows, key in zip([*plan.full, plan.tail], keys):
        eps = sample_eps(key, len(rows), SMALL)
        per_image += [float(objective_loss(result.params, val[rows][i:i + 1], eps[i:i + 1], SMALL)[0])
                      for i in range(len(rows))]
    assert len(per_image) == 150
    assert result.history[0]["val_loss"] == pytest.approx(np.mean(per_image), rel=1e-5)
    got = eval_epoch(result.params, val, val_key, SMALL, 64)
    assert per_image_mean(got["loss"], 150, 64) == pytest.approx(np.mean(per_image), rel=1e-5)
    assert abs(float(np.mean(got["loss"])) - np.mean(per_image)) > 1e-6  # the unweighted mean of batches differs


@pytest.mark.slow  # trains
def test_one_model_of_many_is_the_lone_fit():
    """fit_models trains N models in one vmapped program; fit is the case N = 1 (a plain program).
    Model i of a stack equals its lone fit to float rounding."""
    x = small_data(200)
    configs = [TrainConfig(batch_size=50, max_epochs=2, seed=s, lr=lr) for s, lr in ((0, 1e-3), (1, 3e-3))]
    many = fit_models(x, vae_config=SMALL, train_configs=configs)
    for i, tc in enumerate(configs):
        lone = fit(x, vae_config=SMALL, train_config=tc)
        assert [h["epoch"] for h in many.histories[i]] == [1, 2]
        np.testing.assert_allclose([h["val_loss"] for h in many.histories[i]], [h["val_loss"] for h in lone.history],
                                   rtol=1e-5)
        for a, b in zip(jax.tree.leaves(many.fit_result(i).params), jax.tree.leaves(lone.params)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="must share batch_size"):
        fit_models(x, vae_config=SMALL, train_configs=[configs[0], configs[1].replace(batch_size=40)])


@pytest.mark.slow
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
