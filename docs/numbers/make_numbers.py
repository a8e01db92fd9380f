"""The numbers the documentation quotes: trained here, written to JSON, and put into the pages.

The runs: ``subset`` (the bundled subset, 30 epochs), ``mnist3`` and ``mnist30`` (full MNIST, 3 and
30 epochs; the latter's figures are the home page's), ``parity`` (tests/test_parity.py's observed
errors), ``beta`` (the README's beta sweep) and ``sigma`` (the sweeps guide's MNIST sigma sweep, most
of the time). Each writes ``docs/numbers/<run>.json`` (the command, the machine, its load, and the
results), and the pages quote those files between markers, ``<!-- numbers: NAME -->`` and
``<!-- /numbers -->``, so that they read the same on GitHub and on the site (a marker inside a
sentence must not start a line: GitHub would take the line for raw HTML). The speed page's figure
comes from benchmarks/results/train_speed.json (benchmarks/train_speed.py writes it).
``make docs-numbers`` runs them all:

    python docs/numbers/make_numbers.py                      # every run, then the pages and figures
    python docs/numbers/make_numbers.py subset parity beta   # some runs, then the pages and figures
    python docs/numbers/make_numbers.py --pages              # only the pages and figures, from the JSON
    python docs/numbers/make_numbers.py --check              # exit 1 if a page differs from the JSON

tests/test_docs_numbers.py checks the pages against the JSON, the subset's first epochs against a
fresh run (fast tier) and the 3 MNIST epochs against a fresh ``jaxvae train`` (slow tier, when MNIST
is in $JAXVAE_TEST_MNIST_DIR or ../shared/data/mnist; skipped otherwise).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FIGURES = REPO / "docs" / "figures"
FIGURES_FROM = {"mnist30"}  # runs whose figures are the documentation's (docs/figures/)
MNIST_DIR = REPO.parent / "shared" / "data" / "mnist"  # where the slow test and this script look first

# name -> the jaxvae train arguments of the run (the blog's defaults otherwise)
RUNS = {
    "subset": ["--dataset", "mnist-subset", "--epochs", "30"],
    "mnist3": ["--dataset", "mnist", "--require-mnist", "--epochs", "3"],
    "mnist30": ["--dataset", "mnist", "--require-mnist", "--epochs", "30"],
}
BLOG = {"train": [25.3, 22.7, 22.3], "val": [23.0, 22.4, 22.2]}  # the blog's epochs 1-3
KEYS = ("epoch", "train_loss", "val_loss", "val_recon", "val_kl", "lr", "seconds")


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "system": platform.platform()}


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 1)
    except OSError:
        return None


def _child_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes so far."""
    t = os.times()
    return t.children_user + t.children_system


def train(name: str, data_dir: Path | None) -> dict:
    """Run ``jaxvae train`` as a user would, and keep its metrics."""
    args = list(RUNS[name])
    if "mnist" in args:
        args += ["--data-dir", str(data_dir or MNIST_DIR)]
    with tempfile.TemporaryDirectory(prefix=f"jaxvae-numbers-{name}-") as tmp:
        run = Path(tmp) / "run"
        plots = name in FIGURES_FROM
        command = [sys.executable, "-m", "jaxvae", "train", *args, *([] if plots else ["--no-plots"]),
                   "--out", str(run)]
        loads = [load_average()]
        started, cpu = datetime.datetime.now(datetime.timezone.utc), _child_cpu()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        wall = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
        cpu = _child_cpu() - cpu
        loads.append(load_average())
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        evaluation = None
        if name == "mnist30":
            out = subprocess.run([sys.executable, "-m", "jaxvae", "evaluate", str(run), "--json"], check=True,
                                 capture_output=True, text=True).stdout
            evaluation = json.loads(out)
        if plots:  # the home page's figures are this run's
            for figure in sorted((run / "figures").glob("*.png")):
                shutil.copyfile(figure, FIGURES / figure.name)
    import jax

    shown = ["jaxvae", "train", *[a if a != str(data_dir or MNIST_DIR) else "MNIST_DIR" for a in args],
             *([] if plots else ["--no-plots"])]
    return {
        "run": name,
        "command": shlex.join(shown),
        "date": started.strftime("%Y-%m-%d"),
        "jaxvae": _version(),
        "jax": jax.__version__,
        "machine": machine(),
        "load_average": [x for x in loads if x is not None],
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),
        "epochs": [{k: r[k] for k in KEYS} for r in records],
        "evaluate": evaluation and {k: evaluation[k] for k in ("loss", "recon", "kl") if k in evaluation},
    }


