"""Where the time of Burda's small-batch step goes: the shipped epoch against variants that undo one
change or remove one part, compiled side by side in one process and timed in interleaved rounds.

    python benchmarks/burda_breakdown.py [--data-dir MNIST_DIR] [--rounds 7] [--samples 60000]

Burda et al.'s model (784-200-200-50 tanh, Bernoulli decoder, dynamic binarisation, Adam eps 1e-4)
at batch 20. Each variant is ``jaxvae.train_epoch`` traced with one thing changed:

* ``jax.nn.softplus``: the Bernoulli likelihood's softplus as ``jax.nn.softplus`` (before
  ``jaxvae.models.softplus``);
* ``SGD direction``: ``optax.identity()`` instead of Adam (so the difference is Adam's cost);
* ``flat Adam``: the same Adam over one vector of all parameters (``optax.flatten``): the same
  numbers element by element, in a few large kernels instead of a few per layer;
* ``no binarisation``: the batch used as is (the cost of the Bernoulli draw).

Reported per variant: median ms per step over the rounds, and the per-round ratio to the shipped
epoch (median, min-max). Results go to ``benchmarks/results/burda_breakdown.{json,md}``.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxvae import likelihoods, training
from jaxvae.batching import steps_per_epoch
from jaxvae.config import TrainConfig, VAEConfig
from jaxvae.training import TrainStep, init_fit_state

BENCH_DIR = Path(__file__).resolve().parent
BURDA = VAEConfig(hidden=(200, 200), latent_dim=50, activation="tanh", likelihood="bernoulli")
BATCH = 20


@contextlib.contextmanager
def patched(module, name, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def variants(tc: TrainConfig, n: int):
    """name -> (TrainStep, context manager active while tracing)."""
    shipped = TrainStep.from_configs(BURDA, tc, steps_per_epoch(n, BATCH))
    old_softplus = lambda: patched(likelihoods, "softplus", jax.nn.softplus)  # noqa: E731
    return {
        "jaxvae (shipped)": (shipped, contextlib.nullcontext),
        "jax.nn.softplus": (shipped, old_softplus),
        "SGD direction (no Adam)": (TrainStep(BURDA, optax.identity(), shipped.lr, shipped.kl_weight,
                                              shipped.steps_per_epoch, True), contextlib.nullcontext),
        "flat Adam (optax.flatten)": (TrainStep(BURDA, optax.flatten(shipped.optimizer), shipped.lr, shipped.kl_weight,
                                                shipped.steps_per_epoch, True), contextlib.nullcontext),
        "no binarisation": (TrainStep(BURDA, shipped.optimizer, shipped.lr, shipped.kl_weight,
                                      shipped.steps_per_epoch, False), contextlib.nullcontext),
    }


def compile_epoch(step: TrainStep, context, state, data, key, schedules):
    """train_epoch's program for ``step``, traced while ``context`` is active."""
    def fresh(train_step, state, data, key, schedules, *, batch_size):
        # a new function object per variant: JAX caches traces per function, so reusing train_epoch's
        # would hand every variant the first one's program, patched or not
        return training._train_epoch(train_step, state, data, key, schedules, batch_size, False, None, None)

    epoch = jax.jit(fresh, static_argnames=("train_step", "batch_size"), donate_argnames="state")
    with context():
        return epoch.lower(step, state, data, key, schedules, batch_size=BATCH).compile()


def load_data(data_dir: str | None, samples: int) -> tuple[np.ndarray, str]:
    if data_dir:
        from jaxvae.data import load_mnist, to_unit_float

        images = load_mnist(data_dir, "train", download=False)[0][:samples]
        return to_unit_float(images.reshape(len(images), -1)), f"MNIST from {data_dir}"
    rng = np.random.default_rng(0)
    x = rng.random((samples, 784), dtype=np.float32) * (rng.random((samples, 784)) < 0.2)
    return x.astype(np.float32), "synthetic MNIST-shaped"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--samples", type=int, default=60000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--variants", default=None, help="comma-separated names (default: all)")
    p.add_argument("--out", default=str(BENCH_DIR / "results" / "burda_breakdown"))
    args = p.parse_args(argv)

    x, data_desc = load_data(args.data_dir, args.samples)
    tc = TrainConfig(batch_size=BATCH, adam_eps=1e-4, lr_schedule="burda", binarize="dynamic")
    data = jax.device_put(jnp.asarray(x))
    n_steps = steps_per_epoch(len(x), BATCH)
    runs = {}
    chosen = variants(tc, len(x))
    if args.variants:
        chosen = {name: chosen[name] for name in ["jaxvae (shipped)", *args.variants.split(",")] if name in chosen}
    for name, (step, context) in chosen.items():
        fit_state = init_fit_state(step, tc)
        compiled = compile_epoch(step, context, fit_state.train_state, data, fit_state.key, fit_state.schedules)
        runs[name] = {"compiled": compiled, "state": fit_state.train_state, "schedules": fit_state.schedules,
                      "key": fit_state.key, "seconds": [],
                      # each variant's own program: a patch that did not reach the trace would repeat another's
                      "program_sha256": hashlib.sha256(compiled.as_text().encode()).hexdigest()}
        run_once(runs[name], data)  # warm-up
        print(f"compiled {name}", flush=True)

    names = list(runs)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:  # the order rotates every round
            runs[name]["seconds"].append(run_once(runs[name], data))
        print(f"round {r + 1}/{args.rounds}", flush=True)

    shipped = runs["jaxvae (shipped)"]["seconds"]
    rows = []
    for name in names:
        s = runs[name]["seconds"]
        ratios = [a / b for a, b in zip(s, shipped)]
        rows.append({"variant": name, "ms_per_step": 1e3 * statistics.median(s) / n_steps,
                     "ms_per_step_min": 1e3 * min(s) / n_steps, "ratio_median": statistics.median(ratios),
                     "ratio_min": min(ratios), "ratio_max": max(ratios), "seconds": s,
                     "program_sha256": runs[name]["program_sha256"]})
    report = {"data": data_desc, "samples": len(x), "steps_per_epoch": n_steps, "rounds": args.rounds,
              "machine": _machine(), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(report, indent=1))
    Path(args.out + ".md").write_text(markdown(report))
    print(markdown(report))
    return report


def run_once(run: dict, data) -> float:
    run["key"], key = jax.random.split(run["key"])
    start = time.perf_counter()
    run["state"], metrics, _ = run["compiled"](run["state"], data, key, run["schedules"])
    jax.block_until_ready(metrics)
    return time.perf_counter() - start


def _machine() -> str:
    import os
    import platform

    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name}, {os.cpu_count()} cores; jax {jax.__version__} ({jax.default_backend()})"


def markdown(report: dict) -> str:
    lines = [f"# Burda's step at batch {BATCH}: where the time goes ({report['machine']})", "",
             f"{report['data']}, {report['samples']} samples ({report['steps_per_epoch']} steps per epoch); "
             f"every variant compiled in one process, then {report['rounds']} rounds of one epoch each, the order "
             "rotated every round.", "",
             "| variant | ms/step (median) | min | x shipped, per round: median (min-max) |", "|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['variant']} | {r['ms_per_step']:.3f} | {r['ms_per_step_min']:.3f} | "
                     f"{r['ratio_median']:.3f} ({r['ratio_min']:.3f}-{r['ratio_max']:.3f}) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
