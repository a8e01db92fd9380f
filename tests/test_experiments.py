"""The likelihood experiment's CPU-sized smoke run (the same script as the full runs)."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # trains or starts processes: the full suite only (make test)


ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("likelihood_experiment", ROOT / "experiments" / "likelihood.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_writes_json_and_markdown(tmp_path, monkeypatch):
    script = load_script()
    monkeypatch.setattr(sys, "argv", ["likelihood.py"])
    summaries = script.main(["--quick", "--dataset", "digits", "--variant", "iwae50", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "iwae50.json").read_text())
    assert saved["epochs"] == 1 and saved["k"] == 10 and saved["test_n"] == 100
    assert saved["vae_config"]["objective"] == "iwae" and saved["vae_config"]["iwae_k"] == 50
    assert saved["train_config"]["lr_schedule"] == "burda" and saved["train_config"]["batch_size"] == 20
    assert saved["log_likelihood"] < 0 and saved["log_likelihood"] >= -saved["neg_elbo"]
    assert summaries[0]["log_likelihood"] == saved["log_likelihood"]
    assert (tmp_path / "results.md").read_text().startswith("| iwae50 | digits | 1 |")
