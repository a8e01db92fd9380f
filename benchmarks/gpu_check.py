"""One command that checks jaxvae on an accelerator: ``python benchmarks/gpu_check.py`` (``make gpu-check``).

On whatever device JAX sees, within ``--budget-s`` seconds (450 by default), it runs and reports:

* ``device``: what JAX and torch see (device kind and name, versions, the CPU);
* ``parity``: tests/test_parity.py, torch on CUDA when it has CUDA: float32 at full matmul precision
  with TF32 off on both sides, and float64, with every observed error against its bound;
* ``speed``: the blog's model (784-400-2): jaxvae's compiled epoch against PyTorch eager,
  ``torch.compile`` and a CUDA-graph-captured PyTorch step, interleaved with train_speed.py's workers,
  at batch 128 and 1024, with the ratios per round;
* ``sweep``: seconds per epoch of 1, 16 and 64 blog models in one program (``jaxvae.sweep.fit_many``);
* ``burda``: Burda et al.'s model at batch 20, the step time of the VAE and of IWAE k=50, and the wall
  time of the full protocol (3280 epochs of 3000 steps) projected from them;
* ``train``: ``jaxvae train`` of the blog's model for 30 epochs, through the command line.

Each section runs in a process of its own with a share of the budget. One that runs out of time stops
(or is stopped) and reports what it has as "cut short"; one that fails is recorded with the end of its
traceback, and the next section runs. ``gpu_check.json`` and ``gpu_check.md`` in ``--out`` are rewritten
after every section, so a run that is killed leaves a partial report. Where JAX's default backend is
the CPU the run is a dry run (``--dry-run``): tiny sizes, the CUDA-only variants skipped. It proves the
script, not any speed.

``--data-dir`` names real MNIST (the IDX files). Without it the timing sections use synthetic
MNIST-shaped data (train_speed.py's), and the ``train`` section uses the bundled MNIST subset; the
report says which.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Callable

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _path in (str(REPO_ROOT), str(BENCH_DIR)):  # the checkout's own packages win over installed ones
    if _path not in sys.path:
        sys.path.insert(0, _path)

import numpy as np  # noqa: E402

import train_speed  # noqa: E402  (its workers, variants, data and machine description; imports no framework)

SECTIONS = ("device", "parity", "speed", "sweep", "burda", "train")
# Shares of the budget left when a section starts (the device probe gets a fixed allowance instead):
# time a section does not use goes to the ones after it.
SHARES = {"parity": 0.22, "speed": 0.42, "sweep": 0.14, "burda": 0.10, "train": 0.12}
DEVICE_ALLOWANCE_S = 60.0
# Set up in this order, so that a torch.compile that eats the section's time leaves the others measured.
SPEED_VARIANTS = ("jax_epoch", "torch_graphed", "torch_fast", "torch_compile")
PARITY_TESTS = "tests/test_parity.py"
PARITY_LINE = re.compile(r"\[parity\] (.+?): (\S+) \(bound (\S+)\)")  # what tests/tolerances.py prints
# The parity suite's checks by the names tests/tolerances.py prints, first match wins.
PARITY_QUANTITIES = (
    ("param (KL warm-up)", "parameters after 50 Adam steps, KL warm-up against the blog's per-step rate"),
    ("param", "parameters after 50 Adam steps"),
    ("grad", "gradient of every parameter"),
    ("train epoch mean", "train_one_epoch / validate_one_epoch means vs jaxvae's compiled epochs"),
    ("validation epoch mean", "train_one_epoch / validate_one_epoch means vs jaxvae's compiled epochs"),
    ("KL at log_sigma", "stable KL vs the blog's, log-sigma in [-87, 44]"),
    ("loss", "loss, reconstruction, KL of a batch"),
    ("recon", "loss, reconstruction, KL of a batch"),
    ("kl", "loss, reconstruction, KL of a batch"),
)
BURDA_PROTOCOL = {"epochs": 3280, "steps_per_epoch": 3000}  # Burda's schedule on 60000 images at batch 20
# A dry run proves code paths, not speed: XLA's CPU backend compiling without LLVM optimisation
# takes about a third less time.
DRY_RUN_XLA_FLAGS = "--xla_backend_optimization_level=0"


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much each section measures: ``FULL`` on an accelerator, ``DRY`` in a dry run."""

    samples: int | None  # training images of the timing sections (None: all 60000)
    batches: tuple[int, ...]  # the speed section's batch sizes
    rounds: int  # interleaved rounds per batch size
    warmup: int  # warm-up epochs per variant
    sweep_models: tuple[int, ...]  # models per program, in the order run
    sweep_epochs: int  # per program; the first compiles
    burda_images: int
    burda_epochs: int  # per objective; the first compiles
    iwae_k: int
    train_epochs: int
    parity_select: str | None  # a pytest -k expression, None for the whole file


FULL = Sizes(samples=None, batches=(128, 1024), rounds=10, warmup=2, sweep_models=(1, 16, 64, 1), sweep_epochs=4,
             burda_images=6000, burda_epochs=4, iwae_k=50, train_epochs=30, parity_select=None)
DRY = Sizes(samples=1200, batches=(128,), rounds=2, warmup=1, sweep_models=(1, 4), sweep_epochs=2,
            burda_images=200, burda_epochs=2, iwae_k=50, train_epochs=2,
            parity_select="test_loss_recon_kl_and_gradients_match and uniform")


# ==================================================================================================
# jaxvae's Python API. Every call this script makes into it is in this block, so that a change of
# the API is adapted here and nowhere else in this file.
# ==================================================================================================
class OutOfTime(Exception):
    """Raised from an epoch callback when the section's time is up."""


def blog_configs(epochs: int):
    """The blog's model and training: 784-400-2, batch 128, Adam 1e-3, the plateau schedule."""
    from jaxvae import TrainConfig, VAEConfig

    return VAEConfig(), TrainConfig(max_epochs=epochs)


