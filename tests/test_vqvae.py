"""The VQ-VAE against pythae's ``VQVAE`` (0.1.2) on shared weights and inputs: each loss term, every
gradient and the EMA codebook's update; then what pythae does not compute (perplexity), the
straight-through gradient, and input it refuses by name."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvae import VAEConfig
from jaxvae.errors import InputError
from jaxvae.hyper import Hyper
from jaxvae.vqvae import VQVAEModel, nearest_codes, perplexity

torch = pytest.importorskip("torch")
pytest.importorskip("pythae")
from pythae.models import VQVAE, VQVAEConfig  # noqa: E402
from pythae.models.base.base_utils import ModelOutput  # noqa: E402
from pythae.models.nn import BaseDecoder, BaseEncoder  # noqa: E402
from pythae.models.vq_vae import vq_vae_utils  # noqa: E402
from tolerances import PARITY_RTOL, assert_close  # noqa: E402
from test_parity import assert_trees_close, full_precision_matmuls, precision  # noqa: E402,F401

CONFIG = VAEConfig(input_dim=64, hidden=(32,), latent_dim=8)
CODES = 16
MODELS = {"codebook": VQVAEModel.from_config(CONFIG, CODES),
          "ema": VQVAEModel.from_config(CONFIG, CODES, ema=True, decay=0.9)}
WEIGHTS = {"commitment": 0.3, "quantization": 0.7}  # not pythae's defaults: each weight is seen to act


def hyper_of(model: VQVAEModel) -> Hyper:
    return Hyper({h.name: WEIGHTS[h.name] for h in model.hyperparameters})


class TorchMLP(torch.nn.Module):
    """Linear layers with LeakyReLU(0.01) between them, and a sigmoid after the last where asked."""

    def __init__(self, widths, sigmoid: bool):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.sigmoid = sigmoid

    def forward(self, h):
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = torch.nn.functional.leaky_relu(h, 0.01)
        return torch.sigmoid(h) if self.sigmoid else h


class PythaeEncoder(BaseEncoder):
    """The MLP's z as a 1x1 feature map of D channels, [B, D, 1, 1]: pythae quantises each channel vector
    (position) as one D-vector. (A [B, D] embedding it would quantise coordinate by coordinate, as D
    vectors of size 1.)"""

    def __init__(self):
        super().__init__()
        self.mlp = TorchMLP((CONFIG.input_dim, *CONFIG.hidden, CONFIG.latent_dim), sigmoid=False)

    def forward(self, x):
        return ModelOutput(embedding=self.mlp(x)[:, :, None, None])


class PythaeDecoder(BaseDecoder):
    def __init__(self):
        super().__init__()
        self.mlp = TorchMLP((CONFIG.latent_dim, *CONFIG.decoder_widths, CONFIG.input_dim), sigmoid=True)

    def forward(self, z):
        return ModelOutput(reconstruction=self.mlp(z.flatten(1)))


def jax_layers(params) -> list:
    """The dense layers of the encoder then the decoder, in the order TorchMLP applies them."""
    enc, dec = params["encoder"], params["decoder"]
    return ([enc["trunk"][i] for i in sorted(enc["trunk"])] + [enc["embed"]]
            + [dec["hidden"][i] for i in sorted(dec["hidden"])] + [dec["output"]])


def torch_layers(twin: VQVAE) -> list:
    return [*twin.encoder.mlp.layers, *twin.decoder.mlp.layers]


class Float64Torch:
    """torch, but ``torch.float`` is float64: pythae's quantizer casts its one-hot codes to
    ``torch.float``, which would stop a float64 model at its first matmul; the cast is exact either way."""

    float = torch.float64

    def __getattr__(self, name):
        return getattr(torch, name)


def pythae_twin(model: VQVAEModel, params, state, tdtype) -> VQVAE:
    """pythae's VQVAE holding the same weights, codebook (and EMA buffers), in train mode."""
    config = VQVAEConfig(input_dim=(CONFIG.input_dim,), latent_dim=CONFIG.latent_dim, num_embeddings=CODES,
                         commitment_loss_factor=WEIGHTS["commitment"],
                         quantization_loss_factor=WEIGHTS["quantization"], use_ema=model.ema, decay=model.decay)
    twin = VQVAE(config, PythaeEncoder(), PythaeDecoder()).to(tdtype).train()
    with torch.no_grad():
        for layer, weights in zip(torch_layers(twin), jax_layers(params)):
            layer.weight.copy_(torch.tensor(np.asarray(weights["kernel"]).T))
            layer.bias.copy_(torch.tensor(np.asarray(weights["bias"])))
        if model.ema:
            for name in ("embeddings", "cluster_size", "ema_embed"):
                getattr(twin.quantizer, name).copy_(torch.tensor(np.asarray(state[name.replace("embeddings",
                                                                                               "codebook")])))
        else:
            twin.quantizer.embeddings.weight.copy_(torch.tensor(np.asarray(params["codebook"])))
    return twin


