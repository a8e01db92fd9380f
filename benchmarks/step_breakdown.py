"""Where a training step's time goes, and how the compiled epoch's constants were chosen: variants of
the same epoch compiled side by side in one process and timed in interleaved rounds.

    python benchmarks/step_breakdown.py --data-dir MNIST_DIR [--models burda,blog] [--rounds 7]
    python benchmarks/step_breakdown.py --data-dir MNIST_DIR --grid 16x1,32x1,32x3 --models burda

The models: ``burda`` (784-200-200-50 tanh, Bernoulli, dynamic binarisation, batch 20, Adam eps
1e-4), ``blog`` (the blog's 784-400-2 at batch 128) and ``conv`` (the conv model at batch 128, on
``--conv-samples`` images). Per model, each variant is ``jaxvae.train_epoch`` traced with one thing
changed:

* ``noise per step``: every step draws its own noise (``NOISE_CHUNK = 1``);
* ``0.3.0's loop``: 0.3.0's epoch, every step drawing its noise inside it, three steps per iteration;
* ``no noise``: no binarisation draw and zero reparameterisation noise (the noise's cost);
* ``SGD direction (no Adam)``: ``optax.identity()`` instead of Adam (Adam's cost);
* ``flat Adam (optax.flatten)``: the same Adam over one vector of all parameters;
* ``matmuls only``: the step's dots alone (forward, weight and input gradients), the floor.

``--grid CHUNKxUNROLL,...`` times the shipped epoch at each ``NOISE_CHUNK`` and ``SCAN_UNROLL``
instead (the first is the baseline). Reported per variant: median ms per step, and the per-round
ratio to the first variant (median, min-max). Results: ``benchmarks/results/step_breakdown.{json,md}``
(``--out``); ``docs/numbers/make_numbers.py --pages`` draws the speed page's breakdown from them.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxvae import training
from jaxvae.batching import steps_per_epoch
from jaxvae.config import TrainConfig, VAEConfig
from jaxvae.model import batch_size_of, inputs, take, with_inputs
from jaxvae.training import TrainStep, init_fit_state
from jax_variants import make_matmul
from train_speed import dense_layers, matmul_flops

BENCH_DIR = Path(__file__).resolve().parent
# name -> (model config, train config)
MODELS = {
    "burda": (VAEConfig(hidden=(200, 200), latent_dim=50, activation="tanh", likelihood="bernoulli"),
              TrainConfig(batch_size=20, adam_eps=1e-4, lr_schedule="burda", binarize="dynamic")),
    "blog": (VAEConfig(), TrainConfig(batch_size=128)),
    "conv": (VAEConfig(architecture="conv"), TrainConfig(batch_size=128)),
}
SHIPPED = "jaxvae (shipped)"


@contextlib.contextmanager
def patched(owner, name, value):
    old = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


def _no_noise(self, key, batch):
    """``TrainStep.draw`` without randomness: inputs rounded instead of drawn, zero noise."""
    if self.binarize:
        batch = with_inputs(batch, jnp.round(inputs(batch)))
    return batch, jax.tree.map(jnp.zeros_like, jax.eval_shape(self.model.draw_noise, key, batch))


def epoch_0_3_0(train_step, state, data, key, schedules, batch_size, drop_last, *_):
    """0.3.0's epoch loop, for comparison: every step draws its own noise inside it (``train_step(state,
    batch, key)``), three steps per loop iteration, no progress reports."""
    batches, step_keys = training.epoch_plan(key, batch_size_of(data), batch_size, drop_last)

    def body(carry, xs):
        state, loss_sum = carry
        rows, step_key = xs
        state, metrics = train_step(state, take(data, rows), step_key, schedules)
        return (state, loss_sum + metrics["loss"]), metrics

    n_full = batches.full.shape[0]
    (state, _), metrics = jax.lax.scan(body, (state, jnp.zeros((), inputs(data).dtype)),
                                       (batches.full, step_keys[:n_full]), unroll=3)
    if batches.tail.shape[0]:
        state, tail = train_step(state, take(data, batches.tail), step_keys[-1], schedules)
        metrics = jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), metrics, tail)
    return state, metrics, jnp.all(jnp.stack([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(state.params)]))


def variants(name: str, n: int) -> dict:
    """variant -> (TrainStep, context manager active while tracing)."""
    vc, tc = MODELS[name]
    shipped = TrainStep.from_configs(vc, tc, steps_per_epoch(n, tc.batch_size))

    def with_optimizer(optimizer):
        return TrainStep(shipped.model, optimizer, shipped.lr, shipped.kl_weight, shipped.steps_per_epoch,
                         shipped.binarize)

    return {
        SHIPPED: (shipped, contextlib.nullcontext),
        "noise per step": (shipped, lambda: patched(training, "NOISE_CHUNK", 1)),
        "0.3.0's loop": (shipped, lambda: patched(training, "_train_epoch", epoch_0_3_0)),
        "no noise": (shipped, lambda: patched(TrainStep, "draw", _no_noise)),
        "SGD direction (no Adam)": (with_optimizer(optax.identity()), contextlib.nullcontext),
        "flat Adam (optax.flatten)": (with_optimizer(optax.flatten(shipped.optimizer)), contextlib.nullcontext),
    }


def grid(name: str, n: int, cells: list[tuple[int, int]]) -> dict:
    """``NOISE_CHUNK x SCAN_UNROLL`` -> the shipped step traced with those constants."""
    vc, tc = MODELS[name]
    step = TrainStep.from_configs(vc, tc, steps_per_epoch(n, tc.batch_size))

    def constants(chunk, unroll):
        @contextlib.contextmanager
        def both():
            with patched(training, "NOISE_CHUNK", chunk), patched(training, "SCAN_UNROLL", unroll):
                yield
        return both

    return {f"{chunk}x{unroll}": (step, constants(chunk, unroll)) for chunk, unroll in cells}


def compile_epoch(step: TrainStep, context, state, data, key, schedules, batch_size: int):
    """train_epoch's program for ``step``, traced while ``context`` is active."""
    def fresh(train_step, state, data, key, schedules, *, batch_size):
        # a new function object per variant: JAX caches traces per function, so reusing train_epoch's
        # would hand every variant the first one's program, patched or not
        return training._train_epoch(train_step, state, data, key, schedules, batch_size, False, None, None)

    epoch = jax.jit(fresh, static_argnames=("train_step", "batch_size"), donate_argnames="state")
    with context():
        return epoch.lower(step, state, data, key, schedules, batch_size=batch_size).compile()


