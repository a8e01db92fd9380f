"""The numbers the documentation quotes: trained here, written to JSON, and put into the pages.

The runs: ``subset`` (the bundled subset, 30 epochs), ``mnist3`` and ``mnist30`` (full MNIST, 3 and
30 epochs; the latter's figures are the home page's), ``parity`` (tests/test_parity.py's observed
errors), ``beta`` (the README's beta sweep), ``sigma`` (the sweeps guide's MNIST sigma sweep, most
of the time) and ``family`` (the conditional VAE, VQ-VAE and beta-TCVAE pages' MNIST runs and
figures, docs/figures/family_*.png). Each writes ``docs/numbers/<run>.json`` (the command, the machine, its load, and the
results), and the pages quote those files between markers, ``<!-- numbers: NAME -->`` and
``<!-- /numbers -->``, so that they read the same on GitHub and on the site (a marker inside a
sentence must not start a line: GitHub would take the line for raw HTML). The speed page's figure
comes from benchmarks/results/train_speed.json (benchmarks/train_speed.py writes it), its family table
from benchmarks/results/family_speed.json (benchmarks/family_speed.py), its step breakdown (figure and
table) from benchmarks/results/step_breakdown.json (benchmarks/step_breakdown.py).
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
import math
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


FAMILY_EPOCHS = 10
FAMILY_BETAS = [1.0, 6.0]
# the family run's models: full MNIST, batch 128, lr 1e-3, the blog's hidden layer of 400
FAMILY_SETUP = {
    "cvae": "ConditionalVAEModel.from_config(VAEConfig(input_dim=784, latent_dim=2, likelihood='bernoulli'), "
            "num_classes=10)",
    "vae": "VAEModel.from_config(VAEConfig(input_dim=784, latent_dim=16))",
    "vqvae": "VQVAEModel.from_config(VAEConfig(input_dim=784, latent_dim=16), num_codes=512, ema=True), "
             "hyper={'commitment': 0.25}",
    "vqvae_trained_codebook": "the same with ema=False, hyper={'commitment': 0.25, 'quantization': 1.0}",
    "betatc": "BetaTCVAEModel.from_config(VAEConfig(input_dim=784, latent_dim=10, likelihood='bernoulli'), "
              "dataset_size=60000, estimator='mss'), hyper={'beta': 1.0 or 6.0}",
}


def _grid(images, rows: int, cols: int, side: int = 28, pad: int = 2):
    """``rows * cols`` images ``[rows * cols, side * side]`` tiled into one array, white gaps between."""
    import numpy as np

    images = np.asarray(images).reshape(rows, cols, side, side)
    out = np.zeros((rows * (side + pad) - pad, cols * (side + pad) - pad), np.float32)
    for r in range(rows):
        for c in range(cols):
            out[r * (side + pad):r * (side + pad) + side, c * (side + pad):c * (side + pad) + side] = images[r, c]
    return out


def _save(fig, name: str) -> None:
    fig.savefig(FIGURES / name, dpi=90, metadata={"Software": None})


def family(data_dir: Path | None = None) -> dict:
    """The family's guide pages' numbers and figures: the conditional VAE, the VQ-VAE against the VAE at
    a matched code size, and the beta-TCVAE at two betas, each ``FAMILY_EPOCHS`` epochs on full MNIST
    (a few minutes). The figures go to docs/figures/family_*.png.

    Args:
        data_dir: MNIST's IDX files; None for ``MNIST_DIR``.

    Returns:
        The run's record: the command, the machine, its load and each model's test metrics.
    """
    import jax
    import jax.numpy as jnp
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import jaxvae
    from jaxvae import BetaTCVAEModel, TrainConfig, VAEConfig
    from jaxvae.cvae import ConditionalVAEModel
    from jaxvae.data import load_dataset
    from jaxvae.vae import VAEModel
    from jaxvae.vqvae import VQVAEModel

    data = load_dataset("mnist", data_dir=data_dir or MNIST_DIR, download=False, require=True, log=None)
    test_x = jnp.asarray(data.test_x)
    loads, started, cpu0 = [load_average()], datetime.datetime.now(datetime.timezone.utc), os.times()
    base = TrainConfig(max_epochs=FAMILY_EPOCHS, batch_size=128, lr=1e-3)
    keep = ("val_loss", "val_recon", "val_kl", "val_mi", "val_tc", "val_dim_kl", "val_perplexity",
            "val_commitment", "val_codebook")

    def fitted(x, val, model, **hyper):
        t = datetime.datetime.now(datetime.timezone.utc)
        result = jaxvae.fit(x, val, model=model, train_config=base.replace(hyper=hyper))
        loads.append(load_average())
        last = result.history[-1]
        return result, {"epochs": len(result.history), **{k: last[k] for k in keep if k in last},
                        "epoch_seconds": [round(r["seconds"], 2) for r in result.history],
                        "wall_seconds": round((datetime.datetime.now(datetime.timezone.utc) - t).total_seconds(), 1)}

    # the conditional VAE: a row of samples per class; each sample's nearest class mean (of the training
    # images) against the class it was asked for, and the same for the test images themselves
    cvae = ConditionalVAEModel.from_config(VAEConfig(input_dim=784, latent_dim=2, likelihood="bernoulli"),
                                           num_classes=10)
    result, cvae_out = fitted((data.train_x, data.train_y), (data.test_x, data.test_y), cvae)
    per_class = 100
    labels = jnp.repeat(jnp.arange(10), per_class)
    samples = cvae.sample(result.params, jax.random.PRNGKey(0), labels)
    means = jnp.stack([jnp.asarray(data.train_x[data.train_y == c].mean(0)) for c in range(10)])

    def nearest(images):
        return np.asarray(jnp.argmin(jnp.sum((images[:, None] - means[None]) ** 2, -1), axis=1))

    hits = nearest(samples) == np.asarray(labels)
    cvae_out["samples_nearest_own_class"] = round(float(hits.mean()), 3)
    cvae_out["samples_nearest_own_class_per_class"] = [round(float(hits[labels == c].mean()), 2) for c in range(10)]
    cvae_out["test_images_nearest_own_class"] = round(float((nearest(test_x) == data.test_y).mean()), 3)
    cols = 12
    shown = np.asarray(samples).reshape(10, per_class, 784)[:, :cols].reshape(-1, 784)
    fig, ax = plt.subplots(figsize=(cols * 0.55, 10 * 0.55))
    ax.imshow(_grid(shown, 10, cols), cmap="gray_r", vmin=0, vmax=1)
    ax.set_yticks([14 + 30 * c for c in range(10)], [str(c) for c in range(10)])
    ax.set_xticks([])
    ax.set_ylabel("asked-for class")
    ax.set_title(f"Conditional VAE samples, z ~ N(0, I), latent 2, {FAMILY_EPOCHS} epochs", fontsize=9)
    fig.tight_layout()
    _save(fig, "family_cvae.png")
    plt.close(fig)

    # the VAE and the VQ-VAE at one code size: a 16-dimensional z, or one 16-dimensional code of 512
    # (an EMA codebook; a trained one is run too, for the codes it leaves unused)
    vae = VAEModel.from_config(VAEConfig(input_dim=784, latent_dim=16))
    vae_result, vae_out = fitted(data.train_x, data.test_x, vae)
    vae_recon = vae.decode(vae_result.params, vae.encode(vae_result.params, test_x)[0])  # z = the posterior mean
    vae_out["test_squared_error"] = round(float(jnp.mean(jnp.sum((test_x - vae_recon) ** 2, -1))), 2)
    vq_runs = []
    for ema in (True, False):
        vq = VQVAEModel.from_config(VAEConfig(input_dim=784, latent_dim=16), num_codes=512, ema=ema)
        vq_result, out = fitted(data.train_x, data.test_x, vq, commitment=0.25)
        vq_state = vq_result.state.train_state.model_state
        recon = vq.reconstruct(vq_result.params, vq_state, test_x)
        _, codes = vq.quantize(vq_result.params, vq_state, vq.encode(vq_result.params, test_x))
        out["test_squared_error"] = round(float(jnp.mean(jnp.sum((test_x - recon) ** 2, -1))), 2)
        out["test_codes_used"] = int(np.unique(np.asarray(codes)).size)
        vq_runs.append((out, recon))
    (vq_out, vq_recon), (vq_trained_out, _) = vq_runs
    cols = 12
    rows = np.concatenate([np.asarray(test_x[:cols]), np.asarray(vae_recon[:cols]), np.asarray(vq_recon[:cols])])
    fig, ax = plt.subplots(figsize=(cols * 0.6, 3 * 0.75))
    ax.imshow(_grid(np.clip(rows, 0, 1), 3, cols), cmap="gray_r", vmin=0, vmax=1)
    ax.set_yticks([14, 44, 74], ["test images", "VAE, latent 16", "VQ-VAE, K=512, EMA"])
    ax.set_xticks([])
    ax.set_title(f"MNIST test images and their reconstructions, {FAMILY_EPOCHS} epochs each", fontsize=9)
    fig.tight_layout()
    _save(fig, "family_vqvae.png")
    plt.close(fig)

    # the beta-TCVAE at beta 1 (the ELBO) and 6: test MI, TC and dimension-wise KL, and traversals
    tc_model = BetaTCVAEModel.from_config(VAEConfig(input_dim=784, latent_dim=10, likelihood="bernoulli"),
                                          dataset_size=len(data.train_x), estimator="mss")
    betatc_out = []
    steps = np.linspace(-3, 3, 7)
    fig, axes = plt.subplots(1, len(FAMILY_BETAS), figsize=(9, 5.6))
    for beta, ax in zip(FAMILY_BETAS, axes):
        result, out = fitted(data.train_x, data.test_x, tc_model, beta=beta)
        mu, log_sigma = tc_model.encode(result.params, test_x)
        kl = np.asarray(jnp.mean(0.5 * (mu ** 2 + jnp.exp(2 * log_sigma) - 1) - log_sigma, 0))
        out["beta"] = beta
        out["test_kl_per_coordinate"] = [round(float(k), 3) for k in kl]
        betatc_out.append(out)
        order = np.argsort(-kl)  # the coordinates that carry most first
        z0 = np.asarray(mu[0])
        zs = np.repeat(z0[None, None], 10, 0).repeat(len(steps), 1)
        for row, d in enumerate(order):
            zs[row, :, d] = steps
        images = tc_model.decode(result.params, jnp.asarray(zs.reshape(-1, 10)))
        ax.imshow(_grid(images, 10, len(steps)), cmap="gray_r", vmin=0, vmax=1)
        ax.set_yticks([14 + 30 * r for r in range(10)], [f"z{d} ({kl[d]:.1f})" for d in order], fontsize=7)
        ax.set_xticks([14 + 30 * i for i in range(len(steps))], [f"{s:g}" for s in steps], fontsize=7)
        ax.set_title(f"beta {beta:g}: TC {out['val_tc']:.2f}, dimension-wise KL {out['val_dim_kl']:.2f}", fontsize=9)
    fig.suptitle("beta-TCVAE latent traversals of one test image (each row one coordinate, its KL in nats)",
                 fontsize=9)
    fig.tight_layout()
    _save(fig, "family_betatc.png")
    plt.close(fig)

    cpu1 = os.times()
    return {"run": "family", "command": "python docs/numbers/make_numbers.py family",
            "date": started.strftime("%Y-%m-%d"), "jaxvae": _version(), "jax": jax.__version__,
            "machine": machine(), "load_average": [x for x in loads if x is not None],
            "wall_seconds": round((datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(), 1),
            "cpu_seconds": round(cpu1.user + cpu1.system - cpu0.user - cpu0.system, 1),
            "train_config": {"max_epochs": FAMILY_EPOCHS, "batch_size": 128, "lr": 1e-3,
                             "validation": "the MNIST test set"},
            "models": FAMILY_SETUP,
            "cvae": cvae_out, "vae": vae_out, "vqvae": vq_out, "vqvae_trained_codebook": vq_trained_out,
            "betatc": betatc_out}


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


def _family_source(run: dict) -> str:
    return (f"{run['train_config']['max_epochs']} epochs on full MNIST, batch {run['train_config']['batch_size']}, "
            f"lr {_lr(run['train_config']['lr'])}; {_rerun('family')} wrote `docs/numbers/family.json` in "
            f"{run['wall_seconds']:.0f} s on a {_cpu(run)} VM shared with other work, {_load(run)}")


def family_cvae(data: dict) -> str:
    """The conditional VAE's MNIST result: its test loss, and how often a sample looks like its class."""
    run = data["family"]
    c = run["cvae"]
    worst = min(range(10), key=lambda k: c["samples_nearest_own_class_per_class"][k])
    return (f"After {c['epochs']} epochs the test loss is {_f(c['val_loss'])} nats per image (reconstruction "
            f"{_f(c['val_recon'])}, KL {_f(c['val_kl'])}). Of 1000 samples, 100 per class, "
            f"{100 * c['samples_nearest_own_class']:.0f}% lie nearest to the mean training image of the class "
            f"they were drawn for; the test images themselves score {100 * c['test_images_nearest_own_class']:.0f}% "
            f"on that measure. The weakest class is {worst} "
            f"({100 * c['samples_nearest_own_class_per_class'][worst]:.0f}%). ({_family_source(run)}.)")