def twin_grads(model: VQVAEModel, twin: VQVAE, params) -> dict:
    """pythae's gradients in jaxvae's layout (kernels transposed)."""
    grads = jax.tree.map(lambda leaf: None, params)
    layers = [{"kernel": layer.weight.grad.numpy().T, "bias": layer.bias.grad.numpy()} for layer in torch_layers(twin)]
    flat = iter(layers)
    grads["encoder"] = {"trunk": {i: next(flat) for i in sorted(params["encoder"]["trunk"])}, "embed": next(flat)}
    grads["decoder"] = {"hidden": {i: next(flat) for i in sorted(params["decoder"]["hidden"])}, "output": next(flat)}
    if not model.ema:
        grads["codebook"] = twin.quantizer.embeddings.weight.grad.numpy()
    return grads


def spread_codebook(model: VQVAEModel, params, state, x, dtype):
    """The codes moved near some of the batch's embeddings, so that the batch uses most of them."""
    z = np.asarray(model.encode(params, x))
    codes = jnp.asarray(z[:CODES] + 0.02 * np.random.default_rng(5).standard_normal((CODES, z.shape[1])), dtype)
    if model.ema:
        return params, {**state, "codebook": codes}
    return {**params, "codebook": codes}, state


def used_codes_perplexity(codes) -> float:
    counts = np.bincount(np.asarray(codes).reshape(-1), minlength=CODES)
    p = counts[counts > 0] / counts.sum()
    return float(np.exp(-np.sum(p * np.log(p))))


@functools.partial(jax.jit, static_argnums=0)
def loss_and_grads(model: VQVAEModel, params, state, x, hyper):
    """((loss, (metrics, new state)), gradients) of ``model.loss``: one compiled program."""
    def loss(p):
        value, metrics, new_state = model.loss(p, state, x, jax.random.PRNGKey(1), hyper)
        return value, (metrics, new_state)

    return jax.value_and_grad(loss, has_aux=True)(params)


@pytest.mark.parametrize("dtype", ("float32", "float64"))
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_loss_terms_gradients_and_ema_state_match_pythae(kind, dtype, monkeypatch):
    model, batches = MODELS[kind], np.random.default_rng(3).random((2, 48, CONFIG.input_dim))
    if dtype == "float64":
        monkeypatch.setattr(vq_vae_utils, "torch", Float64Torch())
    with precision(dtype) as (tdtype, jdtype):
        params, state = model.init(jax.random.PRNGKey(0), jdtype)
        params, state = spread_codebook(model, params, state, jnp.asarray(batches[0], jdtype), jdtype)
        twin = pythae_twin(model, params, state, tdtype)
        loss_tol, hyper = PARITY_RTOL["loss"][dtype], hyper_of(model)
        for step, x in enumerate(batches):  # two steps: the EMA's second starts from counts it moved
            twin.zero_grad()
            tx = torch.tensor(x, dtype=tdtype)
            codebook = (twin.quantizer.embeddings if model.ema else twin.quantizer.embeddings.weight).detach().clone()
            out = twin({"data": tx})  # moves an EMA codebook
            out.loss.backward()

            (j_loss, (metrics, new_state)), grads = loss_and_grads(model, params, state, jnp.asarray(x, jdtype), hyper)
            assert j_loss.dtype == jdtype
            np.testing.assert_array_equal(model.quantize(params, state, model.encode(params, jnp.asarray(x, jdtype)))[1],
                                          out.quantized_indices.reshape(-1).numpy())
            assert step > 0 or used_codes_perplexity(out.quantized_indices) > 4  # the batch uses many codes
            with torch.no_grad():  # mean squared distance between the embeddings and their codes
                z = twin.encoder(tx).embedding.flatten(1)
                distance = torch.nn.functional.mse_loss(codebook[out.quantized_indices.reshape(-1)], z).item()

            assert_close(f"loss {step}", j_loss, out.loss.item(), loss_tol)
            assert_close(f"recon {step}", metrics["recon"], out.recon_loss.item(), loss_tol)
            assert_close(f"vq_loss {step}", metrics["vq_loss"], out.vq_loss.item(), loss_tol)
            assert_close(f"commitment {step}", metrics["commitment"], WEIGHTS["commitment"] * distance, loss_tol)
            if not model.ema:
                assert_close(f"codebook {step}", metrics["codebook"], WEIGHTS["quantization"] * distance, loss_tol)
            assert_close(f"perplexity {step}", metrics["perplexity"], used_codes_perplexity(out.quantized_indices),
                         loss_tol)
            if step == 0:
                assert_trees_close("grad", grads, twin_grads(model, twin, params), PARITY_RTOL["grad"][dtype])
            if model.ema:
                quantizer = twin.quantizer
                for name, theirs in (("codebook", quantizer.embeddings), ("cluster_size", quantizer.cluster_size),
                                     ("ema_embed", quantizer.ema_embed)):
                    assert_close(f"state {name} {step}", new_state[name], theirs.detach().numpy(),
                                 PARITY_RTOL["ema_state"][dtype])
                state = new_state
            else:
                assert new_state == ()
            if not model.ema:
                break  # the trained codebook's second step is the first's again


