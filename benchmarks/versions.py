"""This checkout against another checkout of jaxvae, epoch for epoch, interleaved:

    git worktree add ../jaxvae-0.2.0 v0.2.0-commit
    python benchmarks/versions.py --other ../jaxvae-0.2.0 --data-dir DIR --models 8

Each side is a worker process with its own checkout first on ``PYTHONPATH``, and uses only the API
that both releases have: ``jaxvae.fit`` of the blog's model (784-400-2, batch 128) and
``jaxvae.sweep.fit_many`` of N such models (seeds), each call training one more epoch from the
state the last one returned. A round runs every (side, variant) once, in an order rotated each
round; the seconds of an epoch are the record's own (the training and the validation pass, what
``fit`` reports). The first epoch of each (the compile) is left out. Reported: per variant the median
seconds per epoch of each side, and the ratio this / other per round (median, min-max): below 1,
this checkout is faster. Results: ``--out``/versions.json and .md.
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
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from train_speed import fmt_ratio, machine_description, ratio_stats, write_atomically  # noqa: E402

PROTOCOL = "@@versions "


def worker_main(data_dir: str | None, models: int) -> None:
    """Answer {"variant": "fit" | "sweep"} with the seconds of one more epoch of that variant."""
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever a library prints goes to stderr
    import jaxvae
    from jaxvae.data import load_dataset
    from jaxvae.sweep import fit_many

    data = load_dataset("mnist", data_dir=data_dir, require=True) if data_dir else load_dataset("mnist-subset")
    vc = jaxvae.VAEConfig(input_dim=data.train_x.shape[1])
    states: dict = {}
    answers.write(PROTOCOL + json.dumps({"jaxvae": jaxvae.__file__, "dataset": data.name}) + "\n")
    for line in sys.stdin:
        variant = json.loads(line)["variant"]
        state = states.get(variant)
        epochs = 1 + (max(state.epochs) if variant == "sweep" and state else state.epoch if state else 0)
        tc = jaxvae.TrainConfig(max_epochs=epochs)
        if variant == "fit":
            result = jaxvae.fit(data.train_x, data.test_x, vae_config=vc, train_config=tc, state=state,
                                data_parallel=None)
            states[variant], seconds = result.state, result.history[-1]["seconds"]
        else:
            result = fit_many(data.train_x, data.test_x, vae_config=vc, train_config=tc, seeds=models, state=state)
            states[variant], seconds = result.state, result.histories[0][-1]["seconds"]
        answers.write(PROTOCOL + json.dumps({"seconds": seconds}) + "\n")


class Side:
    """A worker process on one checkout."""

    def __init__(self, name: str, checkout: Path, args):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(checkout.resolve()), str(BENCH_DIR)])}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--models", str(args.models)]
        if args.data_dir:
            cmd += ["--data-dir", args.data_dir]
        self.name = name
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = self._answer()

    def _answer(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(PROTOCOL):
                return json.loads(line[len(PROTOCOL):])
        raise RuntimeError(f"the {self.name} worker exited with code {self.proc.wait()}")

    def epoch(self, variant: str) -> float:
        self.proc.stdin.write(json.dumps({"variant": variant}) + "\n")
        self.proc.stdin.flush()
        return self._answer()["seconds"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def markdown(report: dict) -> str:
    lines = [f"# This checkout against {report['other']}", "",
             f"Machine: {report['machine']}. Data: {report['dataset']}. {report['rounds']} interleaved rounds "
             "after one compile epoch each; seconds per epoch (training and validation) as `fit` records them.", "",
             "| variant | this: s/epoch (median) | other: s/epoch (median) | this / other per round: median (min-max) |",
             "|---|---|---|---|"]
    for variant, row in report["variants"].items():
        lines.append(f"| {variant} | {row['this_median']:.3f} | {row['other_median']:.3f} | {fmt_ratio(row['ratio'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--other", type=Path, help="the other jaxvae checkout (required unless --worker)")
    p.add_argument("--data-dir", help="MNIST IDX files (default: the bundled mnist-subset)")
    p.add_argument("--models", type=int, default=8, help="models in the sweep variant (default 8)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds after the compile epoch (default 5)")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="where versions.json and .md go")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker_main(args.data_dir, args.models)
        return {}
    if args.other is None:
        p.error("--other is required")
    sides = [Side("this", REPO_ROOT, args), Side("other", args.other, args)]
    variants = ["fit", f"sweep of {args.models}"]
    seconds = {(s.name, v): [] for s in sides for v in variants}
    try:
        for s in sides:  # the compile epochs, left out
            for v in variants:
                s.epoch("fit" if v == "fit" else "sweep")
        units = [(s, v) for v in variants for s in sides]
        for r in range(args.rounds):
            for s, v in units[r % len(units):] + units[:r % len(units)]:
                seconds[s.name, v].append(s.epoch("fit" if v == "fit" else "sweep"))
    finally:
        for s in sides:
            s.close()
    median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    machine = machine_description()
    report = {"other": str(args.other), "machine": f"{machine['cpu']}, {machine['cores']} cores",
              "dataset": sides[0].info["dataset"], "rounds": args.rounds, "models": args.models,
              "variants": {v: {"this": seconds["this", v], "other": seconds["other", v],
                               "this_median": median(seconds["this", v]), "other_median": median(seconds["other", v]),
                               "ratio": ratio_stats(seconds["this", v], seconds["other", v])} for v in variants}}
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomically(args.out / "versions.json", json.dumps(report, indent=2) + "\n")
    write_atomically(args.out / "versions.md", markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
