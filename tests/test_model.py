"""The model protocol: the blog's VAE through it, your own NNX modules, batches with labels, model state."""
import json
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx, serialization

from jaxvae import TrainConfig, VAEConfig, fit
from jaxvae.checkpoint import MAGIC, CheckpointError, checkpoint_bytes, load_checkpoint, model_record, save_checkpoint
from jaxvae.checks import check_data
from jaxvae.evaluation import evaluate
from jaxvae.fileio import frame, unframe
from jaxvae.model import Model
from jaxvae.sweep import fit_many, summarize
from jaxvae.training import fit_models
from jaxvae.vae import VAEModel, as_model

SMALL = VAEConfig(input_dim=64, hidden=(32,), latent_dim=2)
TC = TrainConfig(max_epochs=2, batch_size=50, lr=3e-3, lr_schedule="constant")


def small_data(n=300, seed=0):
    """Images of five noisy prototypes in [0, 1], and which prototype each is (its label)."""
    rng = np.random.default_rng(seed)
    protos = rng.random((5, 64)) ** 3
    labels = rng.integers(0, 5, n)
    x = np.clip(protos[labels] + 0.05 * rng.standard_normal((n, 64)), 0, 1).astype(np.float32)
    return x, labels.astype(np.int32)


class Encoder(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(64, 16, rngs=rngs)
        self.mu = nnx.Linear(16, 3, rngs=rngs)
        self.log_sigma = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x):
        h = nnx.tanh(self.hidden(x))
        return self.mu(h), self.log_sigma(h)


