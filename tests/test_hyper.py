"""Hyperparameters declared by the model: the configs, the train state, sweeps and checkpoints follow the declaration."""
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvae import TrainConfig, VAEConfig, fit
from jaxvae.checkpoint import load_checkpoint, save_checkpoint
from jaxvae.cli.flags import SWEEP_VALUE_FLAGS
from jaxvae.config import VAE_HYPERPARAMETERS, config_to_dict
from jaxvae.hyper import KL_WEIGHT, LR, RECON_SIGMA, Hyper, Hyperparameter
from jaxvae.model import Model
from jaxvae.sweep import fit_many, summarize
from jaxvae.training import TrainStep, hyper_of
from jaxvae.vae import VAEModel, as_model

TC = TrainConfig(max_epochs=2, batch_size=25, lr=1e-2, lr_schedule="constant")
SHRINK = Hyperparameter("shrink", 0.0, "the weight of an L2 pull of the mean towards 0", high=10.0)
TARGET = Hyperparameter("target", 0.5, "where the mean is pulled", low=-1.0, low_open=True, high=1.0)


@dataclass(frozen=True)
class PulledMean(Model):
    """Fits one vector to the data's rows, pulled towards ``target`` by ``shrink``: a loss whose
    minimum moves with its two hyperparameters, so their values can be read off the trained params."""

    hyperparameters = (SHRINK, TARGET)

    def init(self, key, dtype=jnp.float32):
        return {"mean": jnp.zeros(4, dtype)}, ()

    def loss(self, params, state, batch, key, hyper):
        fit_term = jnp.mean(jnp.sum((batch - params["mean"]) ** 2, axis=-1))
        pull = hyper.shrink * jnp.sum((params["mean"] - hyper.target) ** 2)
        return fit_term + pull, {"fit": fit_term, "pull": pull}, state

    def describe(self):
        return {"class": "tests.test_hyper:PulledMean"}

    @classmethod
    def from_record(cls, record):
        return cls()


def rows(n=100):
    return np.random.default_rng(0).normal(1.0, 0.1, (n, 4)).astype(np.float32)


def test_hyper_is_a_pytree_of_named_values():
    hyper = Hyper(lr=1e-3, shrink=2.0).as_arrays()
    assert jax.jit(lambda h: h.shrink * h["lr"])(hyper) == pytest.approx(2e-3)
    stacked = jax.tree.map(lambda *v: jnp.stack(v), hyper, hyper.replace(shrink=3.0))
    assert jax.vmap(lambda h: h.shrink)(stacked).tolist() == [2.0, 3.0]
    with pytest.raises(AttributeError, match="declares no hyperparameter 'beta' \\(it has: lr, shrink\\)"):
        hyper.beta
    with pytest.raises(KeyError):
        hyper.replace(beta=1.0)


def test_the_state_carries_what_the_model_declares_with_its_defaults():
    step = TrainStep(PulledMean())
    state = step.init({"mean": jnp.zeros(4)})
    assert list(state.hyper) == ["shrink", "target", "lr"]
    assert float(state.hyper.target) == TARGET.default and float(state.hyper.lr) == pytest.approx(LR.default)
    assert list(hyper_of(as_model(VAEConfig()), TC)) == ["recon_sigma", "kl_weight", "lr"]
    assert list(hyper_of(as_model(VAEConfig(likelihood="bernoulli", objective="iwae", iwae_k=2)), TC)) == ["lr"]


def test_a_config_sets_the_models_own_hyperparameters_by_name():
    x = rows()
    tc = TC.replace(max_epochs=300, batch_size=100, lr=0.02)  # whole-data steps: Adam settles at the minimum
    free = fit(x, model=PulledMean(), train_config=tc)
    pulled = fit(x, model=PulledMean(), train_config=tc.replace(hyper={"shrink": 1.0, "target": -0.5}))
    # the minimum of |x - m|^2 + s |m - t|^2 is m = (mean(x) + s t) / (1 + s): 1.0 free, 0.25 pulled
    np.testing.assert_allclose(free.params["mean"], x.mean(0), atol=0.02)
    np.testing.assert_allclose(pulled.params["mean"], (x.mean(0) - 0.5) / 2, atol=0.02)
    assert pulled.history[-1]["train_pull"] > 0 == free.history[-1]["train_pull"]