def burda_configs(iwae_k: int, epochs: int):
    """Burda et al.'s model and training as experiments/likelihood.py runs them: 784-200-200-50 tanh,
    Bernoulli, dynamic binarisation, batch 20, Adam eps 1e-4, Burda's schedule; IWAE when k > 1."""
    from jaxvae import TrainConfig, VAEConfig

    vc = VAEConfig(hidden=(200, 200), latent_dim=50, activation="tanh", likelihood="bernoulli",
                   objective="iwae" if iwae_k > 1 else "elbo", iwae_k=iwae_k)
    tc = TrainConfig(batch_size=20, lr=1e-3, adam_eps=1e-4, lr_schedule="burda", binarize="dynamic",
                     max_epochs=epochs)
    return vc, tc


def epoch_stamps(train_x, val_x, configs, *, models: int | None = None,
                 stop: Callable[[], bool] = lambda: False) -> tuple[list[float], bool]:
    """Train with ``jaxvae.fit`` (``models`` None) or ``jaxvae.sweep.fit_many`` (``models`` seeds in one
    program). Returns ``time.perf_counter()`` before training and at the end of every epoch, and
    whether ``stop()`` (asked after every epoch) ended the training early."""
    import jaxvae
    from jaxvae.sweep import fit_many

    vae_config, train_config = configs
    stamps = [time.perf_counter()]

    def on_epoch(*_):
        stamps.append(time.perf_counter())
        if stop():
            raise OutOfTime

    try:
        if models is None:
            jaxvae.fit(train_x, val_x, vae_config=vae_config, train_config=train_config, callbacks=[on_epoch])
        else:
            fit_many(train_x, val_x, vae_config=vae_config, train_config=train_config, seeds=models,
                     callbacks=[on_epoch])
    except OutOfTime:
        return stamps, True
    return stamps, False
# ==================================================================================================


# --------------------------------------------------------------------------- a section's process
class Section:
    """A section inside its own process: its settings, its results (saved as they come, so that a
    stop keeps them) and its time."""

    def __init__(self, context: dict):
        self.name = context["section"]
        self.context = context
        self.sizes = Sizes(**{k: tuple(v) if isinstance(v, list) else v for k, v in context["sizes"].items()})
        self.dry_run = context["dry_run"]
        self.torch_device = context["torch_device"]
        self.data_dir = context["data_dir"]
        self.out, self.scratch = Path(context["out"]), Path(context["scratch"])
        self.deadline = context["deadline"]  # time.time() at which to stop starting work
        self.result: dict = {}
        self.notes: list[str] = []
        self.cut: str | None = None

    def time_left(self) -> float:
        return self.deadline - time.time()

    def out_of_time(self) -> bool:
        return self.time_left() <= 0

    def cut_short(self, why: str) -> None:
        self.cut = self.cut or why

    def save(self, status: str = "running", **extra) -> None:
        record = {"status": status, "data": self.result, "notes": self.notes, **extra}
        if self.cut:
            record["cut_short"] = self.cut
        train_speed.write_atomically(Path(self.context["result_path"]), json.dumps(record, indent=1, default=str))


def child_main(context_path: str) -> int:
    """Run one section in this process; its result file says how it ended."""
    context = json.loads(Path(context_path).read_text())
    section = Section(context)
    try:
        SECTION_RUNNERS[section.name](section)
        if context.get("fail"):
            raise RuntimeError(f"injected failure (--fail-section {section.name}), after the section's measurements")
    except Exception as exc:  # recorded; the parent goes on with the next section
        lines = traceback.format_exc().rstrip().splitlines()
        section.save("error", error=f"{type(exc).__name__}: {exc}", traceback="\n".join(lines[-12:]))
        return 1
    section.save("cut short" if section.cut else "ok")
    return 0


def benchmark_data(section: Section, samples: int | None):
    """(train, validation) float32 in [0, 1] and their description: MNIST from ``--data-dir`` or
    train_speed.py's synthetic MNIST-shaped images, the first ``samples`` (validation: a sixth)."""
    train_u8, val_u8, description = train_speed.load_data(argparse.Namespace(data_dir=section.data_dir,
                                                                              samples=samples))
    return train_speed.to_unit_float(train_u8), train_speed.to_unit_float(val_u8), description


# ------------------------------------------------------------------------------------- sections
def run_device(section: Section) -> None:
    """What JAX and torch see, their versions and the host; one small computation on each device."""
    from importlib import metadata

    info = section.result
    info["machine"] = train_speed.machine_description()
    info["commit"] = _git_commit()
    info["packages"] = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name in ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "torchvision", "pytest") or \
                name.startswith(("jax-cuda", "jax_cuda", "jax-rocm")):
            info["packages"][name] = dist.version
    info["packages"] = dict(sorted(info["packages"].items()))
    section.save()
    try:
        import jax
        import jax.numpy as jnp

        devices = jax.devices()
        info["jax"] = {"version": jax.__version__, "backend": jax.default_backend(), "platform": devices[0].platform,
                       "device_kind": devices[0].device_kind, "devices": [str(d) for d in devices],
                       "check": float(jnp.arange(4.0).sum())}
    except Exception as exc:
        info["jax"] = {"error": f"{type(exc).__name__}: {exc}"}
    section.save()
    try:
        import torch

        cuda = torch.cuda.is_available()
        info["torch"] = {"version": torch.__version__, "cuda": torch.version.cuda, "cuda_available": cuda}
        if cuda:
            info["torch"].update(device_name=torch.cuda.get_device_name(0), device_count=torch.cuda.device_count(),
                                 cudnn=torch.backends.cudnn.version(),
                                 check=float(torch.arange(4.0, device="cuda").sum()))
    except Exception as exc:
        info["torch"] = {"error": f"{type(exc).__name__}: {exc}"}
    info["nvidia_smi"] = _nvidia_smi()


