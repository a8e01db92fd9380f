"""Faults the command line must survive: bad input, damaged files, NaN, SIGKILL, Ctrl-C, resume."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cli_helpers import REPO, TINY, assert_one_line_error, run_cli, suggested_command
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxvae import cli, errors, training
from jaxvae.checkpoint import checkpoint_bytes, load_checkpoint
from jaxvae.config import TrainConfig, VAEConfig, config_to_dict
from jaxvae.models import init_params
from jaxvae.runs import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, read_metrics
from jaxvae.training import FitState, TrainStep

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("rel") / "run"
    assert cli.main(["train", *TINY, "--epochs", "2", "--out", str(path)]) == 0
    return path


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("flags, named", [
    (["--latent-dim", "0"], "latent_dim"),
    (["--latent-dim", "two"], "--latent-dim"),
    (["--hidden", "0"], "hidden"),
    (["--hidden", "-5"], "hidden"),
    (["--recon-sigma", "0"], "recon_sigma"),
    (["--recon-sigma", "nan"], "recon_sigma"),
    (["--kl-weight", "-1"], "kl_weight"),
    (["--batch-size", "0"], "batch_size"),
    (["--batch-size", "5000"], "larger than"),
    (["--lr", "0"], "lr"),
    (["--lr", "-0.001"], "lr"),
    (["--activation", "swish"], "activation"),
    (["--dataset", "cifar"], "cifar"),
    (["--input-dim", "784"], "64 features"),
    # beyond a 64-bit PRNG seed (an OverflowError in jax, once) and a plateau that would end at once
    (["--seed", "99999999999999999999999"], "seed"),
    (["--seed", "-9223372036854775809"], "seed"),
    (["--binarize-seed", "9223372036854775807"], "binarize_seed"),
    (["--stop-lr", "1e-2"], "stop_lr=0.01 is above lr=0.001"),
    # sizes past JAX's 32-bit counts, and an Adam eps that would leave every step at nothing
    (["--latent-dim", "3000000000"], "latent_dim must be at most 2147483647"),
    (["--hidden", "32", "3000000000"], "hidden entries must be at most 2147483647"),
    (["--epochs", "10000000000"], "max_epochs must be at most 2147483647"),
    (["--adam-eps", "1e300"], "adam_eps must be at most 1"),
])
def test_bad_flags_give_one_line_and_write_nothing(tmp_path, capsys, flags, named):
    out = tmp_path / "never"
    code, _, err = run_cli(capsys, "train", *TINY, "--epochs", "1", "--out", out, *flags)
    assert code == 2
    assert_one_line_error(err, named)
    assert not out.exists()


def test_missing_mnist_when_required(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--dataset", "mnist", "--require-mnist", "--no-download",
                           "--data-dir", tmp_path, "--out", tmp_path / "never")
    assert code == 2
    assert_one_line_error(err, "MNIST not found")


def test_corrupt_mnist_file_is_named(tmp_path, capsys):
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    for name in names:
        (tmp_path / name).write_bytes(b"\x00\x00\x08\x03 not really IDX")
    code, _, err = run_cli(capsys, "train", "--data-dir", tmp_path, "--no-download", "--out", tmp_path / "never")
    assert code == 2
    assert_one_line_error(err, "idx")


FLAG_VALUES = st.one_of(st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True).map(str),
                        st.text(max_size=8), st.sampled_from(["inf", "-inf", "nan", "1e400", "0", "-0", ""]))
FLAGS = ["--latent-dim", "--hidden", "--input-dim", "--batch-size", "--lr", "--epochs", "--recon-sigma",
         "--kl-weight", "--activation", "--output-activation", "--plateau-factor", "--plateau-patience",
         "--stop-lr", "--min-lr", "--b1", "--b2", "--adam-eps", "--seed", "--negative-slope", "--decoder-hidden"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(FLAGS), FLAG_VALUES), max_size=4))
def test_fuzzed_flags_fail_only_as_usage_errors(pairs):
    argv = ["train"] + [f"{flag}={value}" for flag, value in pairs]
    parser = cli.build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        assert e.code == 2
        return
    try:
        vae, train = cli.configs_from_args(args)
    except ValueError:
        return
    assert isinstance(vae, VAEConfig) and isinstance(train, TrainConfig)


CONFIG_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True),
                          st.text(max_size=5), st.lists(st.integers(-3, 3), max_size=3))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([VAEConfig, TrainConfig]), st.data())
def test_fuzzed_config_values_raise_value_error_only(cls, data):
    import dataclasses

    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = data.draw(st.dictionaries(st.sampled_from(names), CONFIG_VALUES, max_size=3))
    try:
        config = cls(**kwargs)
    except ValueError as e:
        assert any(name in str(e) for name in kwargs), f"{e} names none of {sorted(kwargs)}"
    else:  # what constructs is well-formed: it survives the JSON round trip of config.json
        assert cls(**json.loads(json.dumps(config_to_dict(config)))) == config


# --------------------------------------------------------------------------- jaxvae's errors and bugs


@pytest.mark.parametrize("error, code", [
    (errors.InputError("evaluate: something given is wrong"), 2),
    (errors.MemoryLimitError("evaluate: would not fit"), 3),
    (errors.NumericalError("evaluate: non-finite log-likelihood"), 1),
])
def test_a_jaxvae_error_is_one_line_with_its_exit_code(run_dir, capsys, monkeypatch, error, code):
    from jaxvae.cli import run_tools

    def evaluate_run(*args, **kwargs):
        raise error

    monkeypatch.setattr(run_tools, "evaluate_run", evaluate_run)
    got, _, err = run_cli(capsys, "evaluate", run_dir)
    assert got == code
    assert_one_line_error(err, str(error))


@pytest.mark.parametrize("bug", [ValueError("a ValueError from inside JAX"), KeyError("model"), OverflowError("big")])
def test_any_other_exception_keeps_its_traceback_and_asks_for_a_report(run_dir, capsys, monkeypatch, bug):
    from jaxvae.cli import run_tools

    def evaluate_run(*args, **kwargs):
        raise bug

    monkeypatch.setattr(run_tools, "evaluate_run", evaluate_run)
    code, _, err = run_cli(capsys, "evaluate", run_dir)
    assert code == 1
    assert "Traceback (most recent call last)" in err and "in evaluate_run" in err
    lines = err.strip().splitlines()
    assert lines[-2] == f"jaxvae evaluate: internal error: {type(bug).__name__}: {bug}"
    assert lines[-1].startswith("jaxvae evaluate: this is a bug in jaxvae or in a library it uses; please report it")


# --------------------------------------------------------------------------- damaged run directories


def test_missing_run_directory(tmp_path, capsys):
    for command in (["evaluate"], ["plot"], ["export", "--torch", tmp_path / "m.pt"]):
        code, _, err = run_cli(capsys, command[0], tmp_path / "nope", *command[1:])
        assert code == 2
        assert_one_line_error(err, str(tmp_path / "nope"), "does not exist")


@pytest.mark.parametrize("flags, named", [
    (["--k", "1e20"], "argument --k: invalid int value: '1e20'"),
    (["--k", str(10**20)], "k must be at most 2147483647"),
    (["--k", "10", "--chunk", str(2**31)], "chunk must be at most 2147483647"),
    (["--limit", str(2**31)], "limit must be at most 2147483647"),
])
def test_evaluate_sizes_past_int32_are_one_line(run_dir, capsys, flags, named):
    code, out, err = run_cli(capsys, "evaluate", run_dir, *flags)
    assert code == 2 and out == ""
    assert_one_line_error(err, named)


def test_a_torch_file_declaring_a_huge_latent_dim_is_one_line(run_dir, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    exported = tmp_path / "model.pt"
    assert run_cli(capsys, "export", run_dir, "--torch", exported)[0] == 0
    blob = torch.load(exported, weights_only=True)
    blob["config"]["latent_dim"] = 10**12
    torch.save(blob, tmp_path / "huge.pt")
    code, _, err = run_cli(capsys, "import", tmp_path / "huge.pt", "--out", tmp_path / "imported")
    assert code == 2
    assert_one_line_error(err, str(tmp_path / "huge.pt"), "latent_dim must be at most 2147483647")
    assert not (tmp_path / "imported").exists()


def test_a_truncated_sweep_file_names_itself_and_the_way_on(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    assert run_cli(capsys, "sweep", *TINY, "--seeds", "2", "--epochs", "1", "--out", sweep)[0] == 0
    sweep_file = sweep / "sweep.json"
    sweep_file.write_bytes(sweep_file.read_bytes()[:40])
    code, _, err = run_cli(capsys, "sweep", "--resume", sweep, "--no-download")
    assert code == 2
    assert_one_line_error(err, f"{sweep_file}: not a valid jaxvae sweep file", "each of its 2 models is a run directory "
                          "(seed0, seed1)", f"continue it alone with: jaxvae train --resume {sweep / 'seed0'}")
    code, out, err = run_cli(capsys, *suggested_command(err))  # the way on works: seed0 has nothing left to do
    assert code == 0 and "nothing to do" in out, err


def _copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in (CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def test_corrupt_checkpoint_is_named_and_kept(run_dir, tmp_path, capsys):
    run = _copy_run(run_dir, tmp_path / "run")
    ckpt = run / CHECKPOINT_FILE
    damaged = ckpt.read_bytes()[:-100]
    ckpt.write_bytes(damaged)
    metrics = (run / METRICS_FILE).read_bytes()
    for argv in (["evaluate", run, "--no-download"], ["train", "--resume", run, "--quiet", "--no-download"]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2
        assert_one_line_error(err, str(ckpt), "corrupt or truncated")
    assert ckpt.read_bytes() == damaged and (run / METRICS_FILE).read_bytes() == metrics


def test_checkpoint_of_another_architecture(run_dir, tmp_path, capsys):
    run = _copy_run(run_dir, tmp_path / "run")
    config = json.loads((run / CONFIG_FILE).read_text())
    config["model"]["hidden"] = [16]
    (run / CONFIG_FILE).write_text(json.dumps(config))
    code, _, err = run_cli(capsys, "evaluate", run, "--no-download")
    assert code == 2
    assert_one_line_error(err, str(run / CHECKPOINT_FILE), "hidden: (32,) in the checkpoint, (16,) given")


@pytest.mark.parametrize("damage, named", [
    ("missing", "prev_network.network.0"),
    ("extra", "extra.weight"),
    ("misshaped", "network.network.2"),
])
def test_torch_state_dict_problems_name_the_tensor(run_dir, tmp_path, capsys, damage, named):
    torch = pytest.importorskip("torch")
    exported = tmp_path / "model.pt"
    assert run_cli(capsys, "export", run_dir, "--torch", exported)[0] == 0
    blob = torch.load(exported, weights_only=True)
    if damage == "missing":
        del blob["encoder"]["prev_network.network.0.bias"]
    elif damage == "extra":
        blob["encoder"]["extra.weight"] = torch.zeros(3)
    else:
        blob["decoder"]["network.network.2.weight"] = blob["decoder"]["network.network.2.weight"][:, :5]
    torch.save(blob, tmp_path / "bad.pt")
    code, _, err = run_cli(capsys, "import", tmp_path / "bad.pt", "--out", tmp_path / "imported")
    assert code == 2
    assert_one_line_error(err, named)
    assert not (tmp_path / "imported").exists()


# --------------------------------------------------------------------------- numerical faults


def test_absurd_learning_rate_stops_with_epoch_and_step(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", *TINY, "--epochs", "2", "--lr", "1e30", "--out", out)
    assert code == 1
    assert "non-finite" in err and "epoch 1" in err and "step" in err and "Traceback" not in err
    assert not (out / CHECKPOINT_FILE).exists()  # no good epoch: nothing to keep
    assert read_metrics(out) == []


def test_nan_in_a_later_epoch_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    real_epoch = training.models_epoch
    params_seen = []

    def nan_in_second_epoch(step, states, *args, **kwargs):
        params_seen.append(jax.tree.map(lambda a: np.asarray(a[0]), states.params))
        states, keys, metrics, val, finite, values = real_epoch(step, states, *args, **kwargs)
        if len(params_seen) == 2:
            metrics = {**metrics, "loss": metrics["loss"].at[0, 3].set(jnp.nan)}
        return states, keys, metrics, val, finite, values

    monkeypatch.setattr(training, "models_epoch", nan_in_second_epoch)
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "train", *TINY, "--epochs", "2", "--out", out)
    assert code == 1
    assert "epoch 2, step 4 of 12" in err and "last good checkpoint (epoch 1)" in err
    state, _, _ = load_checkpoint(out / CHECKPOINT_FILE)
    assert state.epoch == 1
    # the checkpoint holds what epoch 2 started from, i.e. the end of epoch 1
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(params_seen[1])))
    assert [r["epoch"] for r in read_metrics(out)] == [1]


# --------------------------------------------------------------------------- resume, SIGINT, SIGKILL


def test_resume_is_bit_exact(tmp_path, capsys):
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    assert run_cli(capsys, "train", *TINY, "--epochs", "4", "--out", straight)[0] == 0
    assert run_cli(capsys, "train", *TINY, "--epochs", "2", "--out", halves)[0] == 0
    code, out, err = run_cli(capsys, "train", "--resume", halves, "--epochs", "4", "--progress", "none", "--no-plots")
    assert code == 0, err
    assert "resuming after epoch 2" in out
    a, _, _ = load_checkpoint(straight / CHECKPOINT_FILE)
    b, _, train = load_checkpoint(halves / CHECKPOINT_FILE)
    assert a.epoch == b.epoch == 4 and train.max_epochs == 4
    for x, y in zip(jax.tree.leaves((a.train_state, a.key)), jax.tree.leaves((b.train_state, b.key))):
        assert np.array_equal(np.asarray(x), np.asarray(y))
    assert a.schedules == b.schedules
    drop_time = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert drop_time(a.history) == drop_time(b.history) == drop_time(read_metrics(halves))


@pytest.mark.slow
def test_ctrl_c_saves_and_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxvae", "train", *TINY, "--epochs", "100000", "--stop-lr", "0", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        for line in proc.stdout:
            if line.startswith("epoch"):
                break
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert f"checkpoint saved to {out / CHECKPOINT_FILE}; resume with: jaxvae train --resume {out}" in stderr
    assert "Traceback" not in stderr
    state, _, _ = load_checkpoint(out / CHECKPOINT_FILE)
    assert state.epoch >= 1 and f"interrupted after epoch {state.epoch};" in stderr
    assert len(read_metrics(out)) == state.epoch


# The writer loads jaxvae/fileio.py on its own (standard library only): 30 kills cost seconds, not
# 30 jax imports. checkpoint.save_checkpoint writes through this very function.
# Writes one checkpoint with jaxvae's atomic write, stopping at the stage named in argv[4]: it prints the
# stage and blocks there until the test kills it. Every stage of the write is reached on purpose.
WRITER = """
import importlib.util, os, sys
spec = importlib.util.spec_from_file_location("fileio", sys.argv[1])
fileio = sys.modules["fileio"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fileio)
blob, target, stage = open(sys.argv[2], "rb").read(), sys.argv[3], sys.argv[4]