class Decoder(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(3, 16, rngs=rngs)
        self.out = nnx.Linear(16, 64, rngs=rngs)

    def __call__(self, z):
        return nnx.sigmoid(self.out(nnx.tanh(self.hidden(z))))


OWN = VAEModel.from_modules(Encoder, Decoder, latent_dim=3)


class Coder(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.encoder = nnx.Linear(64, 4, rngs=rngs)
        self.decoder = nnx.Linear(4, 64, rngs=rngs)
        self.classifier = nnx.Linear(4, 5, rngs=rngs)


@dataclass(frozen=True)
class LabelledAE(Model):
    """An autoencoder whose code also predicts the label; its state counts the training batches seen."""

    def _module(self, key):
        return Coder(rngs=nnx.Rngs(params=key))

    def init(self, key, dtype=jnp.float32):
        return nnx.to_pure_dict(nnx.state(self._module(key), nnx.Param)), jnp.zeros((), jnp.int32)

    def loss(self, params, state, batch, key, hyper):
        x, y = batch
        coder = nnx.merge(nnx.graphdef(nnx.eval_shape(lambda: self._module(jax.random.PRNGKey(0)))), params)
        code = jnp.tanh(coder.encoder(x))
        mse = jnp.mean(jnp.sum((nnx.sigmoid(coder.decoder(code)) - x) ** 2, axis=-1))
        logits = coder.classifier(code)
        xent = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
        accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == y)
        return mse + xent, {"mse": mse, "accuracy": accuracy}, state + 1


def test_a_vae_config_trains_as_its_vae_model_bit_for_bit():
    x, _ = small_data()
    a = fit(x[:250], x[250:], vae_config=SMALL, train_config=TC)
    b = fit(x[:250], x[250:], model=VAEModel.from_config(SMALL), train_config=TC)
    assert [r["val_loss"] for r in a.history] == [r["val_loss"] for r in b.history]
    assert jax.tree.all(jax.tree.map(jnp.array_equal, a.params, b.params))
    with pytest.raises(ValueError, match="model or vae_config, not both"):
        fit(x, model=SMALL, vae_config=SMALL, train_config=TC)


def test_your_own_encoder_and_decoder_train_and_sweep_as_lone_fits():
    x, _ = small_data()
    lone = [fit(x[:250], x[250:], model=OWN, train_config=TC.replace(seed=s)) for s in (0, 1)]
    assert lone[0].history[-1]["val_loss"] < lone[0].history[0]["train_loss"]
    assert set(lone[0].params) == {"encoder", "decoder"}
    together = fit_models(x[:250], x[250:], model=OWN, train_configs=[TC, TC.replace(seed=1)])
    for i, result in enumerate(lone):
        np.testing.assert_allclose([r["val_loss"] for r in together.histories[i]],
                                   [r["val_loss"] for r in result.history], rtol=1e-5)
    with pytest.raises(ValueError, match="seed must be an integer in"):
        evaluate(lone[0].params, x[250:], OWN, k=16, seed=2**80)
    estimate = evaluate(lone[0].params, x[250:], OWN, k=16)
    assert np.isfinite(estimate["log_likelihood"]) and estimate["log_likelihood"] >= -estimate["neg_elbo"] - 1e-3


def test_labelled_batches_reach_the_loss_and_its_metrics_are_the_history():
    x, y = small_data()
    result = fit((x[:250], y[:250]), (x[250:], y[250:]), model=LabelledAE(), train_config=TC.replace(max_epochs=4))
    last = result.history[-1]
    assert {"train_mse", "val_mse", "train_accuracy", "val_accuracy"} <= set(last)
    assert "val_kl" not in last
    assert last["val_accuracy"] > 0.5  # five prototypes: chance is 0.2
    shuffled = np.random.default_rng(1).permutation(y[250:])
    record = fit((x[:250], y[:250]), (x[250:], shuffled), model=LabelledAE(), train_config=TC.replace(max_epochs=4))
    assert record.history[-1]["val_accuracy"] < last["val_accuracy"]
    # the model's own state: one count per training batch (5 a epoch), never moved by validation
    assert int(result.state.train_state.model_state) == 4 * 5


def test_a_labelled_batch_flows_through_a_sweep():
    x, y = small_data()
    sweep = fit_many({"x": x[:250], "y": y[:250]}, {"x": x[250:], "y": y[250:]}, model=DictAE(),
                     train_config=TC, seeds=2, lr=[1e-3, 3e-3])
    summary = summarize(sweep.models, sweep.histories, sweep.errors, sweep.stop_reasons)
    assert [s["label"] for s in summary["settings"]] == ["lr=0.001", "lr=0.003"]
    assert all(s["val_accuracy"]["n"] == 2 for s in summary["settings"])
    assert summary["likelihood"] is None and "val_squared_error" not in summary["settings"][0]


@dataclass(frozen=True)
class DictAE(LabelledAE):
    """The same model on batches given as dicts."""

    def loss(self, params, state, batch, key, hyper):
        return super().loss(params, state, (batch["x"], batch["y"]), key, hyper)


def test_hyperparameters_the_model_does_not_read_are_refused():
    x, y = small_data()
    with pytest.raises(ValueError, match=r"kl_weight=2\.0: LabelledAE's loss does not read it"):
        fit((x, y), model=LabelledAE(), train_config=TC.replace(kl_weight=2.0))
    with pytest.raises(ValueError, match=r"recon_sigma: a bernoulli likelihood does not read it, so it cannot be swept "
                                         r"\(it reads kl_weight, lr\)"):
        fit_many(x, model=VAEModel.from_modules(Encoder, Decoder, latent_dim=3, likelihood="bernoulli"),
                 train_config=TC, recon_sigma=[0.5, 1.0])
    with pytest.raises(ValueError, match=r"hyper\['beta'\]: LabelledAE declares no such hyperparameter \(it has lr\)"):
        fit((x, y), model=LabelledAE(), train_config=TC.replace(hyper={"beta": 2.0}))
    assert [h.name for h in OWN.hyperparameters] == ["recon_sigma", "kl_weight"]
    assert as_model(SMALL.replace(likelihood="bernoulli", objective="iwae", iwae_k=2)).hyperparameters == ()


def test_batches_are_checked_leaf_by_leaf():
    x, y = small_data(20)
    check_data("data", (x, y), OWN)
    with pytest.raises(ValueError, match=r"data\[1\] has 19 rows but the inputs have 20"):
        check_data("data", (x, y[:19]))
    bad = {"x": x, "w": np.full(20, np.nan, np.float32)}
    with pytest.raises(ValueError, match=r"data\['w'\] contains NaN"):
        check_data("data", bad)
    with pytest.raises(ValueError, match="data has 64 features but the model expects input_dim=784"):
        check_data("data", (x, y), VAEConfig())
    with pytest.raises(ValueError, match="a Bernoulli likelihood"):
        check_data("data", 2 * x, SMALL.replace(likelihood="bernoulli"))
    with pytest.raises(ValueError, match="train_x has dtype float16; jaxvae trains on float32 or float64"):
        fit(x.astype(np.float16), vae_config=SMALL, train_config=TC.replace(batch_size=10))


def test_the_configs_likelihood_names_are_the_registrys():
    from jaxvae.config import LIKELIHOODS
    from jaxvae.likelihoods import LIKELIHOODS as REGISTRY
    assert set(LIKELIHOODS) == set(REGISTRY)


def test_a_checkpoint_of_your_own_model_records_its_classes_and_loads_again(tmp_path):
    x, y = small_data()
    tc = TC.replace(max_epochs=1)
    result = fit(x, model=OWN, train_config=tc)
    path = save_checkpoint(tmp_path / "checkpoint.msgpack", result.state, OWN, tc)
    assert model_record(OWN)["encoder"] == f"{Encoder.__module__}:Encoder"
    state, model, train_config = load_checkpoint(path)  # the classes imported from the record
    assert model == OWN and train_config == tc and state.epoch == 1
    assert jax.tree.all(jax.tree.map(jnp.array_equal, state.params, result.params))
    assert model_record(SMALL) == model_record(as_model(SMALL))  # a config's model: the config's own record
    # a model's own state travels with it
    labelled = fit((x, y), model=LabelledAE(), train_config=tc)
    path = save_checkpoint(tmp_path / "labelled.msgpack", labelled.state, LabelledAE(), tc)
    assert int(load_checkpoint(path)[0].train_state.model_state) == 6
    with pytest.raises(CheckpointError, match="was trained with another model"):
        load_checkpoint(path, OWN)
    # a class that cannot be imported: one line naming it
    raw = serialization.msgpack_restore(unframe(MAGIC, checkpoint_bytes(result.state, OWN, tc)))
    raw["model"] = json.dumps({**model_record(OWN), "encoder": "no_such_module:Encoder"})
    (tmp_path / "moved.msgpack").write_bytes(frame(MAGIC, serialization.msgpack_serialize(raw)))
    with pytest.raises(CheckpointError, match=r"moved.msgpack: was made by jaxvae.vae:VAEModel, which cannot be built "
                                              r"again: no_such_module:Encoder cannot be imported") as error:
        load_checkpoint(tmp_path / "moved.msgpack")
    assert "\n" not in str(error.value)


@dataclass(frozen=True)
class NoisyAE(LabelledAE):
    """LabelledAE with input noise drawn ahead (``draw_noise``): a pytree of two draws per batch."""

    def draw_noise(self, key, batch):
        x, _ = batch
        a, b = jax.random.split(key)
        return {"add": 0.1 * jax.random.normal(a, x.shape, x.dtype), "keep": jax.random.bernoulli(b, 0.9, x.shape)}

    def loss_with_noise(self, params, state, batch, noise, hyper):
        x, y = batch
        return super().loss(params, state, (jnp.where(noise["keep"], x + noise["add"], 0.0), y), None, hyper)

    def loss(self, params, state, batch, key, hyper):
        return self.loss_with_noise(params, state, batch, self.draw_noise(key, batch), hyper)


def test_a_models_own_noise_is_drawn_ahead_in_chunks_and_each_step_gets_its_own(monkeypatch):
    """The epoch draws NOISE_CHUNK steps' noise (a pytree here) in one vmapped call; with lr 0 each
    step's loss depends only on its batch and noise, and must be that of the step run alone."""
    from jaxvae import training
    from jaxvae.batching import steps_per_epoch
    from jaxvae.training import TrainStep, epoch_plan, train_epoch

    monkeypatch.setattr(training, "NOISE_CHUNK", 3)  # 7 full steps: two chunks and a remainder, then the tail
    jax.clear_caches()
    x, y = small_data(150)
    model = NoisyAE()
    step = TrainStep.from_configs(model, TrainConfig(batch_size=20), steps_per_epoch(150, 20), lr_schedule=0.0)
    params, state = model.init(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(7)
    _, metrics, _ = train_epoch(step, step.init(jax.tree.map(jnp.copy, params), model_state=jnp.copy(state)), (x, y), key,
                                batch_size=20)
    jax.clear_caches()
    plan, keys = epoch_plan(key, 150, 20)
    alone = jax.jit(step)
    want = [float(alone(step.init(params, model_state=state), (x[rows], y[rows]), k)[1]["loss"])
            for rows, k in zip([*plan.full, plan.tail], keys)]
    assert len(set(want)) == len(want)  # every step's batch and noise differ
    np.testing.assert_allclose(metrics["loss"], want, rtol=1e-6)


@dataclass(frozen=True)
class ScaledLossVAE(VAEModel):
    """A VAEModel whose own loss (half the VAE's) overrides ``loss`` alone, as a user's subclass may."""

    def loss(self, params, state, batch, key, hyper):
        loss, metrics, state = super().loss(params, state, batch, key, hyper)
        return 0.5 * loss, metrics, state


def test_a_subclass_that_overrides_loss_alone_trains_through_its_own_loss():
    """Its parent's draw_noise/loss_with_noise are not its loss: the epoch must not draw ahead through them."""
    from jaxvae.batching import steps_per_epoch
    from jaxvae.model import draws_noise_ahead
    from jaxvae.training import TrainStep, epoch_plan, train_epoch

    parent = VAEModel.from_config(SMALL)
    model = ScaledLossVAE.from_config(SMALL)
    assert draws_noise_ahead(parent) and not draws_noise_ahead(model)
    x, _ = small_data(100)
    steps = [TrainStep.from_configs(m, TrainConfig(batch_size=20), steps_per_epoch(100, 20), lr_schedule=0.0)
             for m in (parent, model)]
    params = parent.init(jax.random.PRNGKey(0))[0]
    key = jax.random.PRNGKey(3)
    losses = [train_epoch(step, step.init(jax.tree.map(jnp.copy, params)), x, key, batch_size=20)[1]["loss"]
              for step in steps]
    np.testing.assert_allclose(losses[1], 0.5 * losses[0], rtol=1e-6)
    plan, keys = epoch_plan(key, 100, 20)
    assert float(jax.jit(steps[1])(steps[1].init(params), x[plan.full[0]], keys[0])[1]["loss"]) == pytest.approx(
        float(losses[1][0]), rel=1e-6)