def _git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=10)
        return done.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _nvidia_smi() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                               "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        return done.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_parity(section: Section) -> None:
    """tests/test_parity.py through pytest in a subprocess, the torch side on the device torch sees;
    each test's observed errors come back in pytest's JUnit XML (what tests/tolerances.py prints)."""
    junit = section.scratch / "parity.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", PARITY_TESTS, f"--junitxml={junit}",
           "-o", "junit_logging=system-out", "-o", "junit_log_passing_tests=true"]
    if section.sizes.parity_select:
        cmd += ["-k", section.sizes.parity_select]
        section.notes.append(f"dry run: only the tests selected by -k '{section.sizes.parity_select}'")
    env = train_speed._env({"JAXVAE_SHOW_ERRORS": "1", "JAXVAE_TEST_DEVICE": section.torch_device})
    command = f"JAXVAE_SHOW_ERRORS=1 JAXVAE_TEST_DEVICE={section.torch_device} python -m pytest {PARITY_TESTS}"
    if section.sizes.parity_select:
        command += f" -k '{section.sizes.parity_select}'"
    section.result.update(command=command, torch_device=section.torch_device,
                          jax_precision="highest for float32 (the suite's fixture); TF32 off in torch")
    log_path = section.out / "logs" / "parity-pytest.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        if not _wait(proc, section.time_left(), interrupt=True):
            section.cut_short("pytest was interrupted at the section's deadline; the tests it finished are reported")
    section.result["pytest_exit_code"] = proc.returncode
    section.result.update(parse_parity_junit(junit) if junit.exists() else {"tests": [], "counts": {}})
    counts = section.result["counts"]
    if not counts.get("passed") and not counts.get("failed"):  # nothing compared: no result, whatever pytest says
        tail = log_path.read_text(errors="replace")[-1500:]
        raise RuntimeError(f"pytest ran no parity test (exit code {proc.returncode}):\n{tail}")
    if counts.get("failed") or counts.get("error"):
        section.notes.append(f"{counts.get('failed', 0)} test(s) failed and {counts.get('error', 0)} errored: "
                             "see the table for the errors against their bounds")


def _wait(proc: subprocess.Popen, seconds: float, interrupt: bool = False) -> bool:
    """Wait for ``proc`` up to ``seconds``; then interrupt it (SIGINT, so that pytest still writes its
    report, or a CLI run its last epoch) or terminate it. True when it ended on its own."""
    try:
        proc.wait(timeout=max(seconds, 0.1))
        return True
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT if interrupt else signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return False


def parse_parity_junit(path: Path) -> dict:
    """Per test: outcome, seconds and every check's observed error and bound; and per quantity and
    dtype the worst error, as the README's parity table lists them."""
    tests = []
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", None
        for tag in ("failure", "error", "skipped"):
            element = case.find(tag)
            if element is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (element.get("message") or element.text or "")[:500]
        checks = [{"check": m.group(1), "error": _float(m.group(2)), "bound": _float(m.group(3))}
                  for m in PARITY_LINE.finditer(case.findtext("system-out") or "")]
        dtype = "float64" if "float64" in case.get("name", "") else "float32"
        worst = max(checks, key=lambda c: _ratio(c["error"], c["bound"]), default=None)
        tests.append({"test": case.get("name"), "outcome": outcome, "seconds": _float(case.get("time")), "dtype": dtype,
                      "checks": checks, "worst": worst, **({"message": message} if message else {})})
    by_quantity: dict[tuple[str, str], dict] = {}
    for test in tests:
        for check in test["checks"]:
            label = next((text for prefix, text in PARITY_QUANTITIES if check["check"].startswith(prefix)), check["check"])
            key, old = (label, test["dtype"]), by_quantity.get((label, test["dtype"]))
            if old is None or _ratio(check["error"], check["bound"]) > _ratio(old["error"], old["bound"]):
                by_quantity[key] = {"quantity": label, "dtype": test["dtype"], "error": check["error"],
                                    "bound": check["bound"], "check": check["check"], "test": test["test"]}
    counts = {outcome: sum(t["outcome"] == outcome for t in tests) for outcome in ("passed", "failed", "error", "skipped")}
    return {"tests": tests, "by_quantity": list(by_quantity.values()), "counts": counts}


def _float(text) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _ratio(error, bound) -> float:
    """error / bound, NaN and missing values counted as the worst."""
    if error is None or bound is None or not math.isfinite(error) or not bound:
        return math.inf
    return error / bound


def run_speed(section: Section) -> None:
    """The blog's model, every variant in its own worker process (train_speed.py's), interleaved
    rounds per batch size; with --dry-run train_speed's --quick mode (one worker per framework, no
    torch.compile), and without CUDA no CUDA-graph variant."""
    sizes = section.sizes
    train_x, val_x, description = benchmark_data(section, sizes.samples)
    section.result.update(data=description, n_train=len(train_x), torch_device=section.torch_device,
                          precision=section.context["precision"], batches={})
    data_path = section.scratch / "speed-data.npz"
    np.savez(data_path, train=train_x, val=val_x)
    args = argparse.Namespace(quick=section.dry_run, warmup=sizes.warmup, worker_timeout=max(30.0, section.time_left()))
    base = {"data_path": str(data_path), "device": section.torch_device, "precision": section.context["precision"],
            "heroic_steps": 12, "seed": 0, "quick": section.dry_run}
    worker_logs = section.out / "logs" / "speed-workers"
    worker_logs.mkdir(parents=True, exist_ok=True)
    bench = train_speed.Bench(args, worker_logs, base, {}, len(train_x))
    try:
        for i, batch in enumerate(sizes.batches):
            share = section.time_left() / (len(sizes.batches) - i)  # not the next batch size's time
            # Set-ups (a torch.compile, say) still running at 70% of the share are stopped: the variants
            # set up before them keep the rest for their rounds.
            start = time.monotonic()
            raw = bench.framework_section(f"batch{batch}", 400, batch, list(SPEED_VARIANTS), sizes.rounds,
                                          with_eval=False, deadline=start + share, setup_deadline=start + 0.7 * share)
            bench.close_section_workers()
            section.result["batches"][str(batch)] = summary = speed_summary(raw, sizes.rounds)
            if summary["rounds_done"] < sizes.rounds:
                section.cut_short(f"batch {batch}: {summary['rounds_done']} of {sizes.rounds} rounds in the time")
            failed = [v["variant"] for v in summary["variants"] if "error" in v]
            if failed:
                section.notes.append(f"batch {batch}: no figures for {', '.join(failed)} (errors in the table)")
            section.result["versions"] = ", ".join(bench.versions[fw] for fw in sorted(bench.versions))
            section.save()
    finally:
        for worker in bench.workers.values():
            worker.close()


