"""Training speed of jaxvae against PyTorch, in one run, on the same data: ``python benchmarks/train_speed.py``.

Every variant trains the blog's VAE (784-400-2, LeakyReLU, sigmoid output, Adam 1e-3) on the same
MNIST-shaped data (synthetic by default, real MNIST with ``--data-dir``), batch 128: 468 full
batches and the partial one. Each variant runs in its own subprocess, one after the other (torch
and XLA thread pools would fight otherwise), and reports seconds per epoch after warm-up (median,
min, max), the warm-up (compile) time separately, samples/s, ms/step and its speed relative to the
blog's loop. The arithmetic floor is the epoch's counted matmul FLOPs over the matmul rate measured
in the same run. Then batch 1024, and a sweep of the hidden width showing where overhead stops
mattering. Results: ``benchmarks/results/train_speed.json`` and ``.md``.

The device is chosen automatically: CUDA when torch / JAX see one (CUDA-graph variants only there),
else the CPU. Matmul precision is set to full float32 on both sides (``--precision``).
``--quick`` is the CI smoke run: tiny data, no torch.compile variants, well under a minute.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
# The checkout's own packages win over any installed copy (worktrees, editable installs elsewhere).
for _path in (str(REPO_ROOT), str(BENCH_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import numpy as np  # noqa: E402

from jaxvae.data import to_unit_float  # noqa: E402  (torchvision's scaling; no device work in the parent)

INPUT_DIM = 784
LATENT_DIM = 2

#: name -> (framework, description). The order is the table's order; (1) is the reference.
VARIANTS = {
    "torch_blog": ("torch", "(1) torchref's blog loop: train_one_epoch over a DataLoader, Adam"),
    "torch_fast": ("torch", "(2a) PyTorch eager, manual batching of a preloaded tensor, Adam(fused=True)"),
    "torch_compile": ("torch", "(2b) (2a) with torch.compile on the loss (forward + AOT backward)"),
    "torch_cudagraphs": ("torch", "(2c) (2b) with mode='reduce-overhead' (CUDA graphs; GPU only)"),
    "torch_heroic": ("torch", "(2d) torch.func grad + Adam in one torch.compile(fullgraph) call of K steps, "
                              "malloc thresholds raised"),
    "jax_loop": ("jax", "(3) jaxvae: Python loop over the jitted, donated train_step"),
    "jax_epoch": ("jax", "(4) jaxvae: the whole epoch as one compiled call (train_epoch)"),
}
COMPILE_VARIANTS = {"torch_compile", "torch_cudagraphs", "torch_heroic"}
GPU_ONLY = {"torch_cudagraphs"}
# glibc keeps freed gradient-sized blocks instead of returning (and page-faulting) them every step.
HEROIC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 31)}


# ----------------------------------------------------------------------------------------- data
def synthetic_mnist(n: int, seed: int) -> np.ndarray:
    """MNIST-shaped uint8 images [n, 784]: about 80% black pixels, the rest uniform in 1..255,
    roughly MNIST's sparsity, so that no kernel sees unrealistically dense or constant data."""
    rng = np.random.default_rng(seed)
    ink = rng.random((n, INPUT_DIM), dtype=np.float32) < 0.19
    return np.where(ink, rng.integers(1, 256, (n, INPUT_DIM), dtype=np.uint8), 0).astype(np.uint8)


