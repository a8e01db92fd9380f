"""Each VAE family member's training epoch against its oracle's own loop: ``python benchmarks/family_speed.py``.

Pairs, each on the same MNIST data, batch 128, Adam at lr 1e-3, the blog's MLP (784-400-latent,
LeakyReLU, sigmoid output):

* ``cvae``: jaxvae's ``ConditionalVAEModel`` (latent 2, the blog's Gaussian likelihood) against a
  plain PyTorch loop over torchref's ``build_blog_cvae`` / ``cvae_forward`` with the blog's losses and a
  ``DataLoader``, as the blog trains its VAE;
* ``vqvae``: ``VQVAEModel`` (a 16-dimensional code, K = 512, commitment 0.25) against pythae's ``VQVAE``
  trained by pythae's ``BaseTrainer.train_step``;
* ``betatc``: ``BetaTCVAEModel`` (latent 10, Bernoulli, MSS, beta 6) against pythae's ``BetaTCVAE``
  (``"bce"``, ``use_mss=True``) under the same trainer.

jaxvae's side is ``jaxvae.training.train_epoch``: the whole epoch as one compiled call. Every side
runs in a worker process of its own (benchmarks/train_speed.py's workers), is set up and warmed up
first (compiles excluded), then the rounds interleave: every round runs one epoch of each, in an
order rotated every round. Reported per family: the median epoch time of each side, and the
per-round ratio oracle / jaxvae (median, min-max). Results: ``benchmarks/results/family_speed.json``
and ``.md``.

``--data-dir`` reads real MNIST (IDX files); otherwise the synthetic MNIST-shaped data of
train_speed.py. ``--quick`` is a smoke run (2048 samples, 2 rounds, a minute).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import numpy as np  # noqa: E402

from train_speed import (  # noqa: E402  (train_speed puts the checkout's jaxvae first on the path)
    Job,
    Unit,
    Worker,
    _median,
    interleave,
    machine_description,
    ratio_stats,
    walls,
    write_atomically,
)

BATCH, LR, HIDDEN = 128, 1e-3, 400
#: family -> (the jaxvae side, the oracle side, the oracle's name in the tables)
FAMILIES = {
    "cvae": ("ConditionalVAEModel, latent 2, Gaussian", "torchref CVAE, the blog's PyTorch loop"),
    "vqvae": ("VQVAEModel, D 16, K 512", "pythae VQVAE, BaseTrainer"),
    "betatc": ("BetaTCVAEModel, latent 10, Bernoulli, MSS, beta 6", "pythae BetaTCVAE, BaseTrainer"),
}
VQ_DIM, VQ_CODES, TC_LATENT, TC_BETA = 16, 512, 10, 6.0


# ------------------------------------------------------------------------ jobs (inside a worker)
def make_job(job: dict, data: dict) -> Job:
    """The job a worker sets up: ``job['side']`` is ``"jax"`` or ``"oracle"``, ``job['family']`` the model.

    Args:
        job: The job's description.
        data: ``train_x`` (uint8 ``[N, 784]``) and ``train_y``.

    Returns:
        A ``Job`` whose ``run()`` trains one epoch and returns its mean loss.
    """
    from jaxvae.data import to_unit_float

    x, y = to_unit_float(data["train_x"]), data["train_y"].astype(np.int32)
    return (jax_job if job["side"] == "jax" else oracle_job)(job["family"], x, y)


def jax_job(family: str, x: np.ndarray, y: np.ndarray) -> Job:
    """jaxvae's compiled epoch (``train_epoch``) of ``family``'s model."""
    import jax

    from jaxvae import BetaTCVAEModel, TrainConfig, VAEConfig
    from jaxvae.batching import steps_per_epoch
    from jaxvae.cvae import ConditionalVAEModel
    from jaxvae.training import TrainStep, init_fit_state, train_epoch
    from jaxvae.vqvae import VQVAEModel

    hidden = (HIDDEN,)
    if family == "cvae":
        model, hyper = ConditionalVAEModel.from_config(VAEConfig(hidden=hidden), num_classes=10), {}
        batch = model.batch_of(x, y)
    elif family == "vqvae":
        model = VQVAEModel.from_config(VAEConfig(hidden=hidden, latent_dim=VQ_DIM), num_codes=VQ_CODES)
        hyper, batch = {"commitment": 0.25}, x
    else:
        model = BetaTCVAEModel.from_config(VAEConfig(hidden=hidden, latent_dim=TC_LATENT, likelihood="bernoulli"),
                                           dataset_size=len(x), estimator="mss")
        hyper, batch = {"beta": TC_BETA}, x
    config = TrainConfig(batch_size=BATCH, lr=LR, hyper=hyper)
    step = TrainStep.from_configs(model, config, steps_per_epoch(len(x), BATCH))
    fit = init_fit_state(step, config)
    state = {"train": fit.train_state, "key": fit.key}
    data = jax.device_put(batch)

    def run() -> float:
        state["key"], key = jax.random.split(state["key"])
        state["train"], metrics, _ = train_epoch(step, state["train"], data, key, fit.schedules, batch_size=BATCH)
        return float(np.mean(np.asarray(metrics["loss"])))  # waits for the epoch

    return Job(run, steps=steps_per_epoch(len(x), BATCH), info={"version": f"jax {jax.__version__}"})


def oracle_job(family: str, x: np.ndarray, y: np.ndarray) -> Job:
    """The oracle's own epoch: the blog's PyTorch loop for the CVAE, pythae's trainer for the others."""
    import torch

    torch.manual_seed(0)
    if family == "cvae":
        return _blog_cvae_loop(torch, x, y)
    return _pythae_trainer(torch, family, x)


