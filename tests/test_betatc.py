"""The beta-TCVAE against pythae's ``BetaTCVAE`` (pythae 0.1.2) on shared weights, inputs and noise: every
term, the total and every parameter's gradient; the identity its three terms obey; trained by ``fit``
and swept over beta; and the input it refuses by name."""
import contextlib
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvae import TrainConfig, VAEConfig, fit
from jaxvae.betatc import BetaTCVAEModel, kl_decomposition, log_weight_matrix
from jaxvae.errors import InputError
from jaxvae.hyper import Hyper
from jaxvae.interop import to_torch
from jaxvae.losses import log_normal_diag, log_standard_normal
from jaxvae.model import model_from_record
from jaxvae.sweep import fit_many, summarize

torch = pytest.importorskip("torch")
pythae_models = pytest.importorskip("pythae.models")
import torchref  # noqa: E402
from pythae.models.base.base_utils import ModelOutput  # noqa: E402
from pythae.models.nn import BaseDecoder, BaseEncoder  # noqa: E402
from tolerances import IDENTITY_RTOL, PARITY_RTOL, assert_close  # noqa: E402
from test_parity import (DEVICE, assert_trees_close, full_precision_matmuls, on_device, precision,  # noqa: E402,F401
                         torch_grads)

N, BATCH, FEATURES, LATENT = 1000, 32, 64, 4
WEIGHTS = {"alpha": 0.5, "beta": 6.0, "gamma": 1.5}  # distinct, so a term weighted wrongly shows
TERMS = {"mi": "alpha", "tc": "beta", "dim_kl": "gamma"}
# pythae's reconstruction losses: 0.5 * squared error is the Gaussian with sigma 1, "bce" the Bernoulli
PYTHAE_RECON = {"gaussian": "mse", "bernoulli": "bce"}


def config(likelihood="gaussian") -> VAEConfig:
    return VAEConfig(input_dim=FEATURES, hidden=(32,), latent_dim=LATENT, likelihood=likelihood)


def spread(params: dict) -> dict:
    """``params`` with correlated, wider posterior means and sigma e^-2 times narrower. At the initial
    weights every q(z | x) is near N(0, I): MI and TC are near 0, and their relative errors would
    measure only the cancellation of log-densities of order 10. Here (MSS) MI, TC and dimKL are 3.0,
    2.0 and 4.1 nats."""
    encoder = params["encoder"]
    kernel = encoder["mu"]["kernel"]
    mu = {**encoder["mu"], "kernel": 10 * (kernel[:, :1] + 0.3 * kernel)}  # every z_d mostly one direction
    log_sigma = {**encoder["log_sigma"], "bias": encoder["log_sigma"]["bias"] - 2.0}
    return {**params, "encoder": {**encoder, "mu": mu, "log_sigma": log_sigma}}


def hyper(**weights) -> Hyper:
    return Hyper(lr=1e-3, recon_sigma=1.0, **{**WEIGHTS, **weights})


class Encoder(BaseEncoder):
    """torchref's blog encoder as pythae's encoder: its mean, and the log-variance 2 log sigma."""

    def __init__(self, blog_encoder):
        BaseEncoder.__init__(self)
        self.blog = blog_encoder

    def forward(self, x):
        trunk = self.blog.prev_network(x)
        return ModelOutput(embedding=self.blog.gauss_mu_network(trunk),
                           log_covariance=2.0 * self.blog.gauss_logsigma_network(trunk))


class Decoder(BaseDecoder):
    """torchref's blog decoder as pythae's: the pixel means (the Gaussian's mean, the Bernoulli's probabilities)."""

    def __init__(self, blog_decoder):
        BaseDecoder.__init__(self)
        self.blog = blog_decoder

    def forward(self, z):
        return ModelOutput(reconstruction=self.blog(z))


