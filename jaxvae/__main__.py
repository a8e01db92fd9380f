"""``python -m jaxvae``: the same as the ``jaxvae`` command."""
import sys

from jaxvae.cli import main

sys.exit(main())
