"""The numbers the pages quote are those of docs/numbers/*.json, and those are what this code gives.

docs/numbers/make_numbers.py trains the runs, writes the JSON files and rewrites the marked parts of
the pages; here the pages are compared with the files, and the files with fresh runs: the bundled
subset's first epochs always, the 3 MNIST epochs in the slow tier when MNIST is in ../shared/data/mnist.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import jaxvae
from jaxvae import TrainConfig, VAEConfig
from jaxvae.data import load_dataset

REPO = Path(__file__).resolve().parents[1]
NUMBERS = REPO / "docs" / "numbers"
# real MNIST for the slow test: $JAXVAE_TEST_MNIST_DIR (as tests/test_data.py), else ../shared/data/mnist
MNIST_DIR = Path(os.environ.get("JAXVAE_TEST_MNIST_DIR") or REPO.parent / "shared" / "data" / "mnist")
RTOL = 1e-4  # on the subset's 2 epochs the tests' XLA flags (conftest.py) change the last bits, no more


def _script():
    spec = importlib.util.spec_from_file_location("make_numbers", NUMBERS / "make_numbers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_numbers = _script()


def _epochs(name: str) -> list[dict]:
    return json.loads((NUMBERS / f"{name}.json").read_text())["epochs"]


def _compare(history: list[dict], recorded: list[dict], rel: float = RTOL) -> None:
    for fresh, published in zip(history, recorded, strict=False):
        for key in ("train_loss", "val_loss", "val_recon", "val_kl"):
            assert fresh[key] == pytest.approx(published[key], rel=rel), (
                f"epoch {fresh['epoch']} {key}: this code gives {fresh[key]:.4f}, docs/numbers has "
                f"{published[key]:.4f}; if the change is meant, run python docs/numbers/make_numbers.py")


def test_the_pages_quote_the_numbers_files():
    assert make_numbers.stale_pages() == [], "run python docs/numbers/make_numbers.py --pages"


def test_every_numbers_section_is_on_a_page():
    text = "".join((REPO / page).read_text(encoding="utf-8") for page in make_numbers.PAGES)
    used = {m.group(2) for m in make_numbers.MARKED.finditer(text)}
    assert used == set(make_numbers.SECTIONS)


def test_a_number_inside_a_sentence_does_not_start_a_line():
    # a line that starts with an HTML comment starts an HTML block (CommonMark, Python-Markdown): the
    # rest of that line and of its paragraph would render as raw HTML on GitHub, or split the sentence
    for page in make_numbers.PAGES:
        text = (REPO / page).read_text(encoding="utf-8")
        for m in make_numbers.MARKED.finditer(text):
            inline = not m.group(3).startswith("\n")
            at_line_start = text[:m.start()].rsplit("\n", 1)[-1].strip() == ""
            assert not (inline and at_line_start), f"{page}: <!-- numbers: {m.group(2)} --> starts a line"


def test_the_beta_sweeps_comment_quotes_its_numbers():
    # a comment inside a code block cannot carry a marker: it is compared here instead
    kl = make_numbers.beta_kl(make_numbers.all_data())
    comment = f"# about {kl[0]}, {kl[1]}, {kl[2]} and {kl[3]} nats after 2 epochs"
    for page in ("README.md", "docs/guide/python.md"):
        text = (REPO / page).read_text(encoding="utf-8")
        assert comment in text, f"{page}: the beta sweep's comment should read {comment!r}"


def test_each_run_is_recorded_with_its_command_and_machine():
    for name in make_numbers.RUNS:
        run = json.loads((NUMBERS / f"{name}.json").read_text())
        assert run["command"].startswith("jaxvae train") and run["machine"]["cores"] >= 1
        assert [r["epoch"] for r in run["epochs"]] == list(range(1, len(run["epochs"]) + 1))


def test_the_subset_gives_the_published_kl():
    data = load_dataset("mnist-subset")
    result = jaxvae.fit(data.train_x, data.test_x, vae_config=VAEConfig(input_dim=784),
                        train_config=TrainConfig(max_epochs=2))
    _compare(result.history, _epochs("subset"))


@pytest.mark.slow
def test_three_mnist_epochs_give_the_published_losses(tmp_path):
    if not any((MNIST_DIR / f"train-images-idx3-ubyte{gz}").exists() for gz in ("", ".gz")):
        pytest.skip(f"full MNIST is not in {MNIST_DIR} (set JAXVAE_TEST_MNIST_DIR to the four IDX files); "
                    "the published 3 epochs are not rerun")
    # the command the pages quote, run as a user runs it: without the tests' XLA flags (conftest.py), which
    # change the last bits of every step, and over MNIST's 469 steps per epoch the second decimal
    env = dict(os.environ)
    test_flags = ("--xla_backend_optimization_level", "--xla_cpu_use_fusion_emitters")
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(test_flags))
    subprocess.run([sys.executable, "-m", "jaxvae", "train", *make_numbers.RUNS["mnist3"], "--data-dir", str(MNIST_DIR),
                    "--no-plots", "--quiet", "--out", str(tmp_path / "run")], check=True, env=env, timeout=600)
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    _compare(history, _epochs("mnist3"), rel=1e-6)
    _compare(history, _epochs("mnist30")[:3], rel=1e-6)  # the 30-epoch run starts the same way