PARITY_LINE = re.compile(r"\[parity\] (.+?): ([0-9.e+-]+) \(bound ([0-9.e+-]+)\)")
# the rows of parity.md: what each assert_close name of tests/test_parity.py belongs to
PARITY_ROWS = [
    ("loss, reconstruction, KL of a batch", re.compile(r"(loss|recon|kl)$")),
    ("gradient of every parameter", re.compile(r"grad ")),
    ("parameters after 50 Adam steps", re.compile(r"param \[")),
    ("the same with a KL warm-up (`LinearWarmup` against the blog's `distrib_loss_rate` set per step)",
     re.compile(r"param \(KL warm-up\)")),
    ("`train_one_epoch` / `validate_one_epoch` means against jaxvae's compiled epochs",
     re.compile(r"(train|validation) epoch mean")),
    ("stable KL against the blog's KL, for log-sigma in [-87, 44]", re.compile(r"KL at log_sigma")),
]


def parity() -> dict:
    """The parity suite with every observed error printed; the worst per row, dtype and bound."""
    env = {**os.environ, "JAXVAE_SHOW_ERRORS": "1"}
    started = datetime.datetime.now(datetime.timezone.utc)
    out = subprocess.run([sys.executable, "-m", "pytest", "-s", "-q", "-n", "0", "-p", "no:cacheprovider",
                          "tests/test_parity.py"], cwd=REPO, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"tests/test_parity.py failed:\n{out.stdout[-3000:]}")
    sys.path.insert(0, str(REPO / "tests"))
    from tolerances import PARITY_RTOL

    float64_bounds = {b["float64"] for b in PARITY_RTOL.values() if "float64" in b}
    rows = {label: {} for label, _ in PARITY_ROWS}
    for name, err, bound in PARITY_LINE.findall(out.stdout):
        label = next((label for label, pattern in PARITY_ROWS if pattern.match(name)), None)
        if label is None:
            continue
        dtype = "float64" if float(bound) in float64_bounds else "float32"
        cell = rows[label].setdefault(dtype, {"bound": float(bound), "observed": 0.0})
        cell["observed"] = max(cell["observed"], float(err))
    return {"run": "parity", "command": "JAXVAE_SHOW_ERRORS=1 python -m pytest -s tests/test_parity.py",
            "date": started.strftime("%Y-%m-%d"), "jaxvae": _version(), "machine": machine(),
            "rows": [{"quantity": label, **rows[label]} for label, _ in PARITY_ROWS]}


BETAS = [0.1, 0.3, 1.0, 3.0]
SIGMAS = ["0.3", "0.5", "1", "2"]
SIGMA_ARGS = ["--seeds", "3", "--recon-sigma", *SIGMAS, "--epochs", "10"]


def sigma_sweep(data_dir: Path | None = None) -> dict:
    """The sweeps guide's sigma sweep on full MNIST (minutes); its figures become the guide's."""
    with tempfile.TemporaryDirectory(prefix="jaxvae-numbers-sigma-") as tmp:
        out = Path(tmp) / "sweep"
        command = [sys.executable, "-m", "jaxvae", "sweep", "--dataset", "mnist", "--require-mnist", "--data-dir",
                   str(data_dir or MNIST_DIR), *SIGMA_ARGS, "--out", str(out)]
        loads, started, cpu = [load_average()], datetime.datetime.now(datetime.timezone.utc), _child_cpu()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        wall = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
        cpu = _child_cpu() - cpu
        loads.append(load_average())
        summary = json.loads((out / "summary" / "summary.json").read_text())
        metrics = out / summary["models"][0]["name"] / "metrics.jsonl"  # one program: every model's epoch time
        seconds = [json.loads(line)["seconds"] for line in metrics.read_text().splitlines() if line.strip()]
        for figure in sorted((out / "summary").glob("*.png")):
            shutil.copyfile(figure, FIGURES / figure.name)
    keys = ("val_loss", "val_recon", "val_kl", "val_squared_error")
    return {"run": "sigma", "command": shlex.join(["jaxvae", "sweep", "--data-dir", "MNIST_DIR", *SIGMA_ARGS]),
            "date": started.strftime("%Y-%m-%d"), "jaxvae": _version(), "machine": machine(),
            "load_average": [x for x in loads if x is not None], "wall_seconds": round(wall, 1),
            "cpu_seconds": round(cpu, 1), "epoch_seconds": seconds,
            "settings": [{"recon_sigma": st["recon_sigma"], **{k: st[k] for k in keys}} for st in summary["settings"]]}


