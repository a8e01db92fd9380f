"""The command line a new user reads: help with one default per flag, every choice listed, every flag
explained, and a suggestion for a mistyped command, flag or choice."""
import dataclasses
import re
import subprocess
import sys

import pytest

from jaxvae import cli
from jaxvae.cli.flags import config_fields
from jaxvae.config import (
    ACTIVATIONS,
    ARCHITECTURES,
    BINARIZATIONS,
    COMPUTE_DTYPES,
    INITS,
    LIKELIHOODS,
    LR_SCHEDULES,
    OBJECTIVES,
    OUTPUT_ACTIVATIONS,
    TrainConfig,
    VAEConfig,
)
from jaxvae.data import DATASETS

# Every string-valued config field and the values config.py accepts for it.
ENUMERATED = {
    "activation": ACTIVATIONS, "output_activation": OUTPUT_ACTIVATIONS, "likelihood": LIKELIHOODS,
    "objective": OBJECTIVES, "architecture": ARCHITECTURES, "compute_dtype": COMPUTE_DTYPES,
    "init": INITS, "binarize": BINARIZATIONS, "lr_schedule": LR_SCHEDULES,
}
FIELDS = [f for _, f in config_fields()]  # TrainConfig.hyper has no flag: the models declare theirs


def help_text(monkeypatch, capsys, *argv) -> str:
    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps at the terminal width: one line per flag's help
    assert cli.main([*argv, "--help"]) == 0  # main returns argparse's exit code
    return capsys.readouterr().out


def entries(text: str) -> dict[str, str]:
    """Each option's help as {first flag: help text} (argparse puts it beside or below the flag)."""
    found, flag = {}, None
    for line in text.splitlines():
        if line.startswith("  -"):
            flag, *rest = re.split(r"\s{2,}", line.strip(), maxsplit=1)
            found[flag] = rest[0] if rest else ""
        elif flag and line.startswith("   ") and line.strip():
            found[flag] = (found[flag] + " " + line.strip()).strip()
        else:
            flag = None
    return found


def commands(monkeypatch, capsys) -> list[str]:
    return re.findall(r"^    (\w+)\s{2,}", help_text(monkeypatch, capsys), flags=re.M)


def run_cli(capsys, *argv):
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    return code, *capsys.readouterr()


def test_every_flag_of_every_command_is_explained_with_at_most_one_default(monkeypatch, capsys):
    names = commands(monkeypatch, capsys)
    assert {"train", "evaluate", "plot", "export", "import"} <= set(names)
    for name in names:
        for flag, text in entries(help_text(monkeypatch, capsys, name)).items():
            assert text, f"{name} {flag} has no help"
            assert text.count("default:") <= 1, f"{name} {flag}: {text}"
            assert "default: None" not in text, f"{name} {flag}: {text}"


def test_each_config_flag_shows_the_dataclass_default_once(monkeypatch, capsys):
    listed = entries(help_text(monkeypatch, capsys, "train"))
    helps = {flag.split()[0].rstrip(","): text for flag, text in listed.items()}
    for f in FIELDS:
        flag = cli.flag_of(f.name)
        assert flag in helps, flag
        if f.name in ("input_dim", "decoder_hidden"):  # follow the data / mirror the encoder
            continue
        default = f.default
        shown = {True: "on", False: "off"}[default] if isinstance(default, bool) else (
            " ".join(map(str, default)) if isinstance(default, tuple) else str(default))
        assert helps[flag].endswith(f"(default: {shown})"), (flag, helps[flag])
    # the input size follows the dataset: no contradicting number
    assert helps["--input-dim"].endswith("(default: the dataset's: 784 for MNIST, 64 for digits)")
    assert "reversed" in helps["--decoder-hidden"]


def test_enumerated_flags_list_their_choices(monkeypatch, capsys):
    text = help_text(monkeypatch, capsys, "train")
    text_fields = {f.name for f in FIELDS if isinstance(f.default, str)}
    assert text_fields == set(ENUMERATED), "a new string field needs its choices on the command line"
    for name, choices in {**ENUMERATED, "dataset": DATASETS}.items():
        assert f"{cli.flag_of(name)} {{{','.join(choices)}}}" in text
    assert "--progress {epochs,steps,none}" in text


@pytest.mark.parametrize("argv, fragments", [
    (["train", "--epcohs", "5"], ["jaxvae train: error: unrecognized argument --epcohs; did you mean --epochs?"]),
    (["train", "--latnet-dim=3"], ["unrecognized argument --latnet-dim; did you mean --latent-dim?"]),
    (["trian", "--epochs", "5"], ["jaxvae: error: unknown command 'trian'; did you mean train?"]),
    (["train", "--activation", "relu6"], ["argument --activation: invalid choice 'relu6'; did you mean relu?",
                                          "leaky_relu, relu, tanh"]),
    (["train", "--dataset", "mnist_subset"], ["did you mean mnist-subset?"]),
    (["train", "--lr-schedule", "cosin"], ["did you mean cosine?"]),
    (["evaluate", "RUN", "--splt", "train"],
     ["jaxvae evaluate: error: unrecognized argument --splt; did you mean --split?"]),
])
def test_typos_get_one_line_with_a_suggestion(tmp_path, monkeypatch, capsys, argv, fragments):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err
    assert not (tmp_path / "runs").exists()


def test_no_suggestion_when_nothing_is_close(capsys):
    code, _, err = run_cli(capsys, "train", "--zzzzzz", "1")
    assert code == 2 and "unrecognized argument --zzzzzz" in err and "did you mean" not in err
    code, _, err = run_cli(capsys, "plot", "RUN", "extra")
    assert code == 2 and "unrecognized arguments: extra" in err


def test_did_you_mean():
    assert cli.did_you_mean("--epcohs", ["--epochs", "--seed"]) == "; did you mean --epochs?"
    assert cli.did_you_mean("xyz", ["--epochs", "--seed"]) == ""


def test_help_loads_no_jax():
    """``--help`` of every command answers without importing JAX (the commands load it when they run)."""
    probe = ("import sys, contextlib, io\nfrom jaxvae.cli import main\n"
             "for argv in (['--help'], *([c, '--help'] for c in ('train', 'sweep', 'evaluate', 'plot', 'export', "
             "'import'))):\n    with contextlib.redirect_stdout(io.StringIO()):\n        assert main(argv) == 0\n"
             "print(sorted(m for m in sys.modules if m == 'jax' or m.startswith(('jax.', 'flax', 'optax'))))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.slow  # starts a process
def test_a_command_that_draws_nothing_loads_no_matplotlib(tmp_path):
    """matplotlib is most of a second of a command's start: only figures load it."""
    probe = ("import sys\nfrom jaxvae.cli import main\n"
             "assert main(['train', '--dataset', 'digits', '--epochs', '0']) == 0\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'jaxvae')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.strip().splitlines()[-1]
    assert "jaxvae.cli.train" in loaded and "matplotlib" not in loaded and "jaxvae.plots" not in loaded
