"""The cost per model of a sweep epoch on one device against a (8, 1) mesh of 8 simulated CPU devices,
and the train state each device holds: ``python benchmarks/mesh_cost.py``.

64 models of the blog's VAE at hidden 64 (784-64-2), batch 128, 2048 MNIST-shaped random images and
512 for validation, ``--epochs`` epochs (the first compiles). Each side runs in a fresh process (the
device count is fixed when JAX starts), the sides alternating over ``--rounds`` rounds. Per side:
wall and CPU milliseconds per model and epoch after the first, and the train state's bytes on the
first device against all of it. The simulated devices share the machine's cores: this shows what the
split costs, not a speed-up. Results: ``benchmarks/results/mesh_cost.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent

CHILD = r'''
import json, os, sys, time
import jax, numpy as np
from jaxvae import TrainConfig, VAEConfig
from jaxvae.training import fit_models
devices, n_models, epochs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
assert len(jax.devices()) == devices
rng = np.random.default_rng(0)
x, v = ((rng.random((n, 784)) ** 3).astype(np.float32) for n in (2048, 512))
configs = [TrainConfig(batch_size=128, max_epochs=epochs, seed=i) for i in range(n_models)]
stamps = []
start = time.perf_counter()
placement = dict(mesh=(devices, 1)) if devices > 1 else dict(data_parallel=None)
result = fit_models(x, v, vae_config=VAEConfig(hidden=(64,)), train_configs=configs, **placement,
                    callbacks=[lambda *_: stamps.append((time.perf_counter(), time.process_time()))])
jax.block_until_ready(result.params)
wall, cpu = ((stamps[-1][k] - stamps[0][k]) / (epochs - 1) / n_models for k in (0, 1))
leaves = jax.tree.leaves(result.state.train_state)
first = jax.devices()[0]
print(json.dumps({"devices": devices, "wall_ms": 1e3 * wall, "cpu_ms": 1e3 * cpu, "first_epoch_s": stamps[0][0] - start,
                  "state_bytes_first_device": sum(s.data.nbytes for l in leaves for s in l.addressable_shards
                                                  if s.device == first),
                  "state_bytes": sum(l.nbytes for l in leaves), "load": os.getloadavg()[0]}))
'''


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per side (>= 2: the first one compiles)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(BENCH_DIR / "results" / "mesh_cost"), help="path without suffix")
    args = parser.parse_args(argv)
    rows = []
    for round_ in range(args.rounds):
        for devices in (1, 8) if round_ % 2 == 0 else (8, 1):
            env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
                   "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
            done = subprocess.run([sys.executable, "-c", CHILD, str(devices), str(args.models), str(args.epochs)],
                                  env=env, capture_output=True, text=True, check=False)
            if done.returncode:
                raise SystemExit(done.stderr[-3000:])
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    lines = [f"# A sweep's cost per model on 1 and 8 simulated CPU devices ({os.cpu_count()} cores)", "",
             f"{args.models} models of 784-64-2, batch 128, 2048 images; per model and epoch after the first.", "",
             "| devices | mesh | CPU ms | wall ms | state bytes on the first device / all | load |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['devices']} | {'8x1' if r['devices'] > 1 else '-'} | {r['cpu_ms']:.1f} | {r['wall_ms']:.1f} | "
                     f"{r['state_bytes_first_device']:,} / {r['state_bytes']:,} | {r['load']:.1f} |")
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
