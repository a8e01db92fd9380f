"""The speed benchmarks: train_speed.py's counting and interleaving, and ``--quick`` runs of it and of
family_speed.py end to end that write sane JSON and Markdown. Speed is never asserted here (see benchmarks/README.md for the numbers)."""
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

pytestmark = pytest.mark.slow  # trains or starts processes: the full suite only (make test)


def test_matmul_flops_count_every_matmul_of_a_step():
    layers = train_speed.dense_layers(400)
    # 784-400-(2+2) encoder, 2-400-784 decoder
    assert layers == [(784, 400), (400, 4), (2, 400), (400, 784)]
    sizes = [784 * 400, 400 * 4, 2 * 400, 400 * 784]
    # forward, weight gradient and input gradient of each layer, minus dL/dx of the first
    assert train_speed.matmul_flops(layers, 1) == 6 * sum(sizes) - 2 * 784 * 400
    assert train_speed.matmul_flops(layers, 3, backward=False) == 2 * 3 * sum(sizes)
    assert train_speed.epoch_flops(300, 128, layers) == (2 * train_speed.matmul_flops(layers, 128)
                                                         + train_speed.matmul_flops(layers, 44))
    assert train_speed.dense_layers((200, 200), latent=50) == train_speed.BURDA_LAYERS


def test_synthetic_data_is_mnist_shaped_and_deterministic():
    a, b = train_speed.synthetic_mnist(64, 0), train_speed.synthetic_mnist(64, 0)
    assert a.shape == (64, 784) and a.dtype.name == "uint8" and (a == b).all()
    x = train_speed.to_unit_float(a)
    assert x.dtype.name == "float32" and 0.0 <= x.min() and x.max() <= 1.0
    assert 0.6 < (a == 0).mean() < 0.95  # mostly black, like MNIST


class _Recorder:
    """A stand-in worker that logs which unit ran when and answers with a fixed time per unit."""

    def __init__(self, log, seconds):
        self.log, self.seconds = log, seconds

    def call(self, op, id):
        self.log.append(id)
        return {"wall": self.seconds[id], "cpu": self.seconds[id], "load": 0.0}


def test_rounds_run_every_unit_once_in_a_rotated_order_and_ratios_pair_rounds():
    log = []
    seconds = {"a": 1.0, "b": 2.0, "c": 4.0}
    units = [train_speed.Unit(name, {}, _Recorder(log, seconds)) for name in "abc"]
    train_speed.interleave(units, 3, pause=0.0)
    assert log == list("abc" "bca" "cab")
    assert [r["round"] for r in units[1].rounds] == [0, 1, 2]
    stats = train_speed.ratio_stats([1.0, 3.0, 2.0], [2.0, 2.0, 0.0])  # the third round has no partner
    assert stats == {"median": 1.0, "min": 0.5, "max": 1.5, "n": 2}