def speed_summary(raw: dict, rounds: int) -> dict:
    """One batch size's figures from train_speed's section: per variant the epoch time (median,
    min-max), ms per step, compile seconds, and jaxvae's epoch over the variant's, round by round."""
    rows = {r["variant"]: r for r in raw["variants"]}
    subject = rows.get(train_speed.SUBJECT, {})
    variants, rounds_done = [], 0
    for name, row in rows.items():
        entry = {"variant": name, "what": train_speed.VARIANTS[name][1]}
        if "skipped" in row or "error" in row:
            entry["skipped" if "skipped" in row else "error"] = row.get("skipped") or row.get("error")
            variants.append(entry)
            continue
        rounds_done = max(rounds_done, len(row["times"]))
        entry.update(median_ms=1e3 * row["median_s"], min_ms=1e3 * row["min_s"], max_ms=1e3 * row["max_s"],
                     ms_per_step=row.get("ms_per_step"), steps=row.get("steps"), compile_s=row.get("compile_s"),
                     times_s=row["times"])
        if row.get("subject_ratio"):  # t(jaxvae) / t(variant), round by round (train_speed.summarise)
            per_round = [a / b for a, b in zip(subject.get("times", []), row["times"]) if a and b]
            entry["jaxvae_over_variant"] = {**row["subject_ratio"], "per_round": per_round}
        variants.append(entry)
    return {"variants": variants, "rounds_done": rounds_done, "rounds": rounds, "floor_s": raw.get("floor_s"),
            "matmul_gflops": raw.get("rates"), "matmul_errors": raw.get("matmul_errors")}


def run_sweep(section: Section) -> None:
    """``fit_many`` of 1, 16 and 64 blog models (seeds) in one program each; seconds per epoch after
    the first (which compiles). One model runs first and again last, so drift would show."""
    sizes = section.sizes
    train_x, val_x, description = benchmark_data(section, sizes.samples)
    section.result.update(data=description, n_train=len(train_x), n_val=len(val_x), epochs=sizes.sweep_epochs,
                          precision="JAX's default matmul precision (unset), as users run it", runs=[])
    for models in sizes.sweep_models:
        if section.out_of_time():
            section.cut_short(f"no time left for {models} models")
            break
        stamps, stopped = epoch_stamps(train_x, val_x, blog_configs(sizes.sweep_epochs), models=models,
                                       stop=section.out_of_time)
        gaps = [b - a for a, b in zip(stamps, stamps[1:])]
        run = {"models": models, "first_epoch_s": gaps[0] if gaps else None, "epoch_s": gaps[1:],
               "median_epoch_s": train_speed._median(gaps[1:])}
        if run["median_epoch_s"] is not None:
            run["ms_per_model_epoch"] = 1e3 * run["median_epoch_s"] / models
        section.result["runs"].append(run)
        if stopped:
            section.cut_short(f"{models} models: stopped after {len(gaps)} of {sizes.sweep_epochs} epochs")
        section.result["scaling"] = sweep_scaling(section.result["runs"])
        section.save()


def sweep_scaling(runs: list[dict]) -> list[dict]:
    """Per number of models: the epoch time against one model's (the mean of its runs)."""
    one = [r["median_epoch_s"] for r in runs if r["models"] == 1 and r["median_epoch_s"]]
    lone = sum(one) / len(one) if one else None
    rows = []
    for models in dict.fromkeys(r["models"] for r in runs):
        epoch = train_speed._median(r["median_epoch_s"] for r in runs if r["models"] == models)
        if epoch is None:
            continue
        rows.append({"models": models, "epoch_s": epoch, "ms_per_model_epoch": 1e3 * epoch / models,
                     "x_one_model": epoch / lone if lone else None})
    return rows


