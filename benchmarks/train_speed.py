"""Training speed of jaxvae against PyTorch, interleaved, in one run: ``python benchmarks/train_speed.py``.

Sections (``--sections``, all by default):

* ``main`` / ``batch1024``: the blog's VAE (784-400-2, LeakyReLU, sigmoid output, Adam 1e-3) at
  batch 128 and 1024 on the same MNIST-shaped data, every PyTorch and jaxvae variant;
* ``sweep``: the same at hidden widths up to 4096, where per-step overhead stops mattering;
* ``burda``: jaxvae's step on Burda et al.'s model (784-200-200-50 tanh, Bernoulli, dynamic
  binarisation, batch 20, Adam eps 1e-4) against its arithmetic floor;
* ``eval``: the importance-sampled log-likelihood (``jaxvae.evaluate``) against its matmul floor;
* ``cli``: ``jaxvae train``'s wall time per epoch against the bare compiled epoch.

Variants are **interleaved**: each runs in its own worker process, set up (and compiled) first, then
the parent runs rounds in which every variant does one epoch, in an order rotated each round, so a
drift of the shared machine's speed lands on all variants alike. Each round also measures the
matmul rate of both frameworks on the section's own matmul shapes, so every epoch has its own
arithmetic floor. Reported per variant: seconds per epoch (median, min-max), CPU seconds per epoch
(all threads of its process), and per-round ratios (median and range) against jaxvae's compiled
epoch and against the floor. The ``cli`` section alternates fresh processes instead (a bare
``train_epoch`` loop, then ``jaxvae train``), since a command-line run cannot be paused.

Results: ``benchmarks/results/train_speed.json`` and ``.md``, rewritten after every section. The
device is chosen automatically (CUDA when torch / JAX see one, else the CPU); matmuls in full
float32 on both sides (``--precision``). ``--quick`` is the CI smoke run: tiny sizes, no
torch.compile variants, one worker per framework.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import select
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
# The checkout's own packages win over any installed copy (worktrees, editable installs elsewhere).
for _path in (str(REPO_ROOT), str(BENCH_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import numpy as np  # noqa: E402

INPUT_DIM = 784
LATENT_DIM = 2

#: name -> (framework, description). The order is the table's order; (1) is the reference loop.
VARIANTS = {
    "torch_blog": ("torch", "(1) torchref's blog loop: train_one_epoch over a DataLoader, Adam"),
    "torch_fast": ("torch", "(2a) PyTorch eager, manual batching of a preloaded tensor, Adam(fused=True)"),
    "torch_compile": ("torch", "(2b) (2a) with torch.compile on the loss (forward + AOT backward)"),
    "torch_cudagraphs": ("torch", "(2c) (2b) with mode='reduce-overhead' (CUDA graphs; GPU only)"),
    "torch_heroic": ("torch", "(2d) torch.func grad + Adam in one torch.compile(fullgraph) call of K steps, "
                              "malloc thresholds raised"),
    "torch_graphed": ("torch", "(2e) a whole step (forward, backward, fused Adam) captured in a CUDA graph on static "
                               "tensors, replayed per batch (GPU only)"),
    "jax_loop": ("jax", "(3) jaxvae: Python loop over the jitted, donated train_step"),
    "jax_epoch": ("jax", "(4) jaxvae: the whole epoch as one compiled call (train_epoch)"),
}
SUBJECT = "jax_epoch"  # the variant every other is compared with, round by round
COMPILE_VARIANTS = {"torch_compile", "torch_cudagraphs", "torch_heroic"}
GPU_ONLY = {"torch_cudagraphs", "torch_graphed"}
# glibc keeps freed gradient-sized blocks instead of returning (and page-faulting) them every step.
HEROIC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 31)}
# The command line without its progress bar (its epoch lines still printed, which the section times)
NO_BAR = "jaxvae train --progress none"
SECTIONS = ("main", "batch1024", "sweep", "burda", "eval", "cli")
QUICK_SECTIONS = ("main", "burda", "eval", "cli")  # batch1024 and sweep run the same code as main
BURDA_LAYERS = [(784, 200), (200, 200), (200, 100), (50, 200), (200, 200), (200, 784)]  # heads fused: [200, 2*50]
BURDA_DECODER = [(50, 200), (200, 200), (200, 784)]
PROTOCOL = "@@bench "  # prefix of the worker's answer lines (anything else on its stdout is ignored)


# ------------------------------------------------------------------ shared with the variant modules
@dataclass
class Job:
    """A unit of timed work set up in a worker: ``run()`` does one epoch (or one evaluation, or one
    pass of matmuls) and returns once the device is done. ``steps``: optimisation steps per run;
    ``flops``: matmul FLOPs per run (matmul jobs)."""

    run: Callable[[], Any]
    run_eval: Callable[[], Any] | None = None
    steps: int | None = None
    flops: float | None = None
    info: dict = field(default_factory=dict)


def dense_layers(hidden: int | tuple = 400, latent: int = LATENT_DIM, input_dim: int = INPUT_DIM) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of the matmuls of an MLP VAE: encoder trunk, the two heads as one
    [h, 2 * latent] matmul (as jaxvae runs them), decoder mirrored, output layer."""
    widths = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    enc = list(zip((input_dim, *widths), widths)) + [(widths[-1], 2 * latent)]
    dec_widths = (latent, *reversed(widths))
    return enc + list(zip(dec_widths, dec_widths[1:])) + [(widths[0], input_dim)]


