"""runs.RunSaver: the checkpoints and metrics of N models as they train, written in the background."""
import pytest
import jax
import numpy as np

from jaxvae.checkpoint import load_checkpoint
from jaxvae.config import TrainConfig, VAEConfig
from jaxvae.fileio import BackgroundWriter
from jaxvae.checkpoint import checkpoint_run_record
from jaxvae.runs import CHECKPOINT_FILE, RunInfo, RunSaver, read_metrics
from jaxvae.training import fit_models


@pytest.mark.slow
def test_run_saver_on_a_writer_saves_every_model_every_epoch_and_counts_only_finished_writes(tmp_path):
    vc = VAEConfig(input_dim=16, hidden=(8,))
    configs = [TrainConfig(max_epochs=3, batch_size=32, seed=s) for s in (0, 1)]
    dirs = [tmp_path / "a", tmp_path / "b"]
    for d in dirs:
        d.mkdir()
    x = np.random.default_rng(0).random((100, 16), dtype=np.float32)
    seen = []
    with BackgroundWriter() as writer:
        saver = RunSaver(dirs, [RunInfo(vc, tc, "random", (4, 4)) for tc in configs], writer=writer)
        result = fit_models(x, vae_config=vc, train_configs=configs,
                            callbacks=[saver, lambda state, records: seen.append(list(saver.saved_epochs))])
    assert all(saved < epoch for saved_pair, epoch in zip(seen, (1, 2, 3)) for saved in saved_pair)  # never ahead
    assert saver.saved_epochs == [3, 3]
    for i, (d, tc) in enumerate(zip(dirs, configs)):
        state, _, _ = load_checkpoint(d / CHECKPOINT_FILE, vc, tc)
        assert state.epoch == 3
        for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(result.fit_result(i).params)):
            assert np.array_equal(a, b)
        assert [r["epoch"] for r in read_metrics(d)] == [1, 2, 3]
        record = checkpoint_run_record(d / CHECKPOINT_FILE)  # config.json's record, for a rebuild
        assert record["dataset"] == "random" and record["image_shape"] == [4, 4] and record["training"]["seed"] == i