def _blog_cvae_loop(torch, x: np.ndarray, y: np.ndarray) -> Job:
    """torchref's CVAE trained as the blog trains its VAE: a shuffled ``DataLoader``, Adam, loss.item()
    per step."""
    import torchref
    from torchref.cvae import build_blog_cvae, cvae_forward

    encoder, sample, decoder = build_blog_cvae(784, 2, 10, (HIDDEN,))
    recon, kl = torchref.GaussSimilarityLoss(1.0), torchref.UnitGaussKullbackLeiblerDivergenceLoss()
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=LR)
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y).long())
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True)

    def run() -> float:
        total, count = 0.0, 0
        for inputs, labels in loader:
            optimizer.zero_grad()
            preds, gauss = cvae_forward(encoder, sample, decoder, inputs, labels, 10)
            loss = recon(preds, inputs) + kl(gauss)
            loss.backward()
            optimizer.step()
            total, count = total + loss.item(), count + 1
        return total / count

    return Job(run, steps=len(loader), info={"version": f"torch {torch.__version__}"})


def _pythae_trainer(torch, family: str, x: np.ndarray) -> Job:
    """pythae's model of ``family`` on the blog's MLP, one ``BaseTrainer.train_step`` (an epoch) per run."""
    import pythae
    from pythae.data.datasets import BaseDataset
    from pythae.models import VQVAE, BetaTCVAE, BetaTCVAEConfig, VQVAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.trainers import BaseTrainer, BaseTrainerConfig

    import torchref

    latent = VQ_DIM if family == "vqvae" else TC_LATENT
    blog_encoder, _, blog_decoder = torchref.build_blog_model(784, latent, (HIDDEN,))

    class Encoder(BaseEncoder):
        """The blog's encoder in pythae's terms: the VQ-VAE's code is the mean head's output as a
        1x1 map of D channels (one D-vector per image); the beta-TCVAE's log-variance is 2 log sigma."""

        def __init__(self):
            BaseEncoder.__init__(self)
            self.trunk, self.mu = blog_encoder.prev_network, blog_encoder.gauss_mu_network
            self.log_sigma = None if family == "vqvae" else blog_encoder.gauss_logsigma_network

        def forward(self, inputs):
            h = self.trunk(inputs)
            if self.log_sigma is None:
                return ModelOutput(embedding=self.mu(h)[:, :, None, None])
            return ModelOutput(embedding=self.mu(h), log_covariance=2.0 * self.log_sigma(h))

    class Decoder(BaseDecoder):
        def __init__(self):
            BaseDecoder.__init__(self)
            self.net = blog_decoder

        def forward(self, z):
            return ModelOutput(reconstruction=self.net(z.flatten(1)))

    if family == "vqvae":
        config = VQVAEConfig(input_dim=(784,), latent_dim=VQ_DIM, num_embeddings=VQ_CODES,
                             commitment_loss_factor=0.25, quantization_loss_factor=1.0, use_ema=False)
        model = VQVAE(config, Encoder(), Decoder())
    else:
        config = BetaTCVAEConfig(input_dim=(784,), latent_dim=TC_LATENT, reconstruction_loss="bce", beta=TC_BETA,
                                 use_mss=True)
        model = BetaTCVAE(config, Encoder(), Decoder())
    out = tempfile.mkdtemp(prefix="family-speed-pythae-")
    trainer = BaseTrainer(model, BaseDataset(torch.from_numpy(x), torch.zeros(len(x))),
                          training_config=BaseTrainerConfig(output_dir=out, per_device_train_batch_size=BATCH,
                                                            num_epochs=1, learning_rate=LR, optimizer_cls="Adam",
                                                            no_cuda=True, seed=0))
    trainer.prepare_training()
    epoch = {"n": 0}

    def run() -> float:
        epoch["n"] += 1
        return trainer.train_step(epoch["n"])

    return Job(run, steps=len(trainer.train_loader),
               info={"version": f"torch {torch.__version__}, pythae {getattr(pythae, '__version__', '0.1.2')}"})


