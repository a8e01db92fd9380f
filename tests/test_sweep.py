"""jaxvae.sweep from Python: N models in one compiled program equal N lone fits, resume exactly, and a
model that goes non-finite stops alone."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvae import ModelsState, TrainConfig, VAEConfig, fit
from jaxvae.sweep import fit_many, summarize, sweep_models
from tolerances import rel_err

pytestmark = pytest.mark.slow  # trains or starts processes: the full suite only (make test)

SMALL = VAEConfig(input_dim=36, hidden=(16,), latent_dim=2)
# Float32 after 2 epochs: the vmapped program sums its batched matmuls in another order than the lone
# model's (observed ~5e-8 relative). Float64 shows that this is all: the same maths to 1e-16.
RTOL = {"float32": 1e-5, "float64": 1e-12}


def data(n=150, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    protos = rng.random((4, 36)) ** 3
    return np.clip(protos[rng.integers(0, 4, n)] + 0.05 * rng.standard_normal((n, 36)), 0, 1).astype(dtype)


def assert_matches_lone_fits(result, train_x, val_x, rtol, models=None):
    """Each of ``models`` (default: all) of the sweep against ``fit`` of its configs alone."""
    for i in range(len(result.models)) if models is None else models:
        model, mine = result.models[i], result.fit_result(i)
        lone = fit(train_x, val_x, vae_config=model.vae_config, train_config=model.train_config)
        assert mine.stop_reason == lone.stop_reason and mine.state.epoch == lone.state.epoch
        for got, want in zip(jax.tree.leaves(mine.state.train_state), jax.tree.leaves(lone.state.train_state)):
            assert rel_err(got, want) <= rtol, (model.name, rel_err(got, want))
        assert np.array_equal(mine.state.key, lone.state.key)
        for got, want in zip(mine.history, lone.history):
            assert (got["epoch"], got["lr"], got["kl_weight"]) == (want["epoch"], want["lr"], want["kl_weight"])
            for name in ("train_loss", "val_loss", "val_recon", "val_kl"):
                assert got[name] == pytest.approx(want[name], rel=rtol, abs=rtol), (model.name, name)


def test_models_are_the_grid_of_values_times_the_seeds():
    models = sweep_models(SMALL, TrainConfig(seed=7), seeds=2, recon_sigma=[0.5, 1], kl_weight=[0.25, 4.0])
    assert [m.name for m in models] == [
        "sigma0.5_kl0.25_seed7", "sigma0.5_kl0.25_seed8", "sigma0.5_kl4.0_seed7", "sigma0.5_kl4.0_seed8",
        "sigma1.0_kl0.25_seed7", "sigma1.0_kl0.25_seed8", "sigma1.0_kl4.0_seed7", "sigma1.0_kl4.0_seed8"]
    last = models[-1]
    assert last.vae_config == SMALL
    assert last.train_config == TrainConfig(seed=8, recon_sigma=1.0, kl_weight=4.0)
    assert [m.name for m in sweep_models(SMALL, TrainConfig(), seeds=[3, 1])] == ["seed3", "seed1"]
    assert len(sweep_models(SMALL, TrainConfig(), lr=0.01)) == 1  # one value: a fixed setting, not in the name


@pytest.mark.parametrize("kwargs, message", [
    ({"recon_sigma": [0.5, -1]}, "recon_sigma must be a finite number > 0, got -1"),
    ({"lr": [1e-3, 1e-3]}, "lr: a value is given twice"),
    ({"kl_weight": []}, "kl_weight: give at least one value"),
    ({"seeds": 0}, "seeds: the number of seeds must be >= 1"),
    ({"seeds": [1, 1]}, "seeds: a seed is given twice"),
])
def test_bad_sweep_values_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sweep_models(SMALL, TrainConfig(), **kwargs)


def test_what_cannot_be_swept_is_refused():
    with pytest.raises(ValueError, match=r"recon_sigma: a bernoulli likelihood does not read it, so it cannot be swept"):
        sweep_models(SMALL.replace(likelihood="bernoulli"), TrainConfig(), recon_sigma=[0.5, 1.0])
    with pytest.raises(ValueError, match=r"kl_weight: a gaussian likelihood does not read it, so it cannot be swept "
                                         r"\(it reads recon_sigma, lr\)"):
        sweep_models(SMALL.replace(objective="iwae", iwae_k=2), TrainConfig(), kl_weight=[0.5, 1.0])
    with pytest.raises(ValueError, match=r"beta: a gaussian likelihood does not read it, so it cannot be swept "
                                         r"\(it reads recon_sigma, kl_weight, lr\)"):
        sweep_models(SMALL, TrainConfig(), beta=[1.0, 4.0])


@pytest.mark.parametrize("train_config, grid, compared", [
    # seeds and sigma: recon_sigma reaches the loss as an array; the blog's plateau schedule
    (TrainConfig(batch_size=32, max_epochs=2), {"seeds": 2, "recon_sigma": [0.5, 1.0]}, None),
    # the lr under cosine decay and beta under a warm-up (each the hyperparameter times the schedule's factor);
    # the partial batch of 150 = 4 x 32 + 22 is kept. Models 0 and 3 differ in both values (fewer lone
    # compiles). The plateau's lr: test_each_model_stops_when_its_own_schedule_ends.
    (TrainConfig(batch_size=32, max_epochs=2, lr_schedule="cosine", kl_warmup_epochs=1.5, seed=5),
     {"lr": [1e-3, 4e-3], "kl_weight": [0.5, 2.0]}, [0, 3]),
])
def test_every_model_equals_its_lone_fit(train_config, grid, compared):
    train_x, val_x = data(150), data(40, seed=1)
    result = fit_many(train_x, val_x, vae_config=SMALL, train_config=train_config, **grid)
    assert result.stop_reasons == ["max_epochs"] * len(result.models)
    assert jax.tree.leaves(result.params)[0].shape[0] == len(result.models)
    assert_matches_lone_fits(result, train_x, val_x, RTOL["float32"], models=compared)


def test_in_float64_the_sweep_is_the_lone_fits_to_rounding():
    with jax.enable_x64(True):
        train_x, val_x = data(150, dtype=np.float64), data(40, seed=1, dtype=np.float64)
        result = fit_many(train_x, val_x, vae_config=SMALL, train_config=TrainConfig(batch_size=32, max_epochs=2),
                          recon_sigma=[0.3, 1.0])
        assert jax.tree.leaves(result.params)[0].dtype == jnp.float64
        assert_matches_lone_fits(result, train_x, val_x, RTOL["float64"])


def test_one_compile_serves_every_sweep_of_the_same_size(caplog):
    # Two sweeps over different values (of other quantities, too) reuse the compiled epoch.
    import logging

    tc = TrainConfig(batch_size=32, max_epochs=1, lr_schedule="constant")
    caplog.set_level(logging.WARNING)
    with jax.log_compiles(True):
        fit_many(data(100), vae_config=SMALL, train_config=tc, recon_sigma=[0.5, 1.0], lr=[1e-3, 2e-3])
        fit_many(data(100), vae_config=SMALL, train_config=tc, kl_weight=[0.7, 2.0], lr=[3e-3, 1e-4])
    compiled = sum("Finished XLA compilation of jit(models_epoch)" in r.getMessage() for r in caplog.records)
    assert compiled == 1


def test_a_sweep_resumes_exactly_from_its_state_or_from_per_model_states():
    x = data(120)
    tc = TrainConfig(batch_size=32, max_epochs=3)
    grid = {"seeds": 2, "recon_sigma": [0.5, 1.0]}
    straight = fit_many(x, vae_config=SMALL, train_config=tc, **grid)
    first = fit_many(x, vae_config=SMALL, train_config=tc.replace(max_epochs=1), **grid)
    restacked = ModelsState.stack([first.state.fit_state(i) for i in range(4)])  # what checkpoints give back
    for start in (first.state, restacked, first.state):  # the state given is not used up
        resumed = fit_many(x, vae_config=SMALL, train_config=tc, state=start, **grid)
        for a, b in zip(jax.tree.leaves(straight.state.train_state), jax.tree.leaves(resumed.state.train_state)):
            assert np.array_equal(a, b)
        assert [[r["val_loss"] for r in h] for h in resumed.histories] == \
               [[r["val_loss"] for r in h] for h in straight.histories]
    with pytest.raises(ValueError, match="state: holds 4 models, train_configs 2"):
        fit_many(x, vae_config=SMALL, train_config=tc, state=straight.state, recon_sigma=[0.5, 1.0])


def test_a_model_that_goes_non_finite_stops_alone_and_leaves_the_summary():
    x = data(128)
    tc = TrainConfig(batch_size=32, max_epochs=2, lr_schedule="constant")
    seen = []
    result = fit_many(x, vae_config=SMALL, train_config=tc, seeds=2, lr=[1e-3, 1e30],
                      callbacks=[lambda state, records: seen.append([r is not None for r in records])])
    assert result.stop_reasons == ["max_epochs", "max_epochs", "non_finite", "non_finite"]
    assert seen == [[True, True, False, False], [True, True, False, False]]
    with pytest.raises(FloatingPointError) as lone:  # fit's NonFiniteError, and the same message
        fit(x, vae_config=result.models[2].vae_config, train_config=result.models[2].train_config)
    assert result.errors[2] == str(lone.value) and result.errors[:2] == [None, None]
    bad = result.fit_result(2)
    assert bad.state.epoch == 0 and bad.history == []
    start = fit(x, vae_config=SMALL, train_config=tc.replace(max_epochs=0, seed=0)).params  # its initial weights
    for got, want in zip(jax.tree.leaves(bad.params), jax.tree.leaves(start)):
        assert np.array_equal(got, want)  # the last good state is kept, finite
    assert_matches_lone_fits(result, x, None, RTOL["float32"], models=[0, 1])
    summary = summarize(result.models, result.histories, result.errors, result.stop_reasons)
    good, failed = summary["settings"]
    assert failed["failed"] == ["lr1e+30_seed0", "lr1e+30_seed1"] and failed["val_loss"]["n"] == 0
    assert good["failed"] == [] and good["val_loss"]["n"] == 2


def test_each_model_stops_when_its_own_schedule_ends():
    # The plateau ends a run below stop_lr. Threshold 0.5: every epoch after the first is a plateau, so
    # each lr falls tenfold per epoch from the third on; 2e-4 falls below stop_lr one epoch before 1e-3.
    x = data(96)
    tc = TrainConfig(batch_size=32, max_epochs=5, stop_lr=1e-4, plateau_patience=0, plateau_threshold=0.5)
    result = fit_many(x, vae_config=SMALL, train_config=tc, lr=[1e-3, 2e-4])
    assert result.stop_reasons == ["schedule", "schedule"]
    assert [len(h) for h in result.histories] == [3, 2]
    assert_matches_lone_fits(result, x, None, RTOL["float32"])


def test_summary_statistics_over_seeds():
    models = sweep_models(SMALL, TrainConfig(), seeds=3, recon_sigma=[0.5, 2.0])

    def record(val_loss, val_recon):
        return {"train_loss": val_loss, "val_loss": val_loss, "val_recon": val_recon, "val_kl": 1.0}

    histories = [[record(9.0, 8.0), record(v, v - 1.0)] for v in (3.0, 4.0, 5.0, 7.0, 9.0, float("nan"))]
    errors = [None] * 5 + ["non-finite loss or parameter in epoch 2 ..."]
    summary = summarize(models, histories, errors)
    first, second = summary["settings"]
    assert first["label"] == "sigma=0.5" and first["models"] == ["sigma0.5_seed0", "sigma0.5_seed1", "sigma0.5_seed2"]
    assert first["val_loss"] == {"n": 3, "mean": 4.0, "sd": pytest.approx(1.0), "min": 3.0, "max": 5.0}
    # the squared error per image puts every sigma on one scale: 2 sigma^2 * recon
    assert first["val_squared_error"]["mean"] == pytest.approx(2 * 0.25 * 3.0)
    assert second["failed"] == ["sigma2.0_seed2"] and second["val_loss"]["n"] == 2
    assert second["val_loss"]["mean"] == 8.0 and second["val_squared_error"]["mean"] == pytest.approx(2 * 4 * 7.0)
    assert summary["models"][5]["error"] and summary["varying"] == ["recon_sigma"]