def matmul_epoch(vc: VAEConfig, batch_size: int, n_steps: int):
    """The dots of ``n_steps`` steps of a dense model and nothing else (``jax_variants.make_matmul`` on
    ``train_speed.dense_layers``: per layer the forward product, the weight gradient and, but for the
    first layer, the input gradient; the encoder's two heads as one matmul): the floor the epoch is
    measured against. None for the conv model."""
    if vc.architecture != "mlp":
        return None
    layers = dense_layers(vc.hidden, vc.latent_dim, vc.input_dim)
    gflop = n_steps * matmul_flops(layers, batch_size) / 1e9
    return make_matmul({"layers": layers, "rows": batch_size, "backward": True, "matmul_gflop": gflop,
                        "precision": "highest"}).run


def load_data(data_dir: str | None, samples: int) -> tuple[np.ndarray, str]:
    if data_dir:
        from jaxvae.data import load_mnist, to_unit_float

        images = load_mnist(data_dir, "train", download=False)[0][:samples]
        return to_unit_float(images.reshape(len(images), -1)), f"MNIST from {data_dir}"
    rng = np.random.default_rng(0)
    x = rng.random((samples, 784), dtype=np.float32) * (rng.random((samples, 784)) < 0.2)
    return x.astype(np.float32), "synthetic MNIST-shaped"


def run_once(run: dict, data) -> float:
    start = time.perf_counter()
    if "compiled" in run:
        run["key"], key = jax.random.split(run["key"])
        run["state"], metrics, _ = run["compiled"](run["state"], data, key, run["schedules"])
        jax.block_until_ready(metrics)
    else:
        run["dots"]()  # returns once the device is done
    return time.perf_counter() - start


def measure(name: str, chosen: dict, data, n_steps: int, rounds: int, floor: bool) -> list[dict]:
    """Every variant of ``chosen`` compiled, warmed up, then ``rounds`` rounds, the order rotated."""
    _, tc = MODELS[name]
    runs = {}
    for variant, (step, context) in chosen.items():
        fit_state = init_fit_state(step, tc)
        compiled = compile_epoch(step, context, fit_state.train_state, data, fit_state.key, fit_state.schedules,
                                 tc.batch_size)
        runs[variant] = {"compiled": compiled, "state": fit_state.train_state, "schedules": fit_state.schedules,
                         "key": fit_state.key, "seconds": [],
                         # each variant's own program: a patch that did not reach the trace would repeat another's
                         "program_sha256": hashlib.sha256(compiled.as_text().encode()).hexdigest()}
    dots = matmul_epoch(MODELS[name][0], tc.batch_size, n_steps) if floor else None
    if dots is not None:
        runs["matmuls only"] = {"dots": dots, "seconds": [], "program_sha256": None}
    for run in runs.values():
        run_once(run, data)  # warm-up
    names = list(runs)
    for r in range(rounds):
        for variant in names[r % len(names):] + names[: r % len(names)]:
            runs[variant]["seconds"].append(run_once(runs[variant], data))
        print(f"{name}: round {r + 1}/{rounds}", flush=True)
    first = runs[names[0]]["seconds"]
    rows = []
    for variant in names:
        s = runs[variant]["seconds"]
        ratios = [a / b for a, b in zip(s, first)]
        rows.append({"variant": variant, "ms_per_step": 1e3 * statistics.median(s) / n_steps,
                     "ms_per_step_min": 1e3 * min(s) / n_steps, "ratio_median": statistics.median(ratios),
                     "ratio_min": min(ratios), "ratio_max": max(ratios), "seconds": s,
                     "program_sha256": runs[variant]["program_sha256"]})
    return rows