def matmul_flops(layers, rows: int, backward: bool = True) -> int:
    """FLOPs of the matmuls of one pass over ``rows`` samples: per layer 2*rows*in*out forward and,
    for a training step, as much again for the weight gradient and for the input gradient, except
    the first layer's input gradient, which nobody needs."""
    per_layer = [2 * rows * fan_in * fan_out for fan_in, fan_out in layers]
    return 3 * sum(per_layer) - per_layer[0] if backward else sum(per_layer)


def epoch_flops(n: int, batch: int, layers) -> int:
    full, tail = divmod(n, batch)
    return full * matmul_flops(layers, batch) + (matmul_flops(layers, tail) if tail else 0)


# ----------------------------------------------------------------------------------------- data
def to_unit_float(images: np.ndarray) -> np.ndarray:
    """``jaxvae.data.to_unit_float`` (torchvision's scaling), imported on first use: importing jaxvae
    imports JAX, which a process that only starts and drives workers does not need."""
    from jaxvae.data import to_unit_float as scale

    return scale(images)


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


def write_idx_dir(directory: Path, train: np.ndarray, val: np.ndarray) -> Path:
    """The arrays as the four MNIST IDX files (labels all 0), so that ``jaxvae train --data-dir``
    reads exactly the benchmark's data."""
    from jaxvae.data import MNIST_FILES
    from jaxvae.datasets.make_datasets import idx_bytes

    directory.mkdir(parents=True, exist_ok=True)
    for split, images in (("train", train), ("test", val)):
        image_name, label_name = MNIST_FILES[split]
        (directory / image_name).write_bytes(idx_bytes(images.reshape(-1, 28, 28)))
        (directory / label_name).write_bytes(idx_bytes(np.zeros(len(images), np.uint8)))
    return directory


# --------------------------------------------------------------------------------------- workers
def worker_main() -> None:
    """A worker process: set up jobs and run them on command (JSON lines on stdin, answers on
    stdout prefixed with PROTOCOL). Anything else written to stdout, by any library, goes to stderr."""
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    data, jobs = None, {}
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        try:
            if cmd["op"] == "setup":
                job = cmd["job"]
                if data is None:
                    loaded = np.load(job["data_path"])
                    data = {k: loaded[k] for k in loaded.files}
                # a job may name the module that builds it (benchmarks/family_speed.py's do)
                impl = __import__(job.get("module") or ("torch_variants" if job["framework"] == "torch"
                                                        else "jax_variants"))
                start = time.perf_counter()
                jobs[cmd["id"]] = made = impl.make_job(job, data)
                setup_s = time.perf_counter() - start
                warm = [_timed(made.run)["wall"] for _ in range(cmd.get("warmup", 0))]
                if made.run_eval is not None and cmd.get("warmup", 0):
                    warm_eval = _timed(made.run_eval)["wall"]
                else:
                    warm_eval = None
                answer = {"setup_s": setup_s, "warmup_s": warm, "eval_warmup_s": warm_eval, "steps": made.steps,
                          "flops": made.flops, "info": made.info}
            else:
                made = jobs[cmd["id"]]
                answer = _timed(made.run_eval if cmd["op"] == "eval" else made.run)
        except Exception as exc:  # one broken variant must not hide the others' numbers
            import traceback

            traceback.print_exc()
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        answers.write(PROTOCOL + json.dumps(answer) + "\n")


def _timed(fn) -> dict:
    start, cpu_start = time.perf_counter(), time.process_time()
    value = fn()
    return {"wall": time.perf_counter() - start, "cpu": time.process_time() - cpu_start,
            "value": float(value) if value is not None else None, "load": os.getloadavg()[0]}


def _env(extra: dict | None) -> dict:
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # Several worker processes share one GPU: none may take JAX's default 75% of its memory up front.
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    return env


