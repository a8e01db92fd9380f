"""The jaxvae side of the speed benchmark (set up inside a worker process of train_speed.py).

Each ``make_*`` function builds a job and returns a ``Job``: ``run()`` does one timed unit of work
(an epoch, an evaluation, a pass of matmuls) and returns only once the device is done. Variants use
jaxvae's public API as users do: the jitted ``TrainStep`` in a Python loop, ``train_epoch`` for the
whole epoch as one compiled call, ``eval_epoch`` for validation, ``jaxvae.evaluate`` internals for
the importance-sampled log-likelihood.
"""
from __future__ import annotations

import numpy as np

from train_speed import Job, matmul_flops

BURDA = dict(hidden=(200, 200), latent_dim=50, activation="tanh", likelihood="bernoulli")


def _setup(job):
    import jax

    # Full float32 matmuls on GPU (no TF32), as on the torch side; CPU dots are unaffected.
    jax.config.update("jax_default_matmul_precision", job["precision"])
    return jax


def _version(jax) -> str:
    return f"jax {jax.__version__} ({jax.default_backend()})"


def make_job(job: dict, data: dict) -> Job:
    kind = job["variant"]
    if kind == "matmul":
        return make_matmul(job)
    if kind in ("jax_epoch", "jax_loop"):
        return make_training(job, data)
    if kind == "jax_eval_is":
        return make_importance_sampled(job, data)
    raise ValueError(f"unknown jax variant {kind!r}")


def make_matmul(job: dict) -> Job:
    """XLA's matmul rate on the dots of one training step (or one forward pass) of the job's model:
    per layer the forward product, and for training also the weight and input gradients (none for
    the first layer's input). ``job['layers']`` are (fan_in, fan_out), ``job['rows']`` the batch."""
    jax = _setup(job)
    import jax.numpy as jnp

    layers, rows, backward = [tuple(layer) for layer in job["layers"]], job["rows"], job["backward"]
    rng = np.random.default_rng(0)
    xs = [jnp.asarray(rng.random((rows, i), dtype=np.float32)) for i, _ in layers]
    gs = [jnp.asarray(rng.random((rows, o), dtype=np.float32)) for _, o in layers]
    ws = [jnp.asarray(rng.random((i, o), dtype=np.float32)) for i, o in layers]
    flops = matmul_flops(layers, rows, backward)
    reps = max(1, int(job.get("matmul_gflop", 2.0) * 1e9 // flops))

    @jax.jit
    def dots(xs, gs, ws):
        # Each dot reads the loop carry and its whole output is consumed, so XLA can neither hoist
        # the dots out of the loop nor shrink them to the elements used.
        def body(_, c):
            total = c
            for k, (x, g, w) in enumerate(zip(xs, gs, ws)):
                xc, gc = x + c, g + c
                total = total + (xc @ w).sum()
                if backward:
                    total = total + (xc.T @ gc).sum()
                    if k:
                        total = total + (gc @ w.T).sum()
            return c + 1e-30 * total
        return jax.lax.fori_loop(0, reps, body, jnp.zeros((), jnp.float32))

    dots(xs, gs, ws).block_until_ready()
    return Job(lambda: dots(xs, gs, ws).block_until_ready(), flops=reps * flops,
               info={"version": _version(jax), "reps": reps})


def make_training(job: dict, data: dict) -> Job:
    """``jax_epoch``: ``train_epoch`` (one compiled call per epoch); ``jax_loop``: a Python loop over
    the jitted, donated step. The blog's model and Adam, or Burda's with ``job['model'] == 'burda'``."""
    jax = _setup(job)
    import jax.numpy as jnp

    from jaxvae.batching import steps_per_epoch
    from jaxvae.config import TrainConfig, VAEConfig
    from jaxvae.training import TrainStep, eval_epoch, init_fit_state, train_epoch

    bs = job["batch"]
    if job.get("model") == "burda":
        vc = VAEConfig(**BURDA)
        tc = TrainConfig(batch_size=bs, adam_eps=1e-4, lr_schedule="burda", binarize="dynamic", seed=job["seed"])
    else:
        vc = VAEConfig(hidden=(job["hidden"],))
        tc = TrainConfig(batch_size=bs, seed=job["seed"])  # the blog's: Adam, plateau lr, KL weight 1
    train_x = jax.device_put(jnp.asarray(data["train"]))
    n = train_x.shape[0]
    step = TrainStep.from_configs(vc, tc, steps_per_epoch(n, bs))
    fit_state = init_fit_state(step, tc)
    schedules = fit_state.schedules
    state = {"train": fit_state.train_state, "key": fit_state.key}

    def next_key():
        state["key"], key = jax.random.split(state["key"])
        return key

    if job["variant"] == "jax_epoch":
        def run_epoch():
            state["train"], metrics, _ = train_epoch(step, state["train"], train_x, next_key(), schedules, batch_size=bs)
            return float(np.mean(np.asarray(metrics["loss"])))  # waits for the epoch
    else:
        host_x = np.asarray(data["train"])
        rng = np.random.default_rng(job["seed"])
        jitted_step = jax.jit(step, donate_argnums=0)

        def run_epoch():
            order = rng.permutation(n)
            keys = list(jax.random.split(next_key(), -(-n // bs)))
            losses = []
            for i, start in enumerate(range(0, n, bs)):
                state["train"], metrics = jitted_step(state["train"], host_x[order[start:start + bs]], keys[i], schedules)
                losses.append(metrics["loss"])
            return float(jnp.mean(jnp.stack(losses)))  # one sync per epoch, not per step

    run_eval = None
    if job.get("eval"):
        val_x = jax.device_put(jnp.asarray(data["val"]))

        def run_eval():
            metrics = eval_epoch(state["train"].params, val_x, next_key(), vc, bs)
            return float(np.mean(np.asarray(metrics["loss"])))

    return Job(run_epoch, run_eval=run_eval, steps=steps_per_epoch(n, bs),
               info={"model": job.get("model", "blog"), "version": _version(jax)})


def make_importance_sampled(job: dict, data: dict) -> Job:
    """``jaxvae.evaluate``'s compiled estimator (k importance samples per image, chunked) on
    Burda's model at its initial weights: ``job['images']`` images, ``job['k']`` samples each."""
    jax = _setup(job)
    import jax.numpy as jnp

    from jaxvae.config import VAEConfig
    from jaxvae.evaluation import CHUNK_BUDGET, importance_sampled
    from jaxvae.models import init_params

    vc = VAEConfig(**BURDA)
    params = init_params(jax.random.PRNGKey(job["seed"]), vc)
    x = jnp.asarray((data["val"][: job["images"]] > 0.5).astype(np.float32))
    batch = min(job["eval_batch"], x.shape[0])
    chunk = min(job["k"], max(1, CHUNK_BUDGET // (batch * vc.input_dim)))  # evaluate()'s default
    keys = iter(jax.random.split(jax.random.PRNGKey(1), 10_000))

    def run():
        log_px, _ = importance_sampled(params, x, next(keys), vc, job["k"], chunk, batch)
        return float(np.mean(np.asarray(log_px)))

    run()  # compile
    return Job(run, info={"chunk": chunk, "rows_per_dot": chunk * batch, "batch": batch, "version": _version(jax)})