def family_vqvae(data: dict) -> str:
    """The VAE against the VQ-VAE at one code size: test squared error, rate, codes in use."""
    run = data["family"]
    vae = run["vae"]
    bits = math.log2(512)
    lines = ["| model | code | test squared error per image | what the code carries |", "|---|---|---|---|",
             f"| VAE | z of 16 floats | {_f(vae['test_squared_error'])} | KL {_f(vae['val_kl'], 1)} nats "
             f"({vae['val_kl'] / math.log(2):.1f} bits) |"]
    for key, what in (("vqvae", "`ema=True`"), ("vqvae_trained_codebook", "`ema=False`")):
        vq = run[key]
        lines.append(f"| VQ-VAE, {what} | one of 512 codes of 16 floats | {_f(vq['test_squared_error'])} | at most "
                     f"{bits:.0f} bits; {vq['test_codes_used']} codes used, perplexity {_f(vq['val_perplexity'], 0)} "
                     f"({math.log2(vq['val_perplexity']):.1f} bits) |")
    lines += ["",
              f"({_family_source(run)}.)"]
    return "\n".join(lines)


def family_betatc(data: dict) -> str:
    """The beta-TCVAE at each beta: the test terms of the KL."""
    run = data["family"]
    lines = ["| beta | reconstruction | MI | TC | dimension-wise KL | KL (closed form) |", "|---|---|---|---|---|---|"]
    for r in run["betatc"]:
        lines.append(f"| {r['beta']:g} | {_f(r['val_recon'])} | {_f(r['val_mi'])} | {_f(r['val_tc'])} | "
                     f"{_f(r['val_dim_kl'])} | {_f(r['val_kl'])} |")
    lines += ["", f"(Test-set batch means; {_family_source(run)}.)"]
    return "\n".join(lines)


