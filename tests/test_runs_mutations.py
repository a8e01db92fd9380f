"""A property-based test of run directories (issue 21, item 8; issue 34): a valid run directory is
mutated at random (a file deleted, truncated, replaced by a symbolic link, a directory, a FIFO, a
hard link to the user's file or another tool's content, a JSON value edited, a metrics record missing
a key, another run's file swapped in, metrics one epoch short as a kill between the saves leaves
them, a killed writer's temporary) and every command is run on it. Each exits 0 or with exactly one
error line and a documented exit code, never a traceback and never blocking, and no file that
jaxvae did not write changes."""
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
from cli_helpers import TINY, assert_one_line_error, run_cli
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from jaxvae import cli, runs
from jaxvae.checkpoint import load_checkpoint

pytest.importorskip("torch")
pytestmark = pytest.mark.slow  # trains two runs and runs a command per example

FILES = [runs.CONFIG_FILE, runs.METRICS_FILE, runs.CHECKPOINT_FILE, runs.LOCK_FILE, runs.FIGURES_DIR,
         runs.EVALUATE_FILE]
KINDS = ["delete", "truncate", "symlink", "directory", "edit_json", "drop_metrics_key", "swap", "fifo", "hardlink",
         "foreign", "metrics_one_short", "stale_temp"]
FOREIGN = b"another tool's file\n"
ODD_VALUES = [None, -1, 0, 1e300, "x", "nan", [], {}, True, [[[[]]]]]
COMMANDS = {
    "evaluate": lambda run: ["evaluate", run],
    "plot": lambda run: ["plot", run],
    "export": lambda run: ["export", run],
    "resume": lambda run: ["train", "--resume", run, "--epochs", "3", "--quiet", "--no-plots"],
}
EXIT_CODES = (0, 1, 2, 3)  # README, "When things go wrong": done, non-finite, refused, out of memory


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    """Two runs of the tiny model (seeds 0 and 1, one epoch each) and a file that is nobody's but the user's."""
    root = tmp_path_factory.mktemp("mutations")
    for seed in (0, 1):
        assert cli.main(["train", *TINY, "--epochs", "1", "--seed", str(seed), "--out", str(root / f"seed{seed}")]) == 0
    (root / "precious.txt").write_text("the user's own file")
    return root


def json_paths(value, prefix=()):
    """Every key path of a JSON value, leaves and branches alike."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from json_paths(item, (*prefix, key))


def remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)


def mutate(run: Path, other: Path, outside: Path, kind: str, name: str, draw) -> str:
    """Apply one mutation to ``run/name``; what was done, for hypothesis' report."""
    path = run / name
    if kind in ("fifo", "hardlink", "foreign"):
        remove(path)
        if name == runs.FIGURES_DIR:  # into the folder, where its files go
            path.mkdir()
            path = path / "manifold.png"
        {"fifo": os.mkfifo, "hardlink": lambda p: os.link(outside, p), "foreign": lambda p: p.write_bytes(FOREIGN)}[kind](path)
    elif kind == "metrics_one_short":
        lines = (run / runs.METRICS_FILE).read_text().splitlines(keepends=True)
        (run / runs.METRICS_FILE).write_text("".join(lines[:-1]))
        return kind
    elif kind == "stale_temp":
        (run / f".{name}.tmp-999999999-x").write_bytes(b"half")
    elif kind == "delete":
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)
    elif kind == "truncate" and path.exists():
        data = path.read_bytes()
        path.write_bytes(data[: draw(st.integers(0, max(len(data) - 1, 0)))])
    elif kind == "symlink":
        path.unlink(missing_ok=True)
        path.symlink_to(outside)
    elif kind == "directory":
        path.unlink(missing_ok=True)
        path.mkdir()
    elif kind == "edit_json":
        config = json.loads((run / runs.CONFIG_FILE).read_text())
        where = draw(st.sampled_from([p for p in json_paths(config) if p]))
        parent = config
        for key in where[:-1]:
            parent = parent[key]
        parent[where[-1]] = draw(st.sampled_from(ODD_VALUES))
        (run / runs.CONFIG_FILE).write_text(json.dumps(config))
        return f"config.json {'/'.join(where)}"
    elif kind == "drop_metrics_key":
        records = [json.loads(line) for line in (run / runs.METRICS_FILE).read_text().splitlines()]
        key = draw(st.sampled_from(sorted(records[0])))
        del records[0][key]
        (run / runs.METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
        return f"metrics.jsonl without {key}"
    elif kind == "swap":
        path.unlink(missing_ok=True)
        if (other / name).exists():
            shutil.copy(other / name, path)
    return f"{kind} {name}"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(KINDS), name=st.sampled_from(FILES), command=st.sampled_from(sorted(COMMANDS)),
       data=st.data())
def test_every_command_on_a_mutated_run_exits_cleanly_and_harms_nothing_it_did_not_write(
        runs_root, tmp_path_factory, capsys, kind, name, command, data):
    work = tmp_path_factory.mktemp("mutated")
    run = work / "run"
    shutil.copytree(runs_root / "seed0", run, symlinks=True)
    outside = work / "precious.txt"
    shutil.copy(runs_root / "precious.txt", outside)
    event(mutate(run, runs_root / "seed1", outside, kind, name, data.draw))
    signal.alarm(120)  # a command that waits on a FIFO fails the test instead of hanging it
    try:
        code, _, err = run_cli(capsys, *COMMANDS[command](run))
    finally:
        signal.alarm(0)
    event(f"{command}: exit {code}")
    assert code in EXIT_CODES, (command, code, err)
    if code:
        assert_one_line_error(err)
    assert "Traceback" not in err
    assert outside.read_text() == "the user's own file"
    assert sorted(p.name for p in work.iterdir()) == ["precious.txt", "run"]
    if (run / name).is_symlink():  # a link jaxvae did not make stays where it was
        assert os.readlink(run / name) == str(outside)
    target = run / name / "manifold.png" if name == runs.FIGURES_DIR else run / name
    if kind == "fifo":
        assert target.is_fifo()
    if kind == "foreign":  # left as it was (a config.json that is no run's may be set aside, whole)
        assert FOREIGN in [p.read_bytes() for p in (target, target.with_name(target.name + ".bad")) if p.is_file()]
    if kind == "metrics_one_short" and command == "resume" and code == 0:  # repaired from the checkpoint
        assert len(runs.read_metrics(run)) == len(load_checkpoint(run / runs.CHECKPOINT_FILE)[0].history)
