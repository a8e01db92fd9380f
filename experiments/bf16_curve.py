"""bfloat16 matmuls against float32: the same run (same seed, data, noise) twice, loss curves side by side.

    python experiments/bf16_curve.py --model burda --epochs 5 --train-n 10000 --data-dir DIR

``compute_dtype="bfloat16"`` rounds the operands of every matmul to bfloat16 and accumulates in
float32; parameters, optimiser state and the loss stay float32. Prints a Markdown table of the
per-epoch training and validation losses of both runs and their differences, and the seconds per
epoch (on a CPU with AMX or a GPU bfloat16 matmuls are faster; elsewhere they can be slower).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from jaxvae.config import TrainConfig, VAEConfig
from jaxvae.training import fit

MODELS = {
    "blog": (VAEConfig(), TrainConfig()),
    "burda": (VAEConfig(hidden=(200, 200), latent_dim=50, activation="tanh", likelihood="bernoulli"),
              TrainConfig(batch_size=100, adam_eps=1e-4, binarize="dynamic")),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=MODELS, default="burda")
    p.add_argument("--dataset", choices=["mnist", "digits"], default="mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--train-n", type=int, default=10000)
    p.add_argument("--out", default=None, help="write the curves as JSON here")
    args = p.parse_args(argv)
    from jaxvae.data import load_dataset

    data = load_dataset(args.dataset, data_dir=args.data_dir, require=args.dataset == "mnist")
    vc, tc = MODELS[args.model]
    vc, tc = vc.replace(input_dim=data.train_x.shape[1]), tc.replace(max_epochs=args.epochs)
    train_x, val_x = data.train_x[: args.train_n], data.test_x[:2000]
    curves = {dtype: fit(train_x, val_x, vae_config=vc.replace(compute_dtype=dtype), train_config=tc).history
              for dtype in ("float32", "bfloat16")}
    print("| epoch | train f32 | train bf16 | diff | val f32 | val bf16 | diff | s/epoch f32 | s/epoch bf16 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for a, b in zip(curves["float32"], curves["bfloat16"]):
        print(f"| {a['epoch']} | {a['train_loss']:.3f} | {b['train_loss']:.3f} | {b['train_loss'] - a['train_loss']:+.3f} "
              f"| {a['val_loss']:.3f} | {b['val_loss']:.3f} | {b['val_loss'] - a['val_loss']:+.3f} "
              f"| {a['seconds']:.1f} | {b['seconds']:.1f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"model": args.model, "dataset": data.name, "train_n": len(train_x),
                                              "curves": curves}, indent=2) + "\n")
    return curves


if __name__ == "__main__":
    main()