FAMILY_SPEED = REPO / "benchmarks" / "results" / "family_speed.json"  # benchmarks/family_speed.py writes it


def family_speed(data: dict) -> str:
    """Each family's compiled epoch against its oracle's own loop, from the family speed benchmark."""
    bench = data["family_speed"]
    if bench is None:
        return "Not measured yet: `benchmarks/results/family_speed.json` is missing."
    m = bench["machine"]
    lines = ["| family | jaxvae s / epoch | oracle's loop | its s / epoch | jaxvae's speed-up per round |",
             "|---|---|---|---|---|"]
    for row in bench["families"]:
        r = row["ratio"]
        lines.append(f"| {row['family']} | {row['jax_s']:.2f} | {row['oracle']} | {row['oracle_s']:.2f} | "
                     f"**{r['median']:.1f}x** ({r['min']:.1f}-{r['max']:.1f}x) |")
    lines += ["", f"({bench['rounds']} interleaved rounds, {bench['n_train']} MNIST images, batch {bench['batch']}, "
                  f"on a {m['cores']}-core {m['cpu']} VM shared with other work, load average "
                  f"{bench['load_min']:.1f}-{bench['load_max']:.1f}; `benchmarks/results/family_speed.json`.)"]
    if bench["load_median"] > 1.5 * m["cores"]:
        oracle = [t for row in bench["families"] for t in row["oracle_times"]]
        ours = [t for row in bench["families"] for t in row["jax_times"]]
        lines[-1] += (f" Other work kept the {m['cores']} cores oversubscribed (median load "
                      f"{bench['load_median']:.1f}), and the PyTorch loops suffered far more from it than jaxvae's "
                      f"epochs ({min(oracle):.0f}-{max(oracle):.0f} s against {min(ours):.1f}-{max(ours):.1f} s over "
                      "all rounds): on an idle machine expect ratios nearer the low end of each range.")
    return "\n".join(lines)


