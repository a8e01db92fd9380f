"""One single-threaded CPU device per core: the XLA_FLAGS text, ``parallel.use_host_cores`` (in fresh
processes: XLA reads the flags once, when JAX's backend starts) and ``jaxvae sweep --cores``."""
import argparse
import json
import os
import subprocess
import sys

import pytest
from cli_helpers import PYTHON, subprocess_env

from jaxvae.cli.cores import apply_host_cores, cores_type, host_devices, sweep_model_count
from jaxvae.cli.main import build_parser
from jaxvae.errors import InputError
from jaxvae.xla_flags import HOST_DEVICE_COUNT, SINGLE_THREADED, host_device_count, with_host_devices

SINGLE = " ".join(SINGLE_THREADED)


def test_flags_are_added_to_the_users():
    assert with_host_devices(None, 2) == f"{HOST_DEVICE_COUNT}=2 {SINGLE}"
    assert with_host_devices("--xla_backend_optimization_level=0", 4) == \
        f"--xla_backend_optimization_level=0 {HOST_DEVICE_COUNT}=4 {SINGLE}"
    # a count or threading flag already given is replaced, not repeated
    again = with_host_devices(f"--a=1 {HOST_DEVICE_COUNT}=8 --xla_cpu_multi_thread_eigen=true --b", 2)
    assert again == f"--a=1 --b {HOST_DEVICE_COUNT}=2 {SINGLE}"
    assert host_device_count(again) == 2
    assert host_device_count("--a=1") is None and host_device_count(None) is None
    assert host_device_count(f"{HOST_DEVICE_COUNT}=x") is None
    with pytest.raises(InputError, match="XLA_FLAGS names a file of flags"):
        with_host_devices("/etc/xla_flags.txt", 2)


USE = """
import json, os, sys
import jax
from jaxvae.errors import InputError
from jaxvae.parallel import use_host_cores
if sys.argv[1] == "late":
    jax.devices()
try:
    n = use_host_cores(2)
    print(json.dumps({"n": n, "devices": len(jax.devices()), "flags": os.environ["XLA_FLAGS"]}))
except InputError as e:
    print(json.dumps({"error": str(e), "flags": os.environ["XLA_FLAGS"]}))
"""


def _use(when: str) -> dict:
    env = {**subprocess_env(), "XLA_FLAGS": "--xla_backend_optimization_level=0", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([PYTHON, "-c", USE, when], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_use_host_cores_before_the_backend_starts():
    result = _use("early")  # jax imported, nothing run yet
    flags = f"--xla_backend_optimization_level=0 {HOST_DEVICE_COUNT}=2 {SINGLE}"
    assert result == {"n": 2, "devices": 2, "flags": flags}


def test_use_host_cores_refuses_a_started_backend():
    result = _use("late")
    assert "already started, with 1 CPU device;" in result["error"]
    assert result["flags"] == "--xla_backend_optimization_level=0"  # left as it was


def test_use_host_cores_refuses_a_bad_count():
    from jaxvae.parallel import use_host_cores

    for bad in (0, -1, 1.5, True):
        with pytest.raises(InputError, match="positive number of devices"):
            use_host_cores(bad)


@pytest.mark.parametrize(("cores", "mesh", "models", "n_cores", "flags", "expected"), [
    ("auto", "auto", 1, 2, "", None),           # a lone model: as jaxvae train
    ("auto", "auto", 4, 2, "", 2),              # 2 models per core
    ("auto", "auto", 2, 8, "", 2),              # no more devices than models
    ("auto", "auto", 6, 4, "", 3),              # the most that divide the models
    ("auto", "auto", 3, 2, "", None),           # 2 would not divide 3: one device, as before
    ("auto", "auto", 4, 1, "", None),           # one core
    ("auto", "auto", None, 2, "", None),        # a resumed sweep
    ("auto", "2x1", 4, 2, "", None),            # an explicit mesh is the user's
    ("auto", "auto", 4, 2, f"{HOST_DEVICE_COUNT}=8", None),  # so is a device count in XLA_FLAGS
    ("auto", "auto", 4, 2, "/etc/xla_flags.txt", None),  # or a file of flags
    ("auto", "auto", 4, 2, "--xla_backend_optimization_level=0", 2),
    (1, "auto", 4, 2, "", None),                # the default: one device
    (3, "auto", 4, 2, "", 3),                   # asked for: given
])
def test_sweep_host_devices(cores, mesh, models, n_cores, flags, expected):
    assert host_devices(cores, mesh, models, n_cores, {"XLA_FLAGS": flags}, accelerator=False) == expected


def test_no_host_devices_where_an_accelerator_may_be():
    assert host_devices("auto", "auto", 4, 2, {}, accelerator=True) is None
    assert host_devices(2, "auto", 4, 2, {}, accelerator=True) == 2  # asked for


def test_cores_flag_and_model_count():
    parser = build_parser()
    args = parser.parse_args(["sweep", "--seeds", "2", "--recon-sigma", "0.5", "1", "--lr", "1e-3", "1e-2", "3e-3"])
    assert args.cores == 1 and sweep_model_count(args) == 12  # one device unless asked
    assert parser.parse_args(["sweep", "--cores", "auto"]).cores == "auto"
    assert parser.parse_args(["sweep", "--cores", "2"]).cores == 2
    assert sweep_model_count(parser.parse_args(["sweep"])) == 1
    assert sweep_model_count(parser.parse_args(["sweep", "--resume", "x", "--seeds", "4"])) is None
    with pytest.raises(argparse.ArgumentTypeError, match="give auto or a number of devices"):
        cores_type("0")
    # a process that has loaded JAX (this one) is left as it is
    environ = {}
    assert apply_host_cores(parser.parse_args(["sweep", "--cores", "2"]), environ) is None and environ == {}


@pytest.mark.slow
def test_sweep_uses_a_device_per_core(tmp_path):
    env = {**subprocess_env(), "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split() if HOST_DEVICE_COUNT not in f)
    argv = ["sweep", "--dataset", "digits", "--hidden", "8", "--no-download", "--progress", "none", "--no-plots",
            "--seeds", "2", "--epochs", "1", "--cores", "2", "--out", str(tmp_path / "sweep")]
    done = subprocess.run([PYTHON, "-m", "jaxvae", *argv], capture_output=True, text=True, env=env, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "device: cpu (cpu, 2 devices)" in done.stdout, done.stdout