def run_burda(section: Section) -> None:
    """Burda's model at batch 20 through ``jaxvae.fit``, as experiments/likelihood.py trains it (500
    validation images per epoch), for the VAE and IWAE k=50: ms per step from the epochs after the
    first, and the full protocol's wall time projected from it."""
    sizes = section.sizes
    train_x, _, description = benchmark_data(section, sizes.burda_images)
    val_x = train_x[: min(500, len(train_x))]
    steps = -(-len(train_x) // 20)
    section.result.update(data=description, n_train=len(train_x), n_val=len(val_x), steps_per_epoch=steps,
                          protocol=BURDA_PROTOCOL, objectives=[])
    for label, k in (("VAE", 1), (f"IWAE k={sizes.iwae_k}", sizes.iwae_k)):
        if section.out_of_time():
            section.cut_short(f"no time left for the {label}")
            break
        stamps, stopped = epoch_stamps(train_x, val_x, burda_configs(k, sizes.burda_epochs), stop=section.out_of_time)
        gaps = [b - a for a, b in zip(stamps, stamps[1:])]
        entry = {"objective": label, "iwae_k": k, "first_epoch_s": gaps[0] if gaps else None, "epoch_s": gaps[1:]}
        epoch = train_speed._median(gaps[1:])
        if epoch is not None:
            step_s = epoch / steps
            total_steps = BURDA_PROTOCOL["epochs"] * BURDA_PROTOCOL["steps_per_epoch"]
            entry.update(ms_per_step=1e3 * step_s, steps_per_s=1 / step_s, protocol_hours=total_steps * step_s / 3600)
        if stopped:
            section.cut_short(f"{label}: stopped after {len(gaps)} of {sizes.burda_epochs} epochs")
        section.result["objectives"].append(entry)
        section.save()


def run_train(section: Section) -> None:
    """``python -m jaxvae train`` of the blog's model, as a user runs it: wall time, the seconds of
    every epoch (metrics.jsonl) and the final losses."""
    run_dir = section.out / "train-run"
    shutil.rmtree(run_dir, ignore_errors=True)  # a finished run there would be refused
    if section.data_dir:
        data_args, data = ["--data-dir", section.data_dir, "--require-mnist"], f"MNIST from {section.data_dir}"
    else:
        data_args = ["--dataset", "mnist-subset"]
        data = "the bundled MNIST subset (10000 train / 2000 test images): no --data-dir was given"
    epochs = section.sizes.train_epochs
    cmd = [sys.executable, "-m", "jaxvae", "train", *data_args, "--epochs", str(epochs), "--out", str(run_dir),
           "--no-plots", "--progress", "none"]
    section.result.update(command="python -m jaxvae " + " ".join(cmd[3:]), data=data, epochs=epochs)
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=section.scratch, env=train_speed._env({"PYTHONUNBUFFERED": "1"}),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = _read_lines(proc, section)
    finished = proc.poll() is not None
    if not finished:
        _wait(proc, 0, interrupt=True)
        section.cut_short("jaxvae train was interrupted at the section's deadline")
    section.result["wall_s"] = time.monotonic() - start
    section.result["exit_code"] = proc.returncode
    section.result["output_tail"] = [line for _, line in lines[-6:]]
    epoch_lines = [t for t, line in lines if line.startswith("epoch ")]
    section.result["first_epoch_line_s"] = epoch_lines[0] if epoch_lines else None
    section.result["data_line"] = next((line for _, line in lines if line.startswith("data:")), None)
    metrics = run_dir / "metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.exists() else []
    section.result["epochs_done"] = len(records)
    section.result["epoch_s"] = [r["seconds"] for r in records]
    section.result["median_epoch_s"] = train_speed._median(r["seconds"] for r in records[1:])
    if records:
        section.result["final"] = {k: records[-1][k] for k in ("epoch", "train_loss", "val_loss", "val_recon", "val_kl")}
    section.save()
    if finished and proc.returncode != 0:
        raise RuntimeError(f"jaxvae train exited with code {proc.returncode}: " + " | ".join(section.result["output_tail"]))


def _read_lines(proc: subprocess.Popen, section: Section) -> list[tuple[float, str]]:
    """The process's output lines, each with the seconds since it started, until it ends or the
    section's time is up; echoed to the section's log. Read from the file descriptor itself, so that
    no line waits in a Python buffer that ``select`` cannot see."""
    start, lines, pending = time.monotonic(), [], b""
    fd = proc.stdout.fileno()
    while True:
        ready, _, _ = select.select([fd], [], [], max(0.0, min(section.time_left(), 5.0)))
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                proc.wait()
                if pending:
                    lines.append((time.monotonic() - start, pending.decode(errors="replace")))
                return lines
            *complete, pending = (pending + chunk).split(b"\n")
            for line in complete:
                text = line.decode(errors="replace")
                print(text, flush=True)
                lines.append((time.monotonic() - start, text))
        elif section.out_of_time():
            return lines


SECTION_RUNNERS = {"device": run_device, "parity": run_parity, "speed": run_speed, "sweep": run_sweep,
                   "burda": run_burda, "train": run_train}


# ------------------------------------------------------------------------------------- the parent
@dataclasses.dataclass
class Run:
    """The whole check, in the parent process: settings, the report, where things go."""

    args: argparse.Namespace
    out: Path
    scratch: Path
    report: dict
    budget_end: float  # time.monotonic()
    dry_run: bool  # decided by the device probe (which runs with what --dry-run says)
    torch_device: str = "cpu"


def run_section(run: Run, name: str, allowance: float) -> dict:
    """``name`` in a fresh process (a process group of its own, with its workers) for at most
    ``allowance`` seconds; it is asked to stop starting work a little before that, and stopped at it."""
    margin = 0.0 if name == "device" else min(20.0, 0.15 * allowance)
    sizes = DRY if run.dry_run else FULL
    result_path = run.scratch / f"{name}.json"
    context = {"section": name, "dry_run": run.dry_run, "torch_device": run.torch_device, "data_dir": run.args.data_dir,
               "out": str(run.out), "scratch": str(run.scratch), "result_path": str(result_path),
               "deadline": time.time() + allowance - margin, "precision": run.args.precision,
               "sizes": dataclasses.asdict(sizes), "fail": name == run.args.fail_section}
    context_path = run.scratch / f"{name}.context.json"
    context_path.write_text(json.dumps(context))
    env = train_speed._env(None)
    if run.dry_run:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {DRY_RUN_XLA_FLAGS}".strip()
    log_path = run.out / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", str(context_path)],
                                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            ended = _wait_group(proc, allowance)
        except BaseException:  # Ctrl-C reaches the parent only: the section's own session must end too
            _wait_group(proc, 0)
            raise
    record = json.loads(result_path.read_text()) if result_path.exists() else {}
    record.update(seconds=time.monotonic() - start, allowance_s=allowance, log=str(log_path))
    if not ended:
        record["status"] = "cut short"
        record["cut_short"] = f"stopped at the section's time limit ({allowance:.0f} s); what it had saved is kept"
    elif record.get("status") in (None, "running"):
        record["status"] = "error"
        record["error"] = f"the section's process exited with code {proc.returncode} before finishing"
    if record["status"] == "error" and "traceback" not in record:
        record["log_tail"] = log_path.read_text(errors="replace")[-2000:]
    return record


def _wait_group(proc: subprocess.Popen, seconds: float) -> bool:
    """Wait for ``proc`` up to ``seconds``; then end its process group (it and the workers it started).
    True when it ended on its own."""
    try:
        proc.wait(timeout=max(seconds, 0.1))
        return True
    except subprocess.TimeoutExpired:
        for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 30)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=wait_s)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        return False


def allowance_for(run: Run, name: str, remaining: list[str]) -> float:
    """Seconds for ``name``: its share of what is left of the budget among the sections still to run."""
    left = run.budget_end - time.monotonic()
    if name == "device":
        return min(DEVICE_ALLOWANCE_S, max(left, 0.0))
    shares = sum(SHARES[s] for s in remaining)
    return max(left, 0.0) * SHARES[name] / shares