STEP_BREAKDOWN = REPO / "benchmarks" / "results" / "step_breakdown.json"  # benchmarks/step_breakdown.py writes it
STEP_MODELS = {"burda": "Burda's model, batch 20", "blog": "the blog's model, batch 128"}


def _shipped(model: dict) -> dict:
    return model["rows"][0]


def _floor(model: dict) -> dict:
    return next(r for r in model["rows"] if r["variant"] == "matmuls only")


def step_sentence(data: dict) -> str:
    """Each model's step against its matmul floor, from the breakdown benchmark."""
    bench = data["step_breakdown"]
    parts = []
    for name, label in STEP_MODELS.items():
        m = bench["models"][name]
        floor = _floor(m)
        parts.append(f"{label} takes {_shipped(m)['ms_per_step']:.3f} ms per step, {1 / floor['ratio_median']:.2f}x "
                     f"its matmul floor ({1 / floor['ratio_max']:.2f}-{1 / floor['ratio_min']:.2f}x per round)")
    return "; ".join(parts)


def step_table(data: dict) -> str:
    """The breakdown benchmark's variants per model: ms per step and the ratio to the shipped step."""
    bench = data["step_breakdown"]
    lines = [f"{bench['data'].split(' from ')[0]}, {bench['rounds']} interleaved rounds, {bench['machine']}, load "
             f"average {bench['load']:.1f}-{bench['load_after']:.1f} (`benchmarks/results/step_breakdown.md`):", "",
             "| model | variant | ms/step | x shipped, per round |", "|---|---|---|---|"]
    for name, label in STEP_MODELS.items():
        for r in bench["models"][name]["rows"]:
            lines.append(f"| {label} | {r['variant']} | {r['ms_per_step']:.3f} | {r['ratio_median']:.3f} "
                         f"({r['ratio_min']:.3f}-{r['ratio_max']:.3f}) |")
    return "\n".join(lines)