def beta_sweep() -> dict:
    """The README's and the Python guide's beta sweep: the MNIST subset, 2 seeds, 2 epochs."""
    from jaxvae import TrainConfig, VAEConfig
    from jaxvae.data import load_dataset
    from jaxvae.sweep import fit_many, summarize

    started = datetime.datetime.now(datetime.timezone.utc)
    data = load_dataset("mnist-subset")
    sweep = fit_many(data.train_x, data.test_x, vae_config=VAEConfig(input_dim=784),
                     train_config=TrainConfig(max_epochs=2, batch_size=128), seeds=2, kl_weight=BETAS)
    summary = summarize(sweep.models, sweep.histories, sweep.errors, sweep.stop_reasons)
    return {"run": "beta", "command": "fit_many(mnist-subset, TrainConfig(max_epochs=2), seeds=2, "
                                      f"kl_weight={BETAS})",
            "date": started.strftime("%Y-%m-%d"), "jaxvae": _version(), "machine": machine(),
            "settings": [{"label": st["label"], "val_kl": st["val_kl"]} for st in summary["settings"]]}


def beta_kl(data: dict) -> list[str]:
    """The mean validation KL of each beta, to 1 decimal, in BETAS' order."""
    return [f"{st['val_kl']['mean']:.1f}" for st in data["beta"]["settings"]]


def _version() -> str:
    from importlib.metadata import version

    return version("jaxvae")


def read(name: str) -> dict | None:
    path = HERE / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


# ---- what the pages quote -------------------------------------------------------------------------

def _f(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}"


def _lr(lr: float) -> str:
    return f"{lr:.0e}".replace("e-0", "e-")  # 1e-3


def _first3(run: dict) -> tuple[str, str]:
    e = run["epochs"][:3]
    return ", ".join(_f(r["train_loss"]) for r in e), ", ".join(_f(r["val_loss"]) for r in e)


def _cpu(run: dict) -> str:
    m = run["machine"]
    return f"{m['cores']}-core {m['cpu']}"


def _load(run: dict) -> str:
    loads = run.get("load_average") or []
    if not loads:
        return "load not recorded"
    lo, hi = min(loads), max(loads)
    return f"load average {lo:.1f}" if lo == hi else f"load average {lo:.1f}-{hi:.1f}"


def _rerun(name: str) -> str:
    return f"`python docs/numbers/make_numbers.py {name}`"


def mnist_table(data: dict) -> str:
    m3, m30 = data["mnist3"], data["mnist30"]
    train3, val3 = _first3(m3)
    last = m30["epochs"][-1]
    lines = [
        "| | train loss | validation loss |",
        "|---|---|---|",
        f"| epochs 1, 2, 3 | {train3} | {val3} |",
        f"| the blog, epochs 1, 2, 3 | {', '.join(map(str, BLOG['train']))} | {', '.join(map(str, BLOG['val']))} |",
        f"| epoch {last['epoch']} | {_f(last['train_loss'], 3)} | {_f(last['val_loss'], 3)} "
        f"(reconstruction {_f(last['val_recon'], 3)}, KL {_f(last['val_kl'], 3)}) |",
        "",
        f"After {last['epoch']} epochs the learning rate was {_lr(last['lr'])}."
        + (f" `jaxvae evaluate` on the run gave a test loss of {_f(m30['evaluate']['loss'], 3)} (reconstruction "
           f"{_f(m30['evaluate']['recon'], 3)}, KL {_f(m30['evaluate']['kl'], 3)})." if m30.get("evaluate") else ""),
        f"These are the runs of `docs/numbers/make_numbers.py` (`{m3['command']}`, and the same with "
        f"`--epochs {last['epoch']}` and the figures above; jaxvae {m30['jaxvae']}, {m30['date']}), in "
        f"`docs/numbers/mnist3.json` and "
        f"`mnist30.json`; the tests rerun the 3 epochs.",
    ]
    return "\n".join(lines)