def test_perplexity_of_hand_made_codes():
    assert float(perplexity(jnp.array([3, 3, 3, 3]), 8)) == pytest.approx(1.0)
    assert float(perplexity(jnp.array([0, 0, 5, 5]), 8)) == pytest.approx(2.0)
    assert float(perplexity(jnp.arange(8).reshape(2, 4), 8)) == pytest.approx(8.0)
    # frequencies 3/4 and 1/4: exp(-(3/4 log 3/4 + 1/4 log 1/4)) = 4 / 3^(3/4)
    assert float(perplexity(jnp.array([1, 1, 1, 6]), 8)) == pytest.approx(4 / 3**0.75, rel=1e-6)


def test_nearest_codes_of_every_position():
    codebook = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    z = codebook[jnp.array([[2, 0, 3], [1, 1, 0]])] + 0.1  # [B=2, positions=3, D=2], each near one code
    np.testing.assert_array_equal(nearest_codes(z, codebook), [[2, 0, 3], [1, 1, 0]])
    # equidistant from codes 0 and 1: the lower index
    assert int(nearest_codes(jnp.array([[0.5, 0.0]]), codebook)[0]) == 0


def test_the_straight_through_gradient_reaches_the_encoder():
    model = MODELS["codebook"]
    x = jnp.asarray(np.random.default_rng(4).random((48, CONFIG.input_dim)), jnp.float32)
    params, state = model.init(jax.random.PRNGKey(2))
    grads = loss_and_grads(model, params, state, x, Hyper(commitment=0.0, quantization=0.0))[1]
    # the encoder's gradient is the decoder's gradient at the codes, pulled back through the encoder
    z, pullback = jax.vjp(lambda enc: model.encode({**params, "encoder": enc}, x), params["encoder"])
    quantized = model.quantize(params, state, z)[0]
    at_codes = jax.grad(lambda q: jnp.mean(jnp.sum((model.decode(params, q) - x) ** 2, axis=-1)))(quantized)
    (expected,) = pullback(at_codes)
    assert jnp.linalg.norm(jnp.concatenate([g.ravel() for g in jax.tree.leaves(grads["encoder"])])) > 0
    assert_trees_close("encoder grad", grads["encoder"], expected, 1e-6)
    # the reconstruction alone does not move the codebook: only the codebook loss does
    assert not np.any(grads["codebook"])
    assert np.any(loss_and_grads(model, params, state, x, Hyper(commitment=0.0, quantization=1.0))[1]["codebook"])


def test_bad_input_and_settings_are_refused_by_name():
    model = MODELS["codebook"]
    x = np.zeros((10, CONFIG.input_dim), np.float32)
    with pytest.raises(InputError, match="train_x has 63 features but the model expects input_dim=64"):
        model.check_shapes("train_x", x[:, :63])
    with pytest.raises(InputError, match=r"val_x must be a 2-D array \(samples, features\), got shape \(10, 8, 8\)"):
        model.check_shapes("val_x", x.reshape(10, 8, 8))
    model.check_shapes("train_x", (x, np.zeros(10)))  # labels beside x are ignored
    with pytest.raises(InputError, match="num_codes must be a positive integer, got 0"):
        VQVAEModel.from_config(CONFIG, 0)
    with pytest.raises(InputError, match=r"decay must be a number in \[0, 1\], got 1.5"):
        VQVAEModel.from_config(CONFIG, ema=True, decay=1.5)
    with pytest.raises(InputError, match="architecture='conv': the VQ-VAE is built on the MLP"):
        VQVAEModel.from_config(CONFIG.replace(architecture="conv"))
    with pytest.raises(InputError, match="likelihood='bernoulli': the VQ-VAE's reconstruction term is the squared"):
        VQVAEModel.from_config(CONFIG.replace(likelihood="bernoulli"))
    with pytest.raises(InputError, match="objective='iwae': the VQ-VAE has no importance-weighted bound"):
        VQVAEModel.from_config(CONFIG.replace(objective="iwae", iwae_k=2))


