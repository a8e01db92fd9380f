"""The jaxvae side of the training benchmark (run inside a worker process of train_speed.py).

Variants use jaxvae's public API exactly as users do: the jitted ``TrainStep`` in a Python loop, or
``train_epoch`` for the whole epoch as one compiled call; ``eval_epoch`` for the validation pass.
"""
from __future__ import annotations

import time

import numpy as np


def _setup(job):
    import jax

    # Full float32 matmuls on GPU (no TF32), as on the torch side; CPU dots are unaffected.
    jax.config.update("jax_default_matmul_precision", job["precision"])
    return jax


def matmul_rate(job) -> dict:
    """GFLOP/s of XLA on the five large matmuls of a training step (batch 128, hidden 400):
    the forward dots of both big layers, their weight gradients and the decoder's input gradient."""
    jax = _setup(job)
    import jax.numpy as jnp

    b, d, h = job["batch"], 784, job["hidden"]
    rng = np.random.default_rng(0)
    x, g_h = (jnp.asarray(rng.random(s, dtype=np.float32)) for s in ((b, d), (b, h)))
    w1, w2 = jnp.asarray(rng.random((d, h), dtype=np.float32)), jnp.asarray(rng.random((h, d), dtype=np.float32))
    g_out = jnp.asarray(rng.random((b, d), dtype=np.float32))
    reps = 5 if job["quick"] else 50

    @jax.jit
    def five(x, g_h, g_out, w1, w2):
        # Each dot reads the loop carry and its whole output is consumed, so XLA can neither hoist
        # the dots out of the loop nor shrink them to the elements used.
        def body(_, c):
            xc, gc = x + c, g_h + c
            hid = xc @ w1                 # encoder forward     [b,d]x[d,h]
            out = gc @ w2                 # decoder forward     [b,h]x[h,d]
            dw1 = xc.T @ gc               # encoder weight grad [d,b]x[b,h]
            dw2 = gc.T @ g_out            # decoder weight grad [h,b]x[b,d]
            dh = (g_out + c) @ w2.T       # decoder input grad  [b,d]x[d,h]
            total = hid.sum() + out.sum() + dw1.sum() + dw2.sum() + dh.sum()
            return c + 1e-30 * total
        return jax.lax.fori_loop(0, reps, body, jnp.zeros((), jnp.float32))

    five(x, g_h, g_out, w1, w2).block_until_ready()
    best, best_cpu = float("inf"), float("inf")
    for _ in range(3 if job["quick"] else 7):
        start, cpu_start = time.perf_counter(), time.process_time()
        five(x, g_h, g_out, w1, w2).block_until_ready()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - cpu_start)
    flops = reps * 5 * 2 * b * d * h
    return {"gflops": flops / best / 1e9, "gflops_per_cpu_s": flops / best_cpu / 1e9, "version": f"jax {jax.__version__} ({jax.default_backend()})"}


def run_job(job, data) -> dict:
    if job["variant"] == "matmul":
        return matmul_rate(job)
    jax = _setup(job)
    import jax.numpy as jnp

    from jaxvae.config import TrainConfig, VAEConfig
    from jaxvae.training import TrainStep, eval_epoch, init_fit_state, train_epoch
    from train_speed import time_epochs

    vc = VAEConfig(hidden=(job["hidden"],))
    tc = TrainConfig(batch_size=job["batch"], seed=job["seed"])
    train_x = jax.device_put(jnp.asarray(data["train"]))
    n, bs = train_x.shape[0], job["batch"]
    step = TrainStep.from_configs(vc, tc)  # the blog's: Adam, plateau lr, KL weight 1
    fit_state = init_fit_state(step, tc.seed)
    schedules = fit_state.schedules
    state = {"train": fit_state.train_state, "key": fit_state.key}
    last = {}

    def next_key():
        state["key"], key = jax.random.split(state["key"])
        return key

    if job["variant"] == "jax_epoch":
        def run_epoch():
            state["train"], metrics, finite = train_epoch(step, state["train"], train_x, next_key(), schedules,
                                                          batch_size=bs)
            last["loss"] = float(np.mean(np.asarray(metrics["loss"])))  # waits for the epoch
    elif job["variant"] == "jax_loop":
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
            last["loss"] = float(jnp.mean(jnp.stack(losses)))  # one sync per epoch, not per step
    else:
        raise ValueError(f"unknown jax variant {job['variant']!r}")

    result = time_epochs(run_epoch, job["warmup"], job["epochs"])
    result["final_loss"] = last["loss"]
    if job.get("eval") and job["variant"] == "jax_epoch":
        val_x = jax.device_put(jnp.asarray(data["val"]))

        def run_eval():
            metrics = eval_epoch(state["train"].params, val_x, next_key(), vc, bs)
            last["val_loss"] = float(np.mean(np.asarray(metrics["loss"])))

        ev = time_epochs(run_eval, 1, job["epochs"])
        result.update(eval_median_s=ev["median_s"], eval_compile_s=ev["compile_s"], val_loss=last["val_loss"])
    return result
