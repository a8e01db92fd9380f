"""The likelihood experiment's CPU-sized smoke run (the same script as the full runs)."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from jaxvae.runs import EVALUATE_FILE, read_run_config

pytestmark = pytest.mark.slow  # trains or starts processes: the full suite only (make test)


ROOT = Path(__file__).resolve().parents[1]


def read_evaluation_keys(run_dir):
    raw = json.loads((run_dir / EVALUATE_FILE).read_text())
    return [(r["split"], r["samples"], r["k"], r["seed"]) for r in raw["evaluations"]]


def load_script(name="likelihood"):
    spec = importlib.util.spec_from_file_location(f"{name}_experiment", ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # Flax's Linen modules are dataclasses, which look their module up
    spec.loader.exec_module(module)
    return module


def test_quick_run_trains_a_run_directory_evaluates_it_and_continues_it(tmp_path, monkeypatch):
    script = load_script()
    monkeypatch.setattr(sys, "argv", ["likelihood.py"])
    summaries = script.main(["--quick", "--dataset", "digits", "--variant", "iwae50", "--out", str(tmp_path), "--quiet"])
    saved = json.loads((tmp_path / "iwae50.json").read_text())
    assert saved["epochs"] == 1 and saved["k"] == 10 and saved["test_n"] == 100
    assert saved["log_likelihood"] < 0 and saved["log_likelihood"] >= -saved["neg_elbo"]
    assert summaries[0]["log_likelihood"] == saved["log_likelihood"]
    assert (tmp_path / "results.md").read_text().startswith("| iwae50 | digits | 1 |")
    assert (tmp_path / "iwae50_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    info = read_run_config(tmp_path / "iwae50")  # an ordinary run directory: Burda's model and protocol
    assert info.vae_config.objective == "iwae" and info.vae_config.iwae_k == 50 and info.vae_config.hidden == (200, 200)
    assert info.train_config.lr_schedule == "burda" and info.train_config.batch_size == 20
    assert info.train_config.adam_eps == 1e-4 and info.train_config.binarize == "dynamic"
    assert read_evaluation_keys(tmp_path / "iwae50") == [("test", 100, 10, 100)]
    # run again with more epochs: it continues the run directory instead of starting over
    script.main(["--dataset", "digits", "--variant", "iwae50", "--out", str(tmp_path), "--epochs", "2",
                 "--eval-n", "100", "--k", "10", "--quiet"])
    again = json.loads((tmp_path / "iwae50.json").read_text())
    assert again["epochs"] == 2 and [r["epoch"] for r in again["history"]] == [1, 2]
    assert again["history"][0] == saved["history"][0]  # epoch 1 is the one trained before


def test_stage_ends_are_burdas():
    assert load_script().stage_ends(3280) == [1, 4, 13, 40, 121, 364, 1093, 3280]
    assert load_script().stage_ends(100) == [1, 4, 13, 40]


def test_the_flax_example_and_jaxvae_train_on_the_same_binary_digits(tmp_path):
    script = load_script("from_flax")
    out = tmp_path / "from_flax.json"
    result = script.main(["--dataset", "digits", "--epochs", "1", "--seeds", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    assert [r["setting"] for r in result["runs"]] == list(result["summary"])  # each setting once, in order
    # every model learned something: below 64 * log 2 nats, the loss of pixels guessed at p = 1/2
    assert all(20 < r["test_neg_elbo"] < 64 * 0.6931 for r in result["runs"])