def apply_device(run: Run, device: dict) -> None:
    """A dry run unless JAX's default backend is an accelerator; torch's side on CUDA where it has it."""
    data = device.get("data", {})
    backend = data.get("jax", {}).get("backend")
    run.torch_device = "cuda" if data.get("torch", {}).get("cuda_available") else "cpu"
    run.dry_run = run.args.dry_run or (backend in (None, "cpu") and not run.args.full)
    run.report["dry_run"] = run.dry_run
    run.report["torch_device"] = run.torch_device
    if run.torch_device == "cuda" and backend == "cpu":
        run.report["warnings"].append("torch sees CUDA but JAX's default backend is the CPU (a jaxlib without CUDA?): "
                                      "this is a dry run, see logs/device.log")
    if run.dry_run:
        why = "--dry-run" if run.args.dry_run else f"JAX's default backend is {backend or 'unknown'}"
        run.report["notes"].append(
            f"Dry run ({why}): tiny sizes, CUDA-only variants skipped, XLA's CPU backend compiling without LLVM "
            "optimisation. It proves that the script runs; its numbers measure no speed.")


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        sys.exit(child_main(args.child))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = ["device"] + [s for s in SECTIONS[1:] if s in args.sections.split(",")]
    started = time.monotonic()
    report = {"script": "benchmarks/gpu_check.py", "argv": sys.argv[1:] if argv is None else list(argv),
              "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "budget_s": args.budget_s, "data_dir": args.data_dir, "precision": args.precision, "dry_run": None,
              "sections": {}, "notes": [], "warnings": []}
    with tempfile.TemporaryDirectory(prefix="jaxvae-gpu-check-") as scratch:
        run = Run(args, out, Path(scratch), report, started + args.budget_s, dry_run=args.dry_run)
        try:
            for i, name in enumerate(chosen):
                allowance = allowance_for(run, name, chosen[i:])
                if allowance < 1:
                    report["sections"][name] = {"status": "skipped", "error": "no time left in the budget"}
                else:
                    print(f"[{name}] up to {allowance:.0f} s", flush=True)
                    report["sections"][name] = run_section(run, name, allowance)
                    print(f"[{name}] {report['sections'][name]['status']} after "
                          f"{report['sections'][name]['seconds']:.1f} s", flush=True)
                if name == "device":
                    apply_device(run, report["sections"]["device"])
                finish_report(report, started, out)
        finally:
            finish_report(report, started, out)
    print((out / "gpu_check.md").read_text())
    return report