def breakdown(rows: list[dict]) -> dict | None:
    """ms per step of the matmul floor, the noise, Adam and the rest, from a model's variants."""
    by = {r["variant"]: r["ms_per_step"] for r in rows}
    if not {SHIPPED, "no noise", "SGD direction (no Adam)", "matmuls only"} <= set(by):
        return None
    parts = {"matmuls": by["matmuls only"], "noise": by[SHIPPED] - by["no noise"],
             "Adam": by[SHIPPED] - by["SGD direction (no Adam)"]}
    parts["the rest"] = by[SHIPPED] - sum(parts.values())
    return parts


def machine() -> str:
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name}, {os.cpu_count()} cores; jax {jax.__version__} ({jax.default_backend()})"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--samples", type=int, default=60000)
    p.add_argument("--conv-samples", type=int, default=6000, help="images for the conv model's epochs")
    p.add_argument("--models", default="burda,blog", help=f"comma-separated, of {', '.join(MODELS)}")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--grid", default=None, help="CHUNKxUNROLL,... : tune the constants instead")
    p.add_argument("--out", default=str(BENCH_DIR / "results" / "step_breakdown"))
    args = p.parse_args(argv)

    x, data_desc = load_data(args.data_dir, args.samples)
    report = {"data": data_desc, "rounds": args.rounds, "machine": machine(), "load": os.getloadavg()[0],
              "grid": args.grid, "models": {}}
    for name in args.models.split(","):
        rows_n = min(len(x), args.conv_samples) if name == "conv" else len(x)
        data = jax.device_put(jnp.asarray(x[:rows_n]))
        n_steps = steps_per_epoch(rows_n, MODELS[name][1].batch_size)
        if args.grid:
            cells = [tuple(int(v) for v in cell.split("x")) for cell in args.grid.split(",")]
            chosen = grid(name, rows_n, cells)
        else:
            chosen = variants(name, rows_n)
        rows = measure(name, chosen, data, n_steps, args.rounds, floor=not args.grid)
        report["models"][name] = {"samples": rows_n, "batch_size": MODELS[name][1].batch_size,
                                  "steps_per_epoch": n_steps, "rows": rows, "breakdown": breakdown(rows)}
    report["load_after"] = os.getloadavg()[0]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(report, indent=1))
    Path(args.out + ".md").write_text(markdown(report))
    print(markdown(report))
    return report


def markdown(report: dict) -> str:
    what = f"`NOISE_CHUNK x SCAN_UNROLL` ({report['grid']})" if report["grid"] else "the variants"
    lines = [f"# Where a training step's time goes ({report['machine']})", "",
             f"{report['data']}; {what} compiled in one process, then {report['rounds']} rounds of one epoch "
             f"each, the order rotated every round; load average {report['load']:.1f} before, "
             f"{report['load_after']:.1f} after."]
    for name, m in report["models"].items():
        lines += ["", f"## {name}: batch {m['batch_size']}, {m['samples']} images ({m['steps_per_epoch']} steps)", "",
                  "| variant | ms/step (median) | min | x first, per round: median (min-max) |", "|---|---|---|---|"]
        for r in m["rows"]:
            lines.append(f"| {r['variant']} | {r['ms_per_step']:.3f} | {r['ms_per_step_min']:.3f} | "
                         f"{r['ratio_median']:.3f} ({r['ratio_min']:.3f}-{r['ratio_max']:.3f}) |")
        if m["breakdown"]:
            total = sum(m["breakdown"].values())
            lines += ["", "Of the shipped step: " + ", ".join(
                f"{part} {ms:.3f} ms ({100 * ms / total:.0f}%)" for part, ms in m["breakdown"].items()) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