@contextlib.contextmanager
def torch_default_dtype(tdtype):
    """pythae builds its constants (log 2 pi, log(B N), the MSS weights) in torch's default dtype: float64
    runs need it float64, or those constants carry float32 rounding."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(tdtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def oracle(params, model, tdtype, eps):
    """pythae's BetaTCVAE holding ``params``, its noise fixed to ``eps``, its MSS weights ``model``'s (below)."""
    encoder, _, decoder = torchref.build_blog_model(FEATURES, LATENT, (32,))
    to_torch(params, encoder, decoder)
    cfg = pythae_models.BetaTCVAEConfig(input_dim=(FEATURES,), latent_dim=LATENT, use_mss=model.estimator == "mss",
                                        reconstruction_loss=PYTHAE_RECON[model.likelihood.name], **WEIGHTS)
    theirs = pythae_models.BetaTCVAE(cfg, encoder=Encoder(encoder), decoder=Decoder(decoder)).to(DEVICE, tdtype)
    theirs._sample_gauss = lambda mu, std: (mu + eps * std, eps)
    # pythae 0.1.2's stratified weights put 1/N on column 0, not on the diagonal (the stride bug of
    # rtqichen/beta-tcvae PR #1; test_pythaes_own_stratified_weights_miss_the_diagonal): give it ours
    jdtype = jnp.float64 if tdtype == torch.float64 else jnp.float32
    theirs._log_importance_weight_matrix = lambda b, n: torch.tensor(
        np.asarray(log_weight_matrix(b, n, "mss", jdtype)), dtype=tdtype, device=DEVICE)
    return theirs, encoder, decoder


CASES = [("gaussian", "mws"), ("gaussian", "mss"), ("bernoulli", "mws")]


@pytest.mark.parametrize("dtype", ("float32", "float64"))
@pytest.mark.parametrize("likelihood,estimator", CASES)
def test_terms_loss_and_gradients_match_pythae(dtype, likelihood, estimator):
    model = BetaTCVAEModel.from_config(config(likelihood), dataset_size=N, estimator=estimator)
    rng = np.random.default_rng(7)
    x, eps = rng.random((BATCH, FEATURES)), rng.standard_normal((BATCH, LATENT))
    with precision(dtype) as (tdtype, jdtype), torch_default_dtype(tdtype):
        params, state = model.init(jax.random.PRNGKey(0), jdtype)
        params = spread(params)
        tx, teps = on_device(x, tdtype), on_device(eps, tdtype)
        theirs, encoder, decoder = oracle(params, model, tdtype, teps)
        out = theirs({"data": tx}, dataset_size=N)
        out.loss.backward()
        want = {"loss": out.loss.item(), "recon": out.recon_loss.item()}
        with torch.no_grad():  # each term alone: its weight 1, the others' 0
            for term, weight in TERMS.items():
                for name in TERMS.values():
                    setattr(theirs, name, float(name == weight))
                want[term] = theirs({"data": tx}, dataset_size=N).reg_loss.item()

        def loss(p):
            value, metrics, _ = model.loss_with_noise(p, state, jnp.asarray(x, jdtype), jnp.asarray(eps, jdtype),
                                                      hyper().as_arrays(jdtype))
            return value, metrics

        (j_loss, metrics), j_grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        assert j_loss.dtype == jdtype
        rtol = PARITY_RTOL["loss"][dtype]
        assert_close("loss", j_loss, want["loss"], rtol)
        for name in ("recon", *TERMS):
            assert_close(name, metrics[name], want[name], rtol)
        assert_trees_close("grad", j_grads, torch_grads(encoder, decoder), PARITY_RTOL["grad"][dtype])


def test_pythaes_own_stratified_weights_miss_the_diagonal():
    """Ours: each example's own sample weighs 1/N, every row sums to one. pythae 0.1.2's: 1/N down column
    0 (its stride is B, not B + 1), and one row sums to more than one."""
    b, n = 6, 100
    ours = np.exp(np.asarray(log_weight_matrix(b, n, "mss", jnp.float32), np.float64))
    np.testing.assert_allclose(np.diag(ours), 1 / n, rtol=1e-6)
    np.testing.assert_allclose(ours.sum(axis=1), 1.0, rtol=1e-6)
    theirs = pythae_models.BetaTCVAE(pythae_models.BetaTCVAEConfig(input_dim=(2,), latent_dim=2))
    pythae_w = theirs._log_importance_weight_matrix(b, n).exp().numpy()
    np.testing.assert_allclose(np.delete(pythae_w[:, 0], b - 2), 1 / n, rtol=1e-6)
    assert pythae_w.sum(axis=1).max() > 1.1
    np.testing.assert_allclose(np.exp(np.asarray(log_weight_matrix(b, n, "mws"))), 1 / (b * n), rtol=1e-6)


def test_the_three_terms_sum_to_a_one_sample_kl_whose_mean_is_the_closed_form_kl():
    """MI + TC + dimKL = log q(z | x) - log p(z) for any weights (they telescope): to rounding on one
    batch; over many noise draws its mean is the closed-form KL, within 4 standard errors."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        mu = jnp.asarray(rng.standard_normal((BATCH, LATENT)))
        log_sigma = jnp.asarray(rng.uniform(-1.5, 0.5, (BATCH, LATENT)))
        draws = 2000
        eps = jnp.asarray(rng.standard_normal((draws, BATCH, LATENT)))

        def one(e, estimator):
            z = mu + jnp.exp(log_sigma) * e
            terms = kl_decomposition(z, mu, log_sigma, log_weight_matrix(BATCH, N, estimator, jnp.float64))
            return sum(terms), log_normal_diag(z, mu, log_sigma) - log_standard_normal(z)

        closed_form = float(jnp.mean(0.5 * jnp.sum(jnp.exp(2 * log_sigma) + mu**2 - 1 - 2 * log_sigma, axis=-1)))
        for estimator in ("mws", "mss"):
            total, direct = jax.jit(jax.vmap(lambda e: one(e, estimator)))(eps)
            assert_close(f"MI + TC + dimKL ({estimator})", total, direct, IDENTITY_RTOL["float64"])
            per_draw = jnp.mean(total, axis=1)  # the batch mean, as the loss takes it
            stderr = float(jnp.std(per_draw)) / math.sqrt(draws)
            assert abs(float(jnp.mean(per_draw)) - closed_form) < 4 * stderr, (estimator, float(jnp.mean(per_draw)),
                                                                               closed_form)