class Worker:
    """A worker subprocess hosting one or more jobs; ``call`` sends a command and waits for the answer."""

    def __init__(self, tmp: Path, tag: str, env_extra: dict | None = None, timeout: float = 1800.0):
        self.log = tmp / f"{tag}.log"
        self.timeout = timeout
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker"], env=_env(env_extra),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log.open("w"), text=True)

    def call(self, timeout: float | None = None, **cmd) -> dict:
        """Send ``cmd``; its answer, or an error once ``timeout`` (default: the worker's) has passed."""
        if self.proc.poll() is not None:
            return {"error": f"worker exited {self.proc.returncode}: {self._log_tail()}"}
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:  # it is stuck in the command: asking it to quit would wait for nothing
                self.proc.kill()
                self.proc.wait()
                return {"error": f"worker timed out after {timeout:.0f} s"}
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait()
                return {"error": f"worker exited {self.proc.returncode}: {self._log_tail()}"}
            if line.startswith(PROTOCOL):
                return json.loads(line[len(PROTOCOL):])

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


@dataclass
class Unit:
    """One interleaved contestant: a job in a worker, and its setup answer and per-round results."""

    name: str
    job: dict
    worker: Worker
    setup: dict = field(default_factory=dict)
    rounds: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return "error" not in self.setup and all("error" not in r for r in self.rounds)

    def error(self) -> str | None:
        for r in (self.setup, *self.rounds, *self.evals):
            if "error" in r:
                return r["error"]
        return None


def interleave(units: list[Unit], rounds: int, op: str = "run", pause: float = 0.05,
               deadline: float | None = None) -> None:
    """``rounds`` rounds; in each, every unit runs once, the order rotated by one each round. The
    pause lets spinning thread pools (OpenMP) go idle before the next unit starts. No round starts
    after ``deadline`` (``time.monotonic()``), so a time-boxed run keeps the rounds it finished."""
    live = [u for u in units if "error" not in u.setup]
    for r in range(rounds):
        if deadline is not None and time.monotonic() > deadline:
            break
        for u in live[r % len(live):] + live[: r % len(live)] if live else []:
            time.sleep(pause)
            result = u.worker.call(op=op, id=u.name)
            (u.evals if op == "eval" else u.rounds).append({**result, "round": r})


# ------------------------------------------------------------------------------------- statistics
def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio_stats(numerators: list[float], denominators: list[float]) -> dict | None:
    """Median and range of per-round ratios a_r / b_r (rounds where either is missing skipped)."""
    ratios = [a / b for a, b in zip(numerators, denominators) if a is not None and b]
    if not ratios:
        return None
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "n": len(ratios)}


def walls(unit: Unit | None, which: str = "rounds") -> list[float | None]:
    if unit is None:
        return []
    return [r.get("wall") for r in getattr(unit, which)]


def rates_per_round(matmul_units: list[Unit], rounds: int) -> list[dict]:
    """Per round: each framework's matmul rate (GFLOP/s; on a CPU the better of the wall-clock rate
    and FLOPs per CPU second x cores, so a burst of load does not lower the floor) and the best."""
    cores = os.cpu_count() or 1
    out = []
    for r in range(rounds):
        rates = {}
        for u in matmul_units:
            res = next((x for x in u.rounds if x.get("round") == r and "wall" in x), None)
            if res is None or not u.setup.get("flops"):
                continue
            flops = u.setup["flops"]
            rate = flops / res["wall"]
            if u.job["device"] == "cpu" and res["cpu"] > 0:
                rate = max(rate, flops / res["cpu"] * cores)
            rates[u.job["framework"]] = rate / 1e9
        out.append({**rates, "best": max(rates.values()) if rates else None})
    return out


def summarise(unit: Unit, subject: Unit | None, reference: Unit | None, floors: list[float | None]) -> dict:
    """A variant's figures: times, CPU, per-round ratios against the subject, the reference loop
    and the floor (``floors[r]``: the floor in seconds in round r)."""
    w, cpu = walls(unit), [r.get("cpu") for r in unit.rounds]
    s = {"variant": unit.name, **{k: v for k, v in unit.job.items() if k in ("section", "hidden", "batch", "model")}}
    if unit.error():
        return {**s, "error": unit.error()}
    if not w:
        return {**s, "error": "no timed round: the time ran out"}
    steps = unit.setup.get("steps")
    s.update(times=w, cpu_times=cpu, median_s=_median(w), min_s=min(w), max_s=max(w), cpu_median_s=_median(cpu),
             load_average=_median(r.get("load") for r in unit.rounds), steps=steps,
             compile_s=max(unit.setup["warmup_s"][0] - _median(w), 0.0) if unit.setup.get("warmup_s") else None)
    if steps:
        s["ms_per_step"] = 1e3 * s["median_s"] / steps
    if subject is not None and subject is not unit:
        s["subject_ratio"] = ratio_stats(walls(subject), w)  # t(jaxvae) / t(variant), round by round
    if reference is not None:
        s["vs_reference"] = ratio_stats(walls(reference), w)  # how many times faster than the blog loop
    s["vs_floor"] = ratio_stats(w, floors)
    if unit.evals:
        ev = walls(unit, "evals")
        s.update(eval_times=ev, eval_median_s=_median(ev))
    return s


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