def test_quick_run_writes_every_section(tmp_path):
    out = tmp_path / "bench"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    markdown = out.with_suffix(".md").read_text()
    assert report["quick"] and report["device"] in ("cpu", "cuda")
    assert set(report["sections"]) == set(train_speed.QUICK_SECTIONS)
    main = report["sections"]["main"]
    assert main["rates"]["best"] > 0 and main["floor_s"] > 0 and not main["matmul_errors"]
    rows = {r["variant"]: r for r in main["variants"]}
    assert set(rows) == set(train_speed.VARIANTS)
    for name, row in rows.items():
        assert "error" not in row, (name, row.get("error"))
        if "skipped" in row:
            assert name in train_speed.COMPILE_VARIANTS | train_speed.GPU_ONLY
            continue
        assert len(row["times"]) == len(row["cpu_times"]) == report["epochs"]
        assert 0 < row["min_s"] <= row["median_s"] <= row["max_s"] and row["cpu_median_s"] > 0
        assert row["vs_floor"]["n"] == report["epochs"] and row["vs_floor"]["median"] > 0
        assert row["steps"] == -(-report["n_train"] // 128)
        assert f"| {name} |" in markdown
        if name != train_speed.SUBJECT:
            assert row["subject_ratio"]["min"] <= row["subject_ratio"]["median"] <= row["subject_ratio"]["max"]
    assert rows["torch_blog"]["vs_reference"]["median"] == pytest.approx(1.0)
    assert rows["jax_epoch"]["eval_median_s"] > 0 and rows["torch_blog"]["eval_median_s"] > 0
    burda = report["sections"]["burda"]
    assert burda["variant"]["steps"] == -(-report["n_train"] // 20) and burda["floor_step_s"] > 0
    assert math.isfinite(burda["variant"]["vs_floor"]["median"])
    ev = report["sections"]["eval"]
    assert ev["variant"]["median_s"] > 0 and ev["floor_s"] > 0 and ev["gflop"] > 0
    cli = report["sections"]["cli"]["runs"]
    assert all("error" not in row for row in cli.values()), cli
    assert cli["jaxvae train"]["vs_bare"]["n"] == 1 and cli["bare train_epoch"]["median_s"] > 0
    for title in ("## batch 128", "## Burda's model", "## Importance-sampled", "## `jaxvae train`"):
        assert title in markdown
    assert report["machine"]["cpu"] in markdown and "jax " in report["versions"]


def test_step_breakdown_compiles_each_variant_as_its_own_program_and_reports_them(tmp_path):
    import step_breakdown as sb

    report = sb.main(["--samples", "100", "--rounds", "2", "--models", "burda", "--out", str(tmp_path / "sb")])
    rows = report["models"]["burda"]["rows"]
    assert [r["variant"] for r in rows] == [*sb.variants("burda", 100), "matmuls only"]
    # every variant changes what is compiled (a patch that did not reach the trace would not)
    programs = [r["program_sha256"] for r in rows if r["program_sha256"]]
    assert len(set(programs)) == len(programs) == len(rows) - 1
    assert all(len(r["seconds"]) == 2 and min(r["seconds"]) > 0 for r in rows)
    assert rows[0]["ratio_median"] == 1.0
    parts = report["models"]["burda"]["breakdown"]
    assert list(parts) == ["matmuls", "noise", "Adam", "the rest"]
    assert sum(parts.values()) == pytest.approx(rows[0]["ms_per_step"])
    assert json.loads((tmp_path / "sb.json").read_text())["models"]["burda"]["steps_per_epoch"] == 5
    assert "| SGD direction (no Adam) |" in (tmp_path / "sb.md").read_text()


def test_step_breakdown_grid_times_each_pair_of_constants(tmp_path):
    import step_breakdown as sb

    report = sb.main(["--samples", "100", "--rounds", "1", "--models", "burda", "--grid", "2x1,4x2",
                      "--out", str(tmp_path / "grid")])
    rows = report["models"]["burda"]["rows"]
    assert [r["variant"] for r in rows] == ["2x1", "4x2"] and report["models"]["burda"]["breakdown"] is None
    assert rows[0]["program_sha256"] != rows[1]["program_sha256"]


def test_the_graphed_step_trains_as_the_eager_one_where_it_cannot_capture():
    """torch_graphed's static-tensor step, run eagerly (no CUDA here), follows torch_fast exactly: the
    same seed, batches, noise draws and fused Adam, the last partial batch included (300 = 2 x 128 + 44)."""
    import torch_variants

    x = train_speed.to_unit_float(train_speed.synthetic_mnist(300, 0))
    data = {"train": x, "val": x[:50]}
    job = {"device": "cpu", "precision": "highest", "seed": 0, "batch": 128, "hidden": 64, "heroic_steps": 12}
    losses = {}
    for variant in ("torch_fast", "torch_graphed"):  # one after the other: they draw from torch's global RNG
        made = torch_variants.make_job({**job, "variant": variant}, data)
        assert made.steps == 3
        losses[variant] = [made.run() for _ in range(3)]
    fast_losses, graphed_losses = losses["torch_fast"], losses["torch_graphed"]
    assert fast_losses[2] < fast_losses[0]  # it trains
    assert graphed_losses == pytest.approx(fast_losses, rel=1e-5)


def test_family_quick_run_times_every_family_against_its_oracle(tmp_path):
    pytest.importorskip("pythae")
    out = tmp_path / "family"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # one round on 256 images: the script's whole path (three families, their oracles, the report) at least cost
    proc = subprocess.run([sys.executable, str(SCRIPT.parent / "family_speed.py"), "--quick", "--samples", "256",
                           "--rounds", "1", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["quick"] and [r["family"] for r in report["families"]] == ["cvae", "vqvae", "betatc"]
    for row in report["families"]:
        assert "error" not in row, row
        assert len(row["jax_times"]) == len(row["oracle_times"]) == report["rounds"]
        assert row["ratio"]["n"] == report["rounds"] and row["ratio"]["median"] > 0
        assert row["steps"] == row["oracle_steps"] == -(-report["n_train"] // 128)
    assert report["machine"]["cpu"] in out.with_suffix(".md").read_text()


@pytest.mark.slow
def test_host_cores_runs_each_side_in_its_own_process_with_its_devices(tmp_path):
    import host_cores

    repo = Path(host_cores.__file__).resolve().parents[1]
    host_cores.main(["--samples", "256", "--epochs", "2", "--rounds", "1", "--batch", "64", "--model", "burda",
                     "--other", str(repo), "--other-name", "this again", "--out", str(tmp_path / "hc")])
    report = json.loads((tmp_path / "hc.json").read_text())
    assert [(r["side"], r["devices"]) for r in report["rows"]] == [
        ("one device", 1), ("one per core", 2), ("this again, one device", 1)]
    assert set(report["summary"]["throughput"]) == {"one device", "one per core", "this again, one device"}
    assert report["summary"]["ratio"]["median"] > 0 and report["summary"]["ratio_other"]["median"] > 0
    assert "over this again, one device" in (tmp_path / "hc.md").read_text()
