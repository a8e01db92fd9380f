"""jaxvae writes only what it owns (issue 21, item 1): a directory holding files that jaxvae did not
write, or a symbolic link where jaxvae's own file goes, is refused with one line naming the file
(exit 2) by train, sweep, import and export, and every file there is left byte for byte as it was."""
import os
import shutil
from pathlib import Path

import pytest
from cli_helpers import TINY, assert_one_line_error, run_cli

from jaxvae import cli, runs
from jaxvae.fileio import OWNERSHIP_FILE, atomic_write_bytes, atomic_write_text

pytest.importorskip("torch")


def snapshot(root: Path) -> dict:
    """Every path under ``root`` and what it is: a link's target, a file's bytes, a directory (jaxvae's
    record of what it wrote aside: a refused command may record its lock's holder there)."""
    def state(p: Path):
        if p.is_symlink():
            return ("link", os.readlink(p))
        return ("file", p.read_bytes()) if p.is_file() else ("dir",)
    return {str(p.relative_to(root)): state(p) for p in sorted(root.rglob("*")) if p.name != OWNERSHIP_FILE}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run trained for one epoch and its export, shared by the tests that only read them."""
    run = tmp_path_factory.mktemp("foreign") / "run"
    assert cli.main(["train", *TINY, "--epochs", "1", "--out", str(run)]) == 0
    assert cli.main(["export", str(run)]) == 0
    return run


def another_tools_dir(path: Path) -> Path:
    """A folder of another tool that happens to use jaxvae's file names."""
    path.mkdir()
    (path / "config.json").write_text('{"tool": "other", "lr": 0.1}\n')
    (path / "metrics.jsonl").write_text('{"step": 1, "acc": 0.5}\n')
    return path


def test_train_refuses_a_directory_of_another_tool_and_leaves_it_as_it_was(tmp_path, capsys):
    out = another_tools_dir(tmp_path / "other")
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "train", *TINY, "--epochs", "1", "--out", out)
    assert code == 2
    assert_one_line_error(err, str(out), "config.json", "not a valid jaxvae run config")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", [["train"], ["sweep", "--seeds", "2"]])
def test_a_new_run_or_sweep_refuses_a_directory_holding_other_files(tmp_path, capsys, command):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, *command, *TINY, "--epochs", "1", "--out", out)
    assert code == 2
    assert_one_line_error(err, str(out), "thesis.tex", "jaxvae did not write")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name, how", [
    *((name, "symlink") for name in ("metrics.jsonl", "config.json", "figures")),
    # another's content under jaxvae's names (issue 34): jaxvae's by record, not by name
    *((name, "content") for name in ("metrics.jsonl", "figures/manifold.png", "evaluate.json")),
])
def test_a_symlink_or_anothers_file_where_a_new_runs_file_goes_is_refused(tmp_path, capsys, name, how):
    out = tmp_path / "run"
    (out / name).parent.mkdir(parents=True)
    if how == "symlink":
        precious = tmp_path / "precious"
        precious.mkdir() if name == "figures" else precious.write_text("someone else's")
        (out / name).symlink_to(precious)
    else:
        (out / name).write_bytes(b"the user's own results")
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "train", *TINY, "--epochs", "1", "--out", out)
    assert code == 2
    assert_one_line_error(err, name, "symbolic link" if how == "symlink" else "jaxvae did not write")
    assert snapshot(tmp_path) == before


def test_resume_refuses_a_symlink_in_place_of_its_metrics_but_keeps_the_users_notes(tmp_path, capsys, trained):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "notes.txt").write_text("my notes")  # a user's own file beside a run stays allowed on resume
    precious = tmp_path / "precious.jsonl"
    precious.write_text("not jaxvae's\n")
    (run / runs.METRICS_FILE).unlink()
    (run / runs.METRICS_FILE).symlink_to(precious)
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "train", "--resume", run, "--epochs", "2", "--quiet", "--no-plots")
    assert code == 2
    assert_one_line_error(err, runs.METRICS_FILE, "symbolic link")
    assert snapshot(tmp_path) == before
    (run / runs.METRICS_FILE).unlink()
    code, _, err = run_cli(capsys, "train", "--resume", run, "--epochs", "2", "--quiet", "--no-plots")
    assert code == 0, err
    assert (run / "notes.txt").read_text() == "my notes" and precious.read_text() == "not jaxvae's\n"


def test_plot_never_draws_into_a_linked_figures_folder(tmp_path, capsys, trained):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / runs.FIGURES_DIR).symlink_to(elsewhere)
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "plot", run)
    assert code == 2
    assert_one_line_error(err, runs.FIGURES_DIR, "symbolic link")
    assert snapshot(tmp_path) == before


def test_import_refuses_a_directory_of_another_tool(tmp_path, capsys, trained):
    out = another_tools_dir(tmp_path / "other")
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "import", trained / runs.EXPORT_FILE, "--out", out)
    assert code == 2
    assert_one_line_error(err, "config.json")
    assert snapshot(tmp_path) == before


def test_export_replaces_its_own_file_but_never_a_foreign_one_or_a_link(tmp_path, capsys, trained):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    assert run_cli(capsys, "export", run)[0] == 0  # its own model.pt: exported again in place
    foreign = tmp_path / "weights.pt"
    foreign.write_bytes(b"a file of another program")
    link = tmp_path / "link.pt"
    link.symlink_to(run / runs.EXPORT_FILE)
    before = snapshot(tmp_path)
    for target, why in ((foreign, "jaxvae did not write"), (link, "symbolic link")):
        code, _, err = run_cli(capsys, "export", run, "--torch", target)
        assert code == 2
        assert_one_line_error(err, str(target), why)
    assert snapshot(tmp_path) == before


def test_atomic_writes_never_go_through_or_over_a_symlink(tmp_path):
    target = tmp_path / "target.txt"
    target.write_text("kept")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    with pytest.raises(OSError, match="symbolic link") as info:
        atomic_write_text(link, "new")
    assert info.value.filename == str(link)
    assert target.read_text() == "kept" and link.is_symlink()
    atomic_write_bytes(tmp_path / "own.txt", b"x")  # a plain path is written as before
    assert (tmp_path / "own.txt").read_bytes() == b"x"


def test_foreign_entries_names_other_files_and_links_but_not_jaxvaes_own_temporaries(tmp_path):
    (tmp_path / runs.CONFIG_FILE).write_text("{}")
    (tmp_path / f".{runs.CHECKPOINT_FILE}.tmp-abc123").write_bytes(b"")  # a killed writer's temporary
    (tmp_path / "README").write_text("mine")
    (tmp_path / runs.FIGURES_DIR).symlink_to(tmp_path)
    assert [p.name for p in runs.foreign_entries(tmp_path)] == ["README", runs.FIGURES_DIR]