def finish_report(report: dict, started: float, out: Path) -> None:
    report["wall_s"] = time.monotonic() - started
    report["targets"] = targets(report)
    train_speed.write_atomically(out / "gpu_check.json", json.dumps(report, indent=1, default=str) + "\n")
    train_speed.write_atomically(out / "gpu_check.md", markdown(report))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget-s", type=float, default=450.0,
                   help="seconds for the whole check (default 450); each section gets a share")
    p.add_argument("--out", default=str(BENCH_DIR / "results" / "gpu"),
                   help="directory of gpu_check.json, gpu_check.md, logs/ and train-run/ (default %(default)s)")
    p.add_argument("--data-dir", default=None, help="real MNIST (IDX files); default: synthetic data for the "
                   "timings and the bundled MNIST subset for the train section")
    sizes = p.add_mutually_exclusive_group()
    sizes.add_argument("--dry-run", action="store_true", help="tiny sizes (automatic where JAX's backend is the CPU)")
    sizes.add_argument("--full", action="store_true",
                       help="the full sizes even on a CPU (the budget cuts what does not fit)")
    p.add_argument("--sections", default=",".join(SECTIONS[1:]),
                   help="which of " + ",".join(SECTIONS[1:]) + " to run (the device probe always runs)")
    p.add_argument("--precision", choices=("highest", "high"), default="highest",
                   help="float32 matmul precision of the speed section, both frameworks (highest: no TF32)")
    p.add_argument("--fail-section", default=None, choices=SECTIONS,
                   help="make this section raise after its measurements (tests the report's error path)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = set(args.sections.split(",")) - set(SECTIONS)
    if unknown:
        p.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    return args


# ------------------------------------------------------------------------------------- the report
TARGET_EPOCH_S = 0.020
TARGET_SWEEP_X = 4.0


def targets(report: dict) -> list[dict]:
    """The issue's targets on an H100/H200, each with what was measured and whether it was met (None:
    not measured, or a dry run, which measures nothing)."""
    sections = report["sections"]
    rows = []
    parity = sections.get("parity", {}).get("data", {})
    counts = parity.get("counts")
    if counts:
        total = sum(counts.values())
        worst = max((_ratio(q["error"], q["bound"]) for q in parity.get("by_quantity", [])), default=None)
        measured = f"{counts['passed']} of {total} tests passed" + (
            f"; worst error / bound {worst:.2g}" if worst is not None and math.isfinite(worst) else "")
        met = counts["passed"] == total and sections["parity"].get("status") == "ok"
        rows.append({"target": "every parity bound holds", "measured": measured, "met": met})
    else:
        rows.append({"target": "every parity bound holds", "measured": "not measured", "met": None})
    batch = sections.get("speed", {}).get("data", {}).get("batches", {}).get("128", {})
    by_name = {v["variant"]: v for v in batch.get("variants", [])}
    jax_row, graphed = by_name.get(train_speed.SUBJECT, {}), by_name.get("torch_graphed", {})
    if "median_ms" in jax_row:
        rows.append({"target": "the blog model's epoch (batch 128) at most 20 ms",
                     "measured": f"{jax_row['median_ms']:.1f} ms (median of {len(jax_row['times_s'])} rounds)",
                     "met": jax_row["median_ms"] <= 1e3 * TARGET_EPOCH_S})
    else:
        rows.append({"target": "the blog model's epoch (batch 128) at most 20 ms", "measured": "not measured", "met": None})
    ratio = graphed.get("jaxvae_over_variant")
    if ratio and "median" in ratio:
        rows.append({"target": "ahead of the CUDA-graph PyTorch step (batch 128)",
                     "measured": f"jaxvae / CUDA-graph step, per round: {train_speed.fmt_ratio(ratio)}", "met": ratio["median"] < 1})
    else:
        rows.append({"target": "ahead of the CUDA-graph PyTorch step (batch 128)",
                     "measured": graphed.get("skipped") or graphed.get("error") or "not measured", "met": None})
    scaling = {r["models"]: r for r in sections.get("sweep", {}).get("data", {}).get("scaling", [])}
    most = max(scaling, default=None)
    if most and most > 1 and scaling[most].get("x_one_model"):
        x = scaling[most]["x_one_model"]
        rows.append({"target": f"{most} models in one program at most 4x the time of one",
                     "measured": f"{x:.2f}x", "met": x <= TARGET_SWEEP_X if most == 64 else None})
    else:
        rows.append({"target": "64 models in one program at most 4x the time of one", "measured": "not measured",
                     "met": None})
    if report.get("dry_run"):
        for row in rows:
            row["met"] = None
    return rows


def _fmt(value, spec: str = ".3g", unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:{spec}}{unit}"


def device_line(report: dict) -> str:
    """The device in words: JAX's device kind and torch's device name, or the CPU."""
    data = report["sections"].get("device", {}).get("data", {})
    jax_info, torch_info = data.get("jax", {}), data.get("torch", {})
    machine = data.get("machine", {})
    cpu = f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores"
    if jax_info.get("backend") not in (None, "cpu"):
        name = f"{jax_info.get('device_kind')} ({len(jax_info.get('devices', []))} device(s) for JAX)"
        if torch_info.get("device_name"):
            name += f"; torch: {torch_info['device_name']}"
        return f"{name}; host CPU: {cpu}"
    return f"CPU only: {cpu} (JAX's backend: {jax_info.get('backend', 'unknown')})"


def markdown(report: dict) -> str:
    device = report["sections"].get("device", {}).get("data", {})
    lines = [f"# jaxvae GPU check: {device_line(report)}", ""]
    lines += _md_header(report, device)
    lines += _md_targets(report)
    for name, render in (("parity", _md_parity), ("speed", _md_speed), ("sweep", _md_sweep), ("burda", _md_burda),
                         ("train", _md_train)):
        section = report["sections"].get(name)
        if section is not None:
            lines += ["", *render(section.get("data", {}), report)]
            lines += _md_status(section)
    lines += ["", "## Sections", "", "| section | status | seconds (allowed) | note |", "|---|---|---|---|"]
    for name, section in report["sections"].items():
        note = section.get("cut_short") or section.get("error") or "; ".join(section.get("notes", [])) or ""
        lines.append(f"| {name} | {section['status']} | {_fmt(section.get('seconds'), '.1f')} "
                     f"({_fmt(section.get('allowance_s'), '.0f')}) | {note} |")
    return "\n".join(lines) + "\n"


def _md_header(report: dict, device: dict) -> list[str]:
    jax_info, torch_info, packages = device.get("jax", {}), device.get("torch", {}), device.get("packages", {})
    versions = ", ".join(f"{k} {v}" for k, v in packages.items())
    machine = device.get("machine", {})
    lines = [
        f"Run {report['started']}, {_fmt(report.get('wall_s'), '.0f')} s of a {report['budget_s']:.0f} s budget"
        f"{' (dry run)' if report.get('dry_run') else ''}; commit {device.get('commit') or 'unknown'}.",
        "",
        f"- JAX {jax_info.get('version', '?')}: backend {jax_info.get('backend', '?')}, device kind "
        f"{jax_info.get('device_kind', '?')}, devices {', '.join(jax_info.get('devices', [])) or '?'}"
        + (f" (error: {jax_info['error']})" if "error" in jax_info else ""),
        f"- torch {torch_info.get('version', '?')}: CUDA {torch_info.get('cuda') or 'none'}, "
        + (f"device {torch_info.get('device_name')}, cuDNN {torch_info.get('cudnn')}" if torch_info.get("cuda_available")
           else "no CUDA device") + (f" (error: {torch_info['error']})" if "error" in torch_info else ""),
        f"- host: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, Python {machine.get('python', '?')}, "
        f"{machine.get('platform', '?')}",
        f"- packages: {versions or '?'}",
    ]
    if device.get("nvidia_smi"):
        lines.append(f"- nvidia-smi: {device['nvidia_smi']}")
    lines += [f"- {note}" for note in report.get("notes", [])]
    lines += [f"- **warning**: {warning}" for warning in report.get("warnings", [])]
    return lines


def _md_targets(report: dict) -> list[str]:
    lines = ["", "## Targets (H100/H200)", "", "| target | measured | met |", "|---|---|---|"]
    for row in report.get("targets", []):
        met = {True: "yes", False: "**no**", None: "-"}[row["met"]]
        lines.append(f"| {row['target']} | {row['measured']} | {met} |")
    return lines


def _md_status(section: dict) -> list[str]:
    lines = []
    if section.get("status") not in ("ok", None):
        lines += ["", f"Status: **{section['status']}**" + (f": {section['cut_short']}" if section.get("cut_short") else "")
                  + (f": {section['error']}" if section.get("error") else "")]
    for key in ("traceback", "log_tail"):
        if section.get(key):
            lines += ["", "```", section[key].rstrip()[-2000:], "```"]
    for note in section.get("notes", []):
        lines += ["", f"Note: {note}"]
    return lines


def _md_parity(data: dict, report: dict) -> list[str]:
    lines = ["## Parity: jaxvae against torchref on shared weights and noise", "",
             f"`{data.get('command', 'pytest tests/test_parity.py')}`, torch on {data.get('torch_device', '?')}, "
             f"JAX on its default device; {data.get('jax_precision', '')}. Relative errors, norm-wise; the worst of "
             "each quantity:", "",
             "| quantity | dtype | worst observed | bound | in |", "|---|---|---|---|---|"]
    for q in sorted(data.get("by_quantity", []), key=lambda q: (q["quantity"], q["dtype"])):
        lines.append(f"| {q['quantity']} | {q['dtype']} | {_fmt(q['error'], '.2e')} | {_fmt(q['bound'], '.0e')} | "
                     f"{q['check']} |")
    lines += ["", "| test | outcome | checks | worst error / bound | seconds |", "|---|---|---|---|---|"]
    for t in data.get("tests", []):
        worst = t.get("worst") or {}
        lines.append(f"| {t['test']} | {t['outcome']}{': ' + t['message'][:120] if t.get('message') else ''} | "
                     f"{len(t['checks'])} | {_fmt(worst.get('error'), '.2e')} / {_fmt(worst.get('bound'), '.0e')} | "
                     f"{_fmt(t.get('seconds'), '.2f')} |")
    return lines


def _md_speed(data: dict, report: dict) -> list[str]:
    lines = ["## The blog's model: one epoch, jaxvae against PyTorch", "",
             f"784-400-2 on {data.get('data', '?')} ({data.get('n_train', '?')} images), torch on "
             f"{data.get('torch_device', '?')}, float32 matmul precision '{data.get('precision', '?')}' on both sides; "
             f"{data.get('versions', '')}. Every variant in its own process, set up and warmed up first, then rounds "
             "of one epoch each in a rotated order. \"jaxvae / variant\" is per round: median (min-max); below 1, "
             "jaxvae is faster."]
    for batch, summary in data.get("batches", {}).items():
        lines += ["", f"**Batch {batch}** ({summary['rounds_done']} of {summary['rounds']} rounds)", "",
                  "| variant | ms/epoch: median (min-max) | ms/step | jaxvae / variant | compile s |", "|---|---|---|---|---|"]
        for v in summary["variants"]:
            if "median_ms" not in v:
                lines.append(f"| {v['variant']} | {v.get('skipped') or 'error: ' + str(v.get('error'))[:150]} | | | |")
                continue
            ratio = "1" if v["variant"] == train_speed.SUBJECT else train_speed.fmt_ratio(v.get("jaxvae_over_variant"))
            lines.append(f"| {v['variant']} | {v['median_ms']:.2f} ({v['min_ms']:.2f}-{v['max_ms']:.2f}) | "
                         f"{_fmt(v.get('ms_per_step'), '.4f')} | {ratio} | {_fmt(v.get('compile_s'), '.1f')} |")
        per_round = [f"{v['variant']}: {', '.join(f'{r:.3f}' for r in v['jaxvae_over_variant']['per_round'])}"
                     for v in summary["variants"] if v.get("jaxvae_over_variant")]
        if per_round:
            lines += ["", "jaxvae / variant, round by round: " + "; ".join(per_round) + "."]
    names = [name for name in train_speed.VARIANTS if name in SPEED_VARIANTS]
    lines += ["", "Variants: " + "; ".join(f"`{name}` {train_speed.VARIANTS[name][1]}" for name in names) + "."]
    return lines


def _md_sweep(data: dict, report: dict) -> list[str]:
    lines = ["## Many models in one program (`jaxvae.sweep.fit_many`)", "",
             f"The blog's model, {data.get('n_train', '?')} training and {data.get('n_val', '?')} validation images of "
             f"{data.get('data', '?')}, {data.get('epochs', '?')} epochs per program (the first compiles, the others "
             f"are timed: training and validation); {data.get('precision', '')}.", "",
             "| models | s/epoch (median) | ms per model and epoch | x one model |", "|---|---|---|---|"]
    for row in data.get("scaling", []):
        lines.append(f"| {row['models']} | {row['epoch_s']:.4f} | {row['ms_per_model_epoch']:.2f} | "
                     f"{_fmt(row.get('x_one_model'), '.2f')} |")
    runs = data.get("runs", [])
    if runs:
        lines += ["", "In the order run: " + "; ".join(
            f"{r['models']} model(s): first epoch {_fmt(r['first_epoch_s'], '.1f')} s, then "
            f"{', '.join(f'{s:.4f}' for s in r['epoch_s']) or '-'} s" for r in runs) + "."]
    return lines


def _md_burda(data: dict, report: dict) -> list[str]:
    protocol = data.get("protocol", BURDA_PROTOCOL)
    lines = ["## Burda et al.'s model at batch 20", "",
             f"784-200-200-50 tanh, Bernoulli, dynamic binarisation, Adam eps 1e-4, trained by `jaxvae.fit` as "
             f"experiments/likelihood.py does, on {data.get('n_train', '?')} images of {data.get('data', '?')} "
             f"({data.get('steps_per_epoch', '?')} steps per epoch, validation on {data.get('n_val', '?')}). "
             f"ms/step: the epochs after the first (whole epochs, validation included) over their steps. The "
             f"projection: {protocol['epochs']} epochs x {protocol['steps_per_epoch']} steps at that rate.", "",
             "| objective | ms/step | steps/s | projected protocol | epochs timed |", "|---|---|---|---|---|"]
    for o in data.get("objectives", []):
        hours = o.get("protocol_hours")
        lines.append(f"| {o['objective']} | {_fmt(o.get('ms_per_step'), '.4f')} | {_fmt(o.get('steps_per_s'), '.0f')} | "
                     f"{_fmt(hours, '.2f', ' h')} | {len(o.get('epoch_s', []))} |")
    return lines


def _md_train(data: dict, report: dict) -> list[str]:
    final = data.get("final", {})
    return ["## `jaxvae train`, the blog's model", "",
            f"`{data.get('command', '?')}` on {data.get('data', '?')}. {data.get('data_line') or ''}", "",
            "| epochs done | wall s | first epoch line at | s/epoch after the first (median) | final train loss | "
            "final val loss | val recon | val KL |", "|---|---|---|---|---|---|---|---|",
            f"| {data.get('epochs_done', '-')} of {data.get('epochs', '-')} | {_fmt(data.get('wall_s'), '.1f')} | "
            f"{_fmt(data.get('first_epoch_line_s'), '.1f', ' s')} | {_fmt(data.get('median_epoch_s'), '.4f')} | "
            f"{_fmt(final.get('train_loss'), '.4f')} | {_fmt(final.get('val_loss'), '.4f')} | "
            f"{_fmt(final.get('val_recon'), '.4f')} | {_fmt(final.get('val_kl'), '.4f')} |"]


if __name__ == "__main__":
    main()
