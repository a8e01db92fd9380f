"""jaxvae.errors: every error jaxvae raises on purpose is a JaxvaeError, and still the built-in
exception that callers catch."""
import re
from pathlib import Path

import pytest

from jaxvae import errors
from jaxvae.checkpoint import CheckpointError
from jaxvae.checks import ResourceError
from jaxvae.cli.flags import UsageError
from jaxvae.config import VAEConfig
from jaxvae.data import DataError, DownloadError, MnistNotFoundError
from jaxvae.runs import RunBusyError, RunError
from jaxvae.training import NonFiniteError

PACKAGE = Path(errors.__file__).parent
# A raise of a bare built-in exception where a jaxvae error belongs: what callers cannot tell from a bug.
BUILTIN_RAISE = re.compile(r"raise (ValueError|TypeError|FloatingPointError|OverflowError|RuntimeError)\(")


def test_no_deliberate_raise_of_a_bare_builtin_exception():
    found = [f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}"
             for path in sorted(PACKAGE.rglob("*.py")) if path.name != "make_datasets.py"  # a script of its own
             for n, line in enumerate(path.read_text().splitlines(), 1) if BUILTIN_RAISE.search(line)]
    assert found == []


@pytest.mark.parametrize("cls, builtin, code", [
    (errors.InputError, ValueError, 2), (errors.InputTypeError, TypeError, 2), (UsageError, ValueError, 2),
    (DataError, ValueError, 2), (DownloadError, ValueError, 2), (MnistNotFoundError, ValueError, 2),
    (CheckpointError, ValueError, 2), (RunError, ValueError, 2), (RunBusyError, ValueError, 2),
    (ResourceError, ValueError, 3), (NonFiniteError, FloatingPointError, 1),
])
def test_each_error_is_a_jaxvae_error_and_its_old_builtin(cls, builtin, code):
    assert issubclass(cls, errors.JaxvaeError) and issubclass(cls, builtin)
    assert cls.exit_code == code


def test_a_bad_config_is_caught_as_value_error_and_as_jaxvae_error():
    with pytest.raises(errors.InputError, match="latent_dim must be a positive integer"):
        VAEConfig(latent_dim=0)
    try:
        VAEConfig(latent_dim=0)
    except ValueError as e:  # what users wrote before jaxvae.errors existed
        assert isinstance(e, errors.JaxvaeError)
