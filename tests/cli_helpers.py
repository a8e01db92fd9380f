"""What the command-line tests share: running ``jaxvae`` in-process and checking its one-line errors."""
import os
import shlex
import sys
from pathlib import Path

from jaxvae import cli

REPO = Path(__file__).resolve().parents[1]
# The tiny digits model every CLI test trains: the same shapes reuse one compiled epoch per process.
TINY = ["--dataset", "digits", "--hidden", "32", "--no-download", "--progress", "none", "--no-plots"]


def run_cli(capsys, *argv):
    """``(exit code, stdout, stderr)`` of ``jaxvae ARGV`` run in this process."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own errors, where main lets them through
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err, *fragments):
    """``err`` is exactly one error line, ``jaxvae ...: error: ...``, holding every fragment, no traceback.

    Warning lines of the run before the error (a tiny model's posterior collapse, say) are not the error.
    """
    lines = [line for line in err.strip().splitlines() if not (line.startswith("jaxvae") and ": warning: " in line)]
    assert len(lines) == 1, err
    assert lines[0].startswith("jaxvae") and ": error: " in lines[0] and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def suggested_command(text: str, after: str = "with: ") -> list[str]:
    """The ``jaxvae ...`` command a message names after ``after``, as argv for ``cli.main``."""
    command = text.split(after, 1)[1].strip().splitlines()[0]
    argv = shlex.split(command)
    assert argv[0] == "jaxvae", command
    return argv[1:]


def subprocess_env() -> dict:
    """The environment for ``python -m jaxvae`` in a child: this checkout's jaxvae first."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


PYTHON = sys.executable