def test_unit_weights_train_the_elbo_with_a_one_sample_kl():
    model = BetaTCVAEModel.from_config(config(), dataset_size=N)
    params, state = model.init(jax.random.PRNGKey(1))
    x = jnp.asarray(np.random.default_rng(2).random((BATCH, FEATURES)), jnp.float32)
    loss_fn = jax.jit(model.loss)
    loss, metrics, _ = loss_fn(params, state, x, jax.random.PRNGKey(4), hyper(alpha=1.0, beta=1.0, gamma=1.0))
    assert set(metrics) == {"recon", "mi", "tc", "dim_kl", "kl"}
    assert_close("loss", loss, metrics["recon"] + metrics["mi"] + metrics["tc"] + metrics["dim_kl"],
                 IDENTITY_RTOL["float32"])
    # a different key draws different noise
    assert loss_fn(params, state, x, jax.random.PRNGKey(5), hyper())[0] != loss_fn(
        params, state, x, jax.random.PRNGKey(4), hyper())[0]


def test_hyperparameters_record_and_equality():
    model = BetaTCVAEModel.from_config(config(), dataset_size=N, estimator="mss")
    assert [(h.name, h.default) for h in model.hyperparameters] == [
        ("recon_sigma", 1.0), ("alpha", 1.0), ("beta", 1.0), ("gamma", 1.0)]
    assert [h.name for h in BetaTCVAEModel.from_config(config("bernoulli"), dataset_size=N).hyperparameters] == [
        "alpha", "beta", "gamma"]
    assert model_from_record(model.describe()) == model
    assert BetaTCVAEModel.from_config(config(), dataset_size=N) != BetaTCVAEModel.from_config(config(), dataset_size=99)
    own = BetaTCVAEModel.from_modules(RecordedEncoder, RecordedDecoder, latent_dim=2, dataset_size=50)
    assert model_from_record(own.describe()) == own


class RecordedEncoder:
    """A module class the record names and imports again (never built here)."""


class RecordedDecoder:
    """As ``RecordedEncoder``."""


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, None, "1000"])
def test_dataset_size_must_be_a_positive_integer(bad):
    with pytest.raises(InputError, match=f"dataset_size must be a positive integer .*got {re.escape(repr(bad))}"):
        BetaTCVAEModel.from_config(config(), dataset_size=bad)


