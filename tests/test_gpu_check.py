"""benchmarks/gpu_check.py: its dry run end to end (every section reported, a failing section recorded
without stopping the next ones), its time limits, its reading of the parity suite's output and its
verdict on the targets. No speed is asserted here."""
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"

pytest.importorskip("torch")
sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_check  # noqa: E402

pytestmark = pytest.mark.slow  # trains or starts processes: the full suite only (make test)


def _numbers(tree):
    """Every int and float in a JSON tree (booleans excluded)."""
    if isinstance(tree, dict):
        for value in tree.values():
            yield from _numbers(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _numbers(value)
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield tree


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is no zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """One dry run of every section, the sweep made to raise after its measurements."""
    out = tmp_path_factory.mktemp("gpu-check")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), "--fail-section", "sweep"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    return report, (out / "gpu_check.md").read_text(), time.monotonic() - start


def test_dry_run_reports_every_section_and_names_the_device(dry_run):
    report, markdown, _ = dry_run
    device = report["sections"]["device"]["data"]
    cuda = device["torch"]["cuda_available"]
    assert report["dry_run"] is True and report["torch_device"] == ("cuda" if cuda else "cpu")
    assert list(report["sections"]) == list(gpu_check.SECTIONS)
    for name, section in report["sections"].items():
        if name != "sweep":
            assert section["status"] == "ok", (name, section.get("error"), section.get("traceback"))
        assert 0 < section["seconds"] <= section["allowance_s"] + 60
        assert all(math.isfinite(x) for x in _numbers(section.get("data", {}))), name
    title = markdown.splitlines()[0]
    assert device["machine"]["cpu"] in title and device["jax"]["device_kind"] in title
    if device["jax"]["backend"] == "cpu":
        assert "CPU only" in title and "JAX's backend: cpu" in title
    if cuda:
        assert device["torch"]["device_name"] in title
    assert f"JAX {device['jax']['version']}" in markdown and f"torch {device['torch']['version']}" in markdown
    assert "Dry run" in markdown
    # a dry run measures no target
    assert [t["met"] for t in report["targets"]] == [None] * 4 and len(report["targets"]) == 4


def test_dry_run_parity_reports_observed_errors_within_their_bounds(dry_run):
    parity = dry_run[0]["sections"]["parity"]["data"]
    assert parity["counts"]["passed"] == 2 and parity["counts"]["failed"] == 0
    assert {t["dtype"] for t in parity["tests"]} == {"float32", "float64"}
    for test in parity["tests"]:
        assert test["outcome"] == "passed" and len(test["checks"]) >= 4 and _positive(test["seconds"])
        for check in test["checks"]:
            assert 0 <= check["error"] <= check["bound"], check
    assert {q["dtype"] for q in parity["by_quantity"]} == {"float32", "float64"}
    assert "| gradient of every parameter | float64 |" in dry_run[1]


def test_dry_run_speed_sweep_burda_and_train_give_positive_finite_numbers(dry_run):
    report, markdown, _ = dry_run
    speed = report["sections"]["speed"]["data"]["batches"]["128"]
    rows = {v["variant"]: v for v in speed["variants"]}
    assert speed["rounds_done"] == speed["rounds"] == gpu_check.DRY.rounds
    assert "skipped" in rows["torch_compile"]  # torch.compile takes minutes on a CPU
    if report["torch_device"] == "cpu":
        assert rows["torch_graphed"]["skipped"] == "GPU only"
    for name in ("jax_epoch", "torch_fast"):
        assert _positive(rows[name]["median_ms"]) and _positive(rows[name]["ms_per_step"]), rows[name]
        assert rows[name]["min_ms"] <= rows[name]["median_ms"] <= rows[name]["max_ms"]
    per_round = rows["torch_fast"]["jaxvae_over_variant"]["per_round"]
    assert len(per_round) == gpu_check.DRY.rounds and all(_positive(r) for r in per_round)

    burda = {o["objective"]: o for o in report["sections"]["burda"]["data"]["objectives"]}
    assert set(burda) == {"VAE", f"IWAE k={gpu_check.DRY.iwae_k}"}
    for row in burda.values():
        assert _positive(row["ms_per_step"]) and _positive(row["protocol_hours"])
        assert row["protocol_hours"] == pytest.approx(3280 * 3000 * row["ms_per_step"] / 1e3 / 3600)

    train = report["sections"]["train"]["data"]
    assert train["exit_code"] == 0 and train["epochs_done"] == train["epochs"] == gpu_check.DRY.train_epochs
    assert "no --data-dir" in train["data"] and "mnist-subset" in train["data_line"]
    assert _positive(train["wall_s"]) and _positive(train["median_epoch_s"])
    assert all(_positive(train["final"][k]) for k in ("train_loss", "val_loss", "val_recon"))
    assert f"| {train['epochs_done']} of {train['epochs']} |" in markdown


def test_a_section_that_raises_is_recorded_with_what_it_measured_and_the_next_ones_run(dry_run):
    report, markdown, _ = dry_run
    sweep = report["sections"]["sweep"]
    assert sweep["status"] == "error" and "injected failure" in sweep["error"]
    assert "RuntimeError" in sweep["traceback"] and "child_main" in sweep["traceback"]
    # its measurements, taken before it raised, are kept
    scaling = {row["models"]: row for row in sweep["data"]["scaling"]}
    assert set(scaling) == set(gpu_check.DRY.sweep_models)
    assert all(_positive(row["epoch_s"]) for row in scaling.values()) and scaling[1]["x_one_model"] == 1
    # the sections after it ran
    assert report["sections"]["burda"]["status"] == report["sections"]["train"]["status"] == "ok"
    assert "| sweep | error |" in markdown and "injected failure" in markdown


