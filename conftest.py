"""The code blocks of README.md and docs/ run as tests (Sybil).

- ```python blocks run in one namespace per page, in order, in a fresh temporary directory.
- ```bash blocks run with bash (-e -u -o pipefail) in the same directory, with this checkout's
  ``jaxvae`` and ``python`` first on PATH, a compilation cache of the session's own, and no network.
- A block that must not run (it installs, needs full MNIST, a GPU, several processes or minutes)
  carries ``<!-- skip: next "why" -->`` just above it; pytest -ra lists each skip with its reason.
- Other languages (``text`` for file trees and output) are never run.
"""
import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from sybil import Sybil
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser

REPO = Path(__file__).resolve().parent
BLOCK_TIMEOUT_S = 600  # a shell block that hangs fails instead of stalling CI

os.environ.setdefault("MPLBACKEND", "Agg")
# One persistent compilation cache for the whole test session, shared by every process it starts
# (the environment reaches JAX in subprocesses too): a program that an earlier test, or an earlier
# command-line run, compiled is loaded instead of compiled again. The user's own cache is untouched;
# tests of the cache itself give JAX a directory of their own.
_SESSION_CACHE = tempfile.mkdtemp(prefix="jaxvae-test-cache-")
atexit.register(shutil.rmtree, _SESSION_CACHE, ignore_errors=True)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _SESSION_CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
# The tests check numbers, not speed, and the suite compiles hundreds of small programs: two XLA CPU
# flags that make compiling faster. -O0 skips the backend's optimisation passes (tests/test_training.py
# 1.5x faster); the classic loop emitters instead of the fusion emitters compile a tiny model's epoch
# in half the time (test_training, test_sweep and test_likelihoods: 145 -> 92 s on 2 cores). A flag
# the caller set is kept. Subprocesses inherit them; benchmarks run outside pytest keep XLA's defaults.
for _flag, _value in (("xla_backend_optimization_level", "0"), ("xla_cpu_use_fusion_emitters", "false")):
    if _flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --{_flag}={_value}".strip()
# The shell blocks' cache home (jaxvae's MNIST cache, matplotlib's): the session's own, not the user's.
_CACHE_HOME = tempfile.mkdtemp(prefix="jaxvae-doc-cache-")
atexit.register(shutil.rmtree, _CACHE_HOME, ignore_errors=True)


def _shell_env(workdir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("JAXVAE_NO_COMPILE_CACHE", "JAXVAE_DATA_DIR")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["XDG_CACHE_HOME"] = _CACHE_HOME
    env["JAXVAE_MNIST_MIRRORS"] = "http://127.0.0.1:9/"  # never the network: a download fails at once
    return env


def _run_bash(example) -> None:
    workdir = Path(example.namespace["_doc_dir"])
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", example.parsed], cwd=workdir, env=_shell_env(workdir),
                          capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    if proc.returncode != 0:
        raise AssertionError(f"exit code {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")


def _setup(namespace: dict) -> None:
    namespace["_doc_dir"] = tempfile.mkdtemp(prefix="jaxvae-doc-")
    namespace["_doc_cwd"] = os.getcwd()
    os.chdir(namespace["_doc_dir"])


def _teardown(namespace: dict) -> None:
    os.chdir(namespace["_doc_cwd"])
    shutil.rmtree(namespace["_doc_dir"], ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A skipped block is reported at its place in the page, with its reason (not inside unittest)."""
    outcome = yield
    report = outcome.get_result()
    example = getattr(item, "example", None)
    if example is not None and report.skipped and isinstance(report.longrepr, tuple):
        report.longrepr = (str(item.path), example.line - 1, report.longrepr[2])


pytest_collect_file = Sybil(
    parsers=[PythonCodeBlockParser(), CodeBlockParser("bash", _run_bash), SkipParser()],
    patterns=["README.md", "docs/*.md", "docs/*/*.md"],
    excludes=["*/README.md"],  # the top-level README only: benchmarks/README.md shows long runs
    setup=_setup,
    teardown=_teardown,
).pytest()


def pytest_collection_modifyitems(items):
    """Every code block of the docs compiles programs of its own: the slow tier (make test-fast skips it)."""
    for item in items:
        if getattr(item, "example", None) is not None:
            item.add_marker(pytest.mark.slow)