def mnist_sentence(data: dict) -> str:
    train3, val3 = _first3(data["mnist3"])
    return f"`jaxvae train` with the blog's defaults gives {train3} and {val3}"


def mnist_readme(data: dict) -> str:
    train3, val3 = _first3(data["mnist3"])
    return (f"`jaxvae train --epochs 3` on MNIST gives train losses {train3} and validation losses {val3} "
            f"(the blog: {', '.join(map(str, BLOG['train']))} and {', '.join(map(str, BLOG['val']))}); "
            f"the tests rerun it and compare")


def subset_kl(data: dict) -> str:
    e = data["subset"]["epochs"]
    kl = {r["epoch"]: r["val_kl"] for r in e}
    past2 = next((r["epoch"] for r in e if r["val_kl"] > 2), None)
    shown = [n for n in (1, 5, 10, 20, 30) if n in kl]
    milestones = ", ".join(f"{_f(kl[n])} after {n}" for n in shown)
    head = f"Its validation KL passes 2 nats after {past2} epochs" if past2 else "Its validation KL stays below 2 nats"
    return f"{head} ({milestones}; `docs/numbers/subset.json`)"


def epoch_seconds(run: dict) -> tuple[float, float, float]:
    """Median, min and max seconds of the epochs after the first (which compiles)."""
    s = [r["seconds"] for r in run["epochs"][1:]]
    return statistics.median(s), min(s), max(s)


def cli_epoch_line(data: dict) -> str:
    """Epoch 3 of the 30-epoch MNIST run as jaxvae train printed it, with the machine and its load."""
    from jaxvae.cli.sweep import epoch_line

    run = data["mnist30"]
    record = run["epochs"][2]
    line = epoch_line([record], [], len(run["epochs"]))
    return (f"(here epoch 3 of `docs/numbers/mnist30.json`, full MNIST, on a {_cpu(run)} VM shared with other "
            f"work, {_load(run)}):\n\n```text\n{line}\n```")


def sigma_cost(data: dict) -> str:
    run = data["sigma"]
    minutes, secs = divmod(round(run["wall_seconds"]), 60)
    later = run["epoch_seconds"][1:]
    models = len(run["settings"]) * int(SIGMA_ARGS[SIGMA_ARGS.index("--seeds") + 1])
    return (f"{models} models, the blog's configuration otherwise, trained in {minutes} min {secs} s on a "
            f"{_cpu(run)} VM "
            f"shared with other work ({_load(run)}): an epoch of all {models} models took {min(later):.0f} to "
            f"{max(later):.0f} s after the first, and {run['epoch_seconds'][0]:.0f} s with the compile; "
            f"{run['cpu_seconds']:.0f} CPU seconds in all")


def sigma_table(data: dict) -> str:
    rows = data["sigma"]["settings"]

    def cell(stat: dict) -> str:
        return f"{stat['mean']:.2f} ± {stat['sd']:.2f}"

    lines = ["| sigma | loss | reconstruction term | KL (rate) | squared error per image (distortion) |",
             "|---|---|---|---|---|"]
    for r in rows:
        sigma = f"{r['recon_sigma']:g}" + (" (the blog's)" if r["recon_sigma"] == 1 else "")
        lines.append(f"| {sigma} | {cell(r['val_loss'])} | {cell(r['val_recon'])} | {cell(r['val_kl'])} | "
                     f"{cell(r['val_squared_error'])} |")
    return "\n".join(lines)


