"""A small sweep on one CPU device against one single-threaded device per core
(``jaxvae.parallel.use_host_cores``): ``python benchmarks/host_cores.py [--data-dir DIR]``.

``--models`` models of the blog's VAE (``VAEConfig()``; ``--model burda``: Burda's), batch ``--batch`` (128), ``--epochs`` epochs (the first
compiles and is not counted), on full MNIST when ``--data-dir`` names it, else on ``--samples``
random MNIST-shaped images. Each side runs in a fresh process (XLA reads its flags when JAX starts),
the sides alternating over ``--rounds`` rounds. Throughput: models x epochs per second after the
first epoch; the ratio is per round, one device per core over one device. Results:
``benchmarks/results/host_cores.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
from train_speed import machine_description, write_report  # noqa: E402  (imports no framework)

CHILD = r'''
import json, os, sys, time
devices, n_models, epochs, samples, batch = (int(a) for a in sys.argv[1:6])
data_dir, model = sys.argv[6], sys.argv[7]
if devices > 1:
    from jaxvae.parallel import use_host_cores
    use_host_cores(devices)
import jax, numpy as np
from jaxvae import TrainConfig, VAEConfig
from jaxvae.training import fit_models
assert len(jax.devices()) == devices, jax.devices()
if data_dir:
    from jaxvae.data import load_dataset
    data = load_dataset("mnist", data_dir, download=False, require=True, log=None)
    x, v = data.train_x, data.test_x
else:
    rng = np.random.default_rng(0)
    x, v = (rng.random((n, 784), dtype=np.float32) for n in (samples, max(samples // 10, 128)))
# burda: Burda et al.'s 784-200-200-50 tanh Bernoulli model, dynamic binarisation (a small step)
vae_config = (VAEConfig(hidden=(200, 200), latent_dim=50, activation="tanh", likelihood="bernoulli")
              if model == "burda" else VAEConfig())
extra = dict(adam_eps=1e-4, binarize="dynamic") if model == "burda" else {}
configs = [TrainConfig(batch_size=batch, max_epochs=epochs, seed=i, **extra) for i in range(n_models)]
stamps = []
start = time.perf_counter()
placement = dict(mesh="auto") if devices > 1 else {}  # no mesh argument: --other may predate it
result = fit_models(x, v, vae_config=vae_config, train_configs=configs, **placement,
                    callbacks=[lambda *_: stamps.append((time.perf_counter(), time.process_time()))])
jax.block_until_ready(result.params)
wall, cpu = (stamps[-1][k] - stamps[0][k] for k in (0, 1))
print(json.dumps({"devices": devices, "throughput": n_models * (epochs - 1) / wall, "cpu_per_wall": cpu / wall,
                  "first_epoch_s": stamps[0][0] - start, "n_train": len(x), "load": os.getloadavg()[0]}))
'''
MODEL_NAMES = {"blog": "the blog's VAE", "burda": "Burda's 784-200-200-50 VAE (dynamic binarisation)"}


def run_side(devices: int, args, checkout: Path = REPO_ROOT) -> dict:
    """One side in a fresh process, ``checkout`` first on its path: its JSON line."""
    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if "host_platform_device_count" not in f)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags,
           "PYTHONPATH": os.pathsep.join([str(checkout), os.environ.get("PYTHONPATH", "")])}
    argv = [str(devices), str(args.models), str(args.epochs), str(args.samples), str(args.batch), args.data_dir or "",
            args.model]
    done = subprocess.run([sys.executable, "-c", CHILD, *argv], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(report: dict) -> str:
    m, s = report["machine"], report["summary"]
    lines = [f"# A {report['models']}-model sweep on one CPU device and on one single-threaded device per core",
             "", f"{m['cpu']}, {m['cores']} cores, Python {m['python']}; {MODEL_NAMES[report['model']]}, batch "
             f"{report['batch']}, {report['data']}; {report['epochs']} epochs per side (the first not counted), "
             f"{report['rounds']} round{'s' * (report['rounds'] > 1)}, the sides' order rotated every round.", "",
             "| side | devices | throughput (models x epochs / s, median) |", "|---|---|---|"]
    lines += [f"| {side} | {devices} | {s['throughput'][side]:.3f} |" for side, devices in report["sides"]]
    lines += ["", "Ratio per round, one per core over one device: " + fmt_stats(s["ratio"]) + "."]
    if "ratio_other" in s:
        lines += ["", f"Ratio per round, one per core over {report['sides'][2][0]}: " + fmt_stats(s["ratio_other"]) + "."]
    lines += ["", "| round | side | throughput | CPU s / wall s | load |", "|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['round']} | {r['side']} | {r['throughput']:.3f} | {r['cpu_per_wall']:.2f} | {r['load']:.1f} |")
    return "\n".join(lines) + "\n"


def fmt_stats(ratio: dict) -> str:
    return f"{ratio['median']:.3f} ({ratio['min']:.3f}-{ratio['max']:.3f})"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=2)
    parser.add_argument("--devices", type=int, default=min(os.cpu_count() or 1, 2),
                        help="devices of the per-core side (default: 2, or 1 on one core); must divide --models")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per side (>= 2: the first one compiles)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", choices=sorted(MODEL_NAMES), default="blog")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--samples", type=int, default=10000, help="random images when no --data-dir")
    parser.add_argument("--data-dir", help="a directory with the MNIST IDX files: full MNIST instead of random images")
    parser.add_argument("--other", help="another checkout of jaxvae (e.g. a git worktree of a release): a third side, "
                                        "one device")
    parser.add_argument("--other-name", default="other", help="the other checkout's name in the report")
    parser.add_argument("--out", default=str(BENCH_DIR / "results" / "host_cores"), help="path without suffix")
    args = parser.parse_args(argv)
    if args.epochs < 2 or args.models % args.devices:
        parser.error("--epochs must be >= 2 and --devices must divide --models")
    sides = [("one device", 1, REPO_ROOT), ("one per core", args.devices, REPO_ROOT)]
    if args.other:
        sides.append((f"{args.other_name}, one device", 1, Path(args.other).resolve()))
    rows = []
    for round_ in range(args.rounds):
        for side, devices, checkout in sides[round_ % len(sides):] + sides[:round_ % len(sides)]:
            rows.append({"round": round_, "side": side, **run_side(devices, args, checkout)})
            print(rows[-1], flush=True)
    throughput = {side: {r["round"]: r["throughput"] for r in rows if r["side"] == side} for side, _, _ in sides}

    def ratio(over: str, under: str) -> dict:
        ratios = [throughput[over][k] / throughput[under][k] for k in throughput[under]]
        return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}

    data = (f"full MNIST ({rows[0]['n_train']} images)" if args.data_dir
            else f"{args.samples} random MNIST-shaped images")
    report = {"machine": machine_description(), "models": args.models, "model": args.model, "batch": args.batch,
              "devices": args.devices, "epochs": args.epochs, "rounds": args.rounds, "data": data, "rows": rows,
              "sides": [[side, devices] for side, devices, _ in sides],
              "summary": {"throughput": {side: statistics.median(t.values()) for side, t in throughput.items()},
                          "ratio": ratio("one per core", "one device")}}
    if args.other:
        report["summary"]["ratio_other"] = ratio("one per core", sides[2][0])
    print(write_report(report, Path(args.out), markdown(report)))


if __name__ == "__main__":
    main()
