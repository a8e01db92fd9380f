"""Reproduce Burda, Grosse & Salakhutdinov (2015), Table 1, one stochastic layer on MNIST:
784-200-200-50 with tanh, Bernoulli decoder, dynamic binarisation, trained as a VAE (ELBO) and as
an IWAE with k = 50; test log-likelihood estimated with k = 5000 importance samples.

    python experiments/likelihood.py --variant vae            # full run (GPU advised)
    python experiments/likelihood.py --variant iwae50 --minutes 12 --eval-n 1000   # CPU-sized
    python experiments/likelihood.py --quick --dataset digits # CI smoke test (< 60 s)

Training follows the paper: Adam (b1 0.9, b2 0.999, eps 1e-4), batch 20, and Burda's schedule
(``TrainConfig(lr_schedule="burda")``, i.e. ``jaxvae.schedules.Stages.burda()``): stage i = 0..7 runs
3**i epochs at lr 1e-3 * 10**(-i/7) (3280 epochs in all). ``--epochs`` cuts the schedule short,
``--minutes`` stops after the first epoch past a wall-clock budget; the JSON records what actually ran. Each run writes ``<out>/<variant>.json`` and appends a Markdown row to
``<out>/results.md``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax

from jaxvae.config import TrainConfig, VAEConfig
from jaxvae.evaluation import evaluate
from jaxvae.schedules import Stages
from jaxvae.training import fit

PAPER = {"vae": -86.76, "iwae50": -84.78}  # Burda et al. 2015, Table 1, MNIST, 1 stochastic layer
TARGET = {"vae": -87.0, "iwae50": -85.2}   # issue 6's bars
VARIANTS = {"vae": dict(objective="elbo", iwae_k=1), "iwae50": dict(objective="iwae", iwae_k=50)}


class _OutOfTime(Exception):
    """Raised from the epoch callback when ``--minutes`` is spent; carries the state after that epoch."""

    def __init__(self, state):
        super().__init__("training time budget spent")
        self.state = state


def machine() -> str:
    device = jax.devices()[0]
    if device.platform != "cpu":
        return f"{len(jax.devices())} x {device.device_kind}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {model}, {os.cpu_count()} cores"


def run(variant: str, args) -> dict:
    from jaxvae.data import load_dataset  # the data module is needed only here

    data = load_dataset(args.dataset, data_dir=args.data_dir, require=args.dataset == "mnist")
    train_x, test_x = data.train_x, data.test_x
    if args.train_n:
        train_x = train_x[: args.train_n]
    if args.eval_n:
        test_x = test_x[: args.eval_n]
    vc = VAEConfig(input_dim=train_x.shape[1], hidden=(200, 200), latent_dim=50, activation="tanh",
                   likelihood="bernoulli", **VARIANTS[variant])
    tc = TrainConfig(batch_size=args.batch_size, lr=1e-3, adam_eps=1e-4, lr_schedule="burda",
                     max_epochs=args.epochs or Stages.burda().total_epochs,
                     binarize="dynamic", binarize_seed=args.seed, seed=args.seed)
    start = time.perf_counter()

    def log(fit_state, record):
        print(f"[{variant}] epoch {record['epoch']} lr {record['lr']:.2e} train {record['train_loss']:.2f} "
              f"({record['seconds']:.1f} s)", flush=True)
        if args.minutes is not None and time.perf_counter() - start > 60 * args.minutes:
            raise _OutOfTime(fit_state)

    try:
        # The held-out loss drives nothing here (no plateau schedule): validate on a small slice.
        state = fit(train_x, train_x[:500], vae_config=vc, train_config=tc, callbacks=[log]).state
    except _OutOfTime as stop:
        state = stop.state
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    result = evaluate(state.params, test_x, vc, k=args.k, seed=args.seed + 100, batch_size=args.eval_batch,
                      train_config=tc)
    eval_seconds = time.perf_counter() - start
    summary = {
        "variant": variant, "dataset": data.name, "epochs": state.epoch, "train_n": int(train_x.shape[0]),
        "test_n": result["n"], "k": result["k"], "batch_size": tc.batch_size,
        "log_likelihood": result["log_likelihood"], "log_likelihood_stderr": result["log_likelihood_stderr"],
        "neg_elbo": result["neg_elbo"], "neg_elbo_stderr": result["neg_elbo_stderr"],
        "paper": PAPER[variant], "target": TARGET[variant],
        "train_seconds": round(train_seconds, 1), "eval_seconds": round(eval_seconds, 1),
        "machine": machine(), "final_lr": state.history[-1]["lr"] if state.history else tc.lr,
        "vae_config": dataclasses.asdict(vc), "train_config": dataclasses.asdict(tc),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    return summary


def markdown_row(s: dict) -> str:
    return (f"| {s['variant']} | {s['dataset']} | {s['epochs']} | {s['train_seconds'] / 60:.1f} min | {s['machine']} "
            f"| {s['test_n']} | {s['k']} | {s['log_likelihood']:.2f} ± {s['log_likelihood_stderr']:.2f} "
            f"| {s['neg_elbo']:.2f} | {s['paper']} | `{s['command']}` |")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", choices=[*VARIANTS, "both"], default="both", help="which model to train (default both)")
    p.add_argument("--dataset", choices=["mnist", "digits"], default="mnist", help="mnist (required, no fallback) or digits")
    p.add_argument("--data-dir", default=None, help="directory holding the MNIST IDX files")
    p.add_argument("--epochs", type=int, default=None, help="stop Burda's 3280-epoch schedule after this many epochs")
    p.add_argument("--minutes", type=float, default=None, help="stop training after the first epoch past this wall time")
    p.add_argument("--batch-size", type=int, default=20, help="training batch (Burda: 20)")
    p.add_argument("--train-n", type=int, default=None, help="use only the first N training images")
    p.add_argument("--eval-n", type=int, default=None, help="evaluate on the first N test images (default all)")
    p.add_argument("--k", type=int, default=5000, help="importance samples for the test log-likelihood")
    p.add_argument("--eval-batch", type=int, default=100, help="test images per evaluation batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="experiments/results", help="directory for <variant>.json and results.md")
    p.add_argument("--quick", action="store_true",
                   help="CI smoke test: 300 training images, 1 epoch, 100 test images, k=10")
    args = p.parse_args(argv)
    if args.quick:
        args.train_n, args.epochs, args.eval_n, args.k = args.train_n or 300, 1, args.eval_n or 100, 10
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = []
    for variant in (VARIANTS if args.variant == "both" else [args.variant]):
        summary = run(variant, args)
        (out / f"{variant}.json").write_text(json.dumps(summary, indent=2) + "\n")
        row = markdown_row(summary)
        with open(out / "results.md", "a") as fh:
            fh.write(row + "\n")
        print(row, flush=True)
        summaries.append(summary)
    return summaries


if __name__ == "__main__":
    main()