def test_hyperparameters_records_and_equal_models():
    assert [h.name for h in MODELS["codebook"].hyperparameters] == ["commitment", "quantization"]
    assert [h.name for h in MODELS["ema"].hyperparameters] == ["commitment"]  # the EMA codebook has no loss
    assert [h.default for h in MODELS["codebook"].hyperparameters] == [0.25, 1.0]  # pythae's defaults
    for model in MODELS.values():
        assert VQVAEModel.from_record(model.describe()) == model
    assert VQVAEModel.from_config(CONFIG, CODES) == MODELS["codebook"]  # equal models share compiled code


class SpatialEncoder:
    """x [B, 64] -> z [B, 4, 3]: four positions, each quantised on its own."""

    def __new__(cls, *, rngs):
        from flax import nnx
        return nnx.Sequential(nnx.Linear(64, 12, rngs=rngs), lambda h: h.reshape(h.shape[0], 4, 3))


class SpatialDecoder:
    """z [B, 4, 3] -> x_hat [B, 64]."""

    def __new__(cls, *, rngs):
        from flax import nnx
        return nnx.Sequential(lambda z: z.reshape(z.shape[0], 12), nnx.Linear(12, 64, rngs=rngs))


def test_your_own_modules_quantise_every_position():
    model = VQVAEModel.from_modules(SpatialEncoder, SpatialDecoder, embedding_dim=3, num_codes=5, input_dim=64)
    params, state = model.init(jax.random.PRNGKey(0))
    x = jnp.asarray(np.random.default_rng(0).random((6, 64)), jnp.float32)

    @jax.jit
    def run(params, state, x):
        loss, metrics, _ = model.loss(params, state, x, None, Hyper(commitment=0.25, quantization=1.0))
        return model.quantize(params, state, model.encode(params, x)), loss, metrics, model.reconstruct(params, state, x)

    (quantized, codes), loss, metrics, reconstructions = run(params, state, x)
    assert quantized.shape == (6, 4, 3) and codes.shape == (6, 4)
    assert math.isfinite(float(loss)) and reconstructions.shape == (6, 64)
    assert float(metrics["perplexity"]) == pytest.approx(float(perplexity(codes, 5)))
    assert VQVAEModel.from_record(model.describe()) == model


def test_fit_trains_the_ema_codebook_and_its_checkpoint_loads(tmp_path):
    from jaxvae import TrainConfig, fit
    from jaxvae.checkpoint import load_checkpoint, save_checkpoint

    model = MODELS["ema"]
    rng = np.random.default_rng(6)
    prototypes = rng.random((4, CONFIG.input_dim)) ** 3  # four kinds of image, noisy
    x = np.clip(prototypes[rng.integers(0, 4, 250)] + 0.05 * rng.standard_normal((250, CONFIG.input_dim)), 0, 1)
    x = x.astype(np.float32)
    train_config = TrainConfig(max_epochs=2, batch_size=25, lr=1e-2, lr_schedule="constant", hyper={"commitment": 0.5})
    result = fit(x[:200], x[200:], model=model, train_config=train_config)
    assert float(result.state.train_state.hyper["commitment"]) == 0.5
    last = result.history[-1]
    assert {"val_recon", "val_commitment", "val_vq_loss", "val_perplexity"} <= set(last)
    assert last["train_loss"] < result.history[0]["train_loss"]
    start = model.init(jax.random.split(jax.random.PRNGKey(train_config.seed))[0])[1]
    assert not np.allclose(result.state.train_state.model_state["codebook"], start["codebook"])  # the EMA moved
    loaded, loaded_model, loaded_config = load_checkpoint(
        save_checkpoint(tmp_path / "checkpoint.msgpack", result.state, model, train_config))
    assert loaded_model == model and loaded_config.hyper == {"commitment": 0.5}
    for name in ("params", "model_state"):
        ours, theirs = getattr(loaded.train_state, name), getattr(result.state.train_state, name)
        assert jax.tree.structure(ours) == jax.tree.structure(theirs)
        assert jax.tree.all(jax.tree.map(jnp.array_equal, ours, theirs))
    # the EMA codebook has no codebook loss: a weight for one is refused by name
    with pytest.raises(InputError, match=r"hyper\['quantization'\]: VQVAEModel declares no such hyperparameter"):
        fit(x, model=model, train_config=train_config.replace(hyper={"quantization": 2.0}))