@pytest.mark.parametrize("hyper, message", [
    ({"shrink": 11.0}, r"hyper.shrink must be a finite number in \[0, 10\], got 11.0"),
    ({"target": -1.0}, r"hyper.target must be a finite number in \(-1, 1\], got -1.0"),
    ({"beta": 1.0}, r"hyper\['beta'\]: PulledMean declares no such hyperparameter \(it has shrink, target, lr\)"),
])
def test_values_are_checked_against_the_declaration(hyper, message):
    with pytest.raises(ValueError, match=message):
        fit(rows(), model=PulledMean(), train_config=TC.replace(hyper=hyper))


def test_configs_refuse_what_no_model_could_read():
    with pytest.raises(ValueError, match=r"hyper\['kl_weight'\]: kl_weight is a TrainConfig field"):
        TrainConfig(hyper={"kl_weight": 2.0})
    with pytest.raises(ValueError, match=r"hyper\['beta'\] must be a finite number, got nan"):
        TrainConfig(hyper={"beta": float("nan")})
    with pytest.raises(ValueError, match="kl_weight=2.0: PulledMean's loss does not read it"):
        fit(rows(), model=PulledMean(), train_config=TC.replace(kl_weight=2.0))
    with pytest.raises(ValueError, match=r"hyper\['shrink'\]: VAEModel declares no such hyperparameter"):
        fit(rows(), vae_config=VAEConfig(input_dim=4, hidden=(8,), latent_dim=2),
            train_config=TC.replace(hyper={"shrink": 1.0}))


def test_a_sweep_spans_the_declared_hyperparameters_and_each_model_is_a_lone_fit():
    x = rows()
    sweep = fit_many(x[:75], x[75:], model=PulledMean(), train_config=TC, shrink=[0.0, 2.0], target=0.0)
    assert [m.name for m in sweep.models] == ["shrink0.0_seed0", "shrink2.0_seed0"]
    assert [m.train_config.hyper for m in sweep.models] == [{"shrink": 0.0, "target": 0.0}, {"shrink": 2.0, "target": 0.0}]
    summary = summarize(sweep.models, sweep.histories, sweep.errors, sweep.stop_reasons)
    assert [s["label"] for s in summary["settings"]] == ["shrink=0", "shrink=2"]
    assert summary["models"][1]["shrink"] == 2.0 and summary["models"][1]["target"] == 0.0
    for i, model in enumerate(sweep.models):
        lone = fit(x[:75], x[75:], model=PulledMean(), train_config=model.train_config)
        np.testing.assert_allclose([r["val_loss"] for r in sweep.histories[i]], [r["val_loss"] for r in lone.history],
                                   rtol=1e-5)
    with pytest.raises(ValueError, match="kl_weight: PulledMean does not read it, so it cannot be swept"):
        fit_many(x, model=PulledMean(), train_config=TC, kl_weight=[1.0, 2.0])
    with pytest.raises(ValueError, match="shrink must be a finite number in"):
        fit_many(x, model=PulledMean(), train_config=TC, shrink=[1.0, 20.0])


def test_a_checkpoint_keeps_the_values(tmp_path):
    tc = TC.replace(hyper={"shrink": 0.5})
    result = fit(rows(), model=PulledMean(), train_config=tc)
    path = tmp_path / "model.ckpt"
    save_checkpoint(path, result.state, PulledMean(), tc)
    state, _, loaded_tc = load_checkpoint(path, PulledMean())
    assert loaded_tc == tc and config_to_dict(loaded_tc)["hyper"] == {"shrink": 0.5}
    assert float(state.train_state.hyper.shrink) == 0.5 and float(state.train_state.hyper.target) == TARGET.default


def test_the_command_lines_value_flags_come_from_the_declarations():
    assert VAEModel.family_hyperparameters == VAE_HYPERPARAMETERS == (RECON_SIGMA, KL_WEIGHT)
    assert {n: SWEEP_VALUE_FLAGS[n] for n in ("recon_sigma", "kl_weight", "lr")} == \
        {"recon_sigma": "--recon-sigma", "kl_weight": "--kl-weight", "lr": "--lr"}
    # every VAEModel declares a subset of its family's
    for config in (VAEConfig(), VAEConfig(likelihood="bernoulli"), VAEConfig(objective="iwae", iwae_k=2)):
        assert set(as_model(config).hyperparameters) <= set(VAE_HYPERPARAMETERS)