def fmt_ratio(stats: dict | None) -> str:
    if not stats:
        return "-"
    return f"{stats['median']:.3f} ({stats['min']:.3f}-{stats['max']:.3f})"


def markdown_report(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# Speed: jaxvae vs PyTorch ({report['device']})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['platform']}); {report.get('versions', '')}.",
        f"Data: {report['data']}, {report['n_train']} training / {report['n_val']} validation samples. "
        f"Interleaved: per section every variant runs in its own process, set up and compiled first "
        f"({report['warmup']} warm-up epochs), then {report['epochs']} rounds of one epoch each, the order "
        "rotated every round. Ratios are per round, median (min-max) over the rounds.",
    ]
    if report.get("note"):
        lines += ["", report["note"]]
    titles = {"main": "batch 128", "batch1024": "batch 1024"}
    for section in ("main", "batch1024"):
        sec = report["sections"].get(section)
        if not sec:
            continue
        rows = sec["variants"]
        r0 = next(iter(rows), {})
        lines += [
            "",
            f"## {titles[section]}, hidden {r0.get('hidden')} ({r0.get('steps')} steps per epoch)",
            "",
            f"Arithmetic floor: {fmt(sec['epoch_gflop'], 4)} GFLOP per epoch at the best matmul rate of each round "
            f"(median {fmt(sec['rates']['best'], 4)} GFLOP/s: XLA {fmt(sec['rates'].get('jax'), 4)}, "
            f"torch {fmt(sec['rates'].get('torch'), 4)}) = {fmt(sec['floor_s'])} s. "
            f"Load average during the rounds: {fmt(sec.get('load'), 2)}.",
            "",
            "| variant | median s/epoch | min-max | CPU s/epoch | ms/step | x floor | jaxvae (4) / variant | "
            "x blog loop | compile s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            if "error" in r or "skipped" in r:
                lines.append(f"| {r['variant']} | {r.get('skipped') or 'error: ' + r['error'][:80]} | | | | | | | |")
                continue
            lines.append(
                f"| {r['variant']} | {r['median_s']:.3f} | {r['min_s']:.3f}-{r['max_s']:.3f} | {fmt(r['cpu_median_s'])} | "
                f"{fmt(r.get('ms_per_step'))} | {fmt_ratio(r.get('vs_floor'))} | "
                f"{fmt_ratio(r.get('subject_ratio')) if r['variant'] != SUBJECT else '1'} | "
                f"{fmt_ratio(r.get('vs_reference'))} | {fmt(r.get('compile_s'))} |")
        evals = [r for r in rows if r.get("eval_median_s") is not None]
        if evals:
            lines += ["", f"Validation epoch ({report['n_val']} samples, interleaved): " + "; ".join(
                f"{r['variant']} {r['eval_median_s']:.3f} s" for r in evals)]
    sweep = report["sections"].get("sweep")
    if sweep:
        names = [v for v in VARIANTS if any(r["variant"] == v for h in sweep["by_hidden"] for r in h["variants"])]
        lines += ["", f"## Model-size sweep, batch {sweep['batch']}: median s/epoch (x arithmetic floor)", "",
                  "| hidden | floor s | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        for h in sweep["by_hidden"]:
            cells = []
            for v in names:
                r = next((r for r in h["variants"] if r["variant"] == v), None)
                ok = r is not None and "median_s" in r
                cells.append(f"{r['median_s']:.3f} ({fmt_ratio(r['vs_floor'])})" if ok
                             else (r or {}).get("skipped") or "error")
            lines.append(f"| {h['hidden']} | {fmt(h['floor_s'])} | " + " | ".join(cells) + " |")
    burda = report["sections"].get("burda")
    if burda:
        r = burda["variant"]
        lines += ["", "## Burda's model at batch 20 (784-200-200-50 tanh, Bernoulli, dynamic binarisation, Adam)", ""]
        if "error" in r:
            lines.append(f"error: {r['error']}")
        else:
            lines += [
                f"Floor per step: {fmt(burda['step_mflop'], 4)} MFLOP (forward, weight and input gradients of every "
                f"layer) at the matmul rate measured on exactly those dots in each round (median: XLA "
                f"{fmt(burda['rates'].get('jax'), 4)}, torch {fmt(burda['rates'].get('torch'), 4)} GFLOP/s) = "
                f"{fmt(1e3 * burda['floor_step_s'])} ms.",
                "",
                "| steps per epoch | ms/step (median, min-max) | CPU ms/step | floor ms/step | x floor (per round) | load |",
                "|---|---|---|---|---|---|",
                f"| {r['steps']} | {r['ms_per_step']:.3f} ({1e3 * r['min_s'] / r['steps']:.3f}-"
                f"{1e3 * r['max_s'] / r['steps']:.3f}) | {1e3 * r['cpu_median_s'] / r['steps']:.3f} | "
                f"{1e3 * burda['floor_step_s']:.3f} | {fmt_ratio(r['vs_floor'])} | {fmt(r['load_average'], 2)} |",
            ]
    ev = report["sections"].get("eval")
    if ev:
        r = ev["variant"]
        lines += ["", f"## Importance-sampled log-likelihood (Burda's model, {ev['images']} images x k = {ev['k']})", ""]
        if "error" in r:
            lines.append(f"error: {r['error']}")
        else:
            lines += [
                f"Floor: {fmt(ev['gflop'], 4)} GFLOP of encoder and decoder matmuls at the rate measured on the "
                f"decoder's dots ({ev['rows_per_dot']} rows each) in each round (median: XLA "
                f"{fmt(ev['rates'].get('jax'), 4)}, torch {fmt(ev['rates'].get('torch'), 4)} GFLOP/s) = "
                f"{fmt(ev['floor_s'])} s.",
                "",
                "| s per evaluation (median, min-max) | CPU s | floor s | x floor (per round) | load |",
                "|---|---|---|---|---|",
                f"| {r['median_s']:.3f} ({r['min_s']:.3f}-{r['max_s']:.3f}) | {fmt(r['cpu_median_s'])} | "
                f"{fmt(ev['floor_s'])} | {fmt_ratio(r['vs_floor'])} | {fmt(r['load_average'], 2)} |",
            ]
    cli = report["sections"].get("cli")
    if cli:
        lines += ["", f"## `jaxvae train` against the bare compiled epoch (blog model, batch 128, {cli['data']})", "",
                  f"Fresh processes alternate: a bare `train_epoch` loop, then `jaxvae train --epochs "
                  f"{cli['epochs']}` (progress bar on, and `--progress none`); {cli['rounds']} rounds. Per run: median seconds "
                  "per epoch after the first (the CLI's: gaps between its epoch lines, i.e. everything a user waits "
                  "for: training, validation, checkpoint, metrics, progress bar).", "",
                  "| run | median s/epoch (per round) | ratio to the bare epoch: median (min-max) |", "|---|---|---|"]
        for name, row in cli["runs"].items():
            if "error" in row:
                lines.append(f"| {name} | error: {row['error'][:80]} | |")
                continue
            lines.append(f"| {name} | {', '.join(f'{t:.3f}' for t in row['per_round'])} | "
                         f"{fmt_ratio(row.get('vs_bare')) if name != 'bare train_epoch' else '1'} |")
    lines += ["", "Variants:", ""] + [f"- `{k}`: {d}" for k, (_, d) in VARIANTS.items()]
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so that no reader sees half a file."""
    partial = path.with_suffix(path.suffix + ".tmp")
    partial.write_text(text)
    partial.replace(path)


def write_report(report: dict, out: Path, markdown: str | None = None) -> str:
    """``out``.json and ``out``.md (``markdown``, by default this benchmark's report), each written whole."""
    out.parent.mkdir(parents=True, exist_ok=True)
    markdown = markdown_report(report) if markdown is None else markdown
    write_atomically(out.with_suffix(".json"), json.dumps(report, indent=1))
    write_atomically(out.with_suffix(".md"), markdown)
    return markdown


# ------------------------------------------------------------------------------------- sections
class Bench:
    """The run: arguments, data, workers (one per variant, or one per framework with --quick)."""

    def __init__(self, args, tmp: Path, base_job: dict, report: dict, n: int):
        self.args, self.tmp, self.base, self.report, self.n = args, tmp, base_job, report, n
        self.workers: dict[Any, Worker] = {}
        self.versions: dict[str, str] = {}  # framework -> version line, as the workers report it

    def worker_for(self, job: dict) -> Worker:
        """With --quick one worker per framework for every section; otherwise one per unit."""
        key = job["framework"] if self.args.quick else (job["section"], job["variant"], job.get("hidden"))
        if key not in self.workers:
            env = HEROIC_ENV if job["variant"] == "torch_heroic" else None
            self.workers[key] = Worker(self.tmp, re.sub(r"\W", "_", str(key)), env, self.args.worker_timeout)
        return self.workers[key]

    def close_section_workers(self) -> None:
        if not self.args.quick:
            for w in self.workers.values():
                w.close()
            self.workers.clear()

    def unit(self, name: str, **job) -> Unit:
        job = {**self.base, **job}
        return Unit(name, job, self.worker_for(job))

    def setup(self, units: list[Unit], warmup: int, deadline: float | None = None) -> None:
        """Set up (and compile) each unit, one after another, so compilations do not compete. With a
        ``deadline`` (``time.monotonic()``) a set-up still running then is stopped (its worker ends)
        and none starts after it."""
        for u in units:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                u.setup = {"error": "not set up: the section's time ran out"}
                continue
            print(f"  setting up {u.name}", flush=True)
            u.setup = u.worker.call(op="setup", id=u.name, job=u.job, warmup=0 if u.job["variant"] == "matmul" else warmup,
                                    timeout=None if left is None else min(left, u.worker.timeout))
            if (u.setup.get("info") or {}).get("version"):
                self.versions[u.job["framework"]] = u.setup["info"]["version"]

    def matmul_units(self, section: str, layers, rows: int, backward: bool = True) -> list[Unit]:
        return [self.unit(f"{section}/matmul-{fw}", framework=fw, section=section, variant="matmul", layers=layers,
                          rows=rows, backward=backward, matmul_gflop=0.2 if self.args.quick else 2.0)
                for fw in ("torch", "jax")]

    def framework_section(self, section: str, hidden: int, batch: int, variants: list[str], rounds: int,
                          with_eval: bool, deadline: float | None = None, setup_deadline: float | None = None) -> dict:
        """The variants (and the matmul floor) interleaved for ``rounds`` rounds. Deadlines
        (``time.monotonic()``): set-ups end by ``setup_deadline`` (default ``deadline``), and no round
        starts after ``deadline``; the rows hold the rounds done."""
        layers = dense_layers(hidden)
        units, skipped = [], []
        for v in variants:
            framework = VARIANTS[v][0]
            if v in GPU_ONLY and self.base["device"] != "cuda":
                skipped.append({"variant": v, "skipped": "GPU only"})
            elif v in COMPILE_VARIANTS and self.args.quick:
                skipped.append({"variant": v, "skipped": "skipped in --quick"})
            else:
                units.append(self.unit(f"{section}/{v}/{hidden}", framework=framework, section=section, variant=v,
                                       hidden=hidden, batch=batch, eval=with_eval and v in ("torch_blog", SUBJECT)))
        mm = self.matmul_units(section, layers, batch)
        self.setup(units + mm, self.warmup, setup_deadline or deadline)
        interleave(units + mm, rounds, deadline=deadline)
        if with_eval:
            interleave([u for u in units if u.job.get("eval")], max(1, min(rounds, 5)), op="eval", deadline=deadline)
        rates = rates_per_round(mm, rounds)
        gflop = epoch_flops(self.n, batch, layers) / 1e9
        floors = [gflop / r["best"] if r["best"] else None for r in rates]
        by_name = {u.job["variant"]: u for u in units}
        rows = [summarise(u, by_name.get(SUBJECT), by_name.get("torch_blog"), floors) for u in units]
        for r in rows:
            r["variant"] = r["variant"].split("/")[1]
        order = list(VARIANTS)
        rows = sorted(rows + skipped, key=lambda r: order.index(r["variant"]))
        for r in rows:
            r.setdefault("hidden", hidden)
            r.setdefault("batch", batch)
        return {"variants": rows, "epoch_gflop": gflop, "floor_s": _median(floors),
                "rates": {k: _median(r.get(k) for r in rates) for k in ("best", "jax", "torch")},
                "rates_per_round": rates, "load": _median(r.get("load_average") for r in rows),
                "matmul_errors": [u.error() for u in mm if u.error()]}

    @property
    def warmup(self) -> int:
        return self.args.warmup if self.args.warmup is not None else (1 if self.args.quick else 2)

    def burda_section(self, rounds: int) -> dict:
        u = self.unit("burda/jax_epoch", framework="jax", section="burda", variant="jax_epoch", model="burda", batch=20)
        mm = self.matmul_units("burda", BURDA_LAYERS, 20)
        self.setup([u, *mm], self.warmup)
        interleave([u, *mm], rounds)
        rates = rates_per_round(mm, rounds)
        step_gflop = matmul_flops(BURDA_LAYERS, 20) / 1e9
        steps = u.setup.get("steps") or 1
        # Per round: the epoch's floor is its steps at that round's rate (the tail batch counted as full).
        floors = [steps * step_gflop / r["best"] if r["best"] else None for r in rates]
        row = summarise(u, None, None, floors)
        row["variant"] = "jax_epoch"
        return {"variant": row, "step_mflop": 1e3 * step_gflop,
                "floor_step_s": _median(step_gflop / r["best"] for r in rates if r["best"]),
                "rates": {k: _median(r.get(k) for r in rates) for k in ("best", "jax", "torch")},
                "rates_per_round": rates}

    def eval_section(self, rounds: int) -> dict:
        images, k = (8, 64) if self.args.quick else (self.args.eval_images, self.args.eval_k)
        u = self.unit("eval/jax_eval_is", framework="jax", section="eval", variant="jax_eval_is", images=images, k=k,
                      eval_batch=100)
        self.setup([u], 0)
        rows_per_dot = (u.setup.get("info") or {}).get("rows_per_dot", 100)
        mm = self.matmul_units("eval", BURDA_DECODER, rows_per_dot, backward=False)
        self.setup(mm, 0)
        interleave([u, *mm], rounds)
        rates = rates_per_round(mm, rounds)
        encoder = [(784, 200), (200, 200), (200, 100)]
        gflop = (matmul_flops(BURDA_DECODER, images * k, False) + matmul_flops(encoder, images, False)) / 1e9
        floors = [gflop / r["best"] if r["best"] else None for r in rates]
        row = summarise(u, None, None, floors)
        return {"variant": row, "images": images, "k": k, "gflop": gflop, "rows_per_dot": rows_per_dot,
                "floor_s": _median(floors), "rates": {k_: _median(r.get(k_) for r in rates) for k_ in ("best", "jax", "torch")},
                "rates_per_round": rates}

    def cli_section(self, rounds: int, data_dir: Path, data_desc: str) -> dict:
        """Fresh processes, alternating: bare train_epoch epochs, jaxvae train (bar), and without the bar."""
        epochs = 3 if self.args.quick else self.args.cli_epochs
        names = ["bare train_epoch", "jaxvae train"] + ([] if self.args.quick else [NO_BAR])
        runs: dict[str, dict] = {name: {"per_round": []} for name in names}
        for r in range(rounds):
            for name in runs:
                print(f"  cli round {r + 1}: {name}", flush=True)
                if name == "bare train_epoch":
                    # a fresh process each round (with --quick the shared jax worker)
                    job = {**self.base, "framework": "jax", "section": "cli", "variant": "jax_epoch", "hidden": 400,
                           "batch": 128}
                    worker = (self.worker_for(job) if self.args.quick
                              else Worker(self.tmp, f"cli-bare-{r}", None, self.args.worker_timeout))
                    u = Unit(f"cli/bare/{r}", job, worker)
                    setup = u.worker.call(op="setup", id=u.name, job=u.job, warmup=1)
                    times = [u.worker.call(op="run", id=u.name) for _ in range(epochs - 1)] if "error" not in setup else [setup]
                    if not self.args.quick:
                        u.worker.close()
                    err = next((t["error"] for t in times if "error" in t), None)
                    per_epoch = None if err else _median(t["wall"] for t in times)
                else:
                    per_epoch, err = self.run_cli(data_dir, epochs, r, quiet=name == NO_BAR)
                if err:
                    runs[name]["error"] = err
                runs[name]["per_round"].append(per_epoch)
        bare = runs["bare train_epoch"]["per_round"]
        for name, row in runs.items():
            row["median_s"] = _median(row["per_round"])
            if name != "bare train_epoch":
                row["vs_bare"] = ratio_stats(row["per_round"], bare)
            if "error" in row:
                row["per_round"] = [t for t in row["per_round"] if t is not None]
        return {"runs": runs, "epochs": epochs, "rounds": rounds, "data": data_desc}

    def run_cli(self, data_dir: Path, epochs: int, r: int, quiet: bool) -> tuple[float | None, str | None]:
        """``jaxvae train`` in a fresh process; the median gap between its epoch lines (after the first)."""
        out = self.tmp / f"cli-run-{r}-{int(quiet)}"
        cmd = [sys.executable, "-m", "jaxvae", "train", "--data-dir", str(data_dir), "--require-mnist",
               "--epochs", str(epochs), "--out", str(out), "--no-plots"] + (["--progress", "none"] if quiet else [])
        proc = subprocess.Popen(cmd, env=_env(None), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=str(self.tmp))
        stamps = []
        for line in proc.stdout:
            if line.startswith("epoch "):
                stamps.append(time.perf_counter())
        err_text = proc.stderr.read()
        proc.wait()
        if proc.returncode != 0 or len(stamps) < 2:
            return None, f"jaxvae train exited {proc.returncode}: {err_text[-500:]}"
        return _median([b - a for a, b in zip(stamps, stamps[1:])]), None


# ------------------------------------------------------------------------------------------ main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI smoke run: tiny sizes, no compile variants, < 30 s")
    p.add_argument("--data-dir", default=None, help="real MNIST (IDX files) instead of synthetic data")
    p.add_argument("--samples", type=int, default=None, help="training samples (default 60000; --quick 1024)")
    p.add_argument("--epochs", type=int, default=None, help="interleaved rounds (timed epochs per variant; default 9, --quick 2)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up epochs per variant (default 2; --quick 1)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of: " + ", ".join(VARIANTS))
    p.add_argument("--sections", default=None,
                   help="which of " + ",".join(SECTIONS) + " to run (default all; --quick: " + ",".join(QUICK_SECTIONS) + ")")
    p.add_argument("--sweep-hidden", default="400,1024,2048,4096")
    p.add_argument("--sweep-variants", default="torch_fast,torch_heroic,jax_epoch")
    p.add_argument("--sweep-epochs", type=int, default=3)
    p.add_argument("--burda-epochs", type=int, default=None, help="rounds of the burda section (default: --epochs)")
    p.add_argument("--eval-images", type=int, default=100, help="images of the eval section (k samples each)")
    p.add_argument("--eval-k", type=int, default=1000)
    p.add_argument("--cli-epochs", type=int, default=6, help="epochs per run in the cli section")
    p.add_argument("--cli-rounds", type=int, default=None, help="rounds of the cli section (default 4; --quick 1)")
    p.add_argument("--heroic-steps", type=int, default=12, help="training steps per compiled call in torch_heroic")
    p.add_argument("--precision", choices=("highest", "high"), default="highest",
                   help="float32 matmul precision on GPU for both frameworks (highest = no TF32)")
    p.add_argument("--worker-timeout", type=float, default=1800.0)
    p.add_argument("--out", default=str(BENCH_DIR / "results" / "train_speed"), help="output path without suffix")
    p.add_argument("--note", default="", help="a line for the report, e.g. 'machine shared, numbers noisy'")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def detect_device() -> str:
    """'cuda' when torch sees a GPU (JAX picks its default backend on its own), else 'cpu'."""
    probe = "import torch; print(int(torch.cuda.is_available()))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip()
    return "cuda" if out == "1" else "cpu"


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.worker:
        worker_main()
        return {}
    quick = args.quick
    args.samples = args.samples or (1024 if quick else None)
    rounds = args.epochs or (2 if quick else 9)
    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in VARIANTS]
    sections = [s.strip() for s in (args.sections or ",".join(QUICK_SECTIONS if quick else SECTIONS)).split(",") if s.strip()]
    if unknown or set(sections) - set(SECTIONS):
        raise SystemExit(f"unknown variant(s) {unknown} or section(s) {sorted(set(sections) - set(SECTIONS))}")
    sweep_hidden = [400, 1024] if quick and args.sweep_hidden == "400,1024,2048,4096" else [int(h) for h in args.sweep_hidden.split(",")]

    device = detect_device()
    train_u8, val_u8, data_desc = load_data(args)
    n = len(train_u8)
    print(f"device {device}; data: {data_desc}, {n} train / {len(val_u8)} validation samples", flush=True)
    report = {"device": device, "machine": machine_description(), "data": data_desc, "n_train": n, "n_val": len(val_u8),
              "epochs": rounds, "warmup": args.warmup if args.warmup is not None else (1 if quick else 2),
              "quick": quick, "note": args.note, "sections": {}}
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="jaxvae-bench-") as tmp_name:
        tmp = Path(tmp_name)
        data_path = tmp / "data.npz"
        np.savez(data_path, train=to_unit_float(train_u8), val=to_unit_float(val_u8))
        base = {"data_path": str(data_path), "device": device, "precision": args.precision,
                "heroic_steps": args.heroic_steps, "seed": 0, "quick": quick}
        bench = Bench(args, tmp, base, report, n)
        try:
            for section in sections:
                section_start = time.perf_counter()
                print(f"[{section}]", flush=True)
                if section in ("main", "batch1024"):
                    batch = 128 if section == "main" else 1024
                    sec = bench.framework_section(section, 400, batch, chosen, rounds, with_eval=section == "main")
                elif section == "sweep":
                    names = [v for v in args.sweep_variants.split(",") if v in chosen]
                    sweep_rounds = min(args.sweep_epochs, rounds)
                    sec = {"batch": 128, "by_hidden": []}
                    for h in sweep_hidden:
                        part = bench.framework_section("sweep", h, 128, names, sweep_rounds, with_eval=False)
                        sec["by_hidden"].append({"hidden": h, **part})
                        bench.close_section_workers()
                elif section == "burda":
                    sec = bench.burda_section(args.burda_epochs or rounds)
                elif section == "eval":
                    sec = bench.eval_section(min(rounds, 5))
                else:
                    data_dir = Path(args.data_dir) if args.data_dir else write_idx_dir(tmp / "idx", train_u8, val_u8)
                    sec = bench.cli_section(args.cli_rounds or (1 if quick else 4), data_dir, data_desc)
                bench.close_section_workers()
                report["sections"][section] = sec
                print(f"[{section}] {time.perf_counter() - section_start:.1f} s", flush=True)
                report["versions"] = ", ".join(bench.versions[fw] for fw in sorted(bench.versions))
                write_report(report, out)
        finally:
            for w in bench.workers.values():
                w.close()
    markdown = write_report(report, out)
    print(markdown)
    return report


if __name__ == "__main__":
    main()
