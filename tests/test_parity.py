"""jaxvae against torchref (the blog's PyTorch code) on shared weights and shared noise.

Weights start from torchref's own initialisation and are copied into jaxvae with ``from_torch``;
the reparameterisation noise is drawn once and fed to both. Tolerances live in tolerances.py.
The torch side runs on ``JAXVAE_TEST_DEVICE`` (default "cpu"; benchmarks/gpu_check.py sets "cuda"),
jaxvae on JAX's default device.
"""
import contextlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torchref  # noqa: E402
from tolerances import PARITY_RTOL, assert_close  # noqa: E402

from jaxvae import TrainConfig, TrainStep, VAEConfig, eval_epoch, sample_eps, train_epoch, vae_loss  # noqa: E402
from jaxvae.interop import from_torch  # noqa: E402
from jaxvae.losses import unit_gauss_kl  # noqa: E402
from jaxvae.schedules import LinearWarmup  # noqa: E402
from jaxvae.training import epoch_plan  # noqa: E402

DTYPES = ("float32", "float64")
VC, TC = VAEConfig(), TrainConfig()
DEVICE = os.environ.get("JAXVAE_TEST_DEVICE", "cpu")


def on_device(array, dtype=None):
    """``array`` as a torch tensor on the torch side's device."""
    return torch.tensor(array, dtype=dtype, device=DEVICE)


@pytest.fixture(autouse=True, scope="module")
def full_precision_matmuls():
    # On GPUs both frameworks default to reduced-precision float32 matmuls (TF32); parity needs full.
    allow_tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    with jax.default_matmul_precision("highest"):
        yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = allow_tf32


@contextlib.contextmanager
def precision(dtype: str):
    """float64 needs jax's x64 mode; float32 runs with it off, as users do."""
    with jax.enable_x64(dtype == "float64"):
        yield getattr(torch, dtype), getattr(jnp, dtype)


def blog_model(seed: int, tdtype):
    torch.manual_seed(seed)
    encoder, sampler, decoder = torchref.build_blog_model(VC.input_dim, VC.latent_dim)
    return encoder.to(DEVICE, tdtype), sampler, decoder.to(DEVICE, tdtype)


def torch_loss(encoder, sampler, decoder, x, eps):
    """The blog's forward pass and loss, as train_one_epoch computes them."""
    gauss_params = encoder(x)
    preds = decoder(sampler(gauss_params, eps))
    recon = torchref.GaussSimilarityLoss(TC.recon_sigma)(preds, x)
    kl = torchref.UnitGaussKullbackLeiblerDivergenceLoss()(gauss_params)
    return recon + TC.kl_weight * kl, recon, kl


def batches(digit_like, n=64):
    rng = np.random.default_rng(7)
    return {"uniform": rng.random((n, VC.input_dim)), "digit_like": digit_like(n, seed=3)}


def torch_grads(encoder, decoder) -> dict:
    """Gradients in jaxvae's layout (kernels transposed): the gradients as state dicts, through from_torch."""
    grads = [{name: p.grad for name, p in module.named_parameters()} for module in (encoder, decoder)]
    return jax.tree.map(np.asarray, from_torch(*grads))


def torch_params(encoder, decoder) -> dict:
    return jax.tree.map(np.asarray, from_torch(encoder, decoder))


