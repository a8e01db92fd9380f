"""runs.train_run: a run directory trained from Python (new, nothing to do, resumed exactly, a
sweep, a second writer refused), reporting through its arguments and never printing."""
import jax
import numpy as np
import pytest

from jaxvae.checkpoint import load_checkpoint
from jaxvae.config import TrainConfig, VAEConfig
from jaxvae.data import load_dataset
from jaxvae.errors import InputError, InputTypeError
from jaxvae.runs import CHECKPOINT_FILE, CONFIG_FILE, RunBusyError, RunLock, read_metrics, train_run
from jaxvae.sweep import SWEEP_FILE
from jaxvae.vae import VAEModel

VC = VAEConfig(input_dim=64, hidden=(16,), latent_dim=2)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", log=None)


def tc(epochs: int, **kwargs) -> TrainConfig:
    return TrainConfig(max_epochs=epochs, batch_size=100, lr_schedule="constant", **kwargs)


def without_time(history):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def assert_same_checkpoint(a, b):
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        assert np.array_equal(x, y)
    assert without_time(a.history) == without_time(b.history)


@pytest.mark.slow
def test_a_new_run_then_nothing_to_do_then_a_resume_equal_to_one_straight_run(tmp_path, digits, capsys):
    run_dir, straight_dir, notes, epochs = tmp_path / "run", tmp_path / "straight", [], []
    first = train_run(run_dir, VC, digits, tc(2), figures=False, log=notes.append,
                      callbacks=[lambda state, records: epochs.append(records[0]["epoch"])])
    assert first.nothing_to_do is None and first.resumed_after is None and first.run_dirs == [run_dir]
    assert epochs == [1, 2] and first.saved_epochs == [2] and first.result.stop_reasons == ["max_epochs"]
    assert [r["epoch"] for r in first.result.histories[0]] == [1, 2] and (run_dir / CONFIG_FILE).is_file()

    again = train_run(run_dir, VC, digits, tc(2), figures=False)  # the same call: the run is done
    assert again.nothing_to_do == "the checkpoint is after epoch 2 and the epoch limit is 2"
    assert again.result is None and again.resumed_after == 2

    resumed = train_run(run_dir, VAEModel.from_config(VC), digits, tc(3), figures=False)
    assert resumed.resumed_after == 2 and resumed.first_epoch == 3
    assert [r["epoch"] for r in resumed.result.histories[0]] == [1, 2, 3]
    train_run(straight_dir, VC, digits, tc(3), figures=False)
    assert_same_checkpoint(load_checkpoint(run_dir / CHECKPOINT_FILE)[0],
                           load_checkpoint(straight_dir / CHECKPOINT_FILE)[0])
    assert [r["epoch"] for r in read_metrics(run_dir)] == [1, 2, 3]
    assert capsys.readouterr() == ("", "")  # nothing printed: the caller is told through its arguments


@pytest.mark.slow
def test_a_sweep_of_two_seeds_stopped_and_resumed_equals_one_straight_sweep(tmp_path, digits):
    sweep_dir, straight_dir = tmp_path / "sweep", tmp_path / "straight"
    run = train_run(sweep_dir, VC, digits, tc(2), sweep={"seeds": 2}, figures=False, should_stop=lambda: True)
    assert run.interrupted and run.is_sweep and [d.name for d in run.run_dirs] == ["seed0", "seed1"]
    assert run.saved_epochs == [1, 1] and (sweep_dir / SWEEP_FILE).is_file()

    run = train_run(sweep_dir, sweep=True, figures=False)  # continued: the sweep keeps its configs and data
    assert run.resumed_after == 1 and run.summary_path.is_file() and run.errors == [None, None]
    assert [m.seed for m in run.models] == [0, 1]
    train_run(straight_dir, VC, digits, tc(2), sweep={"seeds": 2}, figures=False)
    for name in ("seed0", "seed1"):
        assert_same_checkpoint(load_checkpoint(sweep_dir / name / CHECKPOINT_FILE)[0],
                               load_checkpoint(straight_dir / name / CHECKPOINT_FILE)[0])
    assert train_run(sweep_dir, sweep=True).nothing_to_do.startswith("every model is done")


def test_a_second_writer_is_refused_before_anything_is_written(tmp_path, digits):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with RunLock(run_dir, "the first writer"):
        with pytest.raises(RunBusyError, match="the first writer"):
            train_run(run_dir, VC, digits, tc(1))
    assert not (run_dir / CONFIG_FILE).exists() and not (run_dir / CHECKPOINT_FILE).exists()


def test_off_the_writing_process_a_sweep_trains_but_writes_and_locks_nothing(tmp_path, digits, monkeypatch):
    """Process 1 of a multi-process job: the writer (process 0) holds the lock; this one trains alone."""
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    with RunLock(sweep_dir, "process 0"):
        before = sorted(p.name for p in sweep_dir.iterdir())
        monkeypatch.setattr(jax, "process_index", lambda: 1)
        run = train_run(sweep_dir, VC, digits, tc(1), sweep={"seeds": 2})
    assert [len(h) for h in run.result.histories] == [1, 1] and run.summary is not None
    assert sorted(p.name for p in sweep_dir.iterdir()) == before  # no model directory, no sweep.json, no figures
    assert run.figures == [[], []] and run.sweep_figures == []


def test_a_resumed_run_keeps_its_config(tmp_path, digits):
    run_dir = tmp_path / "run"
    assert train_run(run_dir, VC, digits, tc(0)).nothing_to_do.startswith("the epoch limit is 0")
    assert not run_dir.exists()  # --epochs 0: checked, nothing written
    (run_dir).mkdir()
    train_run(run_dir, VC, digits, tc(1, seed=3), resume=False, figures=False, should_stop=lambda: True)
    with pytest.raises(InputError, match="train_config: a resumed run keeps its config"):
        train_run(run_dir, VC, digits, tc(2, seed=4))
    with pytest.raises(InputError, match="model: a resumed run keeps its config"):
        train_run(run_dir, VC.replace(latent_dim=3), digits, tc(2, seed=3))


def test_what_is_no_model_is_refused(tmp_path, digits):
    with pytest.raises(InputTypeError, match="model must be a jaxvae.model.Model or a VAEConfig, got str"):
        train_run(tmp_path / "run", "a name", digits, tc(1))
    assert not (tmp_path / "run").exists()
