"""Smoke test of the training benchmark: ``--quick`` runs every variant end to end and writes sane
JSON and Markdown. Speed is never asserted here (see benchmarks/README.md for the numbers)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "train_speed.py"

pytest.importorskip("torch")
sys.path.insert(0, str(REPO / "benchmarks"))
import train_speed  # noqa: E402


def test_step_flops_counts_every_matmul_of_a_step():
    # 784-400-(2+2) encoder, 2-400-784 decoder, batch 1: 3 matmuls per layer, minus dL/dx.
    layers = [784 * 400, 400 * 4, 2 * 400, 400 * 784]
    assert train_speed.step_flops(1, 400) == 6 * sum(layers) - 2 * 784 * 400
    assert train_speed.epoch_flops(300, 128, 400) == 2 * train_speed.step_flops(128, 400) + train_speed.step_flops(44, 400)


def test_synthetic_data_is_mnist_shaped_and_deterministic():
    a, b = train_speed.synthetic_mnist(64, 0), train_speed.synthetic_mnist(64, 0)
    assert a.shape == (64, 784) and a.dtype.name == "uint8" and (a == b).all()
    x = train_speed.to_unit_float(a)
    assert x.dtype.name == "float32" and 0.0 <= x.min() and x.max() <= 1.0
    assert 0.6 < (a == 0).mean() < 0.95  # mostly black, like MNIST


def test_quick_run_writes_all_variants(tmp_path):
    out = tmp_path / "bench"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    markdown = out.with_suffix(".md").read_text()
    assert report["quick"] and report["device"] in ("cpu", "cuda")
    assert report["matmul"]["best_gflops"] > 0
    for section in ("main", "batch1024"):
        rows = {r["variant"]: r for r in report["results"] if r["section"] == section}
        assert set(rows) == set(train_speed.VARIANTS), section
        for name, row in rows.items():
            assert "error" not in row, (section, name, row.get("error"))
            if "skipped" in row:
                assert name in train_speed.COMPILE_VARIANTS | train_speed.GPU_ONLY
                continue
            assert len(row["times"]) == report["epochs"]
            assert 0 < row["min_s"] <= row["median_s"] <= row["max_s"]
            assert row["samples_per_s"] > 0 and row["ms_per_step"] > 0 and row["floor_s"] > 0
            assert math.isfinite(row["final_loss"])
            assert f"| {name} |" in markdown
        assert rows["torch_blog"]["vs_blog"] == pytest.approx(1.0)
        assert rows["jax_epoch"]["steps"] == -(-report["n_train"] // rows["jax_epoch"]["batch"])
    main = {r["variant"]: r for r in report["results"] if r["section"] == "main"}
    assert main["jax_epoch"]["eval_median_s"] > 0 and main["torch_blog"]["eval_median_s"] > 0
    sweep = [r for r in report["results"] if r["section"] == "sweep"]
    assert {r["hidden"] for r in sweep} == {400, 1024}
    assert all("median_s" in r or "skipped" in r for r in sweep)
    assert "Model-size sweep" in markdown and report["machine"]["cpu"] in markdown