def pause(name):
    if name == stage:
        print(name, flush=True)
        sys.stdin.read()  # blocks until killed

class HalfThenRest:
    def __init__(self, fh): self.fh = fh
    def __enter__(self): return self
    def __exit__(self, *exc): return self.fh.__exit__(*exc)
    def fileno(self): return self.fh.fileno()
    def flush(self): self.fh.flush()
    def write(self, data):
        self.fh.write(data[:len(data) // 2]); self.fh.flush()
        pause("mid-write")
        self.fh.write(data[len(data) // 2:])

real_fdopen, real_fsync, real_replace = os.fdopen, os.fsync, os.replace
os.fdopen = lambda fd, mode: HalfThenRest(real_fdopen(fd, mode))
os.fsync = lambda fd: (pause("before-fsync"), real_fsync(fd))[1]
os.replace = lambda a, b: (pause("before-rename"), real_replace(a, b), pause("after-rename"))[1]
fileio.atomic_write_bytes(target, blob)
"""
STAGES = {"mid-write": 1, "before-fsync": 1, "before-rename": 1, "after-rename": 2}  # the epoch the file then holds


def _small_state(value: float, epoch: int) -> FitState:
    """A state whose parameters are all ``value``."""
    vae, train = VAEConfig(input_dim=16, hidden=(8,)), TrainConfig()
    shapes = jax.eval_shape(lambda: init_params(jax.random.PRNGKey(0), vae))
    params = jax.tree.map(lambda s: np.full(s.shape, value, s.dtype), shapes)
    step = TrainStep.from_configs(vae, train)
    return FitState(step.init(params), step.init_schedules(), jax.random.PRNGKey(epoch), epoch, [])


@pytest.mark.parametrize("stage", STAGES)
def test_sigkill_at_every_stage_of_a_save_leaves_a_loadable_checkpoint(tmp_path, stage):
    """SIGKILL at each point of an atomic write that the writer reports: the checkpoint is the old
    file or the new one, whole, and at most a hidden temporary file is left beside it."""
    vae = VAEConfig(input_dim=16, hidden=(8,))
    run = tmp_path / "run"
    run.mkdir()
    target = run / CHECKPOINT_FILE
    target.write_bytes(checkpoint_bytes(_small_state(1.0, 1), vae, TrainConfig()))
    new = tmp_path / "new.bin"
    new.write_bytes(checkpoint_bytes(_small_state(2.0, 2), vae, TrainConfig()))
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(REPO / "jaxvae" / "fileio.py"), str(new), str(target),
                             stage], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == stage
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.stdout.close()
        proc.stdin.close()
    state, _, _ = load_checkpoint(target)
    assert state.epoch == STAGES[stage]
    assert float(np.asarray(state.params["encoder"]["trunk"][0]["kernel"])[0, 0]) == float(STAGES[stage])
    assert all(p.name == CHECKPOINT_FILE or p.name.startswith(".checkpoint.msgpack.tmp-") for p in run.iterdir())