SECTIONS = {
    "parity-table": parity_table,
    "step-sentence": step_sentence,
    "step-table": step_table,
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
    "family-cvae": family_cvae,
    "family-vqvae": family_vqvae,
    "family-betatc": family_betatc,
    "family-speed": family_speed,
}
PAGES = ["README.md", "docs/index.md", "docs/reproductions.md", "docs/guide/data.md", "docs/guide/cli.md",
         "docs/guide/sweeps.md", "docs/parity.md", "docs/speed.md", "docs/guide/cvae.md", "docs/guide/vqvae.md",
         "docs/guide/betatc.md"]
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

    written.append(draw_step_breakdown(data["step_breakdown"], plt))
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


def draw_step_breakdown(bench: dict, plt) -> Path:
    """The speed page's breakdown: per model, the shipped step as matmul floor, noise, Adam and the
    rest, above the same step with the noise drawn step by step, in ms per step."""
    colours = {"matmuls": "tab:blue", "noise": "tab:orange", "Adam": "tab:green", "the rest": "tab:gray"}
    fig, axes = plt.subplots(1, len(STEP_MODELS), figsize=(11, 3.2))
    for ax, (name, label) in zip(axes, STEP_MODELS.items()):
        m = bench["models"][name]
        parts = m["breakdown"]
        per_step = next(r for r in m["rows"] if r["variant"] == "noise per step")["ms_per_step"]
        left = 0.0
        for part, ms in parts.items():
            ax.barh(1, max(ms, 0.0), left=left, color=colours[part], label=part)
            left += max(ms, 0.0)
        ax.barh(0, per_step, color="tab:red", alpha=0.6, label="noise drawn per step (as in 0.3.0)")
        ax.set_yticks([0, 1], ["noise per step", "shipped"])
        ax.set_xlabel("ms per step (median)")
        ax.set_title(f"{label} ({m['steps_per_epoch']} steps per epoch)", fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=5)
    fig.suptitle(f"Where a step's time goes: {bench['machine'].split(';')[0]} "
                 "(benchmarks/results/step_breakdown.json)", fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path = FIGURES / "step_breakdown.png"
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)
    return path


def all_data() -> dict:
    data = {name: read(name) for name in [*RUNS, *EXTRA]}
    data["speed"] = json.loads(SPEED.read_text())
    data["family_speed"] = json.loads(FAMILY_SPEED.read_text()) if FAMILY_SPEED.exists() else None
    data["step_breakdown"] = json.loads(STEP_BREAKDOWN.read_text())
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
    "family": ("the family pages' MNIST runs: conditional VAE, VQ-VAE against the VAE, beta-TCVAE (minutes)",
               family),
}
NEEDS_MNIST = {"sigma", "family"}  # runs that take --data-dir


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
                result = make(args.data_dir) if name in NEEDS_MNIST else make()
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
