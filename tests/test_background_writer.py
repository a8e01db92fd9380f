"""fileio.BackgroundWriter and the EpochSaver that uses it: writes in order, failures never silent,
and ``saved_epoch`` names only a checkpoint that is on disk."""
import threading

import jax
import numpy as np
import pytest

from jaxvae.checkpoint import load_checkpoint
from jaxvae.config import TrainConfig, VAEConfig
from jaxvae.fileio import BackgroundWriter
from jaxvae.runs import CHECKPOINT_FILE, EpochSaver, read_metrics
from jaxvae.training import fit


def test_writes_run_in_the_order_given_on_another_thread():
    done, threads = [], set()

    def write(i):
        threads.add(threading.get_ident())
        done.append(i)

    with BackgroundWriter(max_pending=2) as writer:
        for i in range(20):
            writer.submit(write, i)
    assert done == list(range(20))  # leaving the block waited for all of them
    assert threading.get_ident() not in threads and len(threads) == 1


def test_a_failed_write_raises_from_the_next_submit_and_from_wait():
    def fail():
        raise OSError(28, "No space left on device")

    with BackgroundWriter(max_pending=1) as writer:  # one pending: the next submit waits for it
        writer.submit(fail)
        with pytest.raises(OSError, match="No space left"):
            writer.submit(lambda: None)
        writer.submit(fail)
        with pytest.raises(OSError, match="No space left"):
            writer.wait()


def test_leaving_the_block_with_an_exception_still_waits_for_queued_writes():
    release, done = threading.Event(), []

    def slow_write():
        release.wait(5)
        done.append(True)

    with pytest.raises(KeyboardInterrupt), BackgroundWriter() as writer:
        writer.submit(slow_write)
        threading.Timer(0.2, release.set).start()
        raise KeyboardInterrupt
    assert done == [True]


def test_epoch_saver_on_a_writer_saves_every_epoch_and_counts_only_finished_writes(tmp_path):
    vc, tc = VAEConfig(input_dim=16, hidden=(8,)), TrainConfig(max_epochs=3, batch_size=32)
    x = np.random.default_rng(0).random((100, 16), dtype=np.float32)
    seen = []
    with BackgroundWriter() as writer:
        saver = EpochSaver(tmp_path, vc, tc, writer=writer)
        result = fit(x, vae_config=vc, train_config=tc,
                     callbacks=[saver, lambda state, record: seen.append(saver.saved_epoch)])
    assert all(saved < epoch for saved, epoch in zip(seen, (1, 2, 3)))  # never ahead of the disk
    assert saver.saved_epoch == 3
    state, _, _ = load_checkpoint(tmp_path / CHECKPOINT_FILE, vc, tc)
    assert state.epoch == 3
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(result.params)):
        assert np.array_equal(a, b)
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2, 3]
