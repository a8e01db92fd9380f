"""fileio.BackgroundWriter: writes in order on another thread, and failures are never silent."""
import threading

import pytest

from jaxvae.fileio import BackgroundWriter


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