def sigma_text(data: dict) -> str:
    rows = data["sigma"]["settings"]
    lo, hi = rows[0], rows[-1]
    text = (f"A smaller sigma weighs the reconstruction more: sigma {lo['recon_sigma']:g} buys a sharper "
            f"reconstruction ({lo['val_squared_error']['mean']:.1f} against {hi['val_squared_error']['mean']:.1f} "
            f"squared error per image at sigma {hi['recon_sigma']:g}) with more information in z "
            f"({lo['val_kl']['mean']:.1f} nats against {hi['val_kl']['mean']:.2f}).")
    if hi["val_kl"]["mean"] < 0.5:
        text += (f" At sigma {hi['recon_sigma']:g} the encoder nearly collapses onto the prior (KL "
                 f"{hi['val_kl']['mean']:.2f} nats), and the latent scatters lose most of their digit structure.")
    kl = [r["val_kl"]["mean"] for r in rows]
    gap = min(abs(a - b) for a, b in zip(kl, kl[1:]))
    if max(r["val_kl"]["sd"] for r in rows) < gap / 2:
        text += " The spread of the KL between seeds is small next to its differences between sigmas."
    return text


def beta_sentence(data: dict) -> str:
    kl = beta_kl(data)
    return (f"the validation KL falls from about {kl[0]} nats at beta 0.1 to {kl[1]} at 0.3, {kl[2]} at 1 and "
            f"{kl[3]} at 3 (`docs/numbers/beta.json`)")


def readme_epoch_time(data: dict) -> str:
    run = data["mnist30"]
    med, lo, hi = epoch_seconds(run)
    return (f"an MNIST epoch, validation included, took {med:.1f} s (median; {lo:.1f}-{hi:.1f} s) on a "
            f"{_cpu(run)} VM shared with other work ({_load(run)})")


def readme_subset_time(data: dict) -> str:
    run = data["subset"]
    med, lo, hi = epoch_seconds(run)
    return (f"{len(run['epochs'])} epochs (`--epochs {len(run['epochs'])}`) took {run['wall_seconds']:.0f} s, "
            f"compiling included and figures not, {med:.2f} s per epoch after the first ({lo:.2f}-{hi:.2f} s), "
            f"on a {_cpu(run)} VM shared with other work ({_load(run)})")


SPEED = REPO / "benchmarks" / "results" / "train_speed.json"  # benchmarks/train_speed.py writes it


def _e(x: float, digits: int) -> str:
    return f"{x:.{digits}e}".replace("e-0", "e-")  # 1e-5, 3.9e-7


def parity_table(data: dict) -> str:
    lines = ["| quantity | float32 bound | float32 observed | float64 bound | float64 observed |",
             "|---|---|---|---|---|"]
    for row in data["parity"]["rows"]:
        cells = []
        for dtype in ("float32", "float64"):
            c = row.get(dtype)
            cells += [_e(c["bound"], 0), _e(c["observed"], 1)] if c else ["", ""]
        lines.append(f"| {row['quantity']} | {' | '.join(cells)} |")
    return "\n".join(lines)


def speed_ratio(data: dict) -> str:
    """jaxvae's compiled epoch against the blog's PyTorch loop, batch 128, from the speed benchmark."""
    bench = data["speed"]
    main = bench["sections"]["main"]
    jax_epoch = next(v for v in main["variants"] if v["variant"] == "jax_epoch")
    r = jax_epoch["vs_reference"]
    m = bench["machine"]
    return (f"{r['median']:.1f}x as fast as the blog's PyTorch loop on the same CPU ({r['min']:.1f}-{r['max']:.1f}x "
            f"over {r['n']} interleaved rounds; a {m['cores']}-core {m['cpu']} VM, load average {main['load']:.1f})")


SECTIONS = {
    "parity-table": parity_table,
    "speed-ratio": speed_ratio,
    "mnist-table": mnist_table,
    "mnist-sentence": mnist_sentence,
    "mnist-readme": mnist_readme,
    "subset-kl": subset_kl,
    "readme-epoch-time": readme_epoch_time,
    "cli-epoch-line": cli_epoch_line,
    "beta-sentence": beta_sentence,
    "sigma-cost": sigma_cost,
    "sigma-table": sigma_table,
    "sigma-text": sigma_text,
    "readme-subset-time": readme_subset_time,
}
PAGES = ["README.md", "docs/index.md", "docs/reproductions.md", "docs/guide/data.md", "docs/guide/cli.md",
         "docs/guide/sweeps.md", "docs/parity.md", "docs/speed.md"]
