"""The conditional VAE: against torchref's on shared weights and noise, trained through the protocol,
conditioned on its labels, and refusing labels it cannot use by name."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvae import TrainConfig, VAEConfig, fit
from jaxvae.cvae import ConditionalVAEModel
from jaxvae.interop import to_torch
from jaxvae.sweep import fit_many, summarize
from jaxvae.training import fit_models, hyper_of

pytest.importorskip("torch")
import torchref  # noqa: E402
from tolerances import PARITY_RTOL, assert_close  # noqa: E402
from test_parity import (DEVICE, assert_trees_close, full_precision_matmuls, on_device, precision,  # noqa: E402,F401
                         torch_grads)

CLASSES = 10
BLOG = ConditionalVAEModel.from_config(VAEConfig(), CLASSES)  # the blog's 784-400-2 MLP, widened by the label
SMALL = ConditionalVAEModel.from_config(VAEConfig(input_dim=64, hidden=(32,), latent_dim=2), 5)
TC = TrainConfig(max_epochs=5, batch_size=25, lr=1e-2, lr_schedule="constant")


def prototypes(n=300, seed=0):
    """Noisy images of five prototypes in [0, 1], and which prototype each is (its label): the label
    tells the decoder most of the image."""
    rng = np.random.default_rng(seed)
    protos = rng.random((5, 64)) ** 3
    labels = rng.integers(0, 5, n).astype(np.int32)
    x = np.clip(protos[labels] + 0.05 * rng.standard_normal((n, 64)), 0, 1).astype(np.float32)
    return x, labels


@pytest.mark.parametrize("dtype", ("float32", "float64"))
@pytest.mark.parametrize("data", ["uniform", "digit_like"])
def test_loss_recon_kl_and_gradients_match_torchref(dtype, data, digit_like):
    n = 64
    x = np.random.default_rng(7).random((n, 784)) if data == "uniform" else digit_like(n, seed=3)
    labels = np.random.default_rng(8).integers(0, CLASSES, n)
    eps = np.random.default_rng(1).standard_normal((n, BLOG.latent_dim))
    with precision(dtype) as (tdtype, jdtype):
        params, state = BLOG.init(jax.random.PRNGKey(0), jdtype)
        encoder, sampler, decoder = torchref.build_blog_cvae(784, BLOG.latent_dim, CLASSES)
        encoder, decoder = encoder.to(DEVICE, tdtype), decoder.to(DEVICE, tdtype)
        to_torch(params, encoder, decoder)  # the jax weights, shared

        tx = on_device(x, tdtype)
        preds, gauss_params = torchref.cvae_forward(encoder, sampler, decoder, tx, on_device(labels), CLASSES,
                                                    on_device(eps, tdtype))
        t_recon = torchref.GaussSimilarityLoss(1.0)(preds, tx)
        t_kl = torchref.UnitGaussKullbackLeiblerDivergenceLoss()(gauss_params)
        (t_recon + t_kl).backward()

        def loss(p):
            value, metrics, _ = BLOG.loss_with_noise(p, state, (jnp.asarray(x, jdtype), jnp.asarray(labels)),
                                                     jnp.asarray(eps, jdtype), hyper_of(SMALL, {}))
            return value, metrics

        (j_loss, metrics), j_grads = jax.value_and_grad(loss, has_aux=True)(params)
        assert j_loss.dtype == jdtype
        rtol = PARITY_RTOL["loss"][dtype]
        assert_close("loss", j_loss, (t_recon + t_kl).item(), rtol)
        assert_close("recon", metrics["recon"], t_recon.item(), rtol)
        assert_close("kl", metrics["kl"], t_kl.item(), rtol)
        assert_trees_close("grad", j_grads, torch_grads(encoder, decoder), PARITY_RTOL["grad"][dtype])


def test_labels_one_hot_vectors_and_dict_batches_give_the_same_loss():
    x, y = prototypes(40)
    params, state = SMALL.init(jax.random.PRNGKey(0))
    eps = jax.random.normal(jax.random.PRNGKey(1), (40, SMALL.latent_dim))
    losses = [SMALL.loss_with_noise(params, state, batch, eps, hyper_of(SMALL, {}))[0]
              for batch in ((x, y), (x, np.eye(5, dtype=np.float32)[y]), {"x": x, "y": y})]
    assert losses[0] == losses[1] == losses[2]
    # a soft condition is a condition too: halfway between two classes is neither
    soft = np.full((40, 5), 0.2, np.float32)
    assert SMALL.loss_with_noise(params, state, (x, soft), eps, hyper_of(SMALL, {}))[0] != losses[0]


def test_training_reduces_the_loss_and_two_seeds_together_equal_lone_fits():
    x, y = prototypes()
    train, val = (x[:250], y[:250]), (x[250:], y[250:])
    lone = [fit(train, val, model=SMALL, train_config=TC.replace(seed=s)) for s in (0, 1)]
    assert lone[0].history[-1]["val_loss"] < 0.5 * lone[0].history[0]["train_loss"]
    assert {"val_recon", "val_kl"} <= set(lone[0].history[-1])
    together = fit_models(train, val, model=SMALL, train_configs=[TC, TC.replace(seed=1)])
    for i, result in enumerate(lone):
        np.testing.assert_allclose([r["val_loss"] for r in together.histories[i]],
                                   [r["val_loss"] for r in result.history], rtol=1e-5)


def test_a_sweep_over_the_kl_weight_trains_on_labelled_batches():
    x, y = prototypes()
    sweep = fit_many((x[:250], y[:250]), (x[250:], y[250:]), model=SMALL, train_config=TC.replace(max_epochs=2),
                     kl_weight=[0.5, 1.0])
    summary = summarize(sweep.models, sweep.histories, sweep.errors, sweep.stop_reasons)
    assert [s["label"] for s in summary["settings"]] == ["kl=0.5", "kl=1"]
    assert sweep.histories[0][-1]["val_loss"] != sweep.histories[1][-1]["val_loss"]


def test_the_label_matters():
    x, y = prototypes()
    result = fit((x[:250], y[:250]), (x[250:], y[250:]), model=SMALL, train_config=TC)
    params, vx, vy = result.params, jnp.asarray(x[250:]), jnp.asarray(y[250:])

    def reconstruction_error(labels):
        mu, _ = SMALL.encode(params, vx, labels)
        return float(jnp.mean(jnp.sum((SMALL.decode(params, mu, labels) - vx) ** 2, axis=-1)))

    true, wrong = reconstruction_error(vy), reconstruction_error((vy + 1) % 5)
    assert true < 0.1 * wrong, (true, wrong)  # measured: 0.45 against 9.2
    # the same noise under different labels: different images, each near its class's mean image
    key = jax.random.PRNGKey(3)
    samples = [SMALL.sample(params, key, jnp.full(20, c)) for c in range(5)]
    assert not np.allclose(samples[0], samples[1], atol=1e-2)
    class_means = np.stack([x[:250][y[:250] == c].mean(0) for c in range(5)])
    for c, images in enumerate(samples):
        nearest = np.argmin(((np.asarray(images)[:, None] - class_means[None]) ** 2).sum(-1), axis=1)
        assert np.mean(nearest == c) > 0.9, (c, nearest)


def test_labels_it_cannot_use_are_refused_by_name():
    x, y = prototypes(100)
    train_config = TC.replace(max_epochs=1)
    bad = y.copy()
    bad[[3, 17]] = [5, -1]
    with pytest.raises(ValueError, match=r"train_x\[1\] has labels that are not integers in \[0, 5\): "
                                         r"5 \(row 3\), -1 \(row 17\)"):
        fit((x, bad), model=SMALL, train_config=train_config)
    with pytest.raises(ValueError, match=r"val_x\['y'\] has labels that are not integers in \[0, 5\): 1.5 \(row 0\)"):
        fit({"x": x, "y": y}, {"x": x[:10], "y": np.full(10, 1.5)}, model=SMALL, train_config=train_config)
    with pytest.raises(ValueError, match=r"train_x\[1\] has 4 entries per row but the model's condition has num_classes=5"):
        fit((x, np.zeros((100, 4), np.float32)), model=SMALL, train_config=train_config)
    with pytest.raises(ValueError, match=r"train_x\[1\] holds int32 vectors; condition vectors are floats"):
        fit((x, np.zeros((100, 5), np.int32)), model=SMALL, train_config=train_config)
    with pytest.raises(ValueError, match="train_x has no labels: a conditional VAE trains on batches"):
        fit(x, model=SMALL, train_config=train_config)
    with pytest.raises(ValueError, match="train_x has 63 features but the model expects input_dim=64"):
        fit((x[:, :63], y), model=SMALL, train_config=train_config)


def test_configs_it_cannot_build_are_refused_by_name():
    with pytest.raises(ValueError, match="num_classes must be a positive integer, got 0"):
        ConditionalVAEModel.from_config(VAEConfig(), 0)
    with pytest.raises(ValueError, match="architecture='conv': the conditional VAE is built on the MLP"):
        ConditionalVAEModel.from_config(VAEConfig(architecture="conv"), 10)
    with pytest.raises(ValueError, match="objective='iwae': the conditional VAE trains the ELBO"):
        ConditionalVAEModel.from_config(VAEConfig(objective="iwae", iwae_k=4), 10)
    with pytest.raises(ValueError, match=r"built from a VAEConfig: ConditionalVAEModel.from_config"):
        ConditionalVAEModel.from_modules(object, object, latent_dim=2)
    assert [h.name for h in BLOG.hyperparameters] == ["recon_sigma", "kl_weight"]
    assert ConditionalVAEModel.from_config(VAEConfig(), 10) == BLOG  # equal models share compiled code


def test_a_checkpoint_of_a_cvae_loads_as_the_same_model(tmp_path):
    from jaxvae.checkpoint import load_checkpoint, save_checkpoint
    x, y = prototypes(100)
    tc = TC.replace(max_epochs=1)
    result = fit((x, y), model=SMALL, train_config=tc)
    state, model, _ = load_checkpoint(save_checkpoint(tmp_path / "checkpoint.msgpack", result.state, SMALL, tc))
    assert model == SMALL and model.num_classes == 5
    assert jax.tree.all(jax.tree.map(jnp.array_equal, state.params, result.params))
