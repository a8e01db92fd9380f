"""A hypothesis fuzz of ``jaxvae train``'s flags through ``cli.main`` (issue 12): whatever the flags,
the exit code is 0, 2 (bad flags or data) or 3 (a model too large for the memory), and an error comes
with exactly one stderr line, ``jaxvae ...: error: ...``, never a traceback. ``--epochs 0`` is appended: it checks the configs and the data and trains nothing,
so a fresh run writes nothing and a resumed one is left as it was."""
import shutil
from pathlib import Path

import pytest
from cli_helpers import TINY, assert_one_line_error, run_cli
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from jaxvae import cli
from jaxvae.runs import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE

NUMBERS = ["0", "-0", "1", "-1", "3", "64", "1e-3", "1e30", "1e400", "inf", "-inf", "nan", "", "1e23", "0x10",
           "99999999999999999999999", "9223372036854775807", "9223372036854775808", "-9223372036854775809"]
VALUES = st.one_of(st.sampled_from(NUMBERS), st.integers(-10**30, 10**30).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(str), st.text(max_size=6))
CONFIG_FLAGS = ["--latent-dim", "--hidden", "--input-dim", "--batch-size", "--lr", "--recon-sigma", "--kl-weight",
                "--activation", "--output-activation", "--plateau-factor", "--plateau-patience", "--plateau-threshold",
                "--stop-lr", "--min-lr", "--b1", "--b2", "--adam-eps", "--seed", "--binarize-seed", "--negative-slope",
                "--decoder-hidden", "--likelihood", "--objective", "--iwae-k", "--architecture", "--conv-channels",
                "--compute-dtype", "--binarize", "--lr-schedule", "--kl-warmup-epochs"]
# Values each flag accepts, so that many examples get past parsing to the data and run-directory checks.
PLAUSIBLE = {"--activation": ["relu", "tanh"], "--output-activation": ["identity"], "--likelihood": ["bernoulli"],
             "--objective": ["iwae"], "--architecture": ["conv"], "--compute-dtype": ["bfloat16"],
             "--binarize": ["dynamic", "fixed"], "--lr-schedule": ["constant", "cosine", "burda"]}
PLAUSIBLE_NUMBERS = ["1", "2", "16", "0.5", "0.9", "1e-4", "0.01"]
FLAG_VALUE = st.sampled_from(CONFIG_FLAGS).flatmap(
    lambda flag: st.tuples(st.just(flag), st.one_of(VALUES, *[st.sampled_from(PLAUSIBLE.get(flag, PLAUSIBLE_NUMBERS))] * 3)))
TARGETS = st.one_of(st.just("fresh"), st.sampled_from(["trained", "config-only", "empty", "a-file", "missing"]))
DATA_FLAGS = st.sampled_from([[], ["--dataset", "digits"], ["--dataset", "mnist-subset"], ["--dataset", "mnist"],
                              ["--dataset", "mnist", "--require-mnist"], ["--dataset", "cifar"]])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Directories to resume: a trained run, a config-only one, an empty one, a file, a missing one."""
    root = tmp_path_factory.mktemp("fuzz")
    assert cli.main(["train", *TINY, "--epochs", "1", "--out", str(root / "trained")]) == 0
    (root / "config-only").mkdir()
    shutil.copy(root / "trained" / CONFIG_FILE, root / "config-only" / CONFIG_FILE)
    (root / "empty").mkdir()
    (root / "a-file").write_text("not a run")
    return root


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name in (CONFIG_FILE, CHECKPOINT_FILE, METRICS_FILE, "a-file")}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flags=st.lists(FLAG_VALUE, max_size=3), data=DATA_FLAGS, target=TARGETS)
def test_fuzzed_train_flags_exit_0_or_one_error_line(runs, capsys, monkeypatch, flags, data, target):
    monkeypatch.delenv("JAXVAE_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(runs / "no-cache"))  # no MNIST anywhere: the offline fallback
    before = snapshot(runs)
    out = runs / "never"
    where = ["--out", out] if target == "fresh" else ["--resume", runs / target]
    argv = ["train", "--no-download", "--quiet", "--no-plots", *data, *where,
            *[f"{flag}={value}" for flag, value in flags], "--epochs", "0"]
    code, _, err = run_cli(capsys, *argv)
    event(f"exit {code}" + (" (resume)" if target != "fresh" else ""))
    assert code in (0, 2, 3), (argv, code, err)
    if code:  # the offline fallback's notice may come first: it informs, the error line follows it
        assert_one_line_error("\n".join(line for line in err.splitlines() if not line.startswith("MNIST not found")))
    else:
        assert "Traceback" not in err
    assert not out.exists()
    assert snapshot(runs) == before