def test_a_section_out_of_time_stops_before_starting_work(tmp_path):
    context = {"section": "sweep", "sizes": {**gpu_check.dataclasses.asdict(gpu_check.DRY)}, "dry_run": True,
               "torch_device": "cpu", "data_dir": None, "out": str(tmp_path), "scratch": str(tmp_path),
               "result_path": str(tmp_path / "sweep.json"), "deadline": time.time() - 1, "precision": "highest"}
    (tmp_path / "context.json").write_text(json.dumps(context))
    assert gpu_check.child_main(str(tmp_path / "context.json")) == 0
    result = json.loads((tmp_path / "sweep.json").read_text())
    assert result["status"] == "cut short" and "no time left for 1 models" in result["cut_short"]
    assert result["data"]["runs"] == []


def test_a_section_past_its_limit_is_stopped_with_the_processes_it_started(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    code = ("import subprocess, sys, time; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
            f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    while not pid_file.exists() or not pid_file.read_text():
        time.sleep(0.05)
    start = time.monotonic()
    assert gpu_check._wait_group(proc, 1.0) is False
    assert time.monotonic() - start < 30 and proc.returncode is not None
    grandchild = int(pid_file.read_text())
    for _ in range(100):
        if not _alive(grandchild):
            break
        time.sleep(0.05)
    else:
        pytest.fail("the section's own child process survived")
    done = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    assert gpu_check._wait_group(done, 30) is True and done.returncode == 0


def test_parity_junit_is_read_into_errors_bounds_and_outcomes(tmp_path):
    junit = tmp_path / "parity.xml"
    junit.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_parity" name="test_fifty_adam_steps[float32]" time="1.5"><system-out>\n'
        "[parity] param ['decoder']['output']['kernel']: 2.00e-06 (bound 1e-05)\n"
        "[parity] param ['encoder']['mu']['bias']: 4.00e-06 (bound 1e-05)</system-out></testcase>"
        '<testcase classname="tests.test_parity" name="test_fifty_adam_steps[float64]" time="2.0">'
        '<failure message="param: relative error 3.000e-09 exceeds 1e-09">...</failure><system-out>\n'
        "[parity] param ['decoder']['output']['kernel']: 3.00e-09 (bound 1e-09)\n"
        "[parity] grad ['decoder']['output']['bias']: nan (bound 1e-10)</system-out></testcase>"
        "</testsuite></testsuites>")
    parsed = gpu_check.parse_parity_junit(junit)
    assert parsed["counts"] == {"passed": 1, "failed": 1, "error": 0, "skipped": 0}
    first, second = parsed["tests"]
    assert first["worst"]["error"] == 4e-6 and first["dtype"] == "float32" and first["seconds"] == 1.5
    assert second["outcome"] == "failed" and "exceeds" in second["message"]
    assert math.isnan(second["worst"]["error"])  # NaN counts as the worst
    quantities = {(q["quantity"], q["dtype"]): q for q in parsed["by_quantity"]}
    assert quantities[("parameters after 50 Adam steps", "float64")]["error"] == 3e-9
    assert quantities[("parameters after 50 Adam steps", "float32")]["error"] == 4e-6


def _report(parity_passed=11, epoch_ms=15.0, graphed_ratio=0.8, sweep_x=3.5):
    ratio = {"median": graphed_ratio, "min": graphed_ratio - 0.1, "max": graphed_ratio + 0.1, "n": 3}
    return {"dry_run": False, "sections": {
        "parity": {"status": "ok", "data": {"counts": {"passed": parity_passed, "failed": 11 - parity_passed,
                                                       "error": 0, "skipped": 0},
                                            "by_quantity": [{"error": 1e-7, "bound": 1e-5}]}},
        "speed": {"data": {"batches": {"128": {"variants": [
            {"variant": "torch_graphed", "median_ms": 20.0, "jaxvae_over_variant": ratio},
            {"variant": "jax_epoch", "median_ms": epoch_ms, "times_s": [epoch_ms / 1e3] * 3}]}}}},
        "sweep": {"data": {"scaling": [{"models": 1, "x_one_model": 1.0}, {"models": 16, "x_one_model": 1.5},
                                       {"models": 64, "x_one_model": sweep_x}]}}}}


def test_targets_are_met_or_missed_by_the_numbers():
    assert [t["met"] for t in gpu_check.targets(_report())] == [True, True, True, True]
    missed = gpu_check.targets(_report(parity_passed=10, epoch_ms=25.0, graphed_ratio=1.2, sweep_x=4.5))
    assert [t["met"] for t in missed] == [False, False, False, False]
    assert "10 of 11" in missed[0]["measured"] and "25.0 ms" in missed[1]["measured"]
    assert [t["met"] for t in gpu_check.targets({**_report(), "dry_run": True})] == [None] * 4
    assert [t["met"] for t in gpu_check.targets({"sections": {}})] == [None] * 4
