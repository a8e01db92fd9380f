"""Reproduce Burda, Grosse & Salakhutdinov (2015), Table 1, one stochastic layer on MNIST:
784-200-200-50 with tanh, Bernoulli decoder, dynamic binarisation, trained as a VAE (ELBO) and as
an IWAE with k = 50; test log-likelihood estimated with k = 5000 importance samples.

    python experiments/likelihood.py --variant vae --data-dir DIR     # the whole protocol: hours on a CPU
    python experiments/likelihood.py --variant vae --data-dir DIR     # again: continues where it stopped
    python experiments/likelihood.py --quick --dataset digits         # smoke test (< 60 s)

Each variant is an ordinary jaxvae run directory, ``<out>/<variant>/``, trained by ``jaxvae train``
and checkpointed after every epoch: a stopped run loses at most one epoch, and running the command
again continues it (``jaxvae train --resume``). Training follows the paper: Adam (b1 0.9, b2 0.999,
eps 1e-4), batch 20, and Burda's schedule (``--lr-schedule burda``, i.e.
``jaxvae.schedules.Stages.burda()``): stage i = 0..7 runs 3**i epochs at lr 1e-3 * 10**(-i/7), 3280
epochs in all; ``--epochs`` stops earlier. Then ``jaxvae.evaluation.evaluate_run`` scores the test
split (``jaxvae evaluate RUN --k 5000``), and the script writes ``<out>/<variant>.json``, a Markdown
row appended to ``<out>/results.md``, and the learning curve with the stage boundaries,
``<out>/<variant>_curve.png``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
from pathlib import Path

import jax

from jaxvae import cli
from jaxvae.evaluation import evaluate_run
from jaxvae.runs import CONFIG_FILE, read_metrics, read_run_config, write_evaluation
from jaxvae.schedules import Stages

PAPER = {"vae": -86.76, "iwae50": -84.78}  # Burda et al. 2015, Table 1, MNIST, 1 stochastic layer
TARGET = {"vae": -87.0, "iwae50": -85.2}   # within a quarter to half a nat of the paper
MODEL_FLAGS = ["--hidden", "200", "200", "--latent-dim", "50", "--activation", "tanh", "--likelihood", "bernoulli"]
VARIANTS = {"vae": ["--objective", "elbo"], "iwae50": ["--objective", "iwae", "--iwae-k", "50"]}
TRAIN_FLAGS = ["--binarize", "dynamic", "--batch-size", "20", "--lr", "1e-3", "--adam-eps", "1e-4",
               "--lr-schedule", "burda"]


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


def train(run_dir: Path, variant: str, args) -> None:
    """``jaxvae train`` into ``run_dir``, or ``jaxvae train --resume`` when it already holds the run."""
    epochs = ["--epochs", str(args.epochs or Stages.burda().total_epochs)]
    common = [*epochs, "--no-plots", *(["--quiet"] if args.quiet else [])]
    if (run_dir / CONFIG_FILE).exists():
        argv = ["train", "--resume", str(run_dir), *common]
    else:
        data = ["--dataset", args.dataset, *(["--data-dir", args.data_dir] if args.data_dir else [])]
        if args.dataset == "mnist":
            data.append("--require-mnist")  # the real thing or an error, never the offline subset
        argv = ["train", *data, *MODEL_FLAGS, *VARIANTS[variant], *TRAIN_FLAGS, "--seed", str(args.seed),
                *common, "--out", str(run_dir)]
    code = cli.main(argv)
    if code != 0:
        raise SystemExit(f"jaxvae {' '.join(argv)}: exit {code}")


def stage_ends(epochs: int) -> list[int]:
    """The epochs after which Burda's stages end, up to ``epochs``."""
    ends = itertools.accumulate(n for _, n in Stages.burda().stages)
    return [end for end in ends if end <= epochs]


def plot_curve(history: list[dict], path: Path, title: str) -> None:
    """The training bound and the test bound per epoch (log epoch axis), Burda's stage ends dashed."""
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(epochs, [r["train_loss"] for r in history], label="train (-ELBO, dynamically binarised)", lw=1)
    ax.plot(epochs, [r["val_loss"] for r in history], label="test (-ELBO)", lw=1)
    for end in stage_ends(epochs[-1]):
        ax.axvline(end, color="grey", ls="--", lw=0.6)
    ax.set_xscale("log")
    ax.set_ylim(top=min(120.0, max(r["val_loss"] for r in history)))
    ax.set(xlabel="epoch (dashed: ends of Burda's lr stages)", ylabel="nats per image", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(variant: str, args, out: Path) -> dict:
    run_dir = out / variant
    train(run_dir, variant, args)
    result = evaluate_run(run_dir, k=args.k, limit=args.eval_n, seed=args.seed + 100, data_dir=args.data_dir)
    write_evaluation(run_dir, result)
    history, info = read_metrics(run_dir), read_run_config(run_dir)
    plot_curve(history, out / f"{variant}_curve.png",
               f"Burda et al.'s {variant.upper()} on {info.dataset}, seed {args.seed}")
    return {
        "variant": variant, "dataset": info.dataset, "epochs": result["epoch"], "test_n": result["samples"],
        "k": result["k"], "log_likelihood": result["log_likelihood"],
        "log_likelihood_stderr": result["log_likelihood_stderr"], "neg_elbo": result["neg_elbo"],
        "neg_elbo_stderr": result["neg_elbo_stderr"], "paper": PAPER[variant], "target": TARGET[variant],
        "train_seconds": round(sum(r["seconds"] for r in history), 1), "machine": machine(),
        "run_dir": str(run_dir), "final_lr": history[-1]["lr"],
        "history": [{k: r[k] for k in ("epoch", "train_loss", "val_loss", "lr")} for r in history],
    }


def markdown_row(s: dict) -> str:
    return (f"| {s['variant']} | {s['dataset']} | {s['epochs']} | {s['train_seconds'] / 3600:.2f} h | {s['machine']} "
            f"| {s['test_n']} | {s['k']} | {s['log_likelihood']:.2f} ± {s['log_likelihood_stderr']:.2f} "
            f"| {s['neg_elbo']:.2f} | {s['paper']} |")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", choices=[*VARIANTS, "both"], default="both", help="which model to train (default both)")
    p.add_argument("--dataset", choices=["mnist", "digits"], default="mnist", help="mnist (required, no fallback) or digits")
    p.add_argument("--data-dir", default=None, help="directory holding the MNIST IDX files")
    p.add_argument("--epochs", type=int, default=None, help="stop Burda's 3280-epoch schedule after this many epochs")
    p.add_argument("--eval-n", type=int, default=None, help="evaluate on the first N test images (default all)")
    p.add_argument("--k", type=int, default=5000, help="importance samples for the test log-likelihood")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no epoch lines while training")
    p.add_argument("--out", default="experiments/results", help="directory for the run directories, <variant>.json "
                   "and results.md")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 epoch, 100 test images, k=10")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.eval_n, args.k = 1, args.eval_n or 100, 10
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = []
    for variant in (VARIANTS if args.variant == "both" else [args.variant]):
        summary = run(variant, args, out)
        (out / f"{variant}.json").write_text(json.dumps(summary, indent=2) + "\n")
        row = markdown_row(summary)
        with open(out / "results.md", "a") as fh:
            fh.write(row + "\n")
        print(row, flush=True)
        summaries.append(summary)
    return summaries


if __name__ == "__main__":
    main()