def assert_trees_close(what: str, got: dict, want: dict, rtol: float) -> None:
    """Every leaf of ``got`` against the leaf at the same path of ``want``, named in a failure."""
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
        assert_close(f"{what} {jax.tree_util.keystr(path)}", g, w, rtol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("data", ["uniform", "digit_like"])
def test_loss_recon_kl_and_gradients_match(dtype, data, digit_like):
    with precision(dtype) as (tdtype, jdtype):
        encoder, sampler, decoder = blog_model(0, tdtype)
        params = from_torch(encoder, decoder, VC)
        x = batches(digit_like)[data]
        eps = np.random.default_rng(1).standard_normal((x.shape[0], VC.latent_dim))

        t_loss, t_recon, t_kl = torch_loss(encoder, sampler, decoder, on_device(x, tdtype),
                                           on_device(eps, tdtype))
        t_loss.backward()
        (j_loss, aux), j_grads = jax.value_and_grad(vae_loss, has_aux=True)(
            params, jnp.asarray(x, jdtype), jnp.asarray(eps, jdtype), VC)
        assert j_loss.dtype == jdtype

        rtol = PARITY_RTOL["loss"][dtype]
        assert_close("loss", j_loss, t_loss.item(), rtol)
        assert_close("recon", aux["recon"], t_recon.item(), rtol)
        assert_close("kl", aux["kl"], t_kl.item(), rtol)
        assert_trees_close("grad", j_grads, torch_grads(encoder, decoder), PARITY_RTOL["grad"][dtype])


def adam_steps_against_torch(dtype, digit_like, step: TrainStep, seed: int, n_steps: int, torch_kl_rate):
    """``n_steps`` of jaxvae's train step and of torch's Adam on the blog's loss, from the same weights on
    the same batches and noise; torch's KL weight at step i is ``torch_kl_rate(i)``. The parameters after."""
    with precision(dtype) as (tdtype, jdtype):
        encoder, sampler, decoder = blog_model(seed, tdtype)
        state = step.init(from_torch(encoder, decoder, VC))
        schedules = step.init_schedules()
        jitted = jax.jit(step.with_noise, donate_argnums=0)
        optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=TC.lr)
        pool = digit_like(256, seed=5)
        rng = np.random.default_rng(2)
        for i in range(n_steps):
            x = pool[rng.choice(len(pool), 32, replace=False)]
            eps = rng.standard_normal((32, VC.latent_dim))
            optimizer.zero_grad()
            gauss_params = encoder(on_device(x, tdtype))
            preds = decoder(sampler(gauss_params, on_device(eps, tdtype)))
            loss = (torchref.GaussSimilarityLoss(TC.recon_sigma)(preds, on_device(x, tdtype))
                    + torch_kl_rate(i) * torchref.UnitGaussKullbackLeiblerDivergenceLoss()(gauss_params))
            loss.backward()
            optimizer.step()
            state, _ = jitted(state, jnp.asarray(x, jdtype), jnp.asarray(eps, jdtype), schedules)
        return jax.tree.map(np.asarray, state.params), torch_params(encoder, decoder)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fifty_adam_steps_give_the_same_parameters(dtype, digit_like):
    ours, theirs = adam_steps_against_torch(dtype, digit_like, TrainStep.from_configs(VC, TC), 1, 50, lambda i: 1.0)
    assert_trees_close("param", ours, theirs, PARITY_RTOL["adam_50"][dtype])


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_kl_warmup_trains_as_torch_does_with_the_blogs_distrib_loss_rate_per_step(dtype, digit_like):
    """jaxvae's LinearWarmup schedule is the blog's distrib_loss_rate set to i / 40 at step i."""
    step = TrainStep(VC, lr=1.0, kl_weight=LinearWarmup(epochs=4), steps_per_epoch=10)  # factors of TC.lr and 1
    ours, theirs = adam_steps_against_torch(dtype, digit_like, step, 3, 50, lambda i: min(1.0, i / 40))
    assert_trees_close("param (KL warm-up)", ours, theirs, PARITY_RTOL["adam_50"][dtype])


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
def test_blog_epoch_loops_match_the_compiled_epochs(dtype, digit_like):
    """train_one_epoch / validate_one_epoch on jaxvae's own batches and noise (replayed from the
    epoch plan) average to what jaxvae's compiled epochs report; 300 rows = 2 full batches + 44."""
    with precision(dtype) as (tdtype, jdtype):
        encoder, sampler, decoder = blog_model(2, tdtype)
        data = jnp.asarray(digit_like(300, seed=11), jdtype)
        step = TrainStep.from_configs(VC, TC, -(-data.shape[0] // TC.batch_size))
        state = step.init(from_torch(encoder, decoder, VC))

        def replay(key):
            plan, step_keys = epoch_plan(key, data.shape[0], TC.batch_size, TC.drop_last)
            rows = [*plan.full, plan.tail]
            loader = [(on_device(np.asarray(data[r])),) * 2 for r in rows]
            noise = [on_device(np.asarray(sample_eps(k, len(r), VC, jdtype))) for k, r in zip(step_keys, rows)]
            return loader, noise

        losses = dict(data_loss_func=torchref.GaussSimilarityLoss(TC.recon_sigma), distrib_loss_rate=TC.kl_weight,
                      distrib_loss_func=torchref.UnitGaussKullbackLeiblerDivergenceLoss())
        optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=TC.lr)
        train_key, val_key = jax.random.split(jax.random.PRNGKey(4))

        loader, noise = replay(train_key)
        t_train = torchref.train_one_epoch(encoder, sampler, decoder, loader, optimizer=optimizer, noise=noise,
                                           verbose=False, **losses)
        state, metrics, finite = train_epoch(step, state, data, train_key, step.init_schedules(),
                                             batch_size=TC.batch_size)
        assert bool(finite) and metrics["loss"].shape == (3,)
        assert_close("train epoch mean", np.mean(metrics["loss"]), t_train, PARITY_RTOL["epoch_mean"][dtype])

        loader, noise = replay(val_key)
        t_val = torchref.validate_one_epoch(encoder, sampler, decoder, loader, noise=noise, verbose=False, **losses)
        val = eval_epoch(state.params, data, val_key, VC, TC.batch_size)
        assert_close("validation epoch mean", np.mean(val["loss"]), t_val, PARITY_RTOL["epoch_mean"][dtype])


def test_stable_kl_agrees_with_the_blogs_in_range_and_stays_finite_outside():
    mu = np.linspace(-3, 3, 7, dtype=np.float32)
    # Where sigma = exp(log_sigma) is a normal float32, the blog's log(sigma) is exact: both agree.
    for log_sigma in np.linspace(-87, 44, 263, dtype=np.float32):
        ls = np.full((7, 1), log_sigma, np.float32)
        blog = torchref.unitgauss_kullback_leibler_divergence((on_device(mu[:, None]), torch.exp(on_device(ls))))
        ours = unit_gauss_kl(jnp.asarray(mu[:, None]), jnp.asarray(ls))
        assert_close(f"KL at log_sigma={log_sigma}", ours, blog.cpu().numpy(), PARITY_RTOL["loss"]["float32"])
    # Below it exp underflows: the blog's KL is inf (log 0); ours is finite, and so is its gradient.
    ls = np.array([[-104.0], [-500.0], [-1e4]], np.float32)
    blog = torchref.unitgauss_kullback_leibler_divergence((torch.zeros(3, 1, device=DEVICE), torch.exp(on_device(ls))))
    assert not torch.isfinite(blog).any()
    ours = unit_gauss_kl(jnp.zeros((3, 1)), jnp.asarray(ls))
    np.testing.assert_allclose(ours, 0.5 * (-1 - 2 * ls[:, 0]), rtol=1e-6)
    grad = jax.grad(lambda v: unit_gauss_kl(jnp.zeros((3, 1)), v).sum())(jnp.asarray(ls))
    assert bool(jnp.all(jnp.isfinite(grad)))
    # Above it the blog's inf - inf is NaN; ours is +inf, the correctly rounded value of a KL > 3e38.
    ls = np.array([[90.0]], np.float32)
    blog = torchref.unitgauss_kullback_leibler_divergence((torch.zeros(1, 1, device=DEVICE), torch.exp(on_device(ls))))
    assert torch.isnan(blog).all()
    assert float(unit_gauss_kl(jnp.zeros((1, 1)), jnp.asarray(ls))[0]) == np.inf