MARKED = re.compile(r"(<!-- numbers: ([\w-]+) -->)(.*?)(<!-- /numbers -->)", re.S)


def render(text: str, data: dict) -> str:
    def one(m: re.Match) -> str:
        body = SECTIONS[m.group(2)](data)
        # a block (a table) keeps the blank lines around it; a phrase stays inside its sentence
        inner = m.group(3)
        lead = inner[:len(inner) - len(inner.lstrip())]
        trail = inner[len(inner.rstrip()):] if inner.strip() else lead
        return f"{m.group(1)}{lead}{body}{trail}{m.group(4)}"

    return MARKED.sub(one, text)


def draw_figures(data: dict) -> list[Path]:
    """The speed page's and the parity page's figures, from benchmarks/results and docs/numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    bench, sections = data["speed"], data["speed"]["sections"]
    names = {"torch_blog": "blog's loop", "torch_fast": "torch, fast", "torch_compile": "torch.compile",
             "torch_heroic": "torch, heroic", "jax_loop": "jaxvae, step loop", "jax_epoch": "jaxvae"}
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 4.2), gridspec_kw={"width_ratios": [1.3, 1, 1]})
    # 1. each peer's epoch time over jaxvae's, per round (median, min-max), at batch 128 and 1024
    for offset, (key, colour) in enumerate((("main", "tab:blue"), ("batch1024", "tab:orange"))):
        sec = sections[key]
        peers = [v for v in sec["variants"] if "subject_ratio" in v]
        y = [i + 0.2 * (offset - 0.5) for i in range(len(peers))]
        med = [1 / v["subject_ratio"]["median"] for v in peers]
        lo = [m - 1 / v["subject_ratio"]["max"] for m, v in zip(med, peers)]
        hi = [1 / v["subject_ratio"]["min"] - m for m, v in zip(med, peers)]
        ax1.barh(y, med, height=0.38, color=colour, xerr=[lo, hi], capsize=2,
                 label=f"batch {peers[0]['batch']}")
        ax1.set_yticks(range(len(peers)), [names.get(v["variant"], v["variant"]) for v in peers])
    ax1.axvline(1, color="black", lw=0.8)
    ax1.set_xlabel("epoch time / jaxvae's (median, min-max of 9 rounds)")
    ax1.set_title("Each peer against jaxvae's compiled epoch")
    ax1.legend(loc="lower right", fontsize=8)
    # 2. epoch time against model width
    rows = sections["sweep"]["by_hidden"]
    hidden = [r["hidden"] for r in rows]
    for variant in ("jax_epoch", "torch_heroic", "torch_fast"):
        ax2.plot(hidden, [next(v["median_s"] for v in r["variants"] if v["variant"] == variant) for r in rows],
                 marker="o", label=names[variant])
    ax2.plot(hidden, [r["floor_s"] for r in rows], "k--", label="arithmetic floor")
    ax2.set_xscale("log", base=2)
    ax2.set_yscale("log")
    ax2.set_xticks(hidden, [str(h) for h in hidden])
    ax2.set_xlabel("hidden width (batch 128)")
    ax2.set_ylabel("s per epoch")
    ax2.set_title("Epoch time against model width")
    ax2.legend(fontsize=8)
    # 3. compile time, batch 128
    compiled = [v for v in sections["main"]["variants"] if v.get("compile_s")]
    ax3.barh(range(len(compiled)), [v["compile_s"] for v in compiled], color="tab:gray")
    ax3.set_yticks(range(len(compiled)), [names.get(v["variant"], v["variant"]) for v in compiled])
    ax3.set_xlabel("s to compile (batch 128)")
    ax3.set_title("Compile time, once per configuration")
    m = bench["machine"]
    fig.suptitle(f"The blog's model on MNIST, {m['cores']}-core {m['cpu']} VM, CPU "
                 f"(benchmarks/results/train_speed.json)", fontsize=10)
    fig.tight_layout()
    path = FIGURES / "speed.png"
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)
    written.append(path)

    if data.get("parity"):
        rows = data["parity"]["rows"]
        fig, ax = plt.subplots(figsize=(9, 4.0))
        short = ["batch loss, recon, KL", "gradients", "50 Adam steps", "50 steps, KL warm-up", "epoch means",
                 "stable KL"]
        for offset, (dtype, colour) in enumerate((("float32", "tab:blue"), ("float64", "tab:green"))):
            ys = [i + 0.18 * (offset - 0.5) for i, r in enumerate(rows) if dtype in r]
            got = [r[dtype]["observed"] for r in rows if dtype in r]
            bound = [r[dtype]["bound"] for r in rows if dtype in r]
            ax.scatter(got, ys, color=colour, label=f"{dtype}: observed", zorder=3)
            ax.scatter(bound, ys, color=colour, marker="|", s=400, label=f"{dtype}: bound")
            for g, b, y in zip(got, bound, ys):
                ax.plot([g, b], [y, y], color=colour, lw=0.6, alpha=0.5)
        ax.set_xscale("log")
        ax.set_yticks(range(len(rows)), short[:len(rows)])
        ax.invert_yaxis()
        ax.set_xlabel("relative error, jaxvae against torchref (worst entry)")
        ax.set_title("Parity: each error against its bound")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4)
        fig.tight_layout()
        path = FIGURES / "parity_errors.png"
        fig.savefig(path, dpi=90, metadata={"Software": None})
        plt.close(fig)
        written.append(path)
    return written


def all_data() -> dict:
    data = {name: read(name) for name in [*RUNS, *EXTRA]}
    data["speed"] = json.loads(SPEED.read_text())
    return data


def stale_pages(data: dict | None = None) -> list[str]:
    data = all_data() if data is None else data
    return [p for p in PAGES if render((REPO / p).read_text(encoding="utf-8"), data)
            != (REPO / p).read_text(encoding="utf-8")]


def write_pages(data: dict) -> list[str]:
    changed = []
    for p in PAGES:
        path = REPO / p
        text = path.read_text(encoding="utf-8")
        new = render(text, data)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(p)
    return changed


# runs that are not a jaxvae train command: name -> (what it does, the function that returns its JSON)
EXTRA = {
    "parity": ("the parity suite with its errors shown", parity),
    "beta": ("the beta sweep of the README and the Python guide", beta_sweep),
    "sigma": ("the sweeps guide's sigma sweep on full MNIST (minutes)", sigma_sweep),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", metavar="RUN",
                        help=f"runs to redo (default: all: {', '.join([*RUNS, *EXTRA])})")
    parser.add_argument("--pages", action="store_true",
                        help="only rewrite the pages and redraw the figures from the JSON files")
    parser.add_argument("--check", action="store_true", help="exit 1 if a page differs from the JSON files")
    parser.add_argument("--data-dir", type=Path, default=None, help=f"MNIST's IDX files (default: {MNIST_DIR})")
    args = parser.parse_args(argv)
    if unknown := [r for r in args.runs if r not in [*RUNS, *EXTRA]]:
        parser.error(f"unknown run {unknown[0]!r}; choose from {', '.join(RUNS)}")
    if args.check:
        stale = stale_pages()
        for p in stale:
            print(f"{p}: its numbers differ from docs/numbers/*.json; run python docs/numbers/make_numbers.py --pages")
        return 1 if stale else 0
    if not args.pages:
        for name, (what, make) in EXTRA.items():
            if name in args.runs or not args.runs:
                print(f"{name}: {what}", flush=True)
                result = make(args.data_dir) if name == "sigma" else make()
                (HERE / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
        for name in [r for r in args.runs if r not in EXTRA] or ([] if args.runs else list(RUNS)):
            print(f"training {name}: jaxvae train {' '.join(RUNS[name])}", flush=True)
            result = train(name, args.data_dir)
            (HERE / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
            print(f"wrote docs/numbers/{name}.json ({result['wall_seconds']} s)", flush=True)
    data = all_data()
    for p in write_pages(data):
        print(f"rewrote {p}")
    for path in draw_figures(data):
        print(f"drew {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