def load_data(args) -> tuple[np.ndarray, np.ndarray, str]:
    """(train uint8 [N, 784], validation uint8 [M, 784], description)."""
    if args.data_dir:
        from jaxvae.data import load_mnist

        train, val = (load_mnist(args.data_dir, split, download=False)[0].reshape(-1, INPUT_DIM)
                      for split in ("train", "test"))
        if args.samples:
            train = train[: args.samples]
        return train, val[: max(args.samples // 6, 1)] if args.samples else val, f"MNIST from {args.data_dir}"
    n = args.samples or 60000
    return synthetic_mnist(n, 0), synthetic_mnist(max(n // 6, 1), 1), "synthetic MNIST-shaped uint8 (seed 0)"


# ------------------------------------------------------------------------------------- counting
def layer_shapes(hidden: int) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of the matmuls of one step; the two encoder heads count as one [h, 2l]."""
    return [(INPUT_DIM, hidden), (hidden, 2 * LATENT_DIM), (LATENT_DIM, hidden), (hidden, INPUT_DIM)]


def step_flops(batch: int, hidden: int) -> int:
    """Matmul FLOPs of one training step: forward, weight gradient and input gradient of every
    layer (2*b*in*out each), except the input gradient of the first layer, which nobody needs."""
    per_layer = [2 * batch * fi * fo for fi, fo in layer_shapes(hidden)]
    return 3 * sum(per_layer) - per_layer[0]


def epoch_flops(n: int, batch: int, hidden: int) -> int:
    full, tail = divmod(n, batch)
    return full * step_flops(batch, hidden) + (step_flops(tail, hidden) if tail else 0)


# ---------------------------------------------------------------------------------------- timing
def time_epochs(run_epoch, warmup: int, epochs: int) -> dict:
    """Run ``warmup`` epochs (the first includes compilation) then ``epochs`` timed ones.
    ``run_epoch()`` must return only once the device is done."""
    warm = []
    for _ in range(warmup):
        start = time.perf_counter()
        run_epoch()
        warm.append(time.perf_counter() - start)
    times, cpu = [], []
    for _ in range(epochs):
        start, cpu_start = time.perf_counter(), time.process_time()
        run_epoch()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    median = statistics.median(times)
    return {
        "times": times,
        # CPU seconds of all this process's threads: steadier than wall time on a shared machine
        "cpu_median_s": statistics.median(cpu),
        "load_average": os.getloadavg()[0],
        "median_s": median,
        "min_s": min(times),
        "max_s": max(times),
        "warmup_s": warm,
        # compilation and first-touch cost: the first epoch's excess over a steady one
        "compile_s": max(warm[0] - median, 0.0) if warm else None,
    }


# --------------------------------------------------------------------------------------- workers
def worker_main(jobs_path: str, out_path: str) -> None:
    """Run the jobs in ``jobs_path`` (one framework) in this process; write results as JSON."""
    jobs = json.loads(Path(jobs_path).read_text())
    data = np.load(jobs[0]["data_path"])
    data = {k: data[k] for k in data.files}
    framework = jobs[0]["framework"]
    if framework == "torch":
        import torch_variants as impl
    else:
        import jax_variants as impl
    results = []
    for job in jobs:
        try:
            results.append({**job, **impl.run_job(job, data)})
        except Exception as exc:  # one broken variant must not hide the others' numbers
            import traceback

            traceback.print_exc()
            results.append({**job, "error": f"{type(exc).__name__}: {exc}"})
        Path(out_path).write_text(json.dumps(results))  # partial results survive a crash


def run_worker_process(jobs: list[dict], tmp: Path, tag: str, env_extra: dict | None = None, timeout=None) -> list[dict]:
    jobs_path, out_path = tmp / f"{tag}.jobs.json", tmp / f"{tag}.out.json"
    jobs_path.write_text(json.dumps(jobs))
    env = {**os.environ, **(env_extra or {})}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(jobs_path), str(out_path)]
    try:
        proc = subprocess.run(cmd, env=env, timeout=timeout, capture_output=True, text=True)
        failure = None if proc.returncode == 0 else f"worker exited {proc.returncode}: {proc.stderr[-2000:]}"
    except subprocess.TimeoutExpired:
        failure = f"worker timed out after {timeout} s"
    done = json.loads(out_path.read_text()) if out_path.exists() else []
    if failure:
        print(failure, file=sys.stderr)
    finished = {(r["section"], r["variant"], r["hidden"], r["batch"]) for r in done}
    for job in jobs:
        if (job["section"], job["variant"], job["hidden"], job["batch"]) not in finished:
            done.append({**job, "error": failure or "no result"})
    return done


# ------------------------------------------------------------------------------------- reporting
def machine_description() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}


def fmt(value, digits=3):
    return "-" if value is None else f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def markdown_report(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# Training speed: jaxvae vs PyTorch ({report['device']})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['platform']}); {report['versions']}.",
        f"Data: {report['data']}, {report['n_train']} training samples; {report['warmup']} warm-up + "
        f"{report['epochs']} timed epochs per variant, each variant in its own process.",
        f"Matmul rate measured in this run (best of the wall-clock rate and FLOPs per CPU second x cores): "
        f"{fmt(report['matmul']['best_gflops'], 4)} GFLOP/s "
        f"({report['matmul']['best_backend']}); XLA's kernels {fmt(report['matmul'].get('jax_gflops'), 4)} GFLOP/s, "
        f"torch's {fmt(report['matmul'].get('torch_gflops'), 4)} GFLOP/s.",
    ]
    if report.get("note"):
        lines += ["", report["note"]]
    for section, title in (("main", "batch 128"), ("batch1024", "batch 1024")):
        rows = [r for r in report["results"] if r["section"] == section]
        if not rows:
            continue
        r0 = rows[0]
        lines += [
            "",
            f"## {title}, hidden {r0['hidden']} ({r0['steps']} steps per epoch)",
            "",
            f"Arithmetic floor: {fmt(r0['floor_s'])} s per epoch ({fmt(r0['epoch_gflop'], 4)} GFLOP at the best "
            f"measured matmul rate); XLA's matmul kernels alone: {fmt(r0.get('xla_matmul_s'))} s.",
            "",
            "| variant | median s/epoch | min-max | compile s | samples/s | ms/step | x blog loop | x floor | CPU s/epoch | load |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            if "error" in r or "skipped" in r:
                lines.append(f"| {r['variant']} | {r.get('skipped') or 'error: ' + r['error'][:80]} | | | | | | | | |")
                continue
            lines.append(
                f"| {r['variant']} | {r['median_s']:.3f} | {r['min_s']:.3f}-{r['max_s']:.3f} | {fmt(r['compile_s'])} | "
                f"{r['samples_per_s']:.0f} | {r['ms_per_step']:.3f} | {fmt(r.get('vs_blog'))} | {fmt(r.get('vs_floor'))} | "
                f"{fmt(r.get('cpu_median_s'))} | {fmt(r.get('load_average'), 2)} |"
            )
        evals = [r for r in rows if r.get("eval_median_s") is not None]
        if evals:
            lines += ["", f"Validation epoch ({report['n_val']} samples): " + "; ".join(
                f"{r['variant']} {r['eval_median_s']:.3f} s (compile {fmt(r.get('eval_compile_s'))} s)" for r in evals)]
    sweep = [r for r in report["results"] if r["section"] == "sweep"]
    if sweep:
        hiddens = sorted({r["hidden"] for r in sweep})
        names = [v for v in VARIANTS if any(r["variant"] == v for r in sweep)]
        lines += [
            "",
            f"## Model-size sweep, batch {sweep[0]['batch']}: median s/epoch (x arithmetic floor)",
            "",
            "| hidden | floor s | " + " | ".join(names) + " |",
            "|---|---|" + "---|" * len(names),
        ]
        for h in hiddens:
            cells = []
            for v in names:
                r = next((r for r in sweep if r["hidden"] == h and r["variant"] == v), None)
                ok = r is not None and "median_s" in r
                cells.append(f"{r['median_s']:.3f} ({r['vs_floor']:.2f})" if ok else (r or {}).get("skipped", "error"))
            floor = next(r["floor_s"] for r in sweep if r["hidden"] == h)
            lines.append(f"| {h} | {floor:.3f} | " + " | ".join(cells) + " |")
    lines += ["", "Variants:", ""] + [f"- `{k}`: {d}" for k, (_, d) in VARIANTS.items()]
    return "\n".join(lines) + "\n"


def finish_report(report: dict, rates: dict, results: list[dict], n: int, out: Path) -> str:
    """Add the derived figures (floor, ratios) to ``results`` and write the JSON and Markdown;
    called after every variant, so an interrupted run still leaves its numbers."""
    results = [dict(r) for r in results]
    # Derived figures, all from numbers of this run.
    # On a busy machine the wall-clock rate falls with the load; FLOPs per CPU second times the
    # core count is what an idle machine would give (exact for XLA, conservative for spinning OpenMP).
    cores = os.cpu_count() or 1
    matmul_rates = {fw: max(r.get("gflops", 0), r.get("gflops_per_cpu_s", 0) * cores if r.get("device", "cpu") == "cpu" else 0)
                    for fw, r in rates.items() if r.get("gflops")}
    best_fw = max(matmul_rates, key=matmul_rates.get) if matmul_rates else None
    report["matmul"] = {
        "best_gflops": matmul_rates.get(best_fw), "best_backend": best_fw,
        "torch_gflops": matmul_rates.get("torch"), "jax_gflops": matmul_rates.get("jax"),
        "detail": rates,
    }
    order = {v: i for i, v in enumerate(VARIANTS)}
    results.sort(key=lambda r: (["main", "batch1024", "sweep"].index(r["section"]), r["hidden"], order[r["variant"]]))
    for r in results:
        for key in ("data_path", "framework", "precision", "quick"):
            r.pop(key, None)
        full, tail = divmod(n, r["batch"])
        r["steps"] = full + (1 if tail else 0)
        flops = epoch_flops(n, r["batch"], r["hidden"])
        r["epoch_gflop"] = flops / 1e9
        r["floor_s"] = flops / (matmul_rates[best_fw] * 1e9) if best_fw else None
        if matmul_rates.get("jax"):
            r["xla_matmul_s"] = flops / (matmul_rates["jax"] * 1e9)
        if "median_s" in r:
            r["samples_per_s"] = n / r["median_s"]
            r["ms_per_step"] = 1e3 * r["median_s"] / r["steps"]
            r["vs_floor"] = r["median_s"] / r["floor_s"] if r["floor_s"] else None
            blog = next((b for b in results if b["variant"] == "torch_blog" and b["section"] == r["section"]
                         and b["hidden"] == r["hidden"] and "median_s" in b), None)
            r["vs_blog"] = blog["median_s"] / r["median_s"] if blog else None
    report["results"] = results

    out.parent.mkdir(parents=True, exist_ok=True)
    markdown = markdown_report(report)
    for path, text in ((out.with_suffix(".json"), json.dumps(report, indent=1)), (out.with_suffix(".md"), markdown)):
        partial = path.with_suffix(path.suffix + ".tmp")
        partial.write_text(text)
        partial.replace(path)  # no half-written result files
    return markdown


# ------------------------------------------------------------------------------------------ main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI smoke run: tiny data, no compile variants, < 1 min")
    p.add_argument("--data-dir", default=None, help="real MNIST (IDX files) instead of synthetic data")
    p.add_argument("--samples", type=int, default=None, help="training samples (default 60000; --quick 2048)")
    p.add_argument("--epochs", type=int, default=None, help="timed epochs per variant (default 9; --quick 2)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up epochs (default 2; --quick 1)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of: " + ", ".join(VARIANTS))
    p.add_argument("--sections", default="main,batch1024,sweep", help="which of main,batch1024,sweep to run")
    p.add_argument("--sweep-hidden", default="400,1024,2048,4096")
    p.add_argument("--sweep-variants", default="torch_fast,torch_heroic,jax_epoch")
    p.add_argument("--sweep-epochs", type=int, default=3)
    p.add_argument("--heroic-steps", type=int, default=12, help="training steps per compiled call in torch_heroic")
    p.add_argument("--precision", choices=("highest", "high"), default="highest",
                   help="float32 matmul precision on GPU for both frameworks (highest = no TF32)")
    p.add_argument("--worker-timeout", type=float, default=1800.0)
    p.add_argument("--out", default=str(BENCH_DIR / "results" / "train_speed"), help="output path without suffix")
    p.add_argument("--note", default="", help="a line for the report, e.g. 'machine shared, numbers noisy'")
    p.add_argument("--worker", nargs=2, metavar=("JOBS", "OUT"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def detect_device() -> str:
    """'cuda' when torch sees a GPU (JAX picks its default backend on its own), else 'cpu'."""
    probe = "import torch; print(int(torch.cuda.is_available()))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip()
    return "cuda" if out == "1" else "cpu"


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.worker:
        worker_main(*args.worker)
        return {}
    quick = args.quick
    args.samples = args.samples or (2048 if quick else None)
    epochs = args.epochs or (2 if quick else 9)
    warmup = args.warmup if args.warmup is not None else (1 if quick else 2)
    sweep_hidden = [400, 1024] if quick and args.sweep_hidden == "400,1024,2048,4096" else [int(h) for h in args.sweep_hidden.split(",")]
    sweep_epochs = min(args.sweep_epochs, epochs)
    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]

    device = detect_device()
    train_u8, val_u8, data_desc = load_data(args)
    n = len(train_u8)
    print(f"device {device}; data: {data_desc}, {n} train / {len(val_u8)} validation samples", flush=True)

    report = {
        "device": device, "machine": machine_description(), "data": data_desc, "n_train": n, "n_val": len(val_u8),
        "epochs": epochs, "warmup": warmup, "quick": quick, "note": args.note, "results": [],
    }
    with tempfile.TemporaryDirectory(prefix="jaxvae-bench-") as tmp_name:
        tmp = Path(tmp_name)
        data_path = tmp / "data.npz"
        np.savez(data_path, train=to_unit_float(train_u8), val=to_unit_float(val_u8))
        base = {"data_path": str(data_path), "device": device, "precision": args.precision,
                "heroic_steps": args.heroic_steps, "seed": 0}

        def measure_matmul_rates(previous: dict) -> dict:
            """Each framework's matmul rate in a fresh process; the best of this and ``previous``
            (measured before and after the variants, so that a burst of load on a shared machine
            does not set the floor)."""
            best = dict(previous)
            for fw in ("torch", "jax"):
                res = run_worker_process([{**base, "framework": fw, "section": "matmul", "variant": "matmul",
                                           "hidden": 400, "batch": 128, "quick": quick}], tmp, f"matmul-{fw}",
                                         timeout=args.worker_timeout)[0]
                if res.get("gflops", 0) > best.get(fw, {}).get("gflops", 0):
                    best[fw] = res
                best.setdefault(fw, res)
            return best

        rates = measure_matmul_rates({})
        report["versions"] = ", ".join(v for fw in ("torch", "jax") if (v := rates[fw].get("version")))

        jobs = []
        plan = []
        if "main" in sections:
            plan += [("main", v, 400, 128, epochs) for v in chosen]
        if "batch1024" in sections:
            plan += [("batch1024", v, 400, 1024, epochs) for v in chosen]
        if "sweep" in sections:
            sweep_variants = [v for v in args.sweep_variants.split(",") if v in chosen]
            plan += [("sweep", v, h, 128, sweep_epochs) for h in sweep_hidden for v in sweep_variants]
        for section, variant, hidden, batch, n_epochs in plan:
            framework = VARIANTS[variant][0]
            job = {**base, "framework": framework, "section": section, "variant": variant, "hidden": hidden,
                   "batch": batch, "epochs": n_epochs, "warmup": warmup, "quick": quick,
                   "eval": section == "main"}
            if variant in GPU_ONLY and device != "cuda":
                job["skipped"] = "GPU only"
            elif variant in COMPILE_VARIANTS and quick:
                job["skipped"] = "skipped in --quick"
            jobs.append(job)

        results = [j for j in jobs if "skipped" in j]
        runnable = [j for j in jobs if "skipped" not in j]
        if quick:  # one process per framework keeps the smoke run short
            for fw in ("torch", "jax"):
                group = [j for j in runnable if j["framework"] == fw]
                if group:
                    results += run_worker_process(group, tmp, f"quick-{fw}", timeout=args.worker_timeout)
        else:
            for i, job in enumerate(runnable):
                print(f"[{i + 1}/{len(runnable)}] {job['section']} {job['variant']} hidden {job['hidden']} "
                      f"batch {job['batch']}", flush=True)
                env = HEROIC_ENV if job["variant"] == "torch_heroic" else None
                results += run_worker_process([job], tmp, f"job{i}", env, timeout=args.worker_timeout)
                finish_report(report, rates, results, n, Path(args.out))
        if not quick:
            rates = measure_matmul_rates(rates)

    markdown = finish_report(report, rates, results, n, Path(args.out))
    print(markdown)
    return report


if __name__ == "__main__":
    main()
