"""Proof on real data: the blog's configuration trained on MNIST by torchref and by jaxvae.

Both packages train on the identical arrays (jaxvae.data), with the same batch size and schedule,
for a few seeds each; the table compares the per-epoch validation losses with the spread across
seeds (the epoch-to-epoch noise that any two runs differ by).

    python benchmarks/mnist_parity.py --data-dir /path/to/mnist --epochs 5 --seeds 3
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="MNIST IDX directory (default: jaxvae's search order)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "mnist_parity"))
    args = parser.parse_args(argv)

    import torchref
    from jaxvae import TrainConfig, VAEConfig, fit
    from jaxvae.data import load_dataset

    data = load_dataset("mnist", data_dir=args.data_dir, require=True)
    curves: dict[str, list[dict]] = {"jaxvae": [], "torchref": []}
    for seed in range(args.seeds):
        result = fit(data.train_x, data.test_x, vae_config=VAEConfig(),
                     train_config=TrainConfig(max_epochs=args.epochs, seed=seed))
        curves["jaxvae"].append({k: [h[k] for h in result.history] for k in ("train_loss", "val_loss", "seconds")})
        hist = torchref.train_blog(data.train_x, data.test_x, epochs=args.epochs, seed=seed, verbose=False)
        curves["torchref"].append({k: hist[k] for k in ("train_loss", "val_loss", "seconds")})
        print(f"seed {seed}: jaxvae val {curves['jaxvae'][-1]['val_loss'][-1]:.3f}, "
              f"torchref val {curves['torchref'][-1]['val_loss'][-1]:.3f}", flush=True)

    rows = ["| epoch | jaxvae train | torchref train | jaxvae val | torchref val | jax - torch (val) | seed spread (val, sd) |",
            "|---|---|---|---|---|---|---|"]
    summary = []
    for e in range(args.epochs):
        stats = {}
        for name, runs in curves.items():
            for key in ("train_loss", "val_loss"):
                values = np.array([r[key][e] for r in runs])
                stats[name, key] = (values.mean(), values.std(ddof=1) if len(values) > 1 else float("nan"))
        spread = float(np.sqrt((stats["jaxvae", "val_loss"][1] ** 2 + stats["torchref", "val_loss"][1] ** 2) / 2))
        diff = stats["jaxvae", "val_loss"][0] - stats["torchref", "val_loss"][0]
        summary.append({"epoch": e + 1, "val_diff": diff, "val_seed_sd": spread,
                        **{f"{n}_{k}_mean": v[0] for (n, k), v in stats.items()}})
        fmt = lambda n, k: f"{stats[n, k][0]:.3f} ± {stats[n, k][1]:.3f}"
        rows.append(f"| {e + 1} | {fmt('jaxvae', 'train_loss')} | {fmt('torchref', 'train_loss')} | "
                    f"{fmt('jaxvae', 'val_loss')} | {fmt('torchref', 'val_loss')} | {diff:+.3f} | {spread:.3f} |")
    table = "\n".join(rows)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(
        {"machine": platform.processor() or platform.machine(), "epochs": args.epochs, "seeds": args.seeds,
         "curves": curves, "summary": summary}, indent=1))
    out.with_suffix(".md").write_text(f"MNIST, blog configuration, {args.seeds} seeds, mean ± sd across seeds\n\n{table}\n")


if __name__ == "__main__":
    main()