# ----------------------------------------------------------------------------------- the parent
def load_data(args) -> tuple[np.ndarray, np.ndarray, str]:
    """uint8 images ``[N, 784]``, their labels and a description."""
    if args.data_dir:
        from jaxvae.data import load_mnist

        images, labels = load_mnist(args.data_dir, "train", download=False)
        desc = "MNIST (IDX files)"
    else:
        from train_speed import synthetic_mnist

        images = synthetic_mnist(60000, 0)
        labels = np.random.default_rng(0).integers(0, 10, len(images)).astype(np.uint8)
        desc = "synthetic MNIST-shaped uint8 data, random labels"
    n = args.samples or len(images)
    return images.reshape(len(images), -1)[:n], np.asarray(labels)[:n], desc


def markdown(report: dict) -> str:
    """The results as a Markdown page."""
    m = report["machine"]
    lines = [f"# Family training speed: jaxvae against each oracle's loop\n",
             f"{m['cores']}-core {m['cpu']} ({m['platform']}); {report['data']}, {report['n_train']} samples, "
             f"batch {BATCH}, Adam lr {LR:g}; {report['rounds']} interleaved rounds after {report['warmup']} "
             f"warm-up epochs; {report['versions']}; load average {report['load_min']:.1f}-{report['load_max']:.1f}.\n",
             "| family | jaxvae (s / epoch) | oracle | oracle (s / epoch) | oracle / jaxvae per round (median, min-max) |",
             "|---|---|---|---|---|"]
    for row in report["families"]:
        if "error" in row:
            lines.append(f"| {row['family']} | error: {row['error']} | | | |")
            continue
        r = row["ratio"]
        lines.append(f"| {row['family']} | {row['jax_s']:.2f} | {row['oracle']} | {row['oracle_s']:.2f} | "
                     f"{r['median']:.1f}x ({r['min']:.1f}-{r['max']:.1f}x, {r['n']} round{'s' * (r['n'] != 1)}) |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    """Run the benchmark and write its report.

    Args:
        argv: The command-line arguments; None for ``sys.argv``.

    Returns:
        The report.
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help="real MNIST (IDX files) instead of synthetic data")
    p.add_argument("--quick", action="store_true", help="smoke run: 2048 samples, 2 rounds")
    p.add_argument("--samples", type=int, default=None, help="training samples (default 60000; --quick 2048)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 7; --quick 2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed epochs per side before the rounds")
    p.add_argument("--families", default=",".join(FAMILIES), help="comma-separated subset of " + ", ".join(FAMILIES))
    p.add_argument("--out", default=str(BENCH_DIR / "results" / "family_speed"),
                   help="results path without suffix (.json and .md are written)")
    args = p.parse_args(argv)
    args.samples = args.samples or (2048 if args.quick else None)
    rounds = args.rounds or (2 if args.quick else 7)
    families = [f for f in args.families.split(",") if f]
    if set(families) - set(FAMILIES):
        raise SystemExit(f"unknown families {sorted(set(families) - set(FAMILIES))}; choose from {', '.join(FAMILIES)}")
    images, labels, desc = load_data(args)
    with tempfile.TemporaryDirectory(prefix="jaxvae-family-speed-") as tmp_name:
        tmp = Path(tmp_name)
        np.savez(tmp / "data.npz", train_x=images, train_y=labels)
        units = []
        for family in families:
            for side in ("jax", "oracle"):
                job = {"module": "family_speed", "framework": "jax" if side == "jax" else "torch", "side": side,
                       "family": family, "data_path": str(tmp / "data.npz"), "device": "cpu"}
                units.append(Unit(f"{family}/{side}", job, Worker(tmp, f"{family}-{side}", None, 3600.0)))
        try:
            for u in units:
                print(f"setting up {u.name}", flush=True)
                u.setup = u.worker.call(op="setup", id=u.name, job=u.job, warmup=args.warmup)
            start = time.perf_counter()
            interleave(units, rounds)
            print(f"{rounds} rounds in {time.perf_counter() - start:.0f} s", flush=True)
        finally:
            for u in units:
                u.worker.close()
    rows, loads, versions = [], [], set()
    for family in families:
        jax_unit, oracle_unit = (next(u for u in units if u.name == f"{family}/{s}") for s in ("jax", "oracle"))
        row = {"family": family, "jaxvae": FAMILIES[family][0], "oracle": FAMILIES[family][1]}
        error = jax_unit.error() or oracle_unit.error()
        if error:
            rows.append({**row, "error": error})
            continue
        jw, ow = walls(jax_unit), walls(oracle_unit)
        loads += [r["load"] for u in (jax_unit, oracle_unit) for r in u.rounds]
        versions |= {part for u in (jax_unit, oracle_unit) for part in u.setup["info"]["version"].split(", ")}
        rows.append({**row, "jax_s": _median(jw), "oracle_s": _median(ow), "jax_times": jw, "oracle_times": ow,
                     "steps": jax_unit.setup["steps"], "oracle_steps": oracle_unit.setup["steps"],
                     "warmup_s": {"jax": jax_unit.setup["warmup_s"], "oracle": oracle_unit.setup["warmup_s"]},
                     "ratio": ratio_stats(ow, jw)})
    report = {"machine": machine_description(), "data": desc, "n_train": len(images), "batch": BATCH, "lr": LR,
              "rounds": rounds, "warmup": args.warmup, "quick": args.quick, "versions": ", ".join(sorted(versions)),
              "load_min": min(loads, default=float("nan")), "load_max": max(loads, default=float("nan")),
              "load_median": _median(loads), "families": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(out.with_suffix(".json"), json.dumps(report, indent=1) + "\n")
    text = markdown(report)
    write_atomically(out.with_suffix(".md"), text)
    print(text)
    return report


if __name__ == "__main__":
    main()
