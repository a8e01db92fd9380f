"""The persistent compilation cache: on by default in the user's cache directory, opt-out by an
environment variable, and a second start of the same configuration compiles nothing."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxvae import cli

pytestmark = pytest.mark.slow  # trains or starts processes: the full suite only (make test)

REPO = Path(__file__).resolve().parents[1]
TINY = ["train", "--dataset", "digits", "--hidden", "16", "--no-download", "--no-plots", "--epochs", "1"]
# Runs the command line and counts JAX's compilation-cache events (jax.monitoring, public API).
COUNTING = """
import collections, json, sys
import jax.monitoring
events = collections.Counter()
jax.monitoring.register_event_listener(lambda name, **kwargs: events.update([name]))
from jaxvae import cli
code = cli.main(sys.argv[1:])
prefix = "/jax/compilation_cache/"
print(json.dumps({"code": code, **{k[len(prefix):]: v for k, v in events.items() if k.startswith(prefix)}}))
"""


def start(tmp_path, *argv, **env_changes) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("JAXVAE_NO_COMPILE_CACHE", "JAX_COMPILATION_CACHE_DIR")}
    # this checkout's jaxvae, whatever is installed; the run directories go to tmp_path
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), PYTHONPATH=str(REPO), **env_changes)
    done = subprocess.run([sys.executable, "-c", COUNTING, *argv], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 0, done.stderr
    return {**result, "stderr": done.stderr}


def test_a_second_start_loads_every_program_from_the_cache(tmp_path):
    cache = tmp_path / "cache" / "jaxvae" / "jax-cache"
    first = start(tmp_path, *TINY, "--out", "first")
    assert first.get("cache_hits", 0) == 0 and first["cache_misses"] > 0  # compiled and written
    assert any(p.name.startswith("jit_models_epoch") for p in cache.iterdir())
    second = start(tmp_path, *TINY, "--out", "second", "--epochs", "2")  # the epoch limit is no part of the programs
    assert second["cache_hits"] == second["compile_requests_use_cache"] > 0
    assert second.get("cache_misses", 0) == 0  # nothing compiled afresh
    assert "cache" not in second["stderr"]
    for entry in cache.iterdir():  # damaged entries: one note for the command, the programs compiled again
        if entry.is_file():
            entry.write_bytes(b"not a compiled program")
    third = start(tmp_path, *TINY, "--out", "third")
    assert third["code"] == 0 and third.get("cache_hits", 0) == 0
    notes = [line for line in third["stderr"].splitlines() if "cache" in line]
    assert notes == [f"jaxvae: note: the compilation cache {cache} has entries that cannot be read or written; "
                     "their programs are compiled again (delete the directory to clear it)"], third["stderr"]


def test_a_cache_directory_given_to_jax_is_kept(tmp_path):
    own = tmp_path / "own"
    start(tmp_path, *TINY, "--out", "own", JAX_COMPILATION_CACHE_DIR=str(own))
    assert any(own.iterdir()) and not (tmp_path / "cache" / "jaxvae").exists()


def test_where_the_cache_lives(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    for value in ("", "0"):
        monkeypatch.setenv("JAXVAE_NO_COMPILE_CACHE", value)
        assert cli.compile_cache_dir() == tmp_path / "jaxvae" / "jax-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # invalid by the XDG spec: ignored
    assert cli.compile_cache_dir() == Path.home() / ".cache" / "jaxvae" / "jax-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("JAXVAE_NO_COMPILE_CACHE", "1")  # the opt-out: nothing set up, nothing created
    import jax

    given = jax.config.jax_compilation_cache_dir  # the test session's own cache: set JAX's aside meanwhile
    jax.config.update("jax_compilation_cache_dir", None)
    try:
        assert cli.compile_cache_dir() is None and cli.enable_compile_cache() is None
    finally:
        jax.config.update("jax_compilation_cache_dir", given)
    assert not (tmp_path / "jaxvae").exists()
