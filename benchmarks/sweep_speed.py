"""N models in one compiled program against N sequential fits: ``python benchmarks/sweep_speed.py``.

Both sides train the same models (the blog's VAE, 784-400-2, batch 128, the grid of ``--seeds`` x
``--recon-sigma`` values) for the same epochs on the same data: ``jaxvae.sweep.fit_many`` (one
program, the models vmapped) and one ``jaxvae.fit`` per model, one after the other. Each side runs
in a fresh process; the pairs alternate their order (sweep first, then sequential first, ...) so
that a machine whose load drifts favours neither. Per pair: the ratio sweep / sequential of the
total wall time (compiles included: what a user waits for) and of the steady epoch time (epochs
after the first, i.e. without compiles: the sweep's epoch against the sum of the N models' epochs).
Reported: the median ratio over the pairs, with min and max. Results:
``benchmarks/results/sweep_speed.json`` and ``.md``.

``--scaling 1 2 4 8 16`` instead measures how the cost per model grows with the number of models
in the program (seeds only, each N in a fresh process) against one lone ``fit``: results in
``sweep_scaling.json`` and ``.md``.

``--data-dir`` reads real MNIST (IDX files); otherwise the synthetic MNIST-shaped data of
train_speed.py. ``--quick``: a tiny smoke run (seconds).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _path in (str(REPO_ROOT), str(BENCH_DIR)):  # the checkout's own jaxvae wins over an installed one
    if _path not in sys.path:
        sys.path.insert(0, _path)

from train_speed import write_report  # noqa: E402  (imports no framework)

SIDES = ("sweep", "sequential")


def load_data(args):
    """(train, validation) float32 in [0, 1], [N, 784]."""
    from jaxvae.data import load_mnist, to_unit_float

    if args.data_dir:
        train, val = (load_mnist(args.data_dir, split, download=False)[0].reshape(-1, 784) for split in ("train", "test"))
    else:
        from train_speed import synthetic_mnist

        train, val = synthetic_mnist(60000, 0), synthetic_mnist(10000, 1)
    n = args.samples or len(train)
    return to_unit_float(train[:n]), to_unit_float(val[: max(n // 6, 1)])


def configs(args):
    from jaxvae import TrainConfig, VAEConfig

    return VAEConfig(hidden=tuple(args.hidden)), TrainConfig(max_epochs=args.epochs, batch_size=args.batch_size)


def child(args) -> dict:
    """One side, timed in this process: total wall and CPU seconds, and those of the epochs after the
    first (stamped at the end of every epoch by a callback: the first epoch holds the compiles)."""
    import jax

    from jaxvae import fit
    from jaxvae.sweep import fit_many, sweep_models

    train_x, val_x = load_data(args)
    vc, tc = configs(args)
    grid = {"seeds": args.seeds, "recon_sigma": args.recon_sigma}
    runs = []  # per program run: the (wall, cpu) stamps at the end of each epoch

    def stamp(*_):
        runs[-1].append((time.perf_counter(), time.process_time()))

    start = (time.perf_counter(), time.process_time())
    if args.child == "sweep":
        runs.append([])
        jax.block_until_ready(fit_many(train_x, val_x, vae_config=vc, train_config=tc, callbacks=[stamp], **grid).params)
    else:
        for model in sweep_models(vc, tc, **grid):
            runs.append([])
            jax.block_until_ready(fit(train_x, val_x, vae_config=model.vae_config, train_config=model.train_config,
                                      callbacks=[stamp]).params)
    end = (time.perf_counter(), time.process_time())
    steady = [sum(r[-1][k] - r[0][k] for r in runs) / (args.epochs - 1) for k in (0, 1)]  # per epoch of all models
    return {"side": args.child, "total_s": end[0] - start[0], "cpu_s": end[1] - start[1], "steady_epoch_s": steady[0],
            "steady_epoch_cpu_s": steady[1], "load": os.getloadavg()[0]}


def run_side(side: str, args) -> dict:
    argv = [sys.executable, __file__, "--child", side, "--epochs", str(args.epochs), "--seeds", str(args.seeds),
            "--batch-size", str(args.batch_size), "--samples", str(args.samples or 0),
            "--recon-sigma", *map(str, args.recon_sigma), "--hidden", *map(str, args.hidden)]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{side} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def spread(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def markdown(report: dict) -> str:
    s = report["settings"]
    lines = [
        f"# N models in one program against N sequential fits ({report['machine']})", "",
        f"{s['models']} models ({s['seeds']} seeds x recon_sigma {s['recon_sigma']}), the blog's VAE "
        f"784-{'-'.join(map(str, s['hidden']))}-2, batch {s['batch_size']}, {s['epochs']} epochs on {s['data']}; "
        f"{len(report['pairs'])} pairs of fresh processes, alternating which side runs first. "
        "Ratio < 1: the sweep is faster.", "",
        "| | sweep (one program) | sequential fits | ratio sweep / sequential: median (min - max) |",
        "|---|---|---|---|",
    ]
    for key, label in (("total_s", "wall time, compiles included (s)"),
                       ("cpu_s", "CPU time, compiles included (s)"),
                       ("steady_epoch_s", "wall time of one epoch of all the models, after the first (s)"),
                       ("steady_epoch_cpu_s", "CPU time of one epoch of all the models, after the first (s)")):
        sw = statistics.median(p["sweep"][key] for p in report["pairs"])
        sq = statistics.median(p["sequential"][key] for p in report["pairs"])
        r = report["ratios"][key]
        lines.append(f"| {label} | {sw:.2f} | {sq:.2f} | {r['median']:.3f} ({r['min']:.3f} - {r['max']:.3f}) |")
    per_pair = "; ".join(f"{key}: {', '.join(f'{r:.3f}' for r in ratios)}" for key, ratios in report["pair_ratios"].items())
    lines += ["", f"Ratios per pair, in order: {per_pair}. Load average (1 min) at the end of each side: "
              f"{report['load']['min']:.1f} to {report['load']['max']:.1f} (2 cores: above 2, other jobs ran).", ""]
    if report.get("note"):
        lines += [report["note"], ""]
    return "\n".join(lines)


def scaling(args) -> None:
    """Per model and epoch after the first: a lone fit, N models in one program for each N, a lone fit
    again (the machine's drift shows in the two)."""
    args.recon_sigma = [1.0]
    rows = []
    for n in [0, *args.scaling, 0]:  # 0: the lone fit
        args.seeds = max(n, 1)
        side = run_side("sweep" if n else "sequential", args)
        rows.append({"models": n, "wall_s": side["steady_epoch_s"] / args.seeds,
                     "cpu_s": side["steady_epoch_cpu_s"] / args.seeds, "load": side["load"]})
        print(f"{'fit' if not n else f'N={n}'}: {rows[-1]['cpu_s']:.3f} CPU s per model-epoch", flush=True)
    lone = {"cpu_s": (rows[0]["cpu_s"] + rows[-1]["cpu_s"]) / 2}
    lines = [f"# Cost per model of N models in one program ({cpu_name()}, {os.cpu_count()} cores)", "",
             f"The blog's VAE, batch {args.batch_size}, {args.samples or 'all'} MNIST-shaped training images, "
             f"{args.epochs - 1} epochs after the first, each N in a fresh process, a lone fit first and last "
             "(\"x lone fit\": against their mean). Per model and epoch:", "",
             "| models in the program | CPU s | x lone fit | wall s | load |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['models'] or '1 (lone fit)'} | {row['cpu_s']:.3f} | {row['cpu_s'] / lone['cpu_s']:.2f} | "
                     f"{row['wall_s']:.3f} | {row['load']:.1f} |")
    if args.note:
        lines += ["", args.note]
    out = Path(args.out).with_name("sweep_scaling")
    out.with_suffix(".json").write_text(json.dumps({"rows": rows, "samples": args.samples, "epochs": args.epochs,
                                                    "note": args.note}, indent=2) + "\n")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="real MNIST (IDX files); default: synthetic MNIST-shaped data")
    parser.add_argument("--samples", type=int, default=0, help="first N training images (0: all)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--recon-sigma", type=float, nargs="+", default=[0.5, 1.0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[400])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per model (>= 2: the first one compiles)")
    parser.add_argument("--pairs", type=int, default=5, help="sweep/sequential pairs of fresh processes")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2000 images, hidden 64, 2 epochs, 1 pair")
    parser.add_argument("--scaling", type=int, nargs="+", metavar="N",
                        help="cost per model of N models (seeds) in one program against one fit, for each N")
    parser.add_argument("--note", default="", help="a line for the Markdown (the machine's state, say)")
    parser.add_argument("--out", default=str(BENCH_DIR / "results" / "sweep_speed"), help="path without suffix")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.hidden, args.epochs, args.pairs = 2000, [64], 2, 1
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch compiles)")
    if args.child:
        print(json.dumps(child(args)))
        return
    if args.scaling:
        return scaling(args)
    pairs = []
    for k in range(args.pairs):
        order = SIDES if k % 2 == 0 else SIDES[::-1]
        pair = {side: run_side(side, args) for side in order}
        pairs.append(pair)
        print(f"pair {k + 1}/{args.pairs} ({order[0]} first): sweep {pair['sweep']['total_s']:.1f}s, "
              f"sequential {pair['sequential']['total_s']:.1f}s; steady epoch {pair['sweep']['steady_epoch_s']:.2f}s "
              f"vs {pair['sequential']['steady_epoch_s']:.2f}s (CPU {pair['sweep']['steady_epoch_cpu_s']:.2f}s vs "
              f"{pair['sequential']['steady_epoch_cpu_s']:.2f}s)", flush=True)
    keys = ("total_s", "cpu_s", "steady_epoch_s", "steady_epoch_cpu_s")
    pair_ratios = {k: [p["sweep"][k] / p["sequential"][k] for p in pairs] for k in keys}
    import jax

    report = {
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, "
                   f"{jax.devices()[0].device_kind}, jax {jax.__version__}",
        "settings": {"models": args.seeds * len(args.recon_sigma), "seeds": args.seeds, "recon_sigma": args.recon_sigma,
                     "hidden": args.hidden, "batch_size": args.batch_size, "epochs": args.epochs,
                     "data": "MNIST" if args.data_dir else "synthetic MNIST-shaped data",
                     "samples": args.samples or "all"},
        "pairs": pairs, "pair_ratios": pair_ratios, "ratios": {k: spread(v) for k, v in pair_ratios.items()},
        "load": spread([p[s]["load"] for p in pairs for s in SIDES]), "note": args.note,
    }
    print(write_report(report, Path(args.out), markdown(report)))


if __name__ == "__main__":
    main()
