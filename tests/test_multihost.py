"""Two processes on this machine, joined by ``jax.distributed.initialize`` (a coordinator on localhost,
CPU collectives over gloo), each with one CPU device, train data-parallel through ``fit``: the same
result as one process, and only process 0 writes files."""
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxvae import TrainConfig, VAEConfig, fit
from jaxvae.training import fit_models
from jaxvae.fileio import OWNERSHIP_FILE
from jaxvae.runs import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, read_metrics
from tolerances import rel_err

pytestmark = pytest.mark.slow  # trains or starts processes: the full suite only (make test)

ROOT = Path(__file__).resolve().parents[1]
VC = VAEConfig(input_dim=20, hidden=(16,), latent_dim=2)
TC = TrainConfig(batch_size=32, max_epochs=2)  # 198 rows: 6 full batches of 32, split 16 + 16, and a tail of 6


def data():
    rng = np.random.default_rng(0)
    return rng.random((198, 20)).astype(np.float32), rng.random((50, 20)).astype(np.float32)


# One process of the job: what a user's script on each host does (see README, "Several devices, several hosts").
WORKER = textwrap.dedent("""
    import sys
    from pathlib import Path

    import jax

    process_id, port, out = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives across processes
    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=process_id)
    assert jax.process_count() == 2 and len(jax.devices()) == 2 and len(jax.local_devices()) == 1, jax.devices()

    import numpy as np
    from jaxvae import fit
    from jaxvae.checkpoint import save_checkpoint
    from jaxvae.plots import save_figures
    from jaxvae.runs import RunInfo, write_metrics, write_run_config
    from test_multihost import TC, VC, data

    train_x, val_x = data()
    run_dir = out / f"run-of-process-{process_id}"  # each process its own directory: we can see who writes
    run_dir.mkdir()

    def on_epoch(state, record):  # what `jaxvae train` does after every epoch
        save_checkpoint(run_dir / "checkpoint.msgpack", state, VC, TC)
        write_metrics(run_dir, state.history)

    write_run_config(run_dir, RunInfo(VC, TC, "random", (4, 5)))
    result = fit(train_x, val_x, vae_config=VC, train_config=TC, callbacks=[on_epoch])  # data_parallel="auto"
    leaf = jax.tree.leaves(result.params)[0]
    assert len(leaf.sharding.device_set) == 2 and leaf.sharding.is_fully_replicated, leaf.sharding
    save_figures(run_dir / "figures", result.params, VC, val_x, np.zeros(len(val_x), int), (4, 5), result.history)
    # The harness's own record of what each process computed (not a jaxvae file):
    np.savez(out / f"params-{process_id}.npz", *[np.asarray(p) for p in jax.tree.leaves(result.params)],
             val_loss=[r["val_loss"] for r in result.history])
    print("process", process_id, "done", flush=True)
""")


# Four models over the two processes' devices on a (2, 1) mesh: each process holds two of them.
MODELS_WORKER = textwrap.dedent("""
    import sys
    from pathlib import Path

    import jax

    process_id, port, out = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=process_id)

    import numpy as np
    from jaxvae.training import fit_models
    from test_multihost import TC, VC, data

    train_x, val_x = data()
    configs = [TC.replace(seed=s) for s in range(4)]
    result = fit_models(train_x, val_x, vae_config=VC, train_configs=configs, mesh=(2, 1))
    leaf = jax.tree.leaves(result.params)[0]
    assert not leaf.is_fully_addressable and len(leaf.addressable_shards) == 1, leaf.sharding  # 2 of the 4 here
    states = [result.state.fit_state(i) for i in range(4)]  # every model, gathered from where it lives
    np.savez(out / f"models-{process_id}.npz", *[np.asarray(p) for s in states for p in jax.tree.leaves(s.params)],
             val_loss=[[r["val_loss"] for r in h] for h in result.histories])
""")


def run_two_processes(worker: str, tmp_path) -> None:
    """``worker`` as processes 0 and 1 of one job on this machine, one CPU device each."""
    # one CPU device per process: no device count forced; the session's other flags (fast compiling) stay
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    env = {**os.environ, "XLA_FLAGS": " ".join(flags)}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")]))
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-c", worker, str(i), str(port), str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=150)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outputs)[-4000:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_train_data_parallel_like_one_and_only_process_0_writes(tmp_path):
    run_two_processes(WORKER, tmp_path)

    writer, other = tmp_path / "run-of-process-0", tmp_path / "run-of-process-1"
    assert {p.name for p in writer.iterdir()} == {CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE, "figures", OWNERSHIP_FILE}
    assert len(list((writer / "figures").glob("*.png"))) == 5
    assert list(other.iterdir()) == []  # process 1 trained as much and wrote nothing

    train_x, val_x = data()
    alone = fit(train_x, val_x, vae_config=VC, train_config=TC, data_parallel=None)
    for process in (0, 1):
        got = np.load(tmp_path / f"params-{process}.npz")
        for i, want in enumerate(jax.tree.leaves(alone.params)):
            assert rel_err(got[f"arr_{i}"], want) <= 1e-5  # summation order of the all-reduced gradient
        np.testing.assert_allclose(got["val_loss"], [r["val_loss"] for r in alone.history], rtol=1e-5)
    assert [r["epoch"] for r in read_metrics(writer)] == [1, 2]


def test_models_split_over_two_processes_train_like_one_process_and_each_sees_them_all(tmp_path):
    run_two_processes(MODELS_WORKER, tmp_path)
    train_x, val_x = data()
    alone = fit_models(train_x, val_x, vae_config=VC, train_configs=[TC.replace(seed=s) for s in range(4)],
                       data_parallel=None)
    want = [p for i in range(4) for p in jax.tree.leaves(alone.state.fit_state(i).params)]
    for process in (0, 1):
        got = np.load(tmp_path / f"models-{process}.npz")
        for i, params in enumerate(want):
            assert rel_err(got[f"arr_{i}"], params) <= 1e-5
        np.testing.assert_allclose(got["val_loss"], [[r["val_loss"] for r in h] for h in alone.histories], rtol=1e-5)
