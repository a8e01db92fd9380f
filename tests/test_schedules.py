"""Schedules as values: their maths, and fit driven by each of them."""
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxvae import TrainConfig, VAEConfig, fit
from jaxvae.schedules import (
    Constant,
    Cosine,
    FromOptax,
    LinearWarmup,
    Plateau,
    Stages,
    as_schedule,
    kl_from_config,
    lr_from_config,
)

SMALL = VAEConfig(input_dim=64, hidden=(32,), latent_dim=2)


def small_data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    protos = rng.random((5, 64)) ** 3
    return np.clip(protos[rng.integers(0, 5, n)] + 0.05 * rng.standard_normal((n, 64)), 0, 1).astype(np.float32)


@pytest.mark.parametrize("seed", range(3))
def test_plateau_is_torchs_reduce_lr_on_plateau(seed):
    torch = pytest.importorskip("torch")
    schedule, lr = Plateau(patience=3, threshold=1e-2, min_lr=2e-6), 1e-3
    rng = np.random.default_rng(seed)
    # Noisy, slowly improving losses with long plateaus: many reductions, down to min_lr.
    losses = np.concatenate([np.linspace(10, 9, 10), 9 + 0.05 * rng.random(40), np.linspace(9, 8.9, 20)])
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    torch_schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="min", factor=schedule.factor, patience=schedule.patience, threshold=schedule.threshold,
        min_lr=schedule.min_lr)
    state = schedule.init()
    lrs = []
    for loss in losses:
        torch_schedule.step(float(loss))
        state = schedule.update(state, float(loss), lr)
        assert lr * schedule.value(state, 0, None) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        lrs.append(state.scale)
    assert len(set(lrs)) >= 3 and min(lrs) * lr == pytest.approx(2e-6)  # reductions, down to min_lr
    assert not schedule.finished(state, 70, lr) and Plateau(stop_lr=1e-2).finished(state, 70, lr)
    assert not Plateau(stop_lr=1e-2).finished(state, 70, 1e6)  # stop_lr is a learning rate: lr times the scale


def test_burda_stages_change_exactly_at_3_to_the_i_epochs():
    burda = Stages.burda()
    assert burda.total_epochs == 3280 and len(burda.stages) == 8
    steps = 3000  # 60000 images in batches of 20
    ends = np.cumsum([3**i for i in range(8)])
    for i, end in enumerate(ends):
        want = 10 ** (-i / 7)  # factors of the lr
        first = 0 if i == 0 else ends[i - 1]
        assert float(burda.value((), first * steps, steps)) == pytest.approx(want, rel=1e-6)
        assert float(burda.value((), end * steps - 1, steps)) == pytest.approx(want, rel=1e-6)  # last step of the stage
    assert float(burda.value((), 10**8, steps)) == pytest.approx(0.1, rel=1e-6)  # the last value holds
    assert burda.finished((), 3280, 1e-3) and not burda.finished((), 3279, 1e-3)


def test_linear_warmup_and_cosine_per_step():
    warmup = LinearWarmup(epochs=4)
    values = [float(warmup.value((), step, 10)) for step in (0, 10, 20, 39, 40, 400)]
    assert values == pytest.approx([0.0, 0.25, 0.5, 39 / 40, 1.0, 1.0])
    cosine = Cosine(epochs=3)
    reference = optax.cosine_decay_schedule(1.0, 30)
    for step in (0, 7, 15, 29, 30, 45):
        assert float(cosine.value((), step, 10)) == pytest.approx(float(reference(step)), rel=1e-6, abs=1e-12)
    with pytest.raises(ValueError, match="counts in epochs"):
        warmup.value((), 3, None)


def test_anything_schedule_like_becomes_a_schedule():
    assert as_schedule(0.5) == Constant(0.5) and as_schedule(2) == Constant(2.0)
    fn = optax.exponential_decay(1.0, 5, 0.5)
    assert as_schedule(fn) == FromOptax(fn) and float(as_schedule(fn).value((), 5, None)) == pytest.approx(0.5)
    # equal when they compute the same: a fresh but identical optax schedule shares compiled code
    assert FromOptax(optax.exponential_decay(1.0, 5, 0.5)) == FromOptax(fn)
    assert hash(FromOptax(optax.exponential_decay(1.0, 5, 0.5))) == hash(FromOptax(fn))
    assert FromOptax(optax.exponential_decay(1.0, 5, 0.25)) != FromOptax(fn)
    plateau = Plateau()
    assert as_schedule(plateau) is plateau
    with pytest.raises(TypeError, match="str"):
        as_schedule("cosine")


def test_train_config_names_the_schedules():
    tc = TrainConfig(lr=3e-4, plateau_patience=4, stop_lr=1e-7)
    # the schedules are factors: the lr and the KL weight themselves are data of the step (training.Hyper)
    assert lr_from_config(tc) == Plateau(0.1, 4, 1e-4, 0.0, 1e-7) == lr_from_config(tc.replace(lr=1.0))
    assert lr_from_config(tc.replace(lr_schedule="burda")) == Stages.burda()
    assert lr_from_config(tc.replace(lr_schedule="cosine", max_epochs=7)) == Cosine(7)
    assert lr_from_config(tc.replace(lr_schedule="constant")) == Constant()
    assert kl_from_config(tc.replace(kl_weight=0.5)) == Constant()
    assert kl_from_config(tc.replace(kl_warmup_epochs=3)) == LinearWarmup(3)
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        TrainConfig(lr_schedule="step")


@pytest.mark.slow
def test_fit_follows_burdas_stages_and_the_kl_warmup():
    x = small_data(256)
    tc = TrainConfig(batch_size=64, max_epochs=5, lr_schedule="burda", kl_warmup_epochs=2)
    hist = fit(x, vae_config=SMALL, train_config=tc).history
    stage = [1e-3, *[1e-3 * 10 ** (-1 / 7)] * 3, 1e-3 * 10 ** (-2 / 7)]
    assert [h["lr"] for h in hist] == pytest.approx(stage, rel=1e-6)
    assert [h["kl_weight"] for h in hist] == pytest.approx([0.0, 0.5, 1.0, 1.0, 1.0])


@pytest.mark.slow
def test_kl_weight_schedule_enters_the_training_loss():
    x = small_data(256)
    tc = TrainConfig(batch_size=64, max_epochs=2)
    no_kl = fit(x, vae_config=SMALL, train_config=tc, kl_schedule=0.0).history
    for record in no_kl:  # weight 0: the loss is the reconstruction alone
        assert record["train_loss"] == pytest.approx(record["train_recon"], rel=1e-6)
        assert record["train_kl"] > 0 and record["kl_weight"] == 0.0
    blog = fit(x, vae_config=SMALL, train_config=tc).history
    assert blog[0]["train_loss"] == pytest.approx(blog[0]["train_recon"] + blog[0]["train_kl"], rel=1e-5)


@pytest.mark.slow
def test_fit_takes_any_optax_schedule_from_python():
    x = small_data(256)
    decay = optax.exponential_decay(1.0, transition_steps=4, decay_rate=0.5)  # halves every epoch of 4 steps
    result = fit(x, vae_config=SMALL, train_config=TrainConfig(batch_size=64, max_epochs=3), lr_schedule=decay)
    assert [h["lr"] for h in result.history] == pytest.approx([1e-3, 5e-4, 2.5e-4], rel=1e-6)
    assert int(result.state.train_state.step) == 12
    assert bool(jnp.all(jnp.isfinite(result.params["decoder"]["output"]["kernel"])))