def test_input_it_cannot_use_is_refused_by_name():
    with pytest.raises(TypeError, match="dataset_size"):
        BetaTCVAEModel.from_config(config())  # the field is required
    assert BetaTCVAEModel.from_config(config(), dataset_size=np.int64(10)).dataset_size == 10
    with pytest.raises(InputError, match="estimator must be one of mws, mss; got 'mwss'"):
        BetaTCVAEModel.from_config(config(), dataset_size=N, estimator="mwss")
    with pytest.raises(InputError, match="objective='iwae': the beta-TCVAE splits the ELBO's KL"):
        BetaTCVAEModel.from_config(VAEConfig(objective="iwae", iwae_k=4), dataset_size=N)
    small = BetaTCVAEModel.from_config(config(), dataset_size=10)
    params, state = small.init(jax.random.PRNGKey(0))
    x = jnp.zeros((BATCH, FEATURES))
    with pytest.raises(InputError, match=f"dataset_size=10 is smaller than the batch of {BATCH} examples"):
        small.loss(params, state, x, jax.random.PRNGKey(0), hyper())
    mss = BetaTCVAEModel.from_config(config(), dataset_size=N, estimator="mss")
    with pytest.raises(InputError, match="needs batches of at least 2 examples"):
        mss.loss(params, state, x[:1], jax.random.PRNGKey(0), hyper())
    with pytest.raises(AttributeError, match="no hyperparameter 'beta'"):
        mss.loss(params, state, x, jax.random.PRNGKey(0), Hyper(lr=1e-3, recon_sigma=1.0, alpha=1.0, gamma=1.0))


def blobs(n=250, seed=0):
    """Noisy images of four prototypes in [0, 1]: data with structure for two epochs to learn."""
    rng = np.random.default_rng(seed)
    protos = rng.random((4, FEATURES))
    return np.clip(protos[rng.integers(0, 4, n)] + 0.1 * rng.standard_normal((n, FEATURES)), 0, 1).astype(np.float32)


def test_fit_trains_it_two_epochs_with_its_own_hyperparameters(tmp_path):
    from jaxvae.checkpoint import load_checkpoint, save_checkpoint
    x = blobs()
    train, val = x[:200], x[200:]
    model = BetaTCVAEModel.from_config(config(), dataset_size=len(train), estimator="mss")
    tc = TrainConfig(max_epochs=2, batch_size=25, lr=3e-3, lr_schedule="constant", hyper={"beta": 6.0})
    result = fit(train, val, model=model, train_config=tc)
    assert len(result.history) == 2
    last = result.history[-1]
    assert {"train_mi", "train_tc", "train_dim_kl", "val_mi", "val_tc", "val_dim_kl", "val_kl"} <= set(last)
    assert last["train_loss"] < result.history[0]["train_loss"]
    assert float(result.state.train_state.hyper["beta"]) == 6.0
    assert float(result.state.train_state.hyper["alpha"]) == 1.0
    state, loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "checkpoint.msgpack", result.state, model, tc))
    assert loaded == model and loaded.dataset_size == 200 and loaded.estimator == "mss"
    assert jax.tree.all(jax.tree.map(jnp.array_equal, state.params, result.params))
    with pytest.raises(InputError, match=r"kl_weight=4.0: BetaTCVAEModel's loss does not read it"):
        fit(train, val, model=model, train_config=tc.replace(kl_weight=4.0))
    with pytest.raises(InputError, match=r"hyper.beta must be a finite number >= 0, got -1.0"):
        fit(train, val, model=model, train_config=tc.replace(hyper={"beta": -1.0}))
    with pytest.raises(InputError, match="kl_warmup_epochs: BetaTCVAEModel's loss has no KL weight"):
        fit(train, val, model=model, train_config=tc.replace(kl_warmup_epochs=1))


def test_a_sweep_over_beta():
    x = blobs()
    model = BetaTCVAEModel.from_config(config(), dataset_size=200)
    tc = TrainConfig(max_epochs=2, batch_size=25, lr=3e-3, lr_schedule="constant")
    sweep = fit_many(x[:200], x[200:], model=model, train_config=tc, beta=[1.0, 6.0])
    summary = summarize(sweep.models, sweep.histories, sweep.errors, sweep.stop_reasons)
    assert [s["label"] for s in summary["settings"]] == ["beta=1", "beta=6"]
    assert [m.beta for m in sweep.models] == [1.0, 6.0]
    assert sweep.histories[0][-1]["val_loss"] != sweep.histories[1][-1]["val_loss"]
