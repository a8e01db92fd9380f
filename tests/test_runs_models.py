"""Run directories of any model: your own NNX modules, a model of labelled batches, the conditional VAE."""
import json
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxvae import TrainConfig, VAEConfig
from jaxvae.cli import main
from jaxvae.cvae import ConditionalVAEModel
from jaxvae.data import load_dataset
from jaxvae.evaluation import evaluate_run
from jaxvae.hyper import Hyperparameter
from jaxvae.model import Model
from jaxvae.runs import load_run, read_metrics, train_run
from jaxvae.vae import VAEModel

DIGITS = load_dataset("digits")
TC = TrainConfig(max_epochs=2, batch_size=64, lr=3e-3, lr_schedule="constant")


class Encoder(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(64, 32, rngs=rngs)
        self.mu = nnx.Linear(32, 2, rngs=rngs)
        self.log_sigma = nnx.Linear(32, 2, rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.hidden(x))
        return self.mu(h), self.log_sigma(h)


class Decoder(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(2, 32, rngs=rngs)
        self.out = nnx.Linear(32, 64, rngs=rngs)

    def __call__(self, z):
        return self.out(nnx.relu(self.hidden(z)))


OWN = VAEModel.from_modules(Encoder, Decoder, latent_dim=2, likelihood="bernoulli")


class Classifier(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.layer = nnx.Linear(64, 10, rngs=rngs)


@dataclass(frozen=True)
class Softmax(Model):
    """Logistic regression on the labels: a model of labelled batches with a hyperparameter of its own."""

    hyperparameters = (Hyperparameter("l2", 0.0, "weight decay on the weights"),)

    def init(self, key, dtype=jnp.float32):
        return nnx.to_pure_dict(nnx.state(Classifier(rngs=nnx.Rngs(params=key)), nnx.Param)), ()

    def loss(self, params, state, batch, key, hyper):
        x, y = batch
        logits = x @ params["layer"]["kernel"] + params["layer"]["bias"]
        xent = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y.astype(jnp.int32)))
        accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == y)
        return xent + hyper.l2 * jnp.sum(params["layer"]["kernel"] ** 2), {"xent": xent, "accuracy": accuracy}, state

    def batch_of(self, x, y):
        return (x, y)


def test_your_own_modules_train_resume_and_evaluate_in_a_run_directory(tmp_path):
    run = train_run(tmp_path / "run", OWN, DIGITS, TC)
    record = json.loads((tmp_path / "run" / "config.json").read_text())["model"]
    assert record["class"] == "jaxvae.vae:VAEModel" and record["encoder"].endswith(":Encoder")
    assert {p.name for p in run.figures[0]} >= {"manifold.png", "samples.png", "loss_curves.png"}
    again = train_run(tmp_path / "run", max_epochs=4)  # resumed: the model rebuilt from its record
    assert again.resumed_after == 2 and again.model == OWN
    straight = train_run(tmp_path / "straight", OWN, DIGITS, TC.replace(max_epochs=4), figures=False)
    assert [r["val_loss"] for r in read_metrics(tmp_path / "run")] == \
        [r["val_loss"] for r in straight.result.histories[0]]  # resume is exact
    result = evaluate_run(tmp_path / "run", k=8, limit=100)
    assert result["metrics"] == ["loss", "recon", "kl"] and result["log_likelihood"] >= -result["neg_elbo"] - 0.5


def test_a_model_of_labelled_batches_trains_from_a_dataset_with_its_labels(tmp_path, capsys):
    tc = TC.replace(max_epochs=3, hyper={"l2": 1e-4})
    run = train_run(tmp_path / "run", Softmax(), DIGITS, tc)
    assert [p.name for p in run.figures[0]] == ["loss_curves.png"]  # no latent space to draw
    assert read_metrics(tmp_path / "run")[-1]["val_accuracy"] > 0.8  # ten classes: chance is 0.1
    info, state = load_run(tmp_path / "run")
    assert info.model == Softmax() and info.train_config.hyper == {"l2": 1e-4}
    assert main(["evaluate", str(tmp_path / "run"), "--limit", "200"]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "run")]) == 2
    assert "was not made by a VAEConfig" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "run"), "--latent-dim", "3"]) == 2
    assert "--latent-dim: a resumed run keeps its model (Softmax" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "run"), "--epochs", "4", "--no-plots", "--quiet"]) == 0
    assert len(read_metrics(tmp_path / "run")) == 4
    with pytest.raises(ValueError, match="k=8: Softmax has no importance-sampled log-likelihood"):
        evaluate_run(tmp_path / "run", k=8)


def test_a_conditional_vae_sweeps_in_a_run_directory(tmp_path):
    cvae = ConditionalVAEModel.from_config(VAEConfig(input_dim=64, hidden=(32,), likelihood="bernoulli"), 10)
    run = train_run(tmp_path / "sweep", cvae, DIGITS, TC, sweep={"seeds": 2, "kl_weight": [0.5, 1.0]})
    assert [d.name for d in run.run_dirs] == ["kl0.5_seed0", "kl0.5_seed1", "kl1.0_seed0", "kl1.0_seed1"]
    info, _ = load_run(run.run_dirs[0])
    assert info.model == cvae
    assert train_run(tmp_path / "sweep", sweep=True).nothing_to_do


@dataclass(frozen=True)
class Forgetful(Softmax):
    """A model with a field its record leaves out: it cannot be built again."""

    width: int = 3

    @classmethod
    def from_record(cls, record):
        return cls(width=4)


def test_a_model_its_record_cannot_build_again_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match=r"Forgetful's record .* builds another model"):
        train_run(tmp_path / "run", Forgetful(), DIGITS, TC)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match=r"hyper\['beta'\]: Softmax declares no such hyperparameter"):
        train_run(tmp_path / "run", Softmax(), DIGITS, TC.replace(hyper={"beta": 1.0}))
    assert not (tmp_path / "run").exists()
