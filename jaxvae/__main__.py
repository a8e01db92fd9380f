"""``python -m jaxvae``: the same as the ``jaxvae`` command."""
from jaxvae.entry import run

run()
